"""Validation loss and perplexity over the windows of a prepared split."""

from __future__ import annotations

import math

import torch

from ..data.loader import Windows, eval_batches, to_device
from ..runtime import Runtime


@torch.no_grad()
def evaluate_loss(model: torch.nn.Module, windows: Windows, batch_size: int, runtime: Runtime, max_batches: int = 0) -> dict:
    """Mean next-token loss over the split's windows (all of them when max_batches is 0), token-weighted."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in eval_batches(windows, batch_size, max_batches):
        x, y = to_device(batch, runtime.device)
        with runtime.autocast():
            _, loss = model(x, y)
        total += loss.item() * y.numel()
        count += y.numel()
    model.train(was_training)
    mean = total / count
    return {"loss": mean, "perplexity": math.exp(min(mean, 50.0)), "tokens": count}


def evaluate_checkpoint(checkpoint: str, data_dir: str, split: str = "val", device: str = "auto",
                        batch_size: int = 8, max_batches: int = 0) -> dict:
    """Loss and perplexity of a checkpoint on a prepared split, over all its windows by default."""
    from ..data.shards import read_meta
    from ..runtime import resolve_runtime
    from ..train.checkpoint import load_model_from_checkpoint
    from ..train.trainer import check_data_fits

    runtime = resolve_runtime(device)
    model, config, path = load_model_from_checkpoint(checkpoint, runtime.device)
    check_data_fits(config, read_meta(data_dir))
    windows = Windows(data_dir, split, config.seq_len)
    result = evaluate_loss(model, windows, batch_size, runtime, max_batches)
    return {"checkpoint": str(path), "split": split, "seq_len": config.seq_len, **result}
