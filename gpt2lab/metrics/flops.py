"""FLOPs per token: the single source of truth for MFU, `plan` and `report`.

Counted: every matrix multiply, at 2 FLOPs per multiply-add. Per token and per layer, forward:
  attention projections   2 * d * 3d  (q, k, v)  +  2 * d * d  (output)
  attention scores        2 * T * d   (q @ k^T)  +  2 * T * d  (scores @ v)
  MLP, GELU               2 * d * h  +  2 * h * d
  MLP, SwiGLU             2 * d * 2h (gate and up)  +  2 * h * d
and once per token the output head, 2 * d * V. Embedding lookups, norms, activations and softmax are
elementwise and left out (they are a few percent at most).

Attention is counted over the full T x T score matrix, as PaLM and nanoGPT count it and as PyTorch's
FlopCounterMode counts SDPA; a causal kernel skips about half of that work, so MFU by this convention is
comparable with the published figures. T is the training context (seq_len), not the model's block_size.

Training is forward + backward = 3 x forward: the backward pass multiplies twice per forward multiply
(gradients for the input and for the weight). So the familiar 6 * N * T estimate is forward + backward with
N = the parameters that take part in matrix multiplies; the forward pass alone is 2 * N per token.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..model.gpt import GPTConfig


@dataclass(frozen=True)
class FlopsPerToken:
    attention_projections: int
    attention_scores: int
    mlp: int
    head: int

    @property
    def forward(self) -> int:
        return self.attention_projections + self.attention_scores + self.mlp + self.head

    @property
    def training(self) -> int:
        """Forward + backward."""
        return 3 * self.forward

    def as_dict(self) -> dict:
        return {**asdict(self), "forward": self.forward, "training": self.training}


def flops_per_token(config: GPTConfig, seq_len: int | None = None) -> FlopsPerToken:
    d, h, L, V = config.n_embd, config.hidden_dim, config.n_layer, config.vocab_size
    T = seq_len or config.block_size
    mlp_in = 2 * h if config.mlp == "swiglu" else h
    return FlopsPerToken(
        attention_projections=L * 2 * (d * 3 * d + d * d),
        attention_scores=L * 2 * 2 * T * d,
        mlp=L * 2 * (d * mlp_in + h * d),
        head=2 * d * V,
    )


def matmul_params(config: GPTConfig) -> int:
    """Parameters that take part in matrix multiplies (N in 6 * N * T): the blocks' weights and the head."""
    d, h, L = config.n_embd, config.hidden_dim, config.n_layer
    mlp_in = 2 * h if config.mlp == "swiglu" else h
    return L * (4 * d * d + d * mlp_in + h * d) + d * config.vocab_size
