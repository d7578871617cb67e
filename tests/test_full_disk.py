"""A real full disk: a small tmpfs mounted for the test (root only; skipped with the reason otherwise). Every write
path ends in one line, removes its temporary files and leaves the previous state intact, and the command run
again after freeing space continues. The command that meets the full disk runs as its own process (its exit code
and stderr are what a user sees); the set-up and the run after freeing space run in this one."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gpt2lab.checkpoint import complete_checkpoints
from gpt2lab.cli import main
from tests.helpers import MICRO_MODEL, make_data_dir
from tests.helpers import make_docs, write_jsonl

pytestmark = pytest.mark.slow  # multi-process or long: run by .ci/run, not the fast tier


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def free_bytes(path: Path) -> int:
    s = os.statvfs(path)
    return s.f_bavail * s.f_frsize


def fill(path: Path, leave: int) -> Path:
    filler = path / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free_bytes(path) - leave))
    return filler


def gpt2lab(*args):
    return subprocess.run([sys.executable, "-m", "gpt2lab", *args], capture_output=True, text=True, cwd=ROOT)


def leftovers(path: Path) -> list[str]:
    return [str(p) for p in path.rglob("*") if p.name.endswith((".tmp", ".partial")) or ".tmp" in p.name]


def test_a_checkpoint_that_does_not_fit(small_disk, tmp_path):
    data = make_data_dir(tmp_path / "data")
    run = small_disk / "run"
    sets = [a for s in MICRO_MODEL + ["log.tensorboard=false", "run.device=cpu", "checkpoint.every=2",
                                       "checkpoint.asynchronous=false", "checkpoint.keep_last=1"] for a in ("--set", s)]
    assert main(["train", "--data", str(data), "--out", str(run), "--max-steps", "2", *sets]) == 0  # in this process
    one = sum(p.stat().st_size for p in complete_checkpoints(run)[0].iterdir())
    filler = fill(small_disk, leave=one // 3)  # the next checkpoint cannot be written
    full = gpt2lab("train", "--out", str(run), "--resume", "--max-steps", "4", *sets)
    assert full.returncode == 2 and full.stderr.count("\n") == 1 and "Traceback" not in full.stderr, full.stderr
    assert "No space left on device" in full.stderr and "step_00000002" in full.stderr
    assert not leftovers(run) and [p.name for p in complete_checkpoints(run)] == ["step_00000002"]
    filler.unlink()  # space freed: the same command continues from the last good checkpoint
    assert main(["train", "--out", str(run), "--resume", "--max-steps", "4", *sets]) == 0
    assert [p.name for p in complete_checkpoints(run)] == ["step_00000004"]
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_shards_that_do_not_fit(small_disk, tmp_path, tokenizer_dir):
    src = write_jsonl(tmp_path / "docs.jsonl", make_docs(3000))  # ~190k tokens: ~380 kB of shards
    filler = fill(small_disk, leave=150_000)
    out = small_disk / "data"
    args = ["prepare", str(src), "--out", str(out), "--tokenizer", tokenizer_dir, "--shard-tokens", "20000", "--quiet"]
    full = gpt2lab(*args)
    assert full.returncode == 2 and full.stderr.count("\n") == 1 and "No space left on device" in full.stderr, full.stderr
    assert not out.exists() and not [p for p in small_disk.rglob("*.tmp")]  # only finished shards stay, to resume
    filler.unlink()
    again = gpt2lab(*args)
    assert again.returncode == 0, again.stderr
    whole = tmp_path / "whole"
    assert main([*args[:3], str(whole), *args[4:]]) == 0
    for split in ("train", "val"):
        a = sorted(p.read_bytes() for p in out.glob(f"{split}_*.bin"))
        assert a == sorted(p.read_bytes() for p in whole.glob(f"{split}_*.bin"))


def test_report_and_export_that_do_not_fit(small_disk, tmp_path):
    data = make_data_dir(tmp_path / "data")
    run = tmp_path / "run"
    sets = [a for s in MICRO_MODEL + ["run.device=cpu"] for a in ("--set", s)]
    assert main(["train", "--data", str(data), "--out", str(run), "--max-steps", "3", *sets]) == 0
    shutil.copytree(run, small_disk / "run")
    fill(small_disk, leave=2_000)
    report = gpt2lab("report", str(small_disk / "run"), "--no-overlap-check")
    assert report.returncode == 2 and report.stderr.count("\n") == 1 and "No space left" in report.stderr, report.stderr
    assert not leftovers(small_disk / "run")
    if __import__("importlib").util.find_spec("transformers"):
        export = gpt2lab("export", str(run), "--out", str(small_disk / "hf"))
        assert export.returncode == 2 and export.stderr.count("\n") == 1 and "No space left" in export.stderr, export.stderr
        assert not (small_disk / "hf").exists() and not list(small_disk.glob(".hf.partial"))
