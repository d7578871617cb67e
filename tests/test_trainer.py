import math
import shutil

import pytest
import torch

from gpt2lab.commands.train import train_config
from gpt2lab.errors import UserError
from gpt2lab.metrics.logger import read_metrics
from gpt2lab.model import GPT, GPTConfig
from gpt2lab.runtime import cpu_bf16_native, resolve_runtime
from gpt2lab.training.step import forward_backward
from tests.helpers import trainer as make_trainer
from tests.helpers import micro_config


def test_accumulating_4_micro_batches_of_2_equals_one_batch_of_8():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32))
    x, y = torch.randint(0, 64, (8, 16)), torch.randint(0, 64, (8, 16))
    runtime = resolve_runtime("cpu", "fp32")

    def grads(micro):
        model.zero_grad()
        chunks = iter(zip(x.split(micro), y.split(micro)))
        loss = forward_backward(model, lambda: next(chunks), 8 // micro, runtime)
        return loss, {n: p.grad.clone() for n, p in model.named_parameters()}

    loss_big, big = grads(8)
    loss_small, small = grads(2)
    assert abs(loss_big.item() - loss_small.item()) < 1e-6
    for name in big:
        assert (big[name] - small[name]).abs().max().item() < 1e-5, name


def test_training_learns_and_logs(data_dir, tmp_path):
    cfg = micro_config(data_dir, "schedule.max_steps=30", "eval.every=10", "checkpoint.every=15")
    result = make_trainer(cfg, tmp_path / "run", echo=lambda *_: None).fit()
    records = read_metrics(tmp_path / "run")
    assert [r["step"] for r in records] == list(range(1, 31))
    assert {"step", "tokens", "loss", "lr", "grad_norm", "step_time", "tokens_per_sec"} <= records[0].keys()
    assert records[-1]["tokens"] == 30 * 4 * 32
    assert [r["step"] for r in records if "val_loss" in r] == [10, 20, 30]
    assert records[-1]["loss"] < records[0]["loss"] - 1.0
    assert result["val"]["loss"] == pytest.approx(records[-1]["val_loss"])
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["step_00000015", "step_00000030"]
    assert (tmp_path / "run" / "config.json").is_file() and (tmp_path / "run" / "device.json").is_file()


@pytest.mark.parametrize("extra", [[], ["model.dropout=0.1", "run.batch_tokens=256"],
                                   ["run.batch_tokens=512", "schedule.batch_ramp_steps=8"]])  # cut mid-ramp
def test_resume_gives_the_same_losses_as_an_uninterrupted_run(data_dir, tmp_path, extra):
    """Dropout makes the RNG state matter; batch_tokens=256 adds gradient accumulation (2 micro-steps)."""
    cfg = micro_config(data_dir, "schedule.max_steps=12", "checkpoint.every=5", *extra)
    make_trainer(cfg, tmp_path / "full", echo=lambda *_: None).fit()
    full = read_metrics(tmp_path / "full")

    shutil.copytree(tmp_path / "full", tmp_path / "cut")
    for name in ("step_00000010", "step_00000012"):  # as if the run had been killed at step 7
        shutil.rmtree(tmp_path / "cut" / "checkpoints" / name)
    make_trainer(cfg, tmp_path / "cut", resume=True, echo=lambda *_: None).fit()
    resumed = read_metrics(tmp_path / "cut")
    assert [r["step"] for r in resumed] == list(range(1, 13))  # the killed run's later records were replaced
    for a, b in zip(full, resumed):
        assert a["loss"] == b["loss"] and a["grad_norm"] == b["grad_norm"], a["step"]
    # the run's clocks continue from the checkpoint (step 5), they do not start again
    for clock in ("elapsed", "cpu_seconds"):
        values = [r[clock] for r in resumed]
        assert all(0 < x < y for x, y in zip(values, values[1:])), (clock, values)


def test_run_directory_guards(data_dir, tmp_path):
    cfg = micro_config(data_dir, "schedule.max_steps=2")
    with pytest.raises(UserError, match="does not exist; check --out"):
        make_trainer(cfg, tmp_path / "run", resume=True)
    (tmp_path / "run").mkdir()
    with pytest.raises(UserError, match="no complete checkpoint"):
        make_trainer(cfg, tmp_path / "run", resume=True)
    make_trainer(cfg, tmp_path / "run", echo=lambda *_: None).fit()
    with pytest.raises(UserError, match="pass --resume"):
        make_trainer(cfg, tmp_path / "run")


def test_data_and_model_must_agree(data_dir, tmp_path):
    with pytest.raises(UserError, match="model.vocab_size"):
        make_trainer(micro_config(data_dir, "model.vocab_size=32"), tmp_path / "run")
    with pytest.raises(UserError, match="--data"):
        make_trainer(micro_config(data_dir, "data.dir="), tmp_path / "run")
    with pytest.raises(UserError, match="not a multiple"):
        make_trainer(micro_config(data_dir, "run.batch_tokens=200"), tmp_path / "run")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path")
def test_cuda_requested_without_cuda_is_an_error_not_a_fallback(data_dir, tmp_path):
    with pytest.raises(UserError, match="--device cpu"):
        make_trainer(micro_config(data_dir, "run.device=cuda"), tmp_path / "run")


def test_mfu_breakdown_memory_and_profile(data_dir, tmp_path):
    from gpt2lab.metrics.flops import flops_per_token

    cfg = micro_config(data_dir, "schedule.max_steps=6", "run.peak_tflops=2", "log.every=1", "log.profile_steps=2")
    make_trainer(cfg, tmp_path / "run", echo=lambda *_: None).fit()
    records = read_metrics(tmp_path / "run")
    per_token = flops_per_token(cfg.model, cfg.seq_len).training
    for r in records:
        assert r["mfu"] == pytest.approx(r["tokens_per_sec"] * per_token / 2e12)
        assert r["tokens_per_sec"] == pytest.approx(r["tokens"] / r["step"] / r["step_time"])
        assert all(r[f"{p}_time"] >= 0 for p in ("data", "forward", "backward", "optimizer"))
    assert (tmp_path / "run" / "profile" / "trace.json").stat().st_size > 0
    assert "aten::" in (tmp_path / "run" / "profile" / "summary.txt").read_text()
    import json

    device = json.loads((tmp_path / "run" / "device.json").read_text())
    assert device["flops_per_token"]["training"] == per_token and device["peak_source"] == "run.peak_tflops"


def test_tensorboard_events_are_written(data_dir, tmp_path):
    pytest.importorskip("tensorboard")
    make_trainer(micro_config(data_dir, "schedule.max_steps=3"), tmp_path / "run", echo=lambda *_: None).fit()
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


def test_wandb_offline(data_dir, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    make_trainer(micro_config(data_dir, "schedule.max_steps=2", "log.wandb_project=gpt2lab-test"), tmp_path / "run",
            echo=lambda *_: None).fit()
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))


def test_clipping_is_what_the_optimizer_sees(data_dir, tmp_path):
    """With optim.grad_clip=0.01 the gradients reaching optimizer.step have a global norm of 0.01 (and the
    logged norm is the one before clipping)."""
    t = make_trainer(micro_config(data_dir, "schedule.max_steps=3", "optim.grad_clip=0.01"), tmp_path / "run",
                     echo=lambda *_: None)
    seen, real_step = [], t.optimizer.step

    def step(*args, **kwargs):
        grads = [p.grad for g in t.optimizer.param_groups for p in g["params"] if p.grad is not None]
        seen.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())
        return real_step(*args, **kwargs)

    t.optimizer.step = step
    t.fit()
    assert all(abs(n - 0.01) < 1e-4 for n in seen), seen
    assert all(r["grad_norm"] > 0.05 for r in read_metrics(tmp_path / "run"))


def test_a_restart_before_the_first_checkpoint_replaces_the_metrics(data_dir, tmp_path):
    cfg = micro_config(data_dir, "schedule.max_steps=3")
    make_trainer(cfg, tmp_path / "run", echo=lambda *_: None).fit()
    import shutil

    shutil.rmtree(tmp_path / "run" / "checkpoints")  # as if killed before its first checkpoint
    messages = []
    make_trainer(cfg, tmp_path / "run", echo=messages.append).fit()
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [1, 2, 3]  # not 1, 2, 3, 1, 2, 3
    assert any("starting over" in m for m in messages)


def test_warmup_follows_the_run_length_unless_set(data_dir):
    cfg = micro_config(data_dir, "schedule.max_steps=60", "schedule.warmup_steps=none")
    assert cfg.schedule.warmup_steps == 6 and any("warmup_steps=6" in n for n in cfg.notes)
    assert micro_config(data_dir, "schedule.max_steps=5000", "schedule.warmup_steps=none").schedule.warmup_steps == 100
    with pytest.raises(UserError, match="warmup_steps=100 must be between 0 and max_steps=60"):
        micro_config(data_dir, "schedule.max_steps=60", "schedule.warmup_steps=100")


def test_resume_names_the_real_cause(data_dir, tmp_path, capsys):
    from gpt2lab.cli import main

    cfg = micro_config(data_dir, "schedule.max_steps=4", "checkpoint.every=2")
    make_trainer(cfg, tmp_path / "run", echo=lambda *_: None).fit()
    assert main(["train", "--out", str(tmp_path / "rnu"), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "the run folder" in err and "does not exist" in err and "--data" not in err
    assert main(["train", "--out", str(tmp_path / "run"), "--resume", "--preset", "tiny"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "2 layers x 128 wide" in err and "2 layers x 32 wide" in err and "corrupt" not in err


def test_a_schedule_changed_on_resume_is_said_and_marked(data_dir, tmp_path):
    cfg = micro_config(data_dir, "schedule.max_steps=6", "checkpoint.every=3")
    make_trainer(cfg, tmp_path / "run", echo=lambda *_: None).fit()
    longer = micro_config(data_dir, "schedule.max_steps=10", "checkpoint.every=3")
    messages = []
    make_trainer(longer, tmp_path / "run", resume=True, echo=messages.append).fit()
    assert any("schedule.max_steps 6 -> 10" in m and "from step 7" in m for m in messages)
    records = read_metrics(tmp_path / "run")
    assert [r["step"] for r in records if r.get("schedule_change")] == [7]
    from gpt2lab.report import diagnose

    assert "schedule-changed" in [f.code for f in diagnose(records, longer.to_dict(), {})]


def test_a_second_trainer_on_the_same_folder_is_refused(data_dir, tmp_path):
    cfg = micro_config(data_dir, "schedule.max_steps=2")
    first = make_trainer(cfg, tmp_path / "run", echo=lambda *_: None)
    with pytest.raises(UserError, match="is in use by gpt2lab process"):
        make_trainer(cfg, tmp_path / "run", echo=lambda *_: None)
    first.fit()  # releases its lock at the end
    make_trainer(cfg, tmp_path / "other", echo=lambda *_: None).fit()


@pytest.mark.parametrize("extra", [["optim.name=muon", "optim.matrix_lr=0.02"], ["schedule.decay=wsd", "model.dropout=0.1"],
                                   ["optim.name=muon", "optim.muon.momentum_warmup_steps=8"]])  # resumed mid-ramp
def test_resume_is_exact_with_muon_and_wsd(data_dir, tmp_path, extra):
    cfg = micro_config(data_dir, "schedule.max_steps=10", "checkpoint.every=4", "checkpoint.keep_last=none", *extra)
    make_trainer(cfg, tmp_path / "full", echo=lambda *_: None).fit()
    full = read_metrics(tmp_path / "full")
    shutil.copytree(tmp_path / "full", tmp_path / "cut")
    for name in ("step_00000008", "step_00000010"):
        shutil.rmtree(tmp_path / "cut" / "checkpoints" / name)
    make_trainer(cfg, tmp_path / "cut", resume=True, echo=lambda *_: None).fit()
    resumed = read_metrics(tmp_path / "cut")
    assert [(r["loss"], r["grad_norm"], r["lr"]) for r in resumed] == [(r["loss"], r["grad_norm"], r["lr"]) for r in full]


def test_a_run_written_by_gpt2lab_01_resumes_as_it_would_have_continued(tmp_path):
    """tests/fixtures/v0_run was written by commit 162e38f (pickled state, one run section, positional optimizer
    state): resumed by today's code it continues with the old code's uninterrupted losses."""
    import json
    from pathlib import Path

    from gpt2lab.cli import main

    fixture = Path(__file__).parent / "fixtures" / "v0_run"
    shutil.copytree(fixture, tmp_path / "v0")
    expected = {r["step"]: r for r in json.loads((fixture / "expected.json").read_text())["steps"]}
    assert main(["train", "--out", str(tmp_path / "v0" / "run"), "--resume", "--data", str(tmp_path / "v0" / "data"),
                 "--set", "run.precision=fp32", "--set", "run.loss_chunk=100000"]) == 0
    got = {r["step"]: r for r in read_metrics(tmp_path / "v0" / "run")}
    assert sorted(got) == list(range(1, 9))
    for step in range(5, 9):
        assert abs(got[step]["loss"] - expected[step]["loss"]) < 1e-5, step
        assert got[step]["lr"] == pytest.approx(expected[step]["lr"])
    saved = json.loads((tmp_path / "v0" / "run" / "config.json").read_text())
    assert saved["checkpoint"]["every"] == 4 and "checkpoint_every" not in saved["run"]  # rewritten in today's layout


@pytest.mark.skipif(not cpu_bf16_native()[0],
                    reason="this CPU has no native bf16 (gpt2lab refuses bf16 on it)")
def test_bf16_autocast_and_fp32_reach_the_same_val_loss(data_dir, tmp_path):
    """The tiny preset (context 64, vocabulary 512) trained 30 steps in each precision from one seed: bf16 autocast
    (the CPU default where the CPU has native bf16) keeps the loss and the optimizer in fp32, so the two val losses
    agree within 1%."""
    from gpt2lab.config import build_config

    losses = {}
    for precision in ("bf16", "fp32"):
        sets = [f"data.dir={data_dir}", "run.device=cpu", f"run.precision={precision}", "run.compile=off",
                "run.micro_batch=2", "model.block_size=64", "model.vocab_size=512", "schedule.max_steps=30",
                "schedule.warmup_steps=3", "optim.lr=3e-3", "eval.every=none", "eval.batches=4", "log.every=none",
                "checkpoint.every=none"]
        cfg = build_config(preset="tiny", sets=sets)
        result = make_trainer(cfg, tmp_path / precision, echo=lambda *_: None).fit()
        losses[precision] = result["val"]["loss"]
    assert losses["fp32"] < 0.5 * math.log(512)  # learned well past the uniform loss, so agreement means something
    assert abs(losses["bf16"] - losses["fp32"]) / losses["fp32"] < 0.01, losses


def test_a_run_resumed_from_another_folder_finds_its_data_or_names_data(data_dir, tmp_path, monkeypatch):
    """Issue 27 item 7: data.dir was stored relative; a resume from another working folder then advised re-running
    prepare instead of passing --data."""
    import json
    import shutil

    from gpt2lab.commands.train import train
    from gpt2lab.errors import UserError
    from tests.helpers import MICRO_MODEL

    monkeypatch.chdir(data_dir.parent)
    sets = [*MICRO_MODEL, "run.device=cpu", "run.precision=fp32", "schedule.max_steps=2", "checkpoint.every=2",
            "log.every=none"]
    train(str(tmp_path / "run"), sets=sets, flags={"data": {"dir": "data"}}, echo=lambda *_: None)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"]["dir"] == str(data_dir)
    monkeypatch.chdir(tmp_path)  # elsewhere
    train(str(tmp_path / "run"), resume=True, sets=["schedule.max_steps=4"], echo=lambda *_: None)
    shutil.move(data_dir, tmp_path / "moved")
    with pytest.raises(UserError, match="pass --data with the folder"):
        train(str(tmp_path / "run"), resume=True, sets=["schedule.max_steps=6"], echo=lambda *_: None)


def test_threads_are_set_and_a_shared_cpu_is_named(data_dir, tmp_path, monkeypatch):
    """Issue 27 item 4: with 2 threads on a busy machine a step took 10x one thread's, silently."""
    import gpt2lab.metrics.steal as steal
    import torch

    readings = iter([(1000, 2000), (1000, 4000)])  # every tick of the run's time busy, none of it this process's
    monkeypatch.setattr(steal, "idle_ticks", lambda path=None, cpus=None: next(readings, (1000, 4000)))
    monkeypatch.setattr(steal, "cpu_ticks", lambda path=None: None)
    before = torch.get_num_threads()
    messages = []
    try:
        make_trainer(micro_config(data_dir, "schedule.max_steps=12", "run.threads=1", "run.peak_tflops=1"), tmp_path / "run",
                echo=messages.append).fit()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert any("other processes used" in m and "with 1 thread:" in m and "taskset -c" in m for m in messages)


def test_only_the_cores_a_run_may_use_are_watched(tmp_path):
    """A run pinned to one core is watched on that core's /proc/stat line, and a neighbour on another core is no
    contention: others count only beyond the cores this run's threads leave them."""
    from gpt2lab.metrics.steal import idle_ticks
    from gpt2lab.training.loop import contention

    stat = tmp_path / "stat"
    stat.write_text("cpu  10 0 10 70 10 0 0 0 0 0\ncpu0 5 0 5 30 10 0 0 0 0 0\ncpu1 5 0 5 40 0 0 0 0 0 0\nintr 1\n")
    assert idle_ticks(stat) == (80, 100) and idle_ticks(stat, cpus={1}) == (40, 50)
    assert idle_ticks(stat, cpus={0, 1}) == (80, 100) and idle_ticks(stat, cpus={7}) is None
    assert contention(None, 0.5, cores=2, threads=1) is None  # the neighbour had the other core
    assert contention(None, 0.77, cores=2, threads=1).startswith("other processes used 77% of the 2 CPUs")
    assert contention(None, 0.3, cores=1, threads=1) == "other processes used 30% of the 1 CPU this run may use"
    assert contention(None, 0.1, cores=1, threads=1) is None
    assert contention(None, 0.3, cores=2, threads=2) and contention(None, 0.2, cores=2, threads=2) is None
    assert contention(0.12, None, cores=2, threads=2) == "the hypervisor took 12% of the CPU"


def test_deterministic_runs_match_bit_for_bit(data_dir, tmp_path):
    """Issue 27 item 8: two identical fresh runs (compile on, bf16) differed from step 3 on; run.deterministic
    turns compile off and uses deterministic kernels, and two runs then agree to the last bit."""
    import torch

    before = torch.are_deterministic_algorithms_enabled()
    try:
        losses = []
        for name in ("a", "b"):
            cfg = micro_config(data_dir, "schedule.max_steps=6", "run.deterministic=true", "run.compile=on",
                               "run.precision=auto")
            t = make_trainer(cfg, tmp_path / name, echo=lambda *_: None)
            assert not t.runtime.compile and "deterministic" in t.runtime.compile_why
            t.fit()
            losses.append([r["loss"] for r in read_metrics(tmp_path / name)])
        assert losses[0] == losses[1]
    finally:
        torch.use_deterministic_algorithms(before)


def test_compiling_is_announced_before_the_first_step(data_dir, tmp_path):
    """Issue 27 item 6: nothing was printed for 99-116 s while the model compiled."""
    messages = []
    t = make_trainer(micro_config(data_dir, "schedule.max_steps=3", "run.compile=on"), tmp_path / "run",
                     echo=messages.append)
    assert t.runtime.compile
    t.compiled = t.wrapped  # the announcement is what is tested here, not inductor's work
    t.fit()
    first_step = next(i for i, m in enumerate(messages) if m.startswith("step"))
    assert any("compiling the model" in m for m in messages[:first_step])
    assert any(m.startswith("compile: about") for m in messages)


def test_a_pause_at_a_step_saves_there_and_resume_goes_on_as_if_uninterrupted(data_dir, tmp_path):
    """run.stop_at_step (--stop-at) pauses after that step with a checkpoint; --resume (no pause given) trains on
    to the schedule's end, and the losses are the uninterrupted run's."""
    cfg = micro_config(data_dir, "schedule.max_steps=12", "checkpoint.every=5", "checkpoint.keep_last=none")
    make_trainer(cfg, tmp_path / "full", echo=lambda *_: None).fit()
    full = read_metrics(tmp_path / "full")

    said = []
    paused = make_trainer(micro_config(data_dir, "schedule.max_steps=12", "checkpoint.every=5",
                                       "checkpoint.keep_last=none", "run.stop_at_step=7"),
                          tmp_path / "cut", echo=said.append).fit()
    assert paused["stopped_by"] == "stop_at_step" and paused["step"] == 7
    assert any("paused at step 7 of 12" in s for s in said), said
    assert sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir()) == ["step_00000005", "step_00000007"]
    assert read_metrics(tmp_path / "cut")[-1]["step"] == 7
    # the saved config holds the pause; a resume without one drops it and goes to the end
    resumed_cfg = train_config(str(tmp_path / "cut"), resume=True, echo=lambda *_: None)
    assert resumed_cfg.run.stop_at_step is None
    done = make_trainer(resumed_cfg, tmp_path / "cut", resume=True, echo=lambda *_: None).fit()
    assert done["stopped_by"] is None and done["step"] == 12
    assert [(r["loss"], r["grad_norm"], r["lr"]) for r in read_metrics(tmp_path / "cut")] == \
        [(r["loss"], r["grad_norm"], r["lr"]) for r in full]


def test_a_checkpoint_replayed_in_another_folder_to_a_pause_retraces_the_run(data_dir, tmp_path):
    """What the quality lab does to resolve a crossing between two kept checkpoints: one checkpoint, alone in a
    new folder, resumed with denser checkpoints and a pause, gives the same steps as the original run."""
    sets = ["schedule.max_steps=12", "checkpoint.keep_last=none", "model.dropout=0.1"]
    make_trainer(micro_config(data_dir, *sets, "checkpoint.every=4"), tmp_path / "full", echo=lambda *_: None).fit()
    full = {r["step"]: r for r in read_metrics(tmp_path / "full")}
    replay = tmp_path / "replay"
    shutil.copytree(tmp_path / "full" / "checkpoints" / "step_00000004", replay / "checkpoints" / "step_00000004")
    cfg = micro_config(data_dir, *sets, "checkpoint.every=1", "run.stop_at_step=8")
    make_trainer(cfg, replay, resume=True, echo=lambda *_: None).fit()
    again = read_metrics(replay)
    assert [r["step"] for r in again] == [5, 6, 7, 8]
    assert [(r["loss"], r["grad_norm"]) for r in again] == [(full[s]["loss"], full[s]["grad_norm"]) for s in (5, 6, 7, 8)]
    assert sorted(p.name for p in (replay / "checkpoints").iterdir()) == [f"step_{s:08d}" for s in range(4, 9)]


def test_a_pause_at_or_before_the_checkpoint_trains_nothing(data_dir, tmp_path):
    cfg = micro_config(data_dir, "schedule.max_steps=6", "checkpoint.every=3", "checkpoint.keep_last=none")
    make_trainer(cfg, tmp_path / "run", echo=lambda *_: None).fit()
    said = []
    again = micro_config(data_dir, "schedule.max_steps=9", "checkpoint.every=3", "checkpoint.keep_last=none",
                         "run.stop_at_step=4")
    result = make_trainer(again, tmp_path / "run", resume=True, echo=said.append).fit()
    assert result["step"] == 6 and read_metrics(tmp_path / "run")[-1]["step"] == 6
    assert any("at or past run.stop_at_step=4" in s for s in said), said


def test_a_run_on_shards_not_much_longer_than_a_window_says_how_much_it_never_reads(tmp_path):
    from tests.helpers import make_data_dir

    said = []
    short = make_data_dir(tmp_path / "short", shard_tokens=40)  # a window is 33 tokens: 7 of every 40 unread
    make_trainer(micro_config(short, "schedule.max_steps=2"), tmp_path / "run", echo=said.append).fit()
    warned = [line for line in said if "--shard-tokens" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: windows of 33 tokens reach only 82% of the train split")
    said.clear()
    make_trainer(micro_config(make_data_dir(tmp_path / "long"), "schedule.max_steps=2"), tmp_path / "run2",
                 echo=said.append).fit()
    assert said and not [line for line in said if "--shard-tokens" in line]


def test_the_trainer_ramps_muons_momentum_step_by_step(data_dir, tmp_path):
    """The trainer announces every step to the optimizer: after 3 of 20 warmup steps the matrices' momentum is the
    one of the third step (index 2), 0.85 + 0.10 * 2 / 20, not the 0.95 it was built with."""
    cfg = micro_config(data_dir, "schedule.max_steps=3", "optim.name=muon", "optim.muon.momentum_warmup_steps=20")
    trainer = make_trainer(cfg, tmp_path / "run", echo=lambda *_: None)
    trainer.fit()
    assert [g["momentum"] for g in trainer.optimizer.param_groups if g["use_muon"]] == pytest.approx([0.86])
