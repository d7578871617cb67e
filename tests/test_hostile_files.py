"""Every file gpt2lab writes and reads back, mutated the way a person, a tool or a crash changes it: each reader
ends in a correct result or one line (UserError, exit 2; CorruptCheckpoint inside a checkpoint), never a
traceback and never a silently wrong number.

The mutations start from real files written by gpt2lab (a short training run, its checkpoint, an HF export, a
prepare's progress) and are seeded: the fast tier runs a sample of each format, the full tier 200 per format.
Files inside a checkpoint are resealed (their manifest's sizes and SHA-256s recomputed) so the reader itself is
tested, not only the hash check in front of it.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import yaml

from gpt2lab import checkpoint as ckpt
from gpt2lab.commands.train import train_config
from gpt2lab.data.loader import Windows
from gpt2lab.data.prepare import PROGRESS_FILE, PrepareOptions, _resume_point
from gpt2lab.data.shards import read_meta, write_shard
from gpt2lab.errors import UserError
from gpt2lab.eval.hellaswag import read_examples
from gpt2lab.metrics.logger import read_metrics
from gpt2lab.report.compare import comparison, curve_of
from gpt2lab.config import build_config
from gpt2lab.training.trainer import RUN_RECORD, Trainer
from tests.helpers import micro_config, reseal, trainer

FAST, FULL = 12, 200
DEEP = 3000


# --- mutations ----------------------------------------------------------------------------------------------------

def _paths(value, here=()):
    yield here
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, here + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, here + (i,))


def _set(value, path, new):
    if not path:
        return new
    parent = value
    for p in path[:-1]:
        parent = parent[p]
    if new is _DROP:
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return value


_DROP, _DEEP = object(), "zzdeepzz"


def _swapped(old):
    if isinstance(old, bool):
        return 1
    if isinstance(old, int):
        return str(old)
    if isinstance(old, float):
        return [old]
    if isinstance(old, str):
        return 7
    if isinstance(old, list):
        return {"0": old[:1]}
    if isinstance(old, dict):
        return list(old.values())[:2]
    return "soon"


VALUE_KINDS = {
    "null": lambda rng, old: None,
    "swap": lambda rng, old: _swapped(old),
    "string": lambda rng, old: "soon",
    "huge int": lambda rng, old: 10 ** rng.choice([19, 40, 400]),
    "huge float": lambda rng, old: rng.choice([1e308, -1e308, 5e-324]),
    "nan": lambda rng, old: rng.choice([math.nan, math.inf, -math.inf]),
    "negative": lambda rng, old: -abs(old) - 1 if isinstance(old, (int, float)) and not isinstance(old, bool) else -1,
    "bool": lambda rng, old: rng.choice([True, False]),
    "deep": lambda rng, old: _DEEP,
    "drop": lambda rng, old: _DROP,
}
BYTE_KINDS = ("truncate", "bad utf-8", "empty", "folder", "oversize", "bom")


def mutate_value(rng: random.Random, value):
    """(description, mutated value) : one node of a parsed JSON value changed."""
    value = json.loads(json.dumps(value))
    path = rng.choice(list(_paths(value)))
    kind = rng.choice(list(VALUE_KINDS))
    if kind == "drop" and not path:
        kind = "null"
    old = value
    for p in path:
        old = old[p]
    return f"{kind} at {'.'.join(map(str, path)) or 'top'}", _set(value, path, VALUE_KINDS[kind](rng, old))


def dumps(value, fmt: str = "json") -> bytes:
    if fmt == "yaml":
        text = yaml.safe_dump(value, default_flow_style=None)
        return text.replace(_DEEP, "[" * DEEP + "]" * DEEP).encode()
    text = json.dumps(value, indent=1)
    return text.replace(json.dumps(_DEEP), "[" * DEEP + "]" * DEEP).encode()


def mutate_file(rng: random.Random, path: Path, parse=json.loads, fmt: str = "json", lines: bool = False,
                limit: int = 1 << 20) -> str:
    """Mutate a file in place (a value, its bytes, or what it is); returns what was done."""
    data = path.read_bytes()
    if rng.random() < 0.3:
        kind = rng.choice(BYTE_KINDS)
        if kind == "truncate":
            path.write_bytes(data[: rng.randrange(max(1, len(data)))])
        elif kind == "bad utf-8":
            at = rng.randrange(max(1, len(data)))
            path.write_bytes(data[:at] + b"\xff\xfe\xc3" + data[at:])
        elif kind == "empty":
            path.write_bytes(b"")
        elif kind == "folder":
            path.unlink()
            path.mkdir()
        elif kind == "oversize":
            with open(path, "ab") as f:
                f.truncate(limit + 1)  # sparse: the size check, not the parser, must stop it
        else:
            path.write_bytes(b"\xef\xbb\xbf" + data)
        return kind
    if lines:
        rows = data.decode().splitlines()
        i = rng.randrange(len(rows))
        what, value = mutate_value(rng, json.loads(rows[i]))
        rows[i] = dumps(value).decode().replace("\n", "")
        path.write_text("\n".join(rows) + "\n")
        return f"line {i + 1}: {what}"
    what, value = mutate_value(rng, parse(data.decode()))
    path.write_bytes(dumps(value, fmt))
    return what


# --- the world: real files written by gpt2lab ---------------------------------------------------------------------

@dataclass
class World:
    root: Path
    data: Path
    run: Path
    checkpoint: Path
    hf: Path | None
    hellaswag: Path
    yaml_config: Path
    prepare_work: Path
    resumer: Trainer


@pytest.fixture(scope="module")
def world(tmp_path_factory, small_run) -> World:
    root = tmp_path_factory.mktemp("hostile")
    data = small_run.data
    checkpoint = ckpt.latest_checkpoint(small_run.run)
    hf = None
    try:
        from gpt2lab.interop.hf import export_hf

        export_hf(str(checkpoint), str(root / "hf"))
        hf = root / "hf"
    except (ImportError, UserError):
        pass
    hellaswag = root / "hellaswag.jsonl"
    hellaswag.write_text("".join(json.dumps({"ctx": f"A man {i}", "endings": ["a", "b", "c", "d"], "label": i % 4,
                                             "ind": i}) + "\n" for i in range(4)))
    yaml_config = root / "run.yaml"
    yaml_config.write_text(yaml.safe_dump({"model": {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32,
                                                     "vocab_size": 64},
                                           "optim": {"lr": 0.01},
                                           "schedule": {"max_steps": 8, "warmup_steps": 2}}))
    work = root / "prepare-work"
    work.mkdir()
    write_shard(work / "train_000000.bin", np.arange(100, dtype=np.uint16))
    (work / PROGRESS_FILE).write_text(json.dumps({"fingerprint": "f" * 64, "splits": {
        "train": {"shards": [{"file": "train_000000.bin", "tokens": 100}], "documents": 3, "carry": 0},
        "val": {"shards": [], "documents": 0, "carry": 0}}}))
    resumer = trainer(micro_config(data, "log.tensorboard=false"), root / "resumer")
    return World(root, data, small_run.run, checkpoint, hf, hellaswag, yaml_config, work, resumer)


# --- each format: where its file is, and the real reader that consumes it -----------------------------------------

def _copy_checkpoint(world: World, scratch: Path) -> Path:
    target = scratch / "run" / ckpt.CHECKPOINTS / world.checkpoint.name
    shutil.copytree(world.checkpoint, target)
    return target


def _restore(world: World, folder: Path):
    t = world.resumer
    t._restore(folder)
    state = ckpt.load_state(folder)  # what was restored is what the file says: no coercion, no default
    assert t.step == state["step"] and t.stream.position == state["loader"]["position"]
    assert t.elapsed == state.get("elapsed", 0.0)
    return t.step


def _manifest(world, scratch, rng):
    folder = _copy_checkpoint(world, scratch)
    what = mutate_file(rng, folder / ckpt.MARKER, limit=16 << 20)
    return what, lambda: (ckpt.verify(folder, deep=True), ckpt.prune_checkpoints(folder.parent.parent, 1),
                          _restore(world, folder) if folder.is_dir() else None)


def _state(world, scratch, rng):
    folder = _copy_checkpoint(world, scratch)
    what = mutate_file(rng, folder / ckpt.STATE_JSON, limit=256 << 20)
    reseal(folder)
    return what, lambda: _restore(world, folder)


def _checkpoint_config(world, scratch, rng):
    folder = _copy_checkpoint(world, scratch)
    what = mutate_file(rng, folder / ckpt.CONFIG)
    reseal(folder)

    def consume():
        from gpt2lab.checkpoint import load_model_from_checkpoint

        try:
            load_model_from_checkpoint(folder, "cpu")
        except UserError:
            pass
        return _restore(world, folder)
    return what, consume


def _run_config(world, scratch, rng):
    run = scratch / "run"
    shutil.copytree(world.run, run)
    what = mutate_file(rng, run / "config.json")
    return what, lambda: train_config(str(run), resume=True, echo=lambda *_: None)


def _run_record(world, scratch, rng):
    run = scratch / "run"
    shutil.copytree(world.run, run)
    what = mutate_file(rng, run / RUN_RECORD)

    class Folder:  # the one attribute the ownership check reads
        run_dir = run
    return what, lambda: Trainer._check_own_files(Folder())


def _meta(world, scratch, rng):
    data = scratch / "data"
    shutil.copytree(world.data, data)
    what = mutate_file(rng, data / "meta.json", limit=64 << 20)

    def consume():
        meta = read_meta(data)
        windows = Windows(str(data), "train", 32, align_documents=rng.random() < 0.5,
                          eot=meta["tokenizer"].get("eot"), max_token=64)
        return len(windows)
    return what, consume


def _metrics(world, scratch, rng):
    run = scratch / "run"
    run.mkdir()
    shutil.copy(world.run / "metrics.jsonl", run / "metrics.jsonl")
    what = mutate_file(rng, run / "metrics.jsonl", lines=True)

    def consume():
        for record in read_metrics(run):
            assert all(isinstance(v, (int, float, str, bool)) for v in record.values()), record
        curve = curve_of(run)
        assert all(isinstance(v, float) and math.isfinite(v) for v in curve.tokens + curve.seconds + curve.loss)
        return comparison([curve, curve])
    return what, consume


def _hf_config(world, scratch, rng):
    if world.hf is None:
        pytest.skip("transformers is not installed")
    hf = scratch / "hf"
    shutil.copytree(world.hf, hf)
    what = mutate_file(rng, hf / "config.json")
    from gpt2lab.interop.hf import import_hf

    return what, lambda: import_hf(str(hf), str(scratch / "imported"))


def _hellaswag(world, scratch, rng):
    path = scratch / "hellaswag.jsonl"
    shutil.copy(world.hellaswag, path)
    what = mutate_file(rng, path, lines=True)

    def consume():
        rows = read_examples(path)
        assert all(isinstance(r["label"], int) and not isinstance(r["label"], bool) and 0 <= r["label"] < 4 for r in rows)
        return rows
    return what, consume


def _yaml_config(world, scratch, rng):
    path = scratch / "run.yaml"
    shutil.copy(world.yaml_config, path)
    what = mutate_file(rng, path, parse=yaml.safe_load, fmt="yaml")
    return what, lambda: build_config(file=str(path), sets=[f"data.dir={world.data}"])


def _prepare_progress(world, scratch, rng):
    work = scratch / "work"
    shutil.copytree(world.prepare_work, work)
    what = mutate_file(rng, work / PROGRESS_FILE, limit=64 << 20)

    def consume():
        progress = _resume_point(work, "f" * 64, PrepareOptions(), lambda *_: None)
        if progress:  # a resume keeps exactly the shards on disk, with their token counts
            assert [(s["file"], s["tokens"]) for s in progress["train"]["shards"]] == [("train_000000.bin", 100)]
        return progress
    return what, consume


FORMATS: dict[str, Callable] = {
    "checkpoint manifest": _manifest, "training state": _state, "checkpoint config": _checkpoint_config,
    "run config": _run_config, "run record": _run_record, "data meta": _meta, "metrics lines": _metrics,
    "hf config": _hf_config, "hellaswag lines": _hellaswag, "yaml config": _yaml_config,
    "prepare progress": _prepare_progress,
}


TOLERANT = {"prepare progress"}  # a damaged record of a prepare's progress means starting over (with a note)


def _one_line(exc: BaseException) -> None:
    text = str(exc)
    assert text and "\n" not in text and "Traceback" not in text, repr(text)


def check_format(world: World, name: str, count: int, tmp_path: Path) -> dict:
    outcomes = {"ok": 0, "refused": 0}
    for i in range(count):
        rng = random.Random(f"{name}-{i}")
        scratch = tmp_path / f"{i}"
        scratch.mkdir()
        what, consume = FORMATS[name](world, scratch, rng)
        try:
            consume()
            outcomes["ok"] += 1
        except (UserError, ckpt.CorruptCheckpoint) as exc:
            _one_line(exc)
            outcomes["refused"] += 1
        except Exception as exc:  # anything else is a bug: say which mutation found it
            raise AssertionError(f"{name}, mutation {i} ({what}): {type(exc).__name__}: {exc}") from exc
        shutil.rmtree(scratch, ignore_errors=True)
    return outcomes


@pytest.mark.parametrize("name", list(FORMATS))
def test_a_seeded_sample_of_mutations(world, name, tmp_path):
    outcomes = check_format(world, name, FAST, tmp_path)
    assert sum(outcomes.values()) == FAST


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FORMATS))
def test_two_hundred_mutations(world, name, tmp_path):
    outcomes = check_format(world, name, FULL, tmp_path)
    assert outcomes["refused"] > 0 or name in TOLERANT  # the mutations do reach the checks
