"""The learning-rate schedule: linear warmup to the peak, then cosine (or linear) decay to min_lr."""

from __future__ import annotations

import math

from ..config import ScheduleConfig


def lr_at(step: int, peak_lr: float, schedule: ScheduleConfig) -> float:
    """LR for optimizer step `step` (0-based). Warmup reaches the peak at step warmup_steps - 1; the decay
    reaches min_lr at step max_steps and stays there."""
    if step < schedule.warmup_steps:
        return peak_lr * (step + 1) / schedule.warmup_steps
    if schedule.decay == "constant":
        return peak_lr
    span = max(1, schedule.max_steps - schedule.warmup_steps)
    progress = min(1.0, (step - schedule.warmup_steps) / span)
    if schedule.decay == "linear":
        factor = 1.0 - progress
    else:
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
    return schedule.min_lr + factor * (peak_lr - schedule.min_lr)
