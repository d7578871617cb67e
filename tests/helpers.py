"""Helpers shared by the tests (fixtures are in conftest.py): synthetic data, a micro-model config, a trainer
built as `gpt2lab train` builds it, documents to prepare, and resealing a checkpoint after editing it."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpt2lab import checkpoint as ckpt
from gpt2lab.config import build_config
from gpt2lab.data.shards import META_FILE, shard_name, write_shard

WORDS = "river stone lamp orchard violet anchor meadow copper lantern thistle harbor falcon".split()


def make_data_dir(path: Path, vocab: int = 64, train_tokens: int = 20_000, val_tokens: int = 2_000,
                  shard_tokens: int = 7_000, seed: int = 0) -> Path:
    """A prepared data directory of random tokens (a repeating pattern plus noise, so it is learnable)."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split, n in (("train", train_tokens), ("val", val_tokens)):
        tokens = (np.arange(n) * 7 + rng.integers(0, 2, n)) % vocab
        shards = []
        for i, start in enumerate(range(0, n, shard_tokens)):
            chunk = tokens[start : start + shard_tokens]
            write_shard(path / shard_name(split, i), chunk)
            shards.append({"file": shard_name(split, i), "tokens": int(chunk.size)})
        splits[split] = {"tokens": n, "documents": 1, "shards": shards}
    meta = {"tokenizer": {"name": "synthetic", "n_vocab": vocab, "eot": vocab - 1}, "splits": splits}
    (path / META_FILE).write_text(json.dumps(meta))
    return path


MICRO_MODEL = ["model.n_layer=2", "model.n_head=2", "model.n_embd=32", "model.block_size=32", "model.vocab_size=64"]


def micro_config(data: Path, *sets: str, **kw):
    """A config for a model small enough that a training step takes milliseconds."""
    defaults = ["schedule.max_steps=8", "schedule.warmup_steps=2", "run.micro_batch=4", "log.every=none",
                "eval.every=none", "eval.batches=2", "checkpoint.every=none", "run.device=cpu", "optim.lr=1e-2",
                "run.precision=fp32"]
    return build_config(sets=MICRO_MODEL + defaults + [f"data.dir={data}", *sets], **kw)


def trainer(cfg, run_dir, **kw):
    """A Trainer with the evaluations its config asks for, as `gpt2lab train` builds it."""
    from gpt2lab.commands.train import make_trainer

    return make_trainer(cfg, str(run_dir), **kw)


def make_docs(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"Document {i} begins. " + " ".join(rng.choice(WORDS, 40)) + f"\n\nIt ends as number {i}." for i in range(n)]


def write_jsonl(path, docs, opener=open):
    with opener(path, "wt", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"text": d, "id": 1}) + "\n")
    return path


def reseal(checkpoint: Path) -> None:
    """Recompute a checkpoint manifest's sizes and hashes, as someone who edits a file and its manifest would."""
    marker = json.loads((checkpoint / ckpt.MARKER).read_text())
    marker["files"] = {name: {"bytes": (checkpoint / name).stat().st_size, "sha256": ckpt.file_digest(checkpoint / name)}
                       for name in marker["files"] if (checkpoint / name).is_file()}
    (checkpoint / ckpt.MARKER).write_text(json.dumps(marker))


@dataclass(frozen=True)
class SmallRun:
    data: Path
    run: Path

    def copy(self, to: Path) -> Path:
        """A copy of the run folder to change (the shared one stays as it was)."""
        shutil.copytree(self.run, to)
        return to


def small_run_in(root: Path) -> SmallRun:
    data = make_data_dir(root / "data")
    cfg = micro_config(data, "checkpoint.every=4", "eval.every=2", "log.tensorboard=false")
    trainer(cfg, root / "run").fit()
    return SmallRun(data, root / "run")
