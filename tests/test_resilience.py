"""Runs that survive: kills, signals, corrupt checkpoints, bad updates, full disks, out-of-memory."""

import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gpt2lab.errors import UserError
from gpt2lab.metrics.logger import read_metrics
from gpt2lab.runtime import Runtime
from tests.helpers import trainer as make_trainer
from gpt2lab.training.autobatch import find_micro_batch
from gpt2lab.checkpoint import complete_checkpoints
from tests.helpers import MICRO_MODEL, micro_config

pytestmark = pytest.mark.slow  # multi-process or long: run by .ci/run, not the fast tier


ROOT = Path(__file__).resolve().parents[1]
QUIET = dict(echo=lambda *_: None)
STEPS = 40


def train_command(data, run, *extra):
    sets = [a for s in MICRO_MODEL for a in ("--set", s)]
    return [sys.executable, "-m", "gpt2lab", "train", "--data", str(data), "--out", str(run), *sets,
            "--max-steps", str(STEPS), "--checkpoint-every", "2", "--device", "cpu", "--set", "schedule.warmup_steps=2",
            "--set", "run.micro_batch=4", "--set", "model.dropout=0.1", "--set", "optim.lr=1e-2",
            "--set", "checkpoint.keep_last=2", *extra]


def wait_for_step(run: Path, step: int, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        records = read_metrics(run)
        if records and records[-1]["step"] >= step:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    raise TimeoutError(f"the run did not reach step {step}")


def losses(run: Path) -> list[tuple[int, float, float]]:
    return [(r["step"], r["loss"], r["grad_norm"]) for r in read_metrics(run)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run, in a process of its own like the interrupted ones."""
    from tests.helpers import make_data_dir

    base = tmp_path_factory.mktemp("reference")
    data = make_data_dir(base / "data")
    subprocess.run(train_command(data, base / "run"), check=True, capture_output=True, cwd=ROOT)
    return data, losses(base / "run")


def test_kill_9_twice_then_resume_matches_the_uninterrupted_run(reference, tmp_path):
    data, expected = reference
    seed = int(os.environ.get("GPT2LAB_KILL_SEED", "2026"))  # repeatable; set GPT2LAB_KILL_SEED to try other points
    kills = sorted(random.Random(seed).sample(range(3, STEPS - 5), 2))
    run = tmp_path / "run"
    for kill_at in kills:  # kill -9 while training or while a checkpoint is being written in the background
        proc = subprocess.Popen(train_command(data, run, *(["--resume"] if run.exists() else [])),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
        wait_for_step(run, kill_at, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = subprocess.run(train_command(data, run, "--resume"), capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert losses(run) == expected, f"kill points {kills} (GPT2LAB_KILL_SEED={seed})"


def test_sigterm_saves_and_stops_cleanly(reference, tmp_path):
    data, expected = reference
    run = tmp_path / "run"
    proc = subprocess.Popen(train_command(data, run), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    wait_for_step(run, 7, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "stopped by SIGTERM" in out and "Traceback" not in err
    stopped_at = read_metrics(run)[-1]["step"]
    assert complete_checkpoints(run)[0].name == f"step_{stopped_at:08d}"  # the step it stopped at was saved
    subprocess.run(train_command(data, run, "--resume"), check=True, capture_output=True, cwd=ROOT)
    assert losses(run) == expected


def test_stop_at_pauses_with_exit_0_and_resume_finishes_the_run(reference, tmp_path):
    data, expected = reference
    run = tmp_path / "run"
    paused = subprocess.run(train_command(data, run, "--stop-at", "9"), capture_output=True, text=True, cwd=ROOT)
    assert paused.returncode == 0, paused.stderr
    assert "paused at step 9 of 40" in paused.stdout and read_metrics(run)[-1]["step"] == 9
    assert complete_checkpoints(run)[0].name == "step_00000009"
    subprocess.run(train_command(data, run, "--resume"), check=True, capture_output=True, cwd=ROOT)
    assert losses(run) == expected


def test_resume_skips_incomplete_and_corrupt_checkpoints(data_dir, tmp_path):
    cfg = micro_config(data_dir, "schedule.max_steps=10", "checkpoint.every=2", "checkpoint.keep_last=0")
    make_trainer(cfg, tmp_path / "full", **QUIET).fit()
    expected = losses(tmp_path / "full")
    run = tmp_path / "cut"
    shutil.copytree(tmp_path / "full", run)
    ckpts = run / "checkpoints"
    shutil.rmtree(ckpts / "step_00000010")
    (ckpts / "step_00000008" / "model.safetensors").write_bytes(b"\0" * 100)  # corrupt, though marked complete
    shutil.copytree(ckpts / "step_00000006", ckpts / ".step_00000009.tmp")  # a save killed half-way
    messages = []
    make_trainer(cfg, run, resume=True, echo=messages.append).fit()
    assert any("step_00000008 is corrupt" in m and "set aside as step_00000008.corrupt" in m for m in messages)
    assert (ckpts / "step_00000008.corrupt" / "CORRUPT.txt").is_file()
    assert any("resumed from" in m and "step_00000006" in m for m in messages)
    assert losses(run) == expected


def test_retention_keeps_the_last_k_and_every_nth(data_dir, tmp_path):
    cfg = micro_config(data_dir, "schedule.max_steps=12", "checkpoint.every=2", "checkpoint.keep_last=2", "checkpoint.keep_every=4")
    make_trainer(cfg, tmp_path / "run", **QUIET).fit()
    assert [p.name for p in complete_checkpoints(tmp_path / "run")] == [
        "step_00000012", "step_00000010", "step_00000008", "step_00000004"]


def test_async_and_sync_saves_write_the_same_checkpoint(data_dir, tmp_path):
    from safetensors.torch import load_file

    for mode in ("true", "false"):
        make_trainer(micro_config(data_dir, "schedule.max_steps=4", f"checkpoint.asynchronous={mode}"), tmp_path / mode, **QUIET).fit()
    a = load_file(tmp_path / "true" / "checkpoints" / "step_00000004" / "model.safetensors")
    b = load_file(tmp_path / "false" / "checkpoints" / "step_00000004" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Poison(torch.nn.Module):
    """Wraps the model; multiplies the loss by `factor` on the given (1-based) steps."""

    def __init__(self, trainer, steps, factor=float("nan")):
        super().__init__()
        self.trainer, self.steps, self.factor = trainer, set(steps), factor
        self.inner = trainer.model

    def forward(self, x, y, **kwargs):
        logits, loss = self.inner(x, y, **kwargs)
        if self.trainer.step + 1 in self.steps:
            loss = loss * self.factor
        return logits, loss


def test_a_nan_loss_skips_the_update(data_dir, tmp_path):
    trainer = make_trainer(micro_config(data_dir, "schedule.max_steps=6"), tmp_path / "run", **QUIET)
    trainer.compiled = Poison(trainer, {3})
    trainer.fit()
    records = read_metrics(tmp_path / "run")
    assert [r.get("skipped", False) for r in records] == [False, False, True, False, False, False]
    assert "non-finite loss" in records[2]["skip_reason"]
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_a_loss_spike_is_skipped(data_dir, tmp_path):
    trainer = make_trainer(micro_config(data_dir, "schedule.max_steps=30"), tmp_path / "run", **QUIET)
    trainer.compiled = Poison(trainer, {27}, factor=20.0)
    trainer.fit()
    records = read_metrics(tmp_path / "run")
    assert [r["step"] for r in records if r.get("skipped")] == [27]
    assert "loss spike" in records[26]["skip_reason"]


def test_bad_steps_in_a_row_roll_back_at_a_lower_lr(data_dir, tmp_path):
    cfg = micro_config(data_dir, "schedule.max_steps=12", "checkpoint.every=4", "guard.max_bad_steps=3",
                       "checkpoint.asynchronous=false")
    messages = []
    trainer = make_trainer(cfg, tmp_path / "run", echo=messages.append)
    poison = Poison(trainer, {6, 7, 8})
    trainer.compiled = poison

    def heal_after_rollback(original=trainer.recover):
        def recover(*args):
            original(*args)
            poison.steps.clear()  # the data after the rollback is fine
        return recover

    trainer.recover = heal_after_rollback()
    trainer.fit()
    assert any("rolled back to step_00000004" in m for m in messages)
    records = read_metrics(tmp_path / "run")
    assert [r["step"] for r in records] == list(range(1, 13))  # the bad stretch was replaced
    assert not any(r.get("skipped") for r in records)
    from gpt2lab.training.schedule import lr_at

    assert records[5]["lr"] == pytest.approx(0.5 * lr_at(5, cfg.optim.lr, cfg.schedule))  # step 6, replayed at half LR
    assert records[2]["lr"] == pytest.approx(lr_at(2, cfg.optim.lr, cfg.schedule))  # before the checkpoint: as it was
    assert trainer.lr_scale == 0.5


def test_bad_steps_without_a_checkpoint_stop_with_a_clear_message(data_dir, tmp_path):
    cfg = micro_config(data_dir, "schedule.max_steps=12", "guard.max_bad_steps=3")
    trainer = make_trainer(cfg, tmp_path / "run", **QUIET)
    trainer.compiled = Poison(trainer, {2, 3, 4})
    with pytest.raises(UserError, match="3 updates in a row were unsafe at step 4.*no healthy checkpoint to roll back to"):
        trainer.fit()


def test_fp16_grad_scaler_overflow_is_skipped_not_counted(data_dir, tmp_path, monkeypatch):
    import gpt2lab.training.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "resolve_runtime", lambda *a: Runtime(torch.device("cpu"), "fp16"))
    trainer = make_trainer(micro_config(data_dir, "schedule.max_steps=14", "guard.max_bad_steps=1"), tmp_path / "run", **QUIET)
    assert trainer.scaler is not None
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**24)  # so large that fp16 gradients overflow at first
    trainer.fit()
    records = read_metrics(tmp_path / "run")
    overflows = [r for r in records if r.get("skipped")]
    assert overflows and all("fp16 overflow" in r["skip_reason"] for r in overflows)
    assert trainer.scaler.get_scale() < 2.0**24
    assert not all(r.get("skipped") for r in records)


def test_full_disk_during_a_save(data_dir, tmp_path, monkeypatch):
    import gpt2lab.checkpoint as checkpoint_module

    cfg = micro_config(data_dir, "schedule.max_steps=6", "checkpoint.every=2")
    trainer = make_trainer(cfg, tmp_path / "run", **QUIET)
    real, calls = checkpoint_module.save_file, []

    def full_disk(*args, **kwargs):
        calls.append(1)
        if len(calls) >= 3:  # two files per checkpoint: the second checkpoint fails
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(checkpoint_module, "save_file", full_disk)
    with pytest.raises(UserError, match="No space left on device.*the last complete checkpoint is .*step_00000002"):
        trainer.fit()
    names = [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()]
    assert names == ["step_00000002"]  # no half-written folder


def test_a_background_save_that_fails_stops_the_run_at_once(data_dir, tmp_path, monkeypatch):
    """A full disk met by the (asynchronous) save of step 8 stops the run within a step or two, not at the next save
    (step 12): a real run would otherwise train a whole checkpoint interval (hours) that it could not save either."""
    import gpt2lab.checkpoint as checkpoint_module

    cfg = micro_config(data_dir, "schedule.max_steps=12", "checkpoint.every=4", "checkpoint.asynchronous=true")
    trainer = make_trainer(cfg, tmp_path / "run", **QUIET)
    real, calls = checkpoint_module.save_file, []

    def full_disk(*args, **kwargs):
        calls.append(1)
        if len(calls) >= 3:  # two files per checkpoint: the second checkpoint (step 8) fails
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(checkpoint_module, "save_file", full_disk)
    with pytest.raises(UserError, match="No space left on device.*step_00000004"):
        trainer.fit()
    steps = [r["step"] for r in read_metrics(tmp_path / "run")]
    assert steps[-1] <= 10, steps  # before this check ran every step, the error waited for the save of step 12
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step_00000004"]


def test_out_of_memory_names_the_remedies(data_dir, tmp_path, monkeypatch):
    trainer = make_trainer(micro_config(data_dir, "schedule.max_steps=3"), tmp_path / "run", **QUIET)

    def oom():
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(trainer, "train_step", oom)
    with pytest.raises(UserError, match="out of memory at micro-batch 4 x 32.*activation_checkpointing.*auto_batch") as err:
        trainer.fit()
    assert "\n" not in str(err.value)


def test_auto_batch_search():
    tried = []

    def fits(b):
        tried.append(b)
        return b <= 12

    assert find_micro_batch(fits, sequences_per_step=64, upper=100) == 8
    assert len(tried) <= 3
    assert find_micro_batch(lambda b: False, 64, 100) == 0
    assert find_micro_batch(lambda b: True, 48, 20) == 16


def test_activation_checkpointing_gives_the_same_gradients():
    from gpt2lab.model import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32, pos="rope", mlp="swiglu"))
    x = torch.randint(0, 64, (2, 16))
    grads = []
    for on in (False, True):
        model.zero_grad()
        model.activation_checkpointing = on
        model(x, x)[1].backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))


def test_rollback_never_lands_on_a_checkpoint_saved_after_a_divergent_update(data_dir, tmp_path):
    """Step 6's update blows the weights up (finite, but huge) and step 6 is saved; steps 7-9 are then non-finite.
    Judged by the loss before its update, step 6 looks healthy; judged by the step after it, it is not: the
    rollback returns to step 4."""
    cfg = micro_config(data_dir, "schedule.max_steps=14", "checkpoint.every=2", "guard.max_bad_steps=3",
                       "checkpoint.asynchronous=false", "checkpoint.keep_last=none")
    messages = []
    trainer = make_trainer(cfg, tmp_path / "run", echo=messages.append)
    real_step, state = trainer.optimizer.step, {"poisoned": False, "healed": False}

    def step(*args, **kwargs):
        out = real_step(*args, **kwargs)
        if trainer.step + 1 == 6 and not state["healed"]:  # the update of step 6 diverges
            with torch.no_grad():
                for p in trainer.model.parameters():
                    p.mul_(1e15)
            state["poisoned"] = True
        return out

    trainer.optimizer.step = step
    real_recover = trainer.recover

    def recover(*args):
        state["healed"] = True
        return real_recover(*args)

    trainer.recover = recover
    trainer.fit()
    assert state["poisoned"] and any("rolled back to step_00000004" in m for m in messages), messages
    records = read_metrics(tmp_path / "run")
    assert [r["step"] for r in records] == list(range(1, 15)) and not any(r.get("skipped") for r in records)
    import math

    assert all(math.isfinite(r["loss"]) and r["loss"] < 10 for r in records)


def test_resuming_past_corrupt_checkpoints_keeps_the_good_one(data_dir, tmp_path):
    """keep_last=2 after resuming past two corrupt newer checkpoints: they are set aside, never counted, and
    the checkpoint the run resumed from is still there once a newer one exists."""
    cfg = micro_config(data_dir, "schedule.max_steps=8", "checkpoint.every=2", "checkpoint.keep_last=none")
    make_trainer(cfg, tmp_path / "run", **QUIET).fit()
    ckpts = tmp_path / "run" / "checkpoints"
    for name in ("step_00000006", "step_00000008"):
        (ckpts / name / "model.safetensors").write_bytes(b"\0" * 64)
    shutil.rmtree(ckpts / "step_00000002")
    longer = micro_config(data_dir, "schedule.max_steps=10", "checkpoint.every=2", "checkpoint.keep_last=2",
                          "checkpoint.asynchronous=false")
    make_trainer(longer, tmp_path / "run", resume=True, **QUIET).fit()
    names = sorted(p.name for p in ckpts.iterdir())
    assert names == ["step_00000006.corrupt", "step_00000008.corrupt", "step_00000008", "step_00000010"] or \
        names == ["step_00000006.corrupt", "step_00000008", "step_00000008.corrupt", "step_00000010"]
    assert losses(tmp_path / "run")[-1][0] == 10


def test_a_resume_after_a_rollback_that_gave_up_continues_from_the_healthy_checkpoint(data_dir, tmp_path):
    """After the guard gave up, --resume picked the newest checkpoint (saved while going wrong), restored '3
    rollbacks used' and stopped again at once, even with a lower LR."""
    import gpt2lab.checkpoint as ckpt

    cfg = micro_config(data_dir, "schedule.max_steps=12", "checkpoint.every=2", "guard.max_bad_steps=2",
                       "checkpoint.asynchronous=false", "checkpoint.keep_last=none")
    trainer = make_trainer(cfg, tmp_path / "run", **QUIET)
    trainer.compiled = Poison(trainer, {7, 8})  # every pass goes wrong there: step 6's checkpoint is never trusted
    with pytest.raises(UserError, match="rollbacks did not help; .* set aside as step_N.diverged"):
        trainer.fit()
    assert list((tmp_path / "run" / "checkpoints").glob("*.diverged"))
    healthy = ckpt.latest_checkpoint(tmp_path / "run")
    messages = []
    lower = micro_config(data_dir, "schedule.max_steps=12", "checkpoint.every=2", "guard.max_bad_steps=2",
                         "optim.lr=5e-3")
    resumed = make_trainer(lower, tmp_path / "run", resume=True, echo=messages.append)
    assert resumed.step == ckpt.step_of(healthy) == 4 and resumed.rollbacks == 0
    resumed.fit()
    assert resumed.step == 12
