"""The GPT model: classic GPT-2 and its modern variants, in one readable module.

Classic GPT-2 (the default) is learned absolute positions, LayerNorm with bias, GELU (tanh approximation),
biases everywhere and tied input/output embeddings; its parameter names and shapes follow HF transformers'
GPT2LMHeadModel (Conv1D weights transposed), so weights move between the two one-to-one.

The modern switches are independent of one another:
  pos="rope"        rotary position embeddings on q and k (rotate-half convention, as in Llama)
  mlp="swiglu"      SiLU-gated MLP; gate and up projections share one matmul
  norm="rmsnorm"    RMSNorm instead of LayerNorm
  bias=False        no biases in linear layers or norms
  qk_norm=True      RMSNorm on each head's queries and keys before attention
and, from the speedrun line of GPT-2 training (all off by default, so that classic GPT-2 stays exact):
  mlp="relu2"          ReLU squared MLP (4 x width hidden, no gate)
  zero_init_proj=True  the residual projections (attention and MLP outputs) and an untied head start at zero
  logit_softcap=C      logits squashed to (-C, C) by C * tanh(logits / C)
  tie_embeddings=False a separate output head, initialised like the embedding (std 0.02) or at zero as above
  skips=True           U-net skips: the embeddings into every block, early blocks' outputs into late ones
  value_embeds=K       K more token tables whose rows are mixed into the attention values of the first K and the
                       last K layers (table j serves layers j and n_layer - K + j)
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .loss import head_loss, head_scores

LIMITS = {"vocab_size": 1 << 20, "block_size": 1 << 20, "n_layer": 1024, "n_head": 1024, "n_embd": 1 << 16}


@dataclass
class GPTConfig:
    vocab_size: int = 50304  # GPT-2's 50257 padded up to a multiple of 64
    block_size: int = 1024  # longest context the model accepts
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True
    pos: str = "learned"  # "learned" | "rope"
    norm: str = "layernorm"  # "layernorm" | "rmsnorm"
    mlp: str = "gelu"  # "gelu" | "swiglu" | "relu2"
    mlp_hidden: int | None = field(default=None, metadata={"legacy_off": True})  # None: 4*n_embd; swiglu 8/3*n_embd to a multiple of 64
    qk_norm: bool = False
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    tie_embeddings: bool = True
    zero_init_proj: bool = False
    logit_softcap: float | None = field(default=None, metadata={"legacy_off": True})
    # U-net skips (the speedrun line's): each block reads a learned mix of the stream and the embeddings, and each
    # block of the second half adds the output of its mirror in the first half with a learned weight
    skips: bool = False
    # value embeddings: this many extra token tables, each mixed into the values of two layers (0: off)
    value_embeds: int = 0

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent field."""
        self._check_each_field()
        if self.n_embd % self.n_head:
            raise ValueError(f"model.n_embd={self.n_embd} is not divisible by model.n_head={self.n_head}")
        if self.pos == "rope" and self.head_dim % 2:
            raise ValueError(f"RoPE needs an even head size; n_embd/n_head = {self.head_dim}")
        if not 0 <= self.value_embeds <= self.n_layer // 2:
            raise ValueError(f"model.value_embeds must be between 0 (off) and n_layer // 2 = {self.n_layer // 2}, "
                             f"got {self.value_embeds}")

    def _check_each_field(self) -> None:
        """Each field on its own: one of its choices, or within its range."""
        choices = {"pos": ("learned", "rope"), "norm": ("layernorm", "rmsnorm"), "mlp": ("gelu", "swiglu", "relu2")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"model.{name}={getattr(self, name)!r} is not one of {', '.join(allowed)}")
        for name, limit in LIMITS.items():
            if not 1 <= getattr(self, name) <= limit:
                raise ValueError(f"model.{name} must be between 1 and {limit:,}, got {getattr(self, name)}")
        if self.mlp_hidden is not None and not 1 <= self.mlp_hidden <= 1 << 20:
            raise ValueError(f"model.mlp_hidden must be between 1 and {1 << 20:,} (or none), got {self.mlp_hidden}")
        if self.logit_softcap is not None and not 0 < self.logit_softcap <= 1e4:
            raise ValueError(f"model.logit_softcap must be positive (or none: off), got {self.logit_softcap}")
        if not (0 < self.norm_eps < 1 and 1 <= self.rope_theta <= 1e9):
            raise ValueError("model.norm_eps must be in (0, 1) and model.rope_theta in [1, 1e9]")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def hidden_dim(self) -> int:
        if self.mlp_hidden:
            return self.mlp_hidden
        if self.mlp == "swiglu":
            return 64 * math.ceil(8 * self.n_embd / 3 / 64)
        return 4 * self.n_embd

    @property
    def is_classic(self) -> bool:
        """True when the architecture is exactly OpenAI's GPT-2 (initialisation aside)."""
        return ((self.pos, self.norm, self.mlp, self.bias, self.qk_norm, self.logit_softcap, self.skips,
                 self.value_embeds) == ("learned", "layernorm", "gelu", True, False, None, False, 0))

    def value_table(self, layer: int) -> int | None:
        """Which value-embedding table a layer mixes into its values, or None."""
        k, n = self.value_embeds, self.n_layer
        if layer < k:
            return layer
        return layer - (n - k) if layer >= n - k else None



def _no_autocast(device_type: str):
    """Autocast off for this device, where it has autocast at all (the meta device, used for dry runs, has none).
    Under torch.compile the device always has it, and the check is skipped: torch 2.11's compiler cannot trace it,
    and broke the graph at every attention layer until its recompile limit sent the rest of the model to eager
    (seen on the first H200 run, bench/results/gpu_first_run_20261204)."""
    if torch.compiler.is_compiling() or torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()

def document_mask(doc_ids: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, T) attention mask from document ids (B, T): causal, and within the same document only."""
    T = doc_ids.size(1)
    causal = torch.ones(T, T, dtype=torch.bool, device=doc_ids.device).tril()
    return (doc_ids[:, None, :, None] == doc_ids[:, None, None, :]) & causal


def make_norm(config: GPTConfig, dim: int) -> nn.Module:
    if config.norm == "rmsnorm":
        return nn.RMSNorm(dim, eps=config.norm_eps)
    return nn.LayerNorm(dim, eps=config.norm_eps, bias=config.bias)


def rope_tables(head_dim: int, length: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of shape (length, head_dim) for the rotate-half convention, on the default device. Computed on
    the CPU whatever that device is: the same numbers everywhere, and a shapes-only build on the meta device stays
    cheap (meta arithmetic runs through Python references that import torch._dynamo, about 2 s)."""
    cpu = torch.device("cpu")
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=cpu) / head_dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float32, device=cpu), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    device = torch.get_default_device()
    return angles.cos().to(device), angles.sin().to(device)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, H, T, D) by position; cos and sin are (T, D), used in x's dtype (no fp32 temporaries)."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.head_dim = config.head_dim
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.c_proj.is_residual_projection = True
        self.resid_dropout = nn.Dropout(config.dropout)
        if config.qk_norm:
            self.q_norm = nn.RMSNorm(self.head_dim, eps=config.norm_eps)
            self.k_norm = nn.RMSNorm(self.head_dim, eps=config.norm_eps)
        else:
            self.q_norm = self.k_norm = None

    def forward(self, x, rope=None, cache=None, mask=None, value=None):
        """value: (scale, embedding (B, T, C)) of a layer with a value embedding: v becomes scale * v + embedding."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        if value is not None:  # in v's dtype, as the rest of attention runs under autocast
            v = value[0].to(v.dtype) * v + value[1].to(v.dtype)
        q, k, v = (t.view(B, T, self.n_head, self.head_dim).transpose(1, 2) for t in (q, k, v))
        if self.q_norm is not None:
            # in q's dtype: CUDA's autocast would run rms_norm in fp32 and undo the weight cast
            with _no_autocast(x.device.type):
                q = F.rms_norm(q, (self.head_dim,), self.q_norm.weight.to(q.dtype), self.q_norm.eps)
                k = F.rms_norm(k, (self.head_dim,), self.k_norm.weight.to(k.dtype), self.k_norm.eps)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if cache is not None:
            # A prompt fills an empty cache (causal); after that, one new token attends to everything cached.
            if cache.length > 0 and T > 1:
                raise ValueError("the KV cache takes a whole prompt at once, then one token at a time")
            k, v = cache.append(k, v)
        y = F.scaled_dot_product_attention(  # a document mask is causal already
            q, k, v, attn_mask=mask, is_causal=T > 1 and mask is None, dropout_p=self.dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.kind = config.mlp
        self.gated = config.mlp == "swiglu"
        width = 2 * config.hidden_dim if self.gated else config.hidden_dim
        self.c_fc = nn.Linear(config.n_embd, width, bias=config.bias)  # swiglu: [gate | up]
        self.c_proj = nn.Linear(config.hidden_dim, config.n_embd, bias=config.bias)
        self.c_proj.is_residual_projection = True
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        h = self.c_fc(x)
        if self.gated:
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        elif self.kind == "relu2":
            h = F.relu(h).square()
        else:
            h = F.gelu(h, approximate="tanh")
        return self.dropout(self.c_proj(h))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = make_norm(config, config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = make_norm(config, config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x, rope=None, cache=None, mask=None, value=None):
        x = x + self.attn(self.ln_1(x), rope, cache, mask, value)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
                ln_f=make_norm(config, config.n_embd),
            )
        )
        if config.pos == "learned":
            self.transformer["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        else:
            cos, sin = rope_tables(config.head_dim, config.block_size, config.rope_theta)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.transformer.wte.weight
        if config.skips:  # at initialisation: the stream alone into each block, each mirror's output added whole
            self.x_mix = nn.Parameter(torch.ones(config.n_layer))
            self.x0_mix = nn.Parameter(torch.zeros(config.n_layer))
            self.skip_weights = nn.Parameter(torch.ones(config.n_layer // 2))
        if config.value_embeds:  # at initialisation: each served layer's values plus its table's rows
            self.value_embeds = nn.ModuleList(nn.Embedding(config.vocab_size, config.n_embd)
                                              for _ in range(config.value_embeds))
            self.v_mix = nn.Parameter(torch.ones(config.n_layer))
            self.ve_mix = nn.Parameter(torch.ones(config.n_layer))
        self.apply(self._init_weights)
        if config.zero_init_proj and not config.tie_embeddings:
            nn.init.zeros_(self.lm_head.weight)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            std = 0.02
            if getattr(module, "is_residual_projection", False):
                std = 0.0 if self.config.zero_init_proj else std * (2 * self.config.n_layer) ** -0.5
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, exclude_embeddings: bool = False) -> int:
        """Parameters counted once (tied weights once). Optionally leave out the tables (token, position, value)."""
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= sum(p.numel() for name, p in self.named_parameters()
                     if name in ("transformer.wte.weight", "transformer.wpe.weight") or name.startswith("value_embeds."))
        return n

    def _value(self, idx: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(scale of v, mixed-in embedding) for a layer with a value embedding; None for the others."""
        table = self.config.value_table(layer)
        if table is None:
            return None
        return self.v_mix[layer], self.ve_mix[layer] * self.value_embeds[table](idx)

    def _embed(self, idx: torch.Tensor, start: int) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """Token (and learned position) embeddings after dropout, and RoPE's tables for positions start.. ."""
        T = idx.size(1)
        x = self.transformer.wte(idx)
        rope = None
        if self.config.pos == "learned":
            x = x + self.transformer.wpe(torch.arange(start, start + T, device=idx.device))
        else:
            rope = (self.rope_cos[start : start + T], self.rope_sin[start : start + T])
        return self.transformer.drop(x), rope

    def _body(self, idx: torch.Tensor, cache, doc_ids: torch.Tensor | None, recompute: bool) -> torch.Tensor:
        """The embeddings and every block: the residual stream before the final norm, (B, T, n_embd)."""
        T = idx.size(1)
        start = cache.length if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens exceeds block_size {self.config.block_size}")
        x, rope = self._embed(idx, start)
        mask = document_mask(doc_ids) if doc_ids is not None else None
        x0, saved, n = x, [], self.config.n_layer
        for i, block in enumerate(self.transformer.h):
            value = self._value(idx, i) if self.config.value_embeds else None
            if self.config.skips:
                x = self.x_mix[i] * x + self.x0_mix[i] * x0
                if i >= n - n // 2:  # the second half: the mirror block's output comes back
                    x = x + self.skip_weights[i - (n - n // 2)] * saved.pop()
            if recompute and self.training and cache is None:
                x = checkpoint(block, x, rope, None, mask, value, use_reentrant=False)  # recomputed in backward
            else:
                x = block(x, rope, cache.layer(i) if cache is not None else None, mask, value)
            if self.config.skips and i < n // 2:
                saved.append(x)
        if cache is not None:
            cache.advance(T)
        return x

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, *, cache=None,
                doc_ids: torch.Tensor | None = None, loss_chunk: int | None = None, recompute: bool = False,
                per_token: bool = False):
        """(logits (B, T, vocab), loss) for token ids idx (B, T); the loss (mean cross-entropy, targets of -1
        ignored) only with targets, else None.

        cache: a KVCache; idx continues the sequence already in it (positions start at cache.length).
        doc_ids (B, T): a position attends only to earlier positions of the same document.
        loss_chunk: with targets, the loss (and in training its gradients) is computed this many tokens at a
          time and the logits are not returned (None): the largest activation never exists whole.
        recompute: activation checkpointing; each block is recomputed in backward instead of kept.
        per_token: with targets, (None, (per-token loss, top-1 correct)), each (B, T), computed loss_chunk (or
          8,192) tokens at a time with no gradient: evaluations score without the whole logits. Inside forward,
          so that FSDP gathers the head as for any forward.
        """
        x = self.transformer.ln_f(self._body(idx, cache, doc_ids, recompute))
        cap = self.config.logit_softcap
        if targets is not None and per_token:
            return None, head_scores(x, self.lm_head.weight, targets, loss_chunk or 8192, cap)
        if targets is not None and loss_chunk:
            return None, head_loss(x, self.lm_head.weight, targets, loss_chunk, cap)
        logits = self.lm_head(x)
        if cap is not None:
            logits = cap * torch.tanh(logits / cap)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss
