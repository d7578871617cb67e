"""Next-token accuracy: how often the model's most likely next token is the right one, on the same validation
windows as the val loss. Enable with --set eval.tasks=token_accuracy; it runs every eval.every steps over
eval.batches micro-batches."""

from __future__ import annotations

import numpy as np
import torch

from ..data.loader import Windows, to_device
from ..metrics.names import Metric
from .evaluator import Evaluator, rank_rounds


class TokenAccuracy(Evaluator):
    name = "token_accuracy"
    metrics = (Metric("val_token_accuracy", "top-1", ".3f", "next-token accuracy (validation)", better="higher"),)

    def __init__(self, windows: Windows, every: int | None, batches: int | None, micro_batch: int):
        super().__init__(every)
        self.windows, self.batches, self.micro_batch = windows, batches, micro_batch

    @classmethod
    def from_config(cls, cfg, data_meta: dict, echo) -> "TokenAccuracy | None":
        if not cls.requested(cfg) or "val" not in data_meta.get("splits", {}):
            return None
        windows = Windows(cfg.data.dir, "val", cfg.seq_len, max_token=cfg.model.vocab_size)
        return cls(windows, cfg.eval.every, cfg.eval.batches, cfg.run.micro_batch)

    @torch.no_grad()
    def __call__(self, model, runtime, shard=(0, 1), reduce=None) -> dict[str, float]:
        was_training = model.training
        model.eval()
        stop = len(self.windows) if self.batches is None else min(len(self.windows), self.batches * self.micro_batch)
        hits, count = 0.0, 0.0
        for _, items in rank_rounds(stop, self.micro_batch, shard):  # every rank runs the same number of passes
            mine = np.asarray(items, dtype=np.int64)
            x, y = to_device(self.windows.tokens(mine if len(mine) else np.zeros(1, dtype=np.int64)), runtime.device)
            with runtime.autocast():  # top-1 per token, chunk by chunk: never the whole logits
                _, correct = model(x, y, per_token=True, loss_chunk=runtime.loss_chunk)[1]
            if len(mine):
                hits = hits + correct.sum()  # on the device: one host read at the end, not one per batch
                count += y.numel()
        model.train(was_training)
        hits = float(hits)
        if reduce is not None:
            hits, count = reduce([hits, count])
        return {"val_token_accuracy": hits / max(count, 1.0)}
