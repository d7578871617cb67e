"""DDP and FSDP2 through torchrun on the CPU (gloo): the same losses as one process with the same global
batch, resumption across world sizes, and a killed rank ending the job."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpt2lab.metrics.logger import read_metrics
from tests.helpers import MICRO_MODEL, make_data_dir

ROOT = Path(__file__).resolve().parents[1]
STEPS = 20
pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo is tested on Linux")]


def train_args(data, run, micro, *extra):
    sets = [a for s in MICRO_MODEL for a in ("--set", s)]
    return ["-m", "gpt2lab", "train", "--data", str(data), "--out", str(run), *sets, "--max-steps", str(STEPS),
            "--device", "cpu", "--micro-batch", str(micro), "--set", "run.batch_tokens=512", "--set", "schedule.warmup_steps=2",
            "--set", "optim.lr=1e-2", "--eval-every", "10", "--set", "eval.batches=none", "--set", "run.precision=fp32", *extra]


def single(args, **kw):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, **kw)


def torchrun(n, args, **kw):
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", *args],
                          capture_output=True, text=True, cwd=ROOT, **kw)


def by_step(run):
    return {r["step"]: r for r in read_metrics(run)}


def assert_same_run(a, b, steps, tol=1e-5):
    for s in steps:
        assert abs(a[s]["loss"] - b[s]["loss"]) <= tol, (s, a[s]["loss"], b[s]["loss"])
        if "val_loss" in a[s]:
            assert abs(a[s]["val_loss"] - b[s]["val_loss"]) <= tol, s


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One process, micro-batch 8 x 2 accumulation steps = 512 tokens per step."""
    base = tmp_path_factory.mktemp("dist")
    data = make_data_dir(base / "data")
    out = single(train_args(data, base / "single", 8, "--checkpoint-every", "10"))
    assert out.returncode == 0, out.stderr
    return base, data, by_step(base / "single")


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one(reference, strategy):
    base, data, expected = reference
    run = base / f"two-{strategy}"
    out = torchrun(2, train_args(data, run, 4, "--set", f"run.parallel={strategy}", "--checkpoint-every", "10"))
    assert out.returncode == 0, out.stderr[-3000:]
    got = by_step(run)
    assert sorted(got) == list(range(1, STEPS + 1))  # rank 0 alone wrote the metrics, once per step
    assert_same_run(expected, got, range(1, STEPS + 1))
    assert got[1]["tokens"] == expected[1]["tokens"] == 512
    if strategy == "fsdp":
        assert (run / "checkpoints" / "step_00000020" / "dcp").is_dir()
        assert (run / "checkpoints" / "step_00000020" / "model.safetensors").is_file()


@pytest.fixture(scope="module")
def two_process_runs(reference):
    """The two-process runs the resume tests start from (made here if test_two_processes_match_one did not)."""
    base, data, _ = reference
    for strategy in ("ddp", "fsdp"):
        run = base / f"two-{strategy}"
        if not (run / "checkpoints" / "step_00000010").is_dir():
            shutil.rmtree(run, ignore_errors=True)
            out = torchrun(2, train_args(data, run, 4, "--set", f"run.parallel={strategy}", "--checkpoint-every", "10"))
            assert out.returncode == 0, out.stderr[-3000:]
    return base


@pytest.mark.parametrize("strategy,resume_world", [("ddp", 1), ("fsdp", 1), ("ddp", 2)])
def test_resume_on_another_world_size(reference, two_process_runs, strategy, resume_world):
    base, data, expected = reference
    source = base / f"two-{strategy}"
    run = base / f"resume-{strategy}-{resume_world}"
    shutil.copytree(source, run)
    shutil.rmtree(run / "checkpoints" / "step_00000020")
    args = train_args(data, run, 8 // resume_world, "--set", f"run.parallel={strategy}", "--resume")
    out = single(args) if resume_world == 1 else torchrun(resume_world, args)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resumed from" in out.stdout
    assert_same_run(expected, by_step(run), range(11, STEPS + 1))


def _children(pid: int) -> list[int]:
    """The processes whose parent is pid (from /proc/PID/task/*/children)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(c) for c in task.read_text().split()]
        except OSError:
            continue
    return found


def _workers(root: int) -> list[int]:
    """torchrun's workers: descendants of `root`, the torchrun process this test started, and nothing else.
    Only these may ever be signalled: another user's gpt2lab on the machine is none of the test's business."""
    found, todo = [], [root]
    while todo:
        for child in _children(todo.pop()):
            found.append(child)
            todo.append(child)
    return [p for p in found if b"gpt2lab" in _cmdline(p)]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # it has just exited
        return b""


def _is_descendant(pid: int, root: int) -> bool:
    while pid > 1:
        if pid == root:
            return True
        stat = Path(f"/proc/{pid}/stat").read_text()
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return False


def test_only_our_own_processes_are_found(tmp_path):
    """An unrelated process named gpt2lab (another user's eval, say) is never among the workers to kill."""
    decoy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "gpt2lab", "eval"])
    ours = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                             "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', 'gpt2lab']); "
                             "time.sleep(60)"])
    try:
        deadline = time.time() + 10
        while time.time() < deadline and not _workers(ours.pid):
            time.sleep(0.1)
        found = _workers(ours.pid)
        assert len(found) == 1 and decoy.pid not in found and _is_descendant(found[0], ours.pid)
        assert _workers(decoy.pid) == [] and _workers(999_999_999) == []  # a PID that does not exist: nothing
    finally:
        for pid in _workers(ours.pid):  # the grandchild this test started, through `ours`
            os.kill(pid, signal.SIGKILL)
        for p in (decoy, ours):
            p.kill()
            p.wait()


def test_a_killed_rank_ends_the_job(tmp_path):
    data = make_data_dir(tmp_path / "data")
    args = train_args(data, tmp_path / "run", 4, "--max-steps", "100000")
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.time() + 120
    while time.time() < deadline and not (read_metrics(tmp_path / "run") or [{}])[-1].get("step", 0) >= 3:
        time.sleep(0.2)
    workers = _workers(proc.pid)
    assert len(workers) >= 2, workers
    assert all(_is_descendant(w, proc.pid) for w in workers)
    os.kill(max(workers), signal.SIGKILL)  # one rank dies mid-run
    killed_at = time.time()
    try:
        _, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the job hung after a rank died")
    assert proc.returncode != 0
    assert time.time() - killed_at < 90
    assert "Signal 9" in err or "SIGKILL" in err or "exitcode" in err, err[-2000:]
