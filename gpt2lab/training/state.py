"""RunState: the counters of a run that the loop advances and a checkpoint saves and restores, in one place.

The trainer reads and writes them as its own attributes (trainer.step, trainer.elapsed, ...) through `Shared`,
so there is one owner and one list of what a checkpoint carries."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

# what a checkpoint's state.json carries of it
SAVED = ("step", "elapsed", "cpu_seconds", "lr_scale", "rollbacks", "run_id")


@dataclass
class RunState:
    step: int = 0  # optimizer steps taken
    elapsed: float = 0.0  # seconds trained (evaluations included), across resumes
    cpu_seconds: float = 0.0  # CPU seconds this process (every thread) spent over the same span, across resumes
    lr_scale: float = 1.0  # multiplies the schedule's LR; each rollback lowers it
    rollbacks: int = 0  # rollbacks since the run (or its last resume) began
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)  # names this run's checkpoints (kept on resume)
    trusted: int | None = None  # the newest checkpoint known healthy: a rollback returns there
    awaiting_trust: int | None = None  # a checkpoint saved, trusted once the step after it is not skipped
    eval_seconds: float = 0.0  # the last evaluation's duration: kept free at the end of a time budget
    agreed_clock: tuple[float, float] | None = None  # under torchrun: (elapsed, eval seconds) agreed by all ranks

    def saved(self) -> dict:
        return {name: getattr(self, name) for name in SAVED}

    def restore(self, state: dict) -> None:
        """Take a checkpoint's values (state.json, already checked by formats.schemas.TrainingState)."""
        self.step, self.elapsed = state["step"], state.get("elapsed", 0.0)
        self.cpu_seconds = state.get("cpu_seconds", 0.0)
        self.lr_scale, self.rollbacks = state.get("lr_scale", 1.0), state.get("rollbacks", 0)
        self.run_id = state.get("run_id") or self.run_id

    def publish(self, step: int, skipped: bool) -> None:
        """A step's record was read: the checkpoint saved before it is healthy if the step was not skipped."""
        if self.awaiting_trust == step - 1 and not skipped:
            self.trusted, self.awaiting_trust = step - 1, None


class Shared:
    """A trainer attribute that lives in its RunState (trainer.step is trainer.state.step)."""

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, obj, owner=None):
        return self if obj is None else getattr(obj.state, self.name)

    def __set__(self, obj, value) -> None:
        setattr(obj.state, self.name, value)
