import json

import pytest
import torch

from gpt2lab.cli import main
from gpt2lab.metrics.devices import require_gpu
from gpt2lab.metrics.flops import flops_per_token
from gpt2lab.model import GPT, GPTConfig
from gpt2lab.commands.plan import format_plan, make_plan
from gpt2lab.errors import UserError
from gpt2lab.metrics.memory import GB, body_activation_bytes, head_bytes, largest_micro_batch, memory_plan

from tests.switches import MODERN, SWITCHES


def saved_activation_bytes(model, x, autocast_dtype):
    """What autograd really keeps for backward: unique storages, parameters excluded."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
            model(x, x)
    return sum(seen.values())


@pytest.mark.parametrize("switches", [s for s, _ in SWITCHES.values()], ids=list(SWITCHES))
@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_activation_estimate_matches_autograds_saved_tensors(switches, precision):
    config = GPTConfig(vocab_size=2048, block_size=128, n_layer=4, n_head=4, n_embd=128, **switches)
    model = GPT(config)
    x = torch.randint(0, 2048, (4, 128))
    measured = saved_activation_bytes(model, x, torch.bfloat16 if precision == "bf16" else None)
    casts = memory_plan(config, model.num_params(), 4, 128, precision).weight_casts
    estimate = 4 * 128 * (body_activation_bytes(config, precision) + head_bytes(config, precision, peak=False)) + casts
    tolerance = 0.15 if config.qk_norm else 0.02  # QK-norm's share depends on the RMSNorm kernel
    assert abs(estimate - measured) / measured < tolerance, (estimate, measured)


def test_plan_answers_the_rtx_4090_question():
    config = GPTConfig()
    gpu = require_gpu("NVIDIA GeForce RTX 4090")
    p = make_plan(config, gpu, tokens=10e9, micro_batch=16, precision="bf16", mfu=0.4, price_per_hour=0.5)
    assert p["parameters"] == 124_475_904
    assert p["memory_gb"]["weights"] == pytest.approx(124_475_904 * 4 / GB, abs=1e-3)
    assert p["memory_gb"]["optimizer"] == pytest.approx(2 * p["memory_gb"]["weights"], abs=2e-3)  # both rounded
    assert p["tokens_per_sec"] == pytest.approx(0.4 * 165.2e12 / flops_per_token(config, 1024).training)
    assert p["hours"] == pytest.approx(10e9 / p["tokens_per_sec"] / 3600)
    assert p["cost"] == pytest.approx(p["hours"] * 0.5)
    assert p["memory_gb"]["activations_checkpointed"] < p["memory_gb"]["activations"]


def test_plan_says_whether_the_run_compiles_as_the_runtime_decides(monkeypatch):
    """What plan says of torch.compile is what the runtime decides on a GPU with Triton (the CUDA double answers
    only what this machine cannot: that a Volta-or-newer GPU exists and that Triton imports); memory is eager's."""
    from gpt2lab import runtime
    from tests.cuda_double import install

    install(monkeypatch, dict(name="Tesla V100-SXM2-16GB", major=7, minor=0, total_memory=16 * 2**30,
                              multi_processor_count=80))  # the oldest capability plan knows
    monkeypatch.setattr(runtime, "triton_installed", lambda: True)
    gpu, config = require_gpu("v100"), GPTConfig()
    for mode, tokens in (("auto", 10e9), ("auto", 49e6), ("on", 1e6), ("off", 10e9)):
        p = make_plan(config, gpu, tokens=tokens, micro_batch=8, precision="fp16", compile_mode=mode)
        decided, _, _ = runtime._compile(mode, torch.device("cuda", 0), "fp16", int(tokens))
        assert p["compile"] is decided, (mode, tokens)
    assert "upper bound" in format_plan(make_plan(config, gpu, tokens=10e9, micro_batch=8, precision="fp16"))
    assert "upper bound" not in format_plan(make_plan(config, gpu, tokens=1e6, micro_batch=8, precision="fp16"))
    with pytest.raises(UserError, match="run.compile='yes' is not one of auto, on, off"):
        make_plan(config, gpu, tokens=1e9, micro_batch=8, compile_mode="yes")


def test_plan_picks_the_precision_a_run_would(capsys):
    """precision auto (a config's default): bf16 where the card has bf16 tensor cores, fp16 (the runtime's grad-
    scaled fallback) where it has not, instead of refusing to plan for a T4; bf16 asked for on a T4 is refused."""
    config = GPTConfig()
    t4 = make_plan(config, require_gpu("t4"), tokens=1e9, micro_batch=8)
    assert (t4["precision"], t4["precision_asked"], t4["peak_tflops"]) == ("fp16", "auto", 65.0)
    assert make_plan(config, require_gpu("rtx4090"), tokens=1e9, micro_batch=8)["precision"] == "bf16"
    with pytest.raises(UserError, match="no bf16 tensor cores; use precision fp16"):
        make_plan(config, require_gpu("t4"), tokens=1e9, micro_batch=8, precision="bf16")
    assert main(["plan", "--gpu", "t4", "--tokens", "1e9"]) == 0
    assert "precision auto: fp16" in capsys.readouterr().out
    assert main(["plan", "--gpu", "t4", "--tokens", "1e9", "--set", "run.precision=fp32", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["precision"] == "fp32"  # the config's own choice stands


def test_largest_micro_batch_is_the_boundary():
    config = GPTConfig()
    n = 124_475_904
    for memory in (6, 24, 80):
        b = largest_micro_batch(config, n, 1024, "bf16", memory)
        budget = (memory - 1.0) * GB
        assert b == 0 or memory_plan(config, n, b, 1024, "bf16").total <= budget
        assert memory_plan(config, n, b + 1, 1024, "bf16").total > budget


def test_plan_cli_json_and_text(capsys):
    assert main(["plan", "--preset", "gpt2-15m", "--gpu", "rtx4050-laptop", "--tokens", "1e9", "--micro-batch", "32",
                 "--json"]) == 0
    p = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert p["gpu"] == "NVIDIA GeForce RTX 4050 Laptop GPU" and p["seq_len"] == 256 and isinstance(p["fits"], bool)
    assert main(["plan", "--recipe", "gpt2-124m-modern-fineweb10b", "--gpu", "h100-sxm", "--tokens", "20e9", "--price", "2"]) == 0
    out = capsys.readouterr().out
    assert "largest micro-batch that fits" in out and "cost at $2.00/h" in out
    assert main(["plan", "--gpu", "tpu-v5", "--tokens", "1e9"]) == 2
    assert "unknown GPU" in capsys.readouterr().err


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_fixed_memory_terms_are_the_bytes_of_real_tensors(optimizer):
    """Weights, gradients and optimizer state as `plan` counts them, against the tensors a real step leaves."""
    from gpt2lab.training.optim import state_bytes
    from gpt2lab.config import OptimConfig
    from gpt2lab.training.optim import build_optimizer

    config = GPTConfig(vocab_size=512, block_size=32, n_layer=2, n_head=2, n_embd=64, tie_embeddings=False, **MODERN)
    model = GPT(config)
    opt = build_optimizer(model, OptimConfig(name=optimizer), torch.device("cpu"))
    x = torch.randint(0, 512, (2, 32))
    model(x, x)[1].backward()
    opt.step()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters())
    state = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values()
                if torch.is_tensor(t) and t.numel() > 1)  # moments and momentum, not the step counters
    plan = memory_plan(config, model.num_params(), 1, 32, "bf16", state_bytes(model, optimizer))
    assert plan.weights == weights and plan.gradients == grads and plan.optimizer == state


def test_the_trainers_memory_check_counts_the_chosen_optimizers_state(tmp_path):
    """Muon keeps one buffer per matrix parameter (4 bytes), AdamW two (8): the trainer's own memory check (and
    the auto-batch estimate and the out-of-memory advice) use the chosen optimizer's size, as `plan` does."""
    from gpt2lab.training.optim import state_bytes
    from tests.helpers import make_data_dir, micro_config, trainer

    data = make_data_dir(tmp_path / "data")
    sizes = {}
    for name in ("adamw", "muon"):
        t = trainer(micro_config(data, f"optim.name={name}"), tmp_path / name)
        sizes[name] = t.state_bytes
        assert t.state_bytes == state_bytes(t.model, name)
        t.lock.release()
    assert sizes["muon"] < sizes["adamw"]
