"""The learning-rate schedule as a multiplier of each group's base LR, and the plan of a time-limited run.

  warmup   linear from 1/warmup to 1 over the first warmup_steps steps
  cosine   from 1 down to `floor` (min_lr / lr) along half a cosine, ending at the last step
  linear   the same, along a straight line
  constant 1 after warmup
  wsd      warmup-stable-decay: 1 until the last cooldown_fraction of the run, then linearly down to `floor`

With a time budget the run's length is not known in advance: TimePlan turns the budget into a number of
steps from the observed time per step (evaluations included), and re-plans every step as it drifts, so that
the decay ends at the deadline.
"""

from __future__ import annotations

import math

from ..config import ScheduleConfig


def warmup_of(schedule: ScheduleConfig, total_steps: int) -> int:
    """schedule.warmup_steps, or where it was left unset (a time-budgeted run), 10% of the planned steps, at most
    100: a warmup that follows the plan, so that it always ends inside the run."""
    if schedule.warmup_steps is not None:
        return schedule.warmup_steps
    return min(100, round(0.1 * total_steps))


def lr_multiplier(step: float, schedule: ScheduleConfig, total_steps: int, floor: float,
                  warmup: int | None = None) -> float:
    """The multiplier for optimizer step `step` (0-based; fractional for a time-budgeted run) of a run of
    total_steps. Warmup reaches 1 at step warmup_steps - 1 (`warmup` overrides it: a time plan's, fixed once
    it ended); the decay reaches `floor` at step total_steps and stays there."""
    warmup = warmup_of(schedule, total_steps) if warmup is None else warmup
    if step < warmup:
        return (step + 1) / warmup
    if schedule.decay == "constant":
        return 1.0
    if schedule.decay == "wsd":
        start = max(warmup, total_steps - math.ceil(schedule.cooldown_fraction * total_steps))
        if step < start:
            return 1.0
        progress = min(1.0, (step - start) / max(1, total_steps - start))
        return 1.0 - (1.0 - floor) * progress
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    factor = 1.0 - progress if schedule.decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return floor + factor * (1.0 - floor)


def floor_of(schedule: ScheduleConfig, peak_lr: float) -> float:
    """The final multiplier: schedule.min_lr as a fraction of the peak LR, or schedule.min_lr_ratio."""
    return schedule.min_lr / peak_lr if schedule.min_lr is not None else schedule.min_lr_ratio


def lr_at(step: int, peak_lr: float, schedule: ScheduleConfig) -> float:
    """The absolute LR of a group whose base LR is peak_lr, in a run of schedule.max_steps."""
    return peak_lr * lr_multiplier(step, schedule, schedule.max_steps, floor_of(schedule, peak_lr))


class TimePlan:
    """How many steps fit in a time budget, re-planned from the measured seconds per step.

    The first `settle` steps of each process (compilation, warm caches) are not measured. `reserve_s` is kept
    free at the end for the final evaluation. Until there is a measurement, the plan is the step cap."""

    def __init__(self, budget_s: float, cap: int, settle: int = 2):
        self.budget_s, self.cap, self.settle = budget_s, cap, settle
        self.planned = cap
        self._ref: tuple[int, float] | None = None
        self._seen = 0
        # the schedule's course after warmup, in time: where warmup ended (step, share of the usable time), how
        # far the decay has come (only grows), the time kept for evaluations (only grows)
        self.warmup_end: tuple[int, float] | None = None
        self.progress = 0.0
        self.reserve_s = 0.0

    def position(self, step: int, warmup: int, elapsed: float, eval_seconds: float) -> tuple[float, int]:
        """(schedule position in steps, the warmup in force). Warmup goes by steps; after it, the decay goes by
        the share of the usable time spent since warmup ended, which only grows: a step-time estimate that drifts
        or an evaluation faster than the last never turns the decay back up, and the decay still ends at the
        deadline. The warmup is fixed at the step it ended."""
        if self.warmup_end is None and step < warmup:
            return float(step), warmup
        self.reserve_s = max(self.reserve_s, eval_seconds)
        share = min(1.0, elapsed / max(1e-9, self.budget_s - self.reserve_s))
        if self.warmup_end is None:
            self.warmup_end = (step, share)
        ended, share0 = self.warmup_end
        if share0 < 1.0:
            self.progress = max(self.progress, min(1.0, (share - share0) / (1.0 - share0)))
        else:
            self.progress = 1.0
        return ended + self.progress * max(0, self.planned - ended), ended

    def update(self, step: int, elapsed: float, reserve_s: float = 0.0) -> int:
        """The planned total after `step` steps and `elapsed` seconds of training (this and earlier processes)."""
        self._seen += 1
        if self._seen == self.settle:
            self._ref = (step, elapsed)
        if elapsed + reserve_s >= self.budget_s:
            self.planned = step
        elif self._ref is not None and step > self._ref[0]:
            per_step = (elapsed - self._ref[1]) / (step - self._ref[0])
            remaining = int((self.budget_s - reserve_s - elapsed) / per_step) if per_step > 0 else self.cap
            self.planned = max(step + 1, min(self.cap, step + remaining))
        return self.planned

    def state_dict(self) -> dict:
        return {"planned": self.planned, "budget_s": self.budget_s, "warmup_end": self.warmup_end,
                "progress": self.progress, "reserve_s": self.reserve_s}

    def load_state_dict(self, state: dict) -> None:
        if state and state.get("budget_s") == self.budget_s:
            self.planned = state["planned"]
            end = state.get("warmup_end")
            self.warmup_end = (int(end[0]), float(end[1])) if end else None
            self.progress, self.reserve_s = float(state.get("progress", 0.0)), float(state.get("reserve_s", 0.0))
