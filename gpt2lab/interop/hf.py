"""Weights between gpt2lab and Hugging Face transformers' GPT2LMHeadModel.

Parameter names are the same on both sides; transformers stores the attention and MLP projections as Conv1D,
whose weight is the transpose of an nn.Linear weight. Only the classic architecture maps onto GPT-2.
"""

from __future__ import annotations

import torch

from ..errors import UserError
from ..model import GPT, GPTConfig

_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def _require_classic(config: GPTConfig) -> None:
    if not config.is_classic:
        raise UserError("only the classic architecture (learned positions, LayerNorm, GELU, biases) maps onto GPT-2")


def hf_gpt2_config(config: GPTConfig):
    """The transformers.GPT2Config of a classic gpt2lab model."""
    from transformers import GPT2Config

    _require_classic(config)
    return GPT2Config(
        vocab_size=config.vocab_size, n_positions=config.block_size, n_embd=config.n_embd,
        n_layer=config.n_layer, n_head=config.n_head, n_inner=config.hidden_dim,
        activation_function="gelu_new", layer_norm_epsilon=config.norm_eps,
        resid_pdrop=config.dropout, embd_pdrop=config.dropout, attn_pdrop=config.dropout,
        tie_word_embeddings=config.tie_embeddings,
    )


def to_hf_gpt2_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    _require_classic(model.config)
    return {k: (v.t() if k.endswith(_CONV1D) else v).contiguous() for k, v in model.state_dict().items()}


def from_hf_gpt2_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers GPT-2 state dict in gpt2lab's layout (buffers such as attn.bias dropped)."""
    out = {}
    for k, v in state.items():
        if k.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        out[k] = v.t() if k.endswith(_CONV1D) else v
    if "lm_head.weight" not in out and "transformer.wte.weight" in out:
        out["lm_head.weight"] = out["transformer.wte.weight"]
    return out
