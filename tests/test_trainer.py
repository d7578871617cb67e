import shutil

import pytest
import torch

from gpt2lab.errors import UserError
from gpt2lab.metrics.logger import read_metrics
from gpt2lab.model import GPT, GPTConfig
from gpt2lab.runtime import resolve_runtime
from gpt2lab.train.step import forward_backward
from tests.conftest import trainer as make_trainer
from tests.conftest import micro_config


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


@pytest.mark.parametrize("extra", [[], ["model.dropout=0.1", "run.batch_tokens=256"]])
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
        parts = r["data_time"] + r["forward_time"] + r["backward_time"] + r["optimizer_time"]
        assert 0 < parts <= r["step_time"] * 1.01
    assert records[-1]["elapsed"] >= sum(r["step_time"] for r in records) * 0.99
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
