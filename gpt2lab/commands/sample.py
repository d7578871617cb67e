"""`gpt2lab sample`: text from a checkpoint: load it, encode the prompt, generate with the KV cache, decode.
Loads the model, the checkpoint format and the tokenizer only: no training, metrics or evaluation code."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..checkpoint import load_model_from_checkpoint
from ..data.shards import read_meta
from ..errors import UserError
from ..model import generate
from ..runtime import resolve_runtime
from ..tokenizer import check_fits, load_tokenizer


@dataclass
class SampleOptions:
    prompt: str = ""
    max_new_tokens: int = 100
    temperature: float = 0.8
    top_k: int = 50
    top_p: float = 1.0
    seed: int | None = None
    num_samples: int = 1
    device: str = "auto"
    tokenizer: str | None = None
    skip_hash: bool = False  # check the checkpoint's sizes only (huge checkpoints)


def check(o: SampleOptions) -> None:
    if not 1 <= o.max_new_tokens <= 1_000_000 or not 1 <= o.num_samples <= 1024:
        raise UserError("--max-new-tokens must be between 1 and 1,000,000 and --num-samples between 1 and 1024")
    if not (math.isfinite(o.temperature) and 0 <= o.temperature <= 100):
        raise UserError(f"--temperature must be a finite number between 0 (greedy) and 100, got {o.temperature}")
    if not (math.isfinite(o.top_p) and 0 < o.top_p <= 1) or not 0 <= o.top_k <= 1 << 20:
        raise UserError("--top-p must be in (0, 1] and --top-k between 0 (off) and the vocabulary size")
    if o.seed is not None and not 0 <= o.seed < 2**63:
        raise UserError(f"--seed must be between 0 and 2**63 - 1, got {o.seed}")


def _data_tokenizer(config) -> str | None:
    """The tokenizer folder the run's data was prepared with (meta.json remembers it), if that is at hand."""
    if config is None or not config.data.dir:
        return None
    try:
        return read_meta(config.data.dir)["tokenizer"].get("folder")
    except UserError:
        return None


def sample_text(checkpoint: str, options: SampleOptions | None = None, model=None) -> list[str]:
    """num_samples continuations of the prompt (the prompt not included). An empty prompt starts a new document."""
    o = options or SampleOptions()
    check(o)
    runtime = resolve_runtime(o.device, "fp32")
    config = None
    if model is None:
        model, config, _ = load_model_from_checkpoint(checkpoint, runtime.device, hashes=not o.skip_hash)
    tok = load_tokenizer(o.tokenizer or _data_tokenizer(config))
    check_fits(tok, model.config.vocab_size, f"the checkpoint {checkpoint}")
    return continuations(model, tok, o)


def continuations(model, tok, o: SampleOptions) -> list[str]:
    """num_samples continuations of o.prompt by a loaded model with its tokenizer, on the model's device."""
    check(o)
    device = next(model.parameters()).device
    ids = [tok.eot] + tok.encode(o.prompt)  # documents start after <|endoftext|>, as in training
    idx = torch.tensor([ids[-model.config.block_size:]] * o.num_samples, dtype=torch.long, device=device)
    out = generate(model, idx, o.max_new_tokens, temperature=o.temperature, top_k=o.top_k, top_p=o.top_p, seed=o.seed,
                   stop_token=tok.eot, valid_vocab=tok.n_vocab)
    texts = []
    for row in out[:, idx.size(1):].tolist():
        if tok.eot in row:
            row = row[: row.index(tok.eot)]
        texts.append(tok.decode(row))
    return texts
