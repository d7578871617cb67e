"""HellaSwag, scored completion-style as OpenAI's GPT-2 numbers are.

For each example the context is `ctx`; each of the four endings is appended with a leading space, and scored
by the loss of its own tokens given the context: summed (acc) and divided by its length (acc_norm). The
prediction is the ending with the lowest loss. Endings of many examples run through the model together,
sorted by length so that little of each batch is padding.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.sources import json_lines
from ..errors import UserError
from ..files import input_file
from ..formats import BadFile, check
from ..formats.schemas import HellaSwagRow
from ..metrics.names import Metric
from ..runtime import Runtime
from ..tokenizer import load_tokenizer
from .evaluator import Evaluator, rank_rounds


@dataclass
class Example:
    context: list[int]
    endings: list[list[int]]
    label: int


def read_examples(path: str | Path, limit: int | None = None) -> list[dict]:
    """The rows of a HellaSwag jsonl file, checked; limit keeps the first `limit`."""
    p = input_file(path, "HellaSwag file", "pass the original hellaswag_val.jsonl")
    rows = []
    with open(p, encoding="utf-8", errors="strict") as f:
        try:
            for line_no, row in json_lines(f, p):
                try:
                    rows.append(check(row, HellaSwagRow, f"{p}:{line_no}"))
                except BadFile as exc:
                    raise UserError(f"{exc}: not a HellaSwag row, which needs 'ctx', four 'endings' and a 'label' 0-3") from None
                if limit and len(rows) == limit:
                    break
        except UnicodeDecodeError:
            raise UserError(f"{p} is not UTF-8 text; pass the original hellaswag_val.jsonl") from None
    if not rows:
        raise UserError(f"{p} holds no HellaSwag examples")
    return rows


def encode_examples(rows: list[dict], tokenizer) -> list[Example]:
    return [
        Example(tokenizer.encode(row["ctx"]), [tokenizer.encode(" " + e) for e in row["endings"]], row["label"])
        for row in rows
    ]


def _rows(example: Example, block_size: int) -> list[tuple[list[int], int]]:
    """(tokens, ending length) per ending; the context loses tokens from the left if the model needs it."""
    out = []
    for ending in example.endings:
        seq = (example.context + ending)[-(block_size + 1):]
        out.append((seq, min(len(ending), len(seq) - 1)))
    return out


@torch.no_grad()
def ending_losses(model, examples: list[Example], runtime: Runtime, block_size: int) -> torch.Tensor:
    """(len(examples), 4, 2): for each ending its summed and its mean token loss, in one batched forward."""
    rows = [r for ex in examples for r in _rows(ex, block_size)]
    width = max(len(seq) for seq, _ in rows) - 1
    x = torch.zeros(len(rows), width, dtype=torch.long)
    y = torch.full((len(rows), width), -1, dtype=torch.long)
    for i, (seq, n_end) in enumerate(rows):
        t = torch.tensor(seq)
        x[i, : len(seq) - 1] = t[:-1]
        y[i, len(seq) - 1 - n_end : len(seq) - 1] = t[len(seq) - n_end :]  # only the ending is scored
    x, y = x.to(runtime.device), y.to(runtime.device)
    with runtime.autocast():  # per-token losses chunk by chunk: the (rows, width, vocab) logits never exist whole
        losses, _ = model(x, y, per_token=True, loss_chunk=runtime.loss_chunk)[1]
    total = losses.sum(dim=1)
    count = (y >= 0).sum(dim=1).clamp(min=1)
    return torch.stack([total, total / count], dim=1).view(len(examples), 4, 2).cpu()


def evaluate_hellaswag(model, examples: list[Example], runtime: Runtime, block_size: int, batch_examples: int = 16,
                       shard: tuple[int, int] = (0, 1), reduce=None, progress=None) -> dict:
    """acc (lowest summed loss) and acc_norm (lowest per-token loss) over the examples.

    With shard=(rank, world) each process scores its part of every round and `reduce` sums the counts;
    every process runs the same number of forward passes (FSDP needs that)."""
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].context) + max(map(len, examples[i].endings)))
    correct = torch.zeros(2)
    step = batch_examples * shard[1]
    for b, items in rank_rounds(len(order), batch_examples, shard):
        mine = [order[i] for i in items]
        chosen = [examples[i] for i in mine] or [examples[order[0]]]  # an idle process still runs the forward pass
        scores = ending_losses(model, chosen, runtime, block_size)
        if mine:
            labels = torch.tensor([ex.label for ex in chosen])
            correct += (scores.argmin(dim=1) == labels[:, None]).sum(dim=0).float()
        if progress is not None:
            progress(min(step, len(order) - b))
    model.train(was_training)
    hits = correct.tolist()
    if reduce is not None:
        hits = reduce(hits)
    n = len(examples)
    return {"acc": hits[0] / n, "acc_norm": hits[1] / n, "examples": n, "seconds": round(time.perf_counter() - start, 3)}


class HellaSwag(Evaluator):
    """HellaSwag accuracy in the training loop (eval.hellaswag_every, eval.hellaswag_path, eval.hellaswag_limit)."""

    name = "hellaswag"
    metrics = (Metric("hellaswag_acc_norm", "hellaswag acc_norm", ".4f", "HellaSwag acc_norm", better="higher"),
               Metric("hellaswag_acc", "acc", ".4f", better="higher"))

    def __init__(self, examples: list[Example], every: int | None, block_size: int):
        super().__init__(every)
        self.examples, self.block_size = examples, block_size

    @classmethod
    def from_config(cls, cfg, data_meta: dict, echo) -> "HellaSwag | None":
        e = cfg.eval
        if e.hellaswag_every is None:
            return None
        if not e.hellaswag_path:
            echo(f"note: HellaSwag every {e.hellaswag_every} steps is off until eval.hellaswag_path names hellaswag_val.jsonl")
            return None
        rows = read_examples(e.hellaswag_path, e.hellaswag_limit)
        folder = cfg.data.tokenizer or data_meta.get("tokenizer", {}).get("folder")
        return cls(encode_examples(rows, load_tokenizer(folder)), e.hellaswag_every, cfg.model.block_size)

    def due(self, step: int, final: bool) -> bool:
        return final or step % self.every == 0

    def __call__(self, model, runtime, shard=(0, 1), reduce=None) -> dict[str, float]:
        r = evaluate_hellaswag(model, self.examples, runtime, self.block_size, shard=shard, reduce=reduce)
        return {"hellaswag_acc_norm": r["acc_norm"], "hellaswag_acc": r["acc"]}
