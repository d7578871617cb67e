"""`gpt2lab plan`: will this model train on that GPU, how fast, for how long, at what cost.

Memory, for training with fp32 weights and AdamW (what gpt2lab does), in eager mode:
  weights 4 N, gradients 4 N, AdamW moments 8 N bytes, plus a 16-bit copy of the weights (2 N) under autocast;
  activations saved for backward, per token, for each layer (d = width, h = MLP width, a = 2 bytes under
  bf16/fp16 autocast, 4 in fp32; norms and the residual stream stay fp32):
    two norms            LayerNorm: 4d (fp32 input) + a*d (the next matmul's input); RMSNorm: + 4d (its output)
    attention            3d*a (the q|k|v buffer) + d*a (output); RoPE: + 2d*a (rotated q, k); QK-norm: + 4d*a
                         (QK-norm's share depends on whether a fused RMSNorm kernel runs; the figure is a middle)
    MLP                  GELU: 2h*a (pre- and post-activation); SwiGLU: 4h*a ([gate|up], silu(gate), product)
  plus the final norm and the output head: log-softmax of the logits in fp32 (4V) saved, and at the start of
  backward its gradient (4V) and the 16-bit gradient (a*V) on top: 8V + a*V at the peak.
  Activation checkpointing keeps only each block's fp32 input (4d) and recomputes one block at a time.
A CUDA context and allocator slack take about 1 GB that torch.cuda.max_memory_allocated does not show; the
fit test reserves it. Time assumes a stated MFU against the GPU's dense peak (gpt2lab/metrics/devices.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UserError
from .metrics.devices import GPU, peak_tflops
from .metrics.flops import flops_per_token
from .model.gpt import GPTConfig

GB = 2**30
CONTEXT_OVERHEAD_GB = 1.0


def _act_bytes(precision: str) -> int:
    return 4 if precision == "fp32" else 2


def _norm_bytes(config: GPTConfig, a: int) -> int:
    d = config.n_embd
    return 4 * d + a * d + (4 * d if config.norm == "rmsnorm" else 0)


def block_activation_bytes(config: GPTConfig, precision: str) -> float:
    """Bytes saved for backward per token by one transformer block (checked against autograd's saved
    tensors in tests/test_plan.py)."""
    a, d, h = _act_bytes(precision), config.n_embd, config.hidden_dim
    attention = 4 * d * a + (2 * d * a if config.pos == "rope" else 0) + (4 * d * a if config.qk_norm else 0)
    mlp = (4 * h * a) if config.mlp == "swiglu" else (2 * h * a)
    return 2 * _norm_bytes(config, a) + attention + mlp


def head_bytes(config: GPTConfig, precision: str, peak: bool) -> float:
    """Per token: final norm and log-softmax saved; at the peak also the logits' gradients."""
    a, V = _act_bytes(precision), config.vocab_size
    return _norm_bytes(config, a) + 4 * V + ((4 + a) * V if peak else 0)


@dataclass
class MemoryPlan:
    weights: float
    gradients: float
    optimizer: float
    weight_casts: float
    activations: float  # peak, at the given micro-batch
    activations_checkpointed: float

    @property
    def static(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.weight_casts

    @property
    def total(self) -> float:
        return self.static + self.activations

    @property
    def total_checkpointed(self) -> float:
        return self.static + self.activations_checkpointed


def memory_plan(config: GPTConfig, n_params: int, micro_batch: int, seq_len: int, precision: str) -> MemoryPlan:
    tokens = micro_batch * seq_len
    per_block = block_activation_bytes(config, precision)
    head = head_bytes(config, precision, peak=True)
    full = tokens * (config.n_layer * per_block + head)
    checkpointed = tokens * (config.n_layer * 4 * config.n_embd + per_block + head)
    return MemoryPlan(
        weights=4 * n_params, gradients=4 * n_params, optimizer=8 * n_params,
        weight_casts=(2 * n_params if precision != "fp32" else 0), activations=full,
        activations_checkpointed=checkpointed,
    )


def largest_micro_batch(config: GPTConfig, n_params: int, seq_len: int, precision: str, memory_gb: float,
                        checkpointing: bool = False) -> int:
    """The largest micro-batch whose estimate fits in memory_gb minus the CUDA context; 0 if none."""
    budget = (memory_gb - CONTEXT_OVERHEAD_GB) * GB
    one = memory_plan(config, n_params, 1, seq_len, precision)
    per_seq = one.activations_checkpointed if checkpointing else one.activations
    return max(0, int((budget - one.static) // per_seq))


def make_plan(config: GPTConfig, gpu: GPU, tokens: float, micro_batch: int, seq_len: int | None = None,
              precision: str = "bf16", mfu: float = 0.4, price_per_hour: float | None = None) -> dict:
    from .model import GPT
    import torch

    seq_len = seq_len or config.block_size
    if not 0 < mfu <= 1:
        raise UserError(f"--mfu must be in (0, 1], got {mfu}")
    if micro_batch < 1 or tokens <= 0:
        raise UserError("--micro-batch and --tokens must be positive")
    with torch.device("meta"):  # shapes only: no memory for a 1.5B-parameter model
        n_params = GPT(config).num_params()
    flops = flops_per_token(config, seq_len)
    mem = memory_plan(config, n_params, micro_batch, seq_len, precision)
    peak = peak_tflops(gpu, precision) * 1e12
    tokens_per_sec = mfu * peak / flops.training
    hours = tokens / tokens_per_sec / 3600
    budget = gpu.memory_gb - CONTEXT_OVERHEAD_GB
    gb = lambda b: round(b / GB, 3)  # noqa: E731
    return {
        "gpu": gpu.name, "gpu_memory_gb": gpu.memory_gb, "precision": precision, "peak_tflops": peak / 1e12,
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
        "largest_micro_batch": largest_micro_batch(config, n_params, seq_len, precision, gpu.memory_gb),
        "largest_micro_batch_checkpointed": largest_micro_batch(config, n_params, seq_len, precision, gpu.memory_gb, True),
        "mfu": mfu, "tokens": tokens, "tokens_per_sec": tokens_per_sec, "hours": hours,
        "cost": hours * price_per_hour if price_per_hour is not None else None,
        "price_per_hour": price_per_hour,
    }


def format_plan(p: dict) -> str:
    m = p["memory_gb"]
    f = p["flops_per_token"]
    lines = [
        f"{p['parameters']:,} parameters on {p['gpu']} ({p['gpu_memory_gb']} GB, {p['peak_tflops']:.1f} dense {p['precision']} TFLOPS)",
        f"FLOPs per token: {f['forward'] / 1e9:.3f} G forward, {f['training'] / 1e9:.3f} G forward+backward (context {p['seq_len']})",
        f"memory at micro-batch {p['micro_batch']} x {p['seq_len']}:",
        f"  weights {m['weights']:.2f} GB | gradients {m['gradients']:.2f} | AdamW {m['optimizer']:.2f} | 16-bit weight copies {m['weight_casts']:.2f}",
        f"  activations {m['activations']:.2f} GB ({m['activations_checkpointed']:.2f} with activation checkpointing)",
        f"  total {m['total']:.2f} GB ({m['total_checkpointed']:.2f} checkpointed) + ~{m['cuda_context_reserve']:.0f} GB CUDA context",
        f"fits: {'yes' if p['fits'] else 'no'}; with activation checkpointing: {'yes' if p['fits_with_checkpointing'] else 'no'}",
        f"largest micro-batch that fits: {p['largest_micro_batch']} ({p['largest_micro_batch_checkpointed']} with checkpointing)",
        f"at {p['mfu']:.0%} MFU: {p['tokens_per_sec']:,.0f} tokens/s; {p['tokens']:,.0f} tokens take {p['hours']:.1f} h",
    ]
    if p["cost"] is not None:
        lines.append(f"cost at ${p['price_per_hour']:.2f}/h: ${p['cost']:,.2f}")
    return "\n".join(lines)
