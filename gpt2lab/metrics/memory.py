"""How much memory training takes: the model behind `gpt2lab plan`, the OOM message and auto-batch.

Memory, for training with fp32 weights (what gpt2lab does), in eager mode:
  weights 4 N, gradients 4 N, optimizer state (AdamW: 8 N bytes; Muon: 4 per matrix parameter), plus a 16-bit copy of the weights (2 N) under autocast;
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
fit test reserves it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model.gpt import GPTConfig

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
    # saved hidden-width tensors: SwiGLU 4 (gate, up, silu(gate), product); GELU 2 (its input, c_proj's input);
    # ReLU^2 2 (relu's output, which its backward and the square's share, and c_proj's input)
    mlp = (4 if config.mlp == "swiglu" else 2) * h * a
    skips = 4 * d if config.skips else 0  # the fp32 stream, saved by the learned mix for its weight's gradient
    return 2 * _norm_bytes(config, a) + attention + mlp + skips


def _value_layers(config: GPTConfig) -> int:
    """How many layers mix a value embedding into their values."""
    return sum(config.value_table(i) is not None for i in range(config.n_layer))


def body_activation_bytes(config: GPTConfig, precision: str) -> float:
    """Bytes saved for backward per token by all the blocks: each block's share, and in each layer with a value
    embedding its fp32 rows (kept by the learned mix for its weight's gradient) and the mixed values."""
    return (config.n_layer * block_activation_bytes(config, precision)
            + _value_layers(config) * (4 + _act_bytes(precision)) * config.n_embd)


def head_bytes(config: GPTConfig, precision: str, peak: bool) -> float:
    """Per token: final norm and log-softmax saved (and a soft cap's tanh output); at the peak also the logits'
    gradients."""
    a, V = _act_bytes(precision), config.vocab_size
    softcap = a * V if config.logit_softcap is not None else 0
    return _norm_bytes(config, a) + 4 * V + softcap + ((4 + a) * V if peak else 0)


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


def _looked_up(config: GPTConfig) -> int:
    """Parameters only ever looked up, never multiplied, so never cast to 16 bits: the position table, the value
    embeddings, and the token table when the head has its own weight."""
    d = config.n_embd
    return ((config.block_size * d if config.pos == "learned" else 0) + (0 if config.tie_embeddings else config.vocab_size * d)
            + config.value_embeds * config.vocab_size * d)


def memory_plan(config: GPTConfig, n_params: int, micro_batch: int, seq_len: int, precision: str,
                optimizer_bytes: float | None = None) -> MemoryPlan:
    """Bytes of one training process. optimizer_bytes: the optimizer's state in all (default: AdamW's 8 per parameter)."""
    tokens = micro_batch * seq_len
    per_block = block_activation_bytes(config, precision)
    head = head_bytes(config, precision, peak=True)
    full = tokens * (body_activation_bytes(config, precision) + head)
    # checkpointing keeps each block's fp32 input, and per value-embedding layer its fp32 rows and mixed-in input
    checkpointed = tokens * ((config.n_layer * 4 + _value_layers(config) * 8) * config.n_embd + per_block + head)
    return MemoryPlan(
        weights=4 * n_params, gradients=4 * n_params,
        optimizer=8 * n_params if optimizer_bytes is None else optimizer_bytes,
        weight_casts=(2 * (n_params - _looked_up(config)) if precision != "fp32" else 0), activations=full,
        activations_checkpointed=checkpointed,
    )


def largest_micro_batch(config: GPTConfig, n_params: int, seq_len: int, precision: str, memory_gb: float,
                        checkpointing: bool = False, optimizer_bytes: float | None = None) -> int:
    """The largest micro-batch whose estimate fits in memory_gb minus the CUDA context; 0 if none."""
    budget = (memory_gb - CONTEXT_OVERHEAD_GB) * GB
    one = memory_plan(config, n_params, 1, seq_len, precision, optimizer_bytes)
    per_seq = one.activations_checkpointed if checkpointing else one.activations
    return max(0, int((budget - one.static) // per_seq))
