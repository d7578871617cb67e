"""Sampling from a GPT with a key/value cache.

The cache holds each layer's keys and values so that every new token costs one position's work. Once the
sequence reaches the model's block_size, the window slides: the last block_size tokens are run again from
scratch, exactly as a model without a cache would see them.
"""

from __future__ import annotations

import torch

from .gpt import GPT


class LayerCache:
    def __init__(self, owner: "KVCache", index: int):
        self.owner, self.index = owner, index

    @property
    def length(self) -> int:
        return self.owner.length

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store new keys and values (B, H, T, D); return everything cached so far, them included."""
        start, end = self.owner.length, self.owner.length + k.size(2)
        self.owner.k[self.index, :, :, start:end] = k
        self.owner.v[self.index, :, :, start:end] = v
        return self.owner.k[self.index, :, :, :end], self.owner.v[self.index, :, :, :end]


class KVCache:
    """Preallocated keys and values for every layer: (n_layer, B, n_head, block_size, head_dim)."""

    def __init__(self, model: GPT, batch_size: int, dtype: torch.dtype | None = None):
        c = model.config
        device = model.lm_head.weight.device
        dtype = dtype or model.lm_head.weight.dtype
        shape = (c.n_layer, batch_size, c.n_head, c.block_size, c.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0

    def layer(self, i: int) -> LayerCache:
        return LayerCache(self, i)

    def advance(self, n: int) -> None:
        self.length += n

    def reset(self) -> None:
        self.length = 0


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token id per row of logits (B, V). temperature 0 means greedy."""
    logits = logits.float()
    if temperature <= 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # drop a token when the tokens ranked above it already reach top_p; the first one always stays
        drop_sorted = cumulative - sorted_logits.softmax(dim=-1) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


@torch.no_grad()
def generate(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
    stop_token: int | None = None,
    valid_vocab: int | None = None,
    use_cache: bool = True,
) -> torch.Tensor:
    """Continue each row of idx (B, T) by up to max_new_tokens tokens; returns (B, T + generated).

    Generation stops early once every row has produced stop_token; a row that finished keeps emitting
    stop_token. valid_vocab masks out padded vocabulary entries (ids >= valid_vocab) so they are never sampled.
    """
    model.eval()
    block = model.config.block_size
    generator = None
    if seed is not None:
        generator = torch.Generator(device=idx.device).manual_seed(seed)
    cache = KVCache(model, idx.size(0)) if use_cache else None
    finished = torch.zeros(idx.size(0), 1, dtype=torch.bool, device=idx.device)

    def next_logits(seq: torch.Tensor) -> torch.Tensor:
        if cache is not None and 0 < cache.length < block:
            logits, _ = model(seq[:, -1:], cache=cache)  # continue the cached sequence by one token
        else:  # first call, no cache, or a full cache: run the last block_size tokens from scratch
            if cache is not None:
                cache.reset()
            logits, _ = model(seq[:, -block:], cache=cache)
        return logits[:, -1, :]

    logits = next_logits(idx)
    for _ in range(max_new_tokens):
        if valid_vocab is not None:
            logits[:, valid_vocab:] = float("-inf")
        token = sample_next(logits, temperature, top_k, top_p, generator)
        if stop_token is not None:
            token = torch.where(finished, torch.full_like(token, stop_token), token)
            finished |= token == stop_token
        idx = torch.cat([idx, token], dim=1)
        if stop_token is not None and bool(finished.all()):
            break
        logits = next_logits(idx)
    return idx
