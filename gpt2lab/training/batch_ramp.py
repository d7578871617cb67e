"""A batch that grows during training: fewer micro-batches per optimizer step early on, the full batch after.

With schedule.batch_ramp_steps=R, the micro-batches accumulated per step grow linearly from batch_ramp_start
times the full count (at least one) at step 0 to the full count at step R; from step R on every step is the whole
run.batch_tokens. The micro-batch, and so every compiled shape, never changes: the batch grows by accumulation,
so the ramp needs run.batch_tokens of at least two micro-batches per rank. The count is a function of the step
alone, so every rank and a resumed run agree on it without saving anything, and the tokens seen before a step
are a sum over the steps before it (computed per count, not per step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import UserError


@dataclass(frozen=True)
class BatchRamp:
    full: int  # micro-batches per optimizer step at the full batch
    steps: int | None = None  # the ramp's length in optimizer steps; None: the full batch from the start
    start: float = 0.25  # the share of the full batch at step 0

    def check(self) -> None:
        if self.steps and self.full < 2:
            raise UserError("schedule.batch_ramp_steps grows the batch by accumulating more micro-batches per step, and "
                            "this run has one: set run.batch_tokens to several micro-batches (micro_batch x seq_len x "
                            "ranks), or leave the ramp off")

    def micro_steps(self, step: int) -> int:
        """Micro-batches accumulated by optimizer step `step` (0-based)."""
        if not self.steps or step >= self.steps:
            return self.full
        share = self.start + (1.0 - self.start) * step / self.steps
        return max(1, min(self.full, math.ceil(self.full * share)))

    def _first_step_with(self, count: int) -> int:
        """The first step that accumulates at least `count` micro-batches (the count never falls)."""
        guess = ((count - 1) / self.full - self.start) * self.steps / (1.0 - self.start)
        k = min(self.steps, max(0, math.floor(guess)))
        while k > 0 and self.micro_steps(k - 1) >= count:  # floating point: settle on the exact boundary
            k -= 1
        while k < self.steps and self.micro_steps(k) < count:
            k += 1
        return k

    def micro_steps_before(self, step: int) -> int:
        """Micro-batches (per rank) accumulated by steps 0 .. step-1."""
        if not self.steps:
            return step * self.full
        ramped = min(step, self.steps)
        during = sum(max(0, ramped - self._first_step_with(count)) for count in range(1, self.full + 1))
        return during + (step - ramped) * self.full
