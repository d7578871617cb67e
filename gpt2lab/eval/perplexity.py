"""Loss, perplexity and bits per byte: over a prepared split's windows, or over any token sequence."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..data.loader import Windows, document_ids, to_device
from ..runtime import Runtime


@torch.no_grad()
def evaluate_loss(model: torch.nn.Module, windows: Windows, batch_size: int, runtime: Runtime, max_batches: int = 0,
                  doc_eot: int | None = None, shard: tuple[int, int] = (0, 1), reduce=None) -> dict:
    """Mean next-token loss over the split's first max_batches * batch_size windows (all when 0), token-weighted.

    With doc_eot, attention stays within documents, as in training with data.document_masking. With
    shard=(rank, world) each process takes its part of every round of world * batch_size windows and
    `reduce` sums the totals across processes; the windows evaluated do not depend on the world size, and
    every process runs the same number of forward passes (FSDP needs that).
    """
    rank, world = shard
    was_training = model.training
    model.eval()
    n = len(windows)
    stop = n if not max_batches else min(n, max_batches * batch_size)
    total, count = 0.0, 0
    for begin in range(0, stop, batch_size * world):
        mine = np.arange(begin + rank * batch_size, min(begin + (rank + 1) * batch_size, stop))
        x, y = to_device(windows.tokens(mine if len(mine) else np.zeros(1, dtype=np.int64)), runtime.device)
        with runtime.autocast():
            doc_ids = document_ids(x, doc_eot) if doc_eot is not None else None
            loss = model(x, y, doc_ids=doc_ids)[1]  # do not hold the logits: they are the largest activation
        if len(mine):  # a process with nothing left still runs the forward pass, and discards it
            total += loss.item() * y.numel()
            count += y.numel()
    model.train(was_training)
    if reduce is not None:
        total, count = reduce([total, count])
    mean = total / count
    return {"loss": mean, "perplexity": math.exp(min(mean, 50.0)), "tokens": int(count)}


def text_windows(n_targets: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, end, first_scored) per window over n_targets next-token predictions.

    The model reads inputs [start, end) and only the predictions [first_scored, end) are scored, so each
    prediction counts once. stride == context gives non-overlapping windows; a smaller stride slides the
    window so that every prediction after the first window sees at least context - stride tokens before it.
    """
    windows = []
    for first in range(0, n_targets, stride):
        end = min(first + stride, n_targets)
        windows.append((max(0, end - context), end, first))
    return windows


@torch.no_grad()
def evaluate_tokens(model: torch.nn.Module, ids: list[int], runtime: Runtime, context: int, stride: int = 0,
                    batch_size: int = 8) -> dict:
    """Mean loss of predicting ids[1:] from what precedes each token, in windows of `context` tokens."""
    stride = stride or context
    if not 0 < stride <= context:
        raise ValueError(f"stride must be between 1 and the context length {context}, got {stride}")
    was_training = model.training
    model.eval()
    seq = torch.tensor(ids, dtype=torch.long)
    inputs, targets = seq[:-1], seq[1:]
    windows = text_windows(len(targets), context, stride)
    total = 0.0
    # windows of equal length run together; only the first few (shorter than context) run alone
    groups: dict[int, list] = {}
    for w in windows:
        groups.setdefault(w[1] - w[0], []).append(w)
    for length, group in groups.items():
        for b in range(0, len(group), batch_size):
            chunk = group[b : b + batch_size]
            x = torch.stack([inputs[s:e] for s, e, _ in chunk]).to(runtime.device)
            y = torch.stack([targets[s:e] for s, e, _ in chunk]).to(runtime.device)
            for row, (s, _, first) in enumerate(chunk):
                y[row, : first - s] = -1  # context only, scored by an earlier window
            with runtime.autocast():
                logits, _ = model(x)
            total += F.cross_entropy(logits.float().transpose(1, 2), y, ignore_index=-1, reduction="sum").item()
    model.train(was_training)
    mean = total / len(targets)
    return {"tokens": len(targets), "loss": mean, "perplexity": math.exp(min(mean, 50.0)), "total_nats": total}


def evaluate_text(model: torch.nn.Module, text: str, tokenizer, runtime: Runtime, context: int, stride: int = 0) -> dict:
    """Loss, perplexity and bits per UTF-8 byte of a text; it starts after <|endoftext|>, as documents do in
    training, so that every one of its tokens is predicted."""
    ids = [tokenizer.eot] + tokenizer.encode(text)
    result = evaluate_tokens(model, ids, runtime, context, stride)
    n_bytes = len(text.encode("utf-8"))
    result.update(bytes=n_bytes, bits_per_byte=result["total_nats"] / math.log(2) / n_bytes,
                  stride=stride or context, context=context)
    return result
