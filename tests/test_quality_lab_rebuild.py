"""`quality_lab.py rebuild`: a restored run (records, no checkpoints) trained again for its final checkpoint, which
moves into the run's folder only when every loss of the rebuild equals the records'; refused up front where the
run cannot repeat bit for bit (another processor, more than one thread). Training the lab's model for 512 steps
is out of a test's reach: gpt2lab_train is replaced by one that writes what a training run leaves (its records
and a real checkpoint); the records and checkpoints are gpt2lab's own formats."""

import json
import subprocess
import sys

import pytest

from bench import lab
from bench.lab import rebuild as rebuilding
from tests.lab_records import STEPS, micro_checkpoint, write_run


def restored_run(work, processor=None, threads=1):
    """A finished 1M run whose records alone are here (as `restore` leaves it), trained on `processor` (name,
    bf16 units; this machine's when None)."""
    from gpt2lab.runtime import cpu_bf16_native, cpu_name

    run = write_run(work, "speedrun-cpu", 1337, lambda s: 6 - 4 * s / STEPS, {STEPS: 4.0}, every=1, threads=threads)
    name, bf16 = processor or (cpu_name(), cpu_bf16_native()[1])
    (run / "device.json").write_text(json.dumps({"type": "cpu", "name": name, "bf16": bf16, "threads": threads}))
    return run


def trainer(calls, run, changed_step=None):
    """gpt2lab_train as far as a rebuild reads it: the run's records again (one loss changed at `changed_step`),
    then its final checkpoint."""
    def train(work, out, sets, cpus, threads, resume, log_name=None):
        calls.append({"out": out, "threads": threads, "resume": resume, "cpus": cpus})
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        for r in records:
            if r["step"] == changed_step:
                r["loss"] += 1e-6  # the last bits of a float32 loss: another processor's kernels
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        micro_checkpoint(out, STEPS)
    return train


@pytest.fixture
def lab_data(monkeypatch):
    monkeypatch.setattr(lab.data, "prepare_data", lambda w: (w / "data", w / "scoring"))


def test_a_rebuild_that_repeats_the_records_gives_the_run_its_final_checkpoint(tmp_path, monkeypatch, lab_data):
    from gpt2lab.checkpoint import holds_training_state

    run = restored_run(tmp_path)
    before = (run / "metrics.jsonl").read_text()
    calls = []
    monkeypatch.setattr(rebuilding, "gpt2lab_train", trainer(calls, run))
    final = rebuilding.rebuild(tmp_path, run, cpus="1")
    assert final == run / "checkpoints" / f"step_{STEPS:08d}" and holds_training_state(final)
    assert calls == [{"out": tmp_path / "rebuilds" / run.name, "threads": 1, "resume": False, "cpus": "1"}]
    assert not (tmp_path / "rebuilds" / run.name).exists()  # moved, not copied
    assert (run / "metrics.jsonl").read_text() == before  # the records (their clocks) stay as measured
    assert lab.checkpoints(run)[-1] == (STEPS, final)
    assert rebuilding.rebuild(tmp_path, run, cpus="1") == final and len(calls) == 1  # nothing trains twice


def test_a_rebuild_that_differs_in_one_loss_is_another_run_and_gives_no_checkpoint(tmp_path, monkeypatch, lab_data):
    run = restored_run(tmp_path)
    calls = []
    monkeypatch.setattr(rebuilding, "gpt2lab_train", trainer(calls, run, changed_step=300))
    with pytest.raises(rebuilding.RebuildError, match="another run .*step 300's loss"):
        rebuilding.rebuild(tmp_path, run, cpus="1")
    assert not (run / "checkpoints").exists() and lab.checkpoints(run) == [
        (STEPS, run / "checkpoints" / f"step_{STEPS:08d}")]  # the cached score alone, as before
    assert (tmp_path / "rebuilds" / run.name / "checkpoints").is_dir()  # left to be looked at
    # an evaluation's loss, and a record the rebuild lacks, are differences too
    rebuilt = tmp_path / "rebuilds" / run.name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    records[99]["val_loss"] += 1e-6
    (rebuilt / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert rebuilding.first_difference(run, rebuilt).startswith("step 100's val_loss")
    records = (run / "metrics.jsonl").read_text().splitlines()
    (rebuilt / "metrics.jsonl").write_text("\n".join(records[:10] + records[11:]) + "\n")
    assert rebuilding.first_difference(run, rebuilt) == "step 11 is missing from the rebuild"


def test_a_stopped_rebuild_resumes_from_its_own_checkpoints(tmp_path, monkeypatch, lab_data):
    run = restored_run(tmp_path)
    micro_checkpoint(tmp_path / "rebuilds" / run.name, 256)  # where it stopped
    calls = []
    monkeypatch.setattr(rebuilding, "gpt2lab_train", trainer(calls, run))
    rebuilding.rebuild(tmp_path, run, cpus="1")
    assert [c["resume"] for c in calls] == [True]


@pytest.mark.parametrize("processor, threads, cpus, refusal", [
    (("Intel(R) Xeon(R) Processor", "amx_bf16"), 1, "1", "trained on Intel.*would not repeat"),
    (None, 2, "0,1", "trained on 2 thread"),
    (None, 1, "0,1", "--cpus '0,1' gives 2"),
])
def test_a_run_that_cannot_repeat_here_is_refused_before_anything_trains(tmp_path, monkeypatch, processor, threads,
                                                                         cpus, refusal):
    run = restored_run(tmp_path, processor, threads)
    calls = []
    monkeypatch.setattr(rebuilding, "gpt2lab_train", trainer(calls, run))
    with pytest.raises(rebuilding.RebuildError, match=refusal):
        rebuilding.rebuild(tmp_path, run, cpus=cpus)
    assert calls == []


def test_the_command_checks_every_run_before_training_any(tmp_path):
    """One run from another processor among those named: one line, exit 2, nothing trained (no rebuilds folder);
    an unfinished run or no run at all, the same."""
    restored_run(tmp_path)
    other = write_run(tmp_path, "speedrun-cpu", 1338, lambda s: 6 - 4 * s / STEPS, {STEPS: 4.0}, device="Elsewhere")
    options = ["--work", str(tmp_path), "--cpus", "1"]
    command = [sys.executable, "bench/quality_lab.py", "rebuild"]
    done = subprocess.run(command + ["speedrun-cpu-1M-seed1337", other.name] + options, capture_output=True,
                          text=True, cwd=lab.ROOT)
    assert done.returncode == 2 and "trained on Elsewhere" in done.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "rebuilds").exists()
    (other / "metrics.jsonl").write_text(json.dumps({"step": 16, "loss": 6.0}) + "\n")
    done = subprocess.run(command + [other.name] + options, capture_output=True, text=True, cwd=lab.ROOT)
    assert done.returncode == 2 and "has not finished" in done.stderr
    done = subprocess.run(command + options, capture_output=True, text=True, cwd=lab.ROOT)
    assert done.returncode == 2 and "name the runs to rebuild" in done.stderr
