"""Text from a checkpoint: load it, encode the prompt, generate with the KV cache, decode."""

from __future__ import annotations

import torch

from .errors import UserError
from .model import generate
from .runtime import resolve_runtime
from .tokenizer import load_tokenizer
from .train.checkpoint import load_model_from_checkpoint


def sample_text(
    checkpoint: str,
    prompt: str = "",
    max_new_tokens: int = 100,
    temperature: float = 0.8,
    top_k: int = 50,
    top_p: float = 1.0,
    seed: int | None = None,
    num_samples: int = 1,
    device: str = "auto",
    tokenizer: str | None = None,
    model=None,
) -> list[str]:
    """num_samples continuations of prompt (the prompt not included). An empty prompt starts a new document."""
    if max_new_tokens < 1 or num_samples < 1:
        raise UserError("--max-new-tokens and --num-samples must be at least 1")
    if temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
        raise UserError("--temperature must be >= 0, --top-p in (0, 1] and --top-k >= 0")
    runtime = resolve_runtime(device, "fp32")
    if model is None:
        model, _, _ = load_model_from_checkpoint(checkpoint, runtime.device)
    tok = load_tokenizer(tokenizer)
    ids = [tok.eot] + tok.encode(prompt)  # documents start after <|endoftext|>, as in training
    idx = torch.tensor([ids] * num_samples, dtype=torch.long, device=runtime.device)
    out = generate(
        model, idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
        stop_token=tok.eot, valid_vocab=tok.n_vocab,
    )
    texts = []
    for row in out[:, len(ids):].tolist():
        if tok.eot in row:
            row = row[: row.index(tok.eot)]
        texts.append(tok.decode(row))
    return texts
