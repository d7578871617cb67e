"""Loss, perplexity and bits per byte: over a prepared split's windows (and, as an evaluator, in the training
loop), or over any token sequence."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..data.loader import Windows, document_ids, to_device
from ..metrics.names import Metric
from ..runtime import Runtime
from .evaluator import Evaluator, rank_rounds


@torch.no_grad()
def evaluate_loss(model: torch.nn.Module, windows: Windows, batch_size: int, runtime: Runtime,
                  max_batches: int | None = None, doc_eot: int | None = None, shard: tuple[int, int] = (0, 1),
                  reduce=None, loss_chunk: int | None = None, progress=None) -> dict:
    """Mean next-token loss over the split's first max_batches * batch_size windows (all when None),
    token-weighted. With loss_chunk the head runs chunk by chunk, as in training, so evaluating at the
    training micro-batch needs no more memory than training did.

    With doc_eot, attention stays within documents, as in training with data.document_masking. With
    shard=(rank, world) each process takes its part of every round of world * batch_size windows and
    `reduce` sums the totals across processes; the windows evaluated do not depend on the world size, and
    every process runs the same number of forward passes (FSDP needs that).
    """
    was_training = model.training
    model.eval()
    n = len(windows)
    stop = n if not max_batches else min(n, max_batches * batch_size)
    total = torch.zeros((), dtype=torch.float64, device=runtime.device)
    count = 0
    for _, items in rank_rounds(stop, batch_size, shard):
        mine = np.asarray(items, dtype=np.int64)
        x, y = to_device(windows.tokens(mine if len(mine) else np.zeros(1, dtype=np.int64)), runtime.device)
        with runtime.autocast():
            doc_ids = document_ids(x, doc_eot) if doc_eot is not None else None
            loss = model(x, y, doc_ids=doc_ids, loss_chunk=loss_chunk)[1]  # the logits are not held
        if len(mine):  # a process with nothing left still runs the forward pass, and discards it
            total += loss.double() * y.numel()
            count += y.numel()
        if progress is not None:
            progress(1)
    model.train(was_training)
    total = total.item()
    if reduce is not None:
        total, count = reduce([total, count])
    mean = total / count
    return {"loss": mean, "perplexity": math.exp(min(mean, 50.0)), "tokens": int(count)}


def text_windows(n_targets: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, end, first_scored) per window over n_targets next-token predictions.

    The model reads inputs [start, end) and only the predictions [first_scored, end) are scored, so each
    prediction counts once. With stride == context the scored parts tile the text without overlap; the last
    window reaches back into the one before for a full context (those tokens are read, not scored again). A
    smaller stride slides the window so that every prediction after the first window sees at least
    context - stride tokens before it.
    """
    windows = []
    for first in range(0, n_targets, stride):
        end = min(first + stride, n_targets)
        windows.append((max(0, end - context), end, first))
    return windows


@torch.no_grad()
def evaluate_tokens(model: torch.nn.Module, ids: list[int], runtime: Runtime, context: int, stride: int | None = None,
                    batch_size: int = 8, progress=None) -> dict:
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
            if progress is not None:
                progress(len(chunk))
    model.train(was_training)
    mean = total / len(targets)
    return {"tokens": len(targets), "loss": mean, "perplexity": math.exp(min(mean, 50.0)), "total_nats": total}


def evaluate_text(model: torch.nn.Module, text: str, tokenizer, runtime: Runtime, context: int, stride: int | None = None,
                  progress=None) -> dict:
    """Loss, perplexity and bits per UTF-8 byte of a text; it starts after <|endoftext|>, as documents do in
    training, so that every one of its tokens is predicted."""
    ids = [tokenizer.eot] + tokenizer.encode(text)
    result = evaluate_tokens(model, ids, runtime, context, stride, progress=progress)
    n_bytes = len(text.encode("utf-8"))
    result.update(bytes=n_bytes, bits_per_byte=result["total_nats"] / math.log(2) / n_bytes,
                  stride=stride or context, context=context)
    return result


class ValLoss(Evaluator):
    """Loss and perplexity on the validation split of the training data."""

    name = "val"
    metrics = (Metric("val_loss", "val loss", ".4f", "validation loss"),
               Metric("val_perplexity", "ppl", ".2f", "validation perplexity", log_scale=True))

    def __init__(self, windows: Windows, every: int | None, batches: int | None, micro_batch: int,
                 loss_chunk: int | None, doc_eot: int | None):
        super().__init__(every)
        self.windows, self.batches, self.micro_batch = windows, batches, micro_batch
        self.loss_chunk, self.doc_eot = loss_chunk, doc_eot

    @classmethod
    def from_config(cls, cfg, data_meta: dict, echo) -> "ValLoss | None":
        if "val" not in data_meta.get("splits", {}):
            echo(f"note: {cfg.data.dir} has no validation split: no val loss (prepare with --val-fraction or --val)")
            return None
        eot = data_meta.get("tokenizer", {}).get("eot")
        windows = Windows(cfg.data.dir, "val", cfg.seq_len, cfg.data.align_documents, eot,
                          max_token=cfg.model.vocab_size)
        return cls(windows, cfg.eval.every, cfg.eval.batches, cfg.run.micro_batch, cfg.run.loss_chunk,
                   eot if cfg.data.document_masking else None)

    def __call__(self, model, runtime, shard=(0, 1), reduce=None) -> dict[str, float]:
        r = evaluate_loss(model, self.windows, self.micro_batch, runtime, self.batches, self.doc_eot, shard, reduce,
                          self.loss_chunk or runtime.loss_chunk)
        return {"val_loss": r["loss"], "val_perplexity": r["perplexity"]}
