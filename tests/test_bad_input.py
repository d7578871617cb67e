"""Every user mistake: one line on stderr naming the problem and the fix, exit code 2, no traceback, and no
half-written output."""

import json
import shutil

import pytest

from gpt2lab.cli import main
from tests.helpers import MICRO_MODEL, make_data_dir
from tests.helpers import make_docs, write_jsonl

SETS = [a for s in MICRO_MODEL for a in ("--set", s)]
FAST = ["--max-steps", "2", "--device", "cpu", "--set", "schedule.warmup_steps=1"]


@pytest.fixture
def world(tmp_path, tokenizer_dir, monkeypatch):
    """Prepared GPT-2 data, a synthetic data dir, a trained checkpoint, and a bad file of each kind."""
    monkeypatch.setenv("GPT2LAB_TOKENIZER", tokenizer_dir)
    src = write_jsonl(tmp_path / "docs.jsonl", make_docs(30))
    main(["prepare", str(src), "--out", str(tmp_path / "gpt2data"), "--quiet"])
    make_data_dir(tmp_path / "synthetic")
    gpt2_sets = [a for s in MICRO_MODEL if "vocab" not in s for a in ("--set", s)]
    main(["train", "--data", str(tmp_path / "gpt2data"), "--out", str(tmp_path / "run"), *gpt2_sets, *FAST])
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    (tmp_path / "bad_hellaswag.jsonl").write_text('{"ctx": "x", "endings": ["a"], "label": 0}\n')
    return tmp_path


def truncated_shard(w):
    shutil.copytree(w / "synthetic", w / "trunc")
    shard = w / "trunc" / "train_000000.bin"
    shard.write_bytes(shard.read_bytes()[:-7])
    return ["train", "--data", str(w / "trunc"), "--out", str(w / "new"), *SETS, *FAST]


def corrupt_checkpoint(w):
    shutil.copytree(w / "run", w / "broken")
    for f in (w / "broken" / "checkpoints").glob("*/model.safetensors"):
        f.write_bytes(b"not a safetensors file")
    return ["sample", str(w / "broken"), "--device", "cpu"]


def other_architecture(w):
    shutil.copytree(w / "run", w / "other")
    from gpt2lab.checkpoint import _digest

    for f in (w / "other" / "checkpoints").glob("*/config.json"):
        cfg = json.loads(f.read_text())
        cfg["model"]["pos"] = "rope"  # the weights have a position table; this config has none
        f.write_text(json.dumps(cfg))
        marker = json.loads((f.parent / "COMPLETE").read_text())  # a consistent checkpoint, not an altered one
        marker["files"]["config.json"] = _digest(f)
        (f.parent / "COMPLETE").write_text(json.dumps(marker))
    return ["eval", str(w / "other"), "--data", str(w / "gpt2data"), "--device", "cpu"]


def tiny_val(w):
    make_data_dir(w / "tinyval", val_tokens=20)
    return ["train", "--data", str(w / "tinyval"), "--out", str(w / "new"), *SETS, *FAST]


CASES = {
    "missing data": (lambda w: ["train", "--data", str(w / "nope"), "--out", str(w / "new"), *SETS, *FAST], "does not exist"),
    "empty data": (lambda w: ["prepare", str(w / "empty.jsonl"), "--out", str(w / "new")], "no text found"),
    "not a data dir": (lambda w: ["train", "--data", str(w), "--out", str(w / "new"), *SETS, *FAST], "not a prepared data directory"),
    "truncated shard": (truncated_shard, "truncated"),
    "vocab mismatch": (lambda w: ["train", "--data", str(w / "gpt2data"), "--out", str(w / "new"), *SETS, *FAST],
                       "model.vocab_size"),
    "context longer than data": (tiny_val, "too few for one window"),
    "unknown preset": (lambda w: ["train", "--preset", "gpt2-small", "--data", str(w / "gpt2data"), "--out", str(w / "new")],
                       "unknown preset"),
    "unknown config key": (lambda w: ["train", "--set", "optim.learning_rate=1", "--data", str(w / "gpt2data"),
                                      "--out", str(w / "new")], "did you mean"),
    "invalid value": (lambda w: ["train", "--set", "optim.lr=-3", "--data", str(w / "gpt2data"), "--out", str(w / "new")],
                      "optim.lr must be in (0, 10]"),
    "bad number": (lambda w: ["train", "--set", "run.micro_batch=lots", "--data", str(w / "gpt2data"), "--out", str(w / "new")],
                   "not a valid int"),
    "checkpoint of another architecture": (other_architecture, "another architecture"),
    "corrupt checkpoint": (corrupt_checkpoint, "corrupt"),
    "missing checkpoint": (lambda w: ["sample", str(w / "nowhere"), "--device", "cpu"], "does not exist"),
    "malformed hellaswag": (lambda w: ["eval", str(w / "run"), "--hellaswag", str(w / "bad_hellaswag.jsonl"), "--device", "cpu"],
                            "not a HellaSwag row"),
    "non-utf8 text eval": (lambda w: ["eval", str(w / "run"), "--text", str(w / "latin1.txt"), "--device", "cpu"], "not UTF-8"),
    "non-utf8 prepare": (lambda w: ["prepare", str(w / "latin1.txt"), "--out", str(w / "new")], "not UTF-8"),
    "existing run without --resume": (lambda w: ["train", "--data", str(w / "gpt2data"), "--out", str(w / "run"), *FAST],
                                      "pass --resume"),
    # a device that never ends, or a folder, where a file belongs (they were all reported as missing)
    "a device as a config": (lambda w: ["train", "--config", "/dev/urandom", "--data", str(w / "gpt2data"),
                                        "--out", str(w / "new")], "config file /dev/urandom is not a regular file"),
    "a device to prepare": (lambda w: ["prepare", "/dev/urandom", "--out", str(w / "new")],
                            "input /dev/urandom is not a regular file"),
    "a device as data": (lambda w: ["train", "--data", "/dev/null", "--out", str(w / "new"), *SETS, *FAST],
                         "data directory /dev/null is not a folder"),
    "a file as data": (lambda w: ["train", "--data", str(w / "empty.jsonl"), "--out", str(w / "new"), *SETS, *FAST],
                       "is a file, not a folder"),
    "a device as text": (lambda w: ["eval", str(w / "run"), "--text", "/dev/urandom", "--device", "cpu"],
                         "text file /dev/urandom is not a regular file"),
    "a folder as hellaswag": (lambda w: ["eval", str(w / "run"), "--hellaswag", str(w), "--device", "cpu"],
                              "is a folder"),
    "cuda without cuda": (lambda w: ["train", "--data", str(w / "gpt2data"), "--out", str(w / "new"), "--device", "cuda"],
                          "CUDA is not usable"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input(world, case, capsys):
    import torch

    if case == "cuda without cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    make_args, message = CASES[case]
    args = make_args(world)
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpt2lab: error: ") and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (world / "new").exists() or not any((world / "new").rglob("*.safetensors"))
    assert not list(world.glob(".*.partial")) and not list(world.rglob(".*.tmp"))


def test_full_disk_through_the_cli(world, monkeypatch, capsys):
    import errno

    import gpt2lab.checkpoint as checkpoint_module

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module, "save_file", full)
    gpt2_sets = [a for s in MICRO_MODEL if "vocab" not in s for a in ("--set", s)]
    capsys.readouterr()
    assert main(["train", "--data", str(world / "gpt2data"), "--out", str(world / "full"), *gpt2_sets, *FAST]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and err.count("\n") == 1
    assert not list((world / "full" / "checkpoints").iterdir())
