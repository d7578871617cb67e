"""`gpt2lab plan`: will this model train on that GPU, how fast, for how long, at what cost, before you start.

Memory comes from gpt2lab/metrics/memory.py (the model it uses is described there), the optimizer's state from
its role table in gpt2lab/training/optim/, FLOPs from gpt2lab/metrics/flops.py, and time assumes a stated MFU
against the GPU's dense peak (gpt2lab/metrics/devices.py). The memory model is eager PyTorch's; a compiled run
(run.compile, on by default for long GPU runs) fuses elementwise work and saves less, so it is an upper bound then.
"""

from __future__ import annotations

import math

from ..errors import UserError
from ..metrics.devices import GPU, peak_tflops
from ..metrics.flops import flops_per_token
from ..metrics.memory import CONTEXT_OVERHEAD_GB, GB, largest_micro_batch, memory_plan
from ..model.gpt import GPTConfig
from ..model.shapes import model_shapes
from ..runtime import COMPILE_MIN_TOKENS_CUDA, COMPILE_MODES
from ..training.optim import state_bytes


def make_plan(config: GPTConfig, gpu: GPU, tokens: float, micro_batch: int, seq_len: int | None = None,
              precision: str = "auto", mfu: float = 0.4, price_per_hour: float | None = None,
              optimizer: str = "adamw", compile_mode: str = "auto") -> dict:
    seq_len = seq_len or config.block_size
    if not (math.isfinite(mfu) and 0 < mfu <= 1):
        raise UserError(f"--mfu must be in (0, 1], got {mfu}")
    if not 1 <= micro_batch <= 65536 or not (math.isfinite(tokens) and 0 < tokens <= 1e15):
        raise UserError("--micro-batch must be between 1 and 65536 and --tokens between 1 and 1e15")
    if price_per_hour is not None and not (math.isfinite(price_per_hour) and 0 <= price_per_hour <= 1e6):
        raise UserError(f"--price must be a finite, non-negative number of dollars per hour, got {price_per_hour}")
    compiled, compile_why = planned_compile(compile_mode, tokens)
    asked, precision = precision, planned_precision(gpu, precision)
    model = model_shapes(config)  # shapes only: no memory for a 1.5B-parameter model
    n_params, state = model.num_params(), state_bytes(model, optimizer)
    flops = flops_per_token(config, seq_len)
    mem = memory_plan(config, n_params, micro_batch, seq_len, precision, state)
    peak = peak_tflops(gpu, precision) * 1e12
    tokens_per_sec = mfu * peak / flops.training
    hours = tokens / tokens_per_sec / 3600
    budget = gpu.memory_gb - CONTEXT_OVERHEAD_GB
    gb = lambda b: round(b / GB, 3)  # noqa: E731
    return {
        "gpu": gpu.name, "gpu_memory_gb": gpu.memory_gb, "precision": precision, "precision_asked": asked, "peak_tflops": peak / 1e12,
        "parameters": n_params, "seq_len": seq_len, "micro_batch": micro_batch,
        "flops_per_token": flops.as_dict(),
        "memory_gb": {
            "weights": gb(mem.weights), "gradients": gb(mem.gradients), "optimizer": gb(mem.optimizer),
            "weight_casts": gb(mem.weight_casts), "activations": gb(mem.activations),
            "activations_checkpointed": gb(mem.activations_checkpointed),
            "total": gb(mem.total), "total_checkpointed": gb(mem.total_checkpointed),
            "cuda_context_reserve": CONTEXT_OVERHEAD_GB,
        },
        "fits": mem.total / GB <= budget,
        "fits_with_checkpointing": mem.total_checkpointed / GB <= budget,
        "largest_micro_batch": largest_micro_batch(config, n_params, seq_len, precision, gpu.memory_gb, False, state),
        "largest_micro_batch_checkpointed": largest_micro_batch(config, n_params, seq_len, precision, gpu.memory_gb,
                                                                True, state),
        "optimizer": optimizer, "compile": compiled, "compile_why": compile_why,
        "mfu": mfu, "tokens": tokens, "tokens_per_sec": tokens_per_sec, "hours": hours,
        "cost": hours * price_per_hour if price_per_hour is not None else None,
        "price_per_hour": price_per_hour,
    }


def planned_precision(gpu: GPU, precision: str) -> str:
    """run.precision=auto on a GPU, as the runtime picks it: bf16 where the card has bf16 tensor cores, else fp16
    with a grad scaler; any other choice stands (bf16 on a card without them is refused, with the fix)."""
    if precision != "auto":
        return precision
    return "bf16" if gpu.bf16 is not None else "fp16"


def planned_compile(mode: str, tokens: float) -> tuple[bool, str]:
    """Whether run.compile=MODE compiles a run of `tokens` on the planned GPU (every card plan knows is of capability
    7.0 or newer; a CUDA build of torch on Linux brings Triton), and why: what gpt2lab.runtime decides there."""
    if mode not in COMPILE_MODES:
        raise UserError(f"run.compile={mode!r} is not one of {', '.join(COMPILE_MODES)}")
    if mode != "auto":
        return mode == "on", f"run.compile={mode}"
    if tokens < COMPILE_MIN_TOKENS_CUDA:
        return False, f"run.compile=auto: under {COMPILE_MIN_TOKENS_CUDA:,} tokens the compile time is not earned back"
    return True, f"run.compile=auto: {COMPILE_MIN_TOKENS_CUDA:,} tokens or more on a GPU"


def format_plan(p: dict) -> str:
    m = p["memory_gb"]
    f = p["flops_per_token"]
    lines = [
        f"{p['parameters']:,} parameters on {p['gpu']} ({p['gpu_memory_gb']} GB, {p['peak_tflops']:.1f} dense {p['precision']} TFLOPS)"
        + (f"; precision auto: {p['precision']}" if p["precision_asked"] == "auto" else ""),
        f"FLOPs per token: {f['forward'] / 1e9:.3f} G forward, {f['training'] / 1e9:.3f} G forward+backward (context {p['seq_len']})",
        f"memory at micro-batch {p['micro_batch']} x {p['seq_len']}:",
        f"  weights {m['weights']:.2f} GB | gradients {m['gradients']:.2f} | optimizer ({p['optimizer']}) {m['optimizer']:.2f} "
        f"| 16-bit weight copies {m['weight_casts']:.2f}",
        f"  activations {m['activations']:.2f} GB ({m['activations_checkpointed']:.2f} with activation checkpointing)",
        f"  total {m['total']:.2f} GB ({m['total_checkpointed']:.2f} checkpointed) + ~{m['cuda_context_reserve']:.0f} GB CUDA context",
        f"fits: {'yes' if p['fits'] else 'no'}; with activation checkpointing: {'yes' if p['fits_with_checkpointing'] else 'no'}",
        f"largest micro-batch that fits: {p['largest_micro_batch']} ({p['largest_micro_batch_checkpointed']} with checkpointing)",
        f"torch.compile: {'on' if p['compile'] else 'off'} ({p['compile_why']})"
        + ("; the memory above is eager PyTorch's, an upper bound compiled" if p["compile"] else ""),
        f"at {p['mfu']:.0%} MFU: {p['tokens_per_sec']:,.0f} tokens/s; {p['tokens']:,.0f} tokens take {p['hours']:.1f} h",
    ]
    if p["cost"] is not None:
        lines.append(f"cost at ${p['price_per_hour']:.2f}/h: ${p['cost']:,.2f}")
    return "\n".join(lines)
