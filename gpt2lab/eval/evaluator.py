"""What an evaluation is, to the trainer: a name, when it is due, the metrics it reports, and a call that
returns them.

An evaluator is built from the run's config by `from_config(cfg, data_meta, echo)` (None when the config does
not ask for it) and called as `evaluator(model, runtime, shard=(rank, world), reduce=sum_across_ranks)`, in
eval mode with no gradients, on every rank (each scores its part; `reduce` sums the counts). To add one, write
a subclass in its own file and add it to EVALUATORS in eval/__init__.py; by default it runs when its name is in
eval.tasks, every eval.every steps (see `requested`).
"""

from __future__ import annotations

from typing import Iterator

from ..metrics.names import Metric


def rank_rounds(total: int, per_rank: int, shard: tuple[int, int] = (0, 1)) -> Iterator[tuple[int, range]]:
    """How every evaluation splits its work across ranks: rounds of world x per_rank items; in each, this rank
    takes its slice (range(0) when nothing is left for it). Every rank runs the same number of rounds (FSDP's
    forward is a collective), and which items are evaluated does not depend on the world size.
    Yields (the round's first item, this rank's items)."""
    rank, world = shard
    for begin in range(0, total, per_rank * world):
        yield begin, range(min(begin + rank * per_rank, total), min(begin + (rank + 1) * per_rank, total))


class Evaluator:
    name: str = ""
    metrics: tuple[Metric, ...] = ()

    def __init__(self, every: int | None):
        self.every = every

    def due(self, step: int, final: bool) -> bool:
        """At every multiple of `every`, and at the last step of the run."""
        return final or (self.every is not None and step % self.every == 0)

    def describe(self) -> dict:
        return {"name": self.name, "every": self.every, "metrics": [m.as_dict() for m in self.metrics]}

    @classmethod
    def requested(cls, cfg) -> bool:
        """Whether eval.tasks names this evaluator."""
        return cls.name in [t.strip() for t in (cfg.eval.tasks or "").split(",")]

    @classmethod
    def from_config(cls, cfg, data_meta: dict, echo) -> "Evaluator | None":
        raise NotImplementedError

    def __call__(self, model, runtime, shard: tuple[int, int] = (0, 1), reduce=None) -> dict[str, float]:
        raise NotImplementedError
