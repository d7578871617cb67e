"""Where metrics go besides metrics.jsonl (which is always written, and is what report, compare and resume read):
one class per backend behind one interface, and one table of them. A new backend is a class and a row.

A sink gets each record's numbers (`scalars`: the finite and non-finite floats and ints, without `step`) and
the step; it must not fail the run for a reason of its own making an optional view (a backend that is not
installed is a note, except W&B, which the user asked for by name)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

from ..errors import UserError
from ..files import utf8_path


class Sink(Protocol):
    def log(self, scalars: dict[str, float], step: int) -> None: ...
    def close(self) -> None: ...


class TensorBoardSink:
    """RUN_DIR/tensorboard (log.tensorboard; on when TensorBoard is installed)."""

    def __init__(self, run_dir: Path, config: dict, echo: Callable):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def log(self, scalars: dict[str, float], step: int) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """Weights & Biases (log.wandb_project; WANDB_MODE=offline works without a network)."""

    def __init__(self, run_dir: Path, config: dict, echo: Callable):
        import wandb

        self.run = wandb.init(project=config["log"]["wandb_project"], dir=str(run_dir), config=config, name=run_dir.name)

    def log(self, scalars: dict[str, float], step: int) -> None:
        self.run.log(scalars, step=step)

    def close(self) -> None:
        self.run.finish()


# backend: (is it asked for, given the run's config; its class; what a missing package means)
SINKS: dict[str, tuple[Callable[[dict], bool], type, str]] = {
    "tensorboard": (lambda c: bool(c["log"].get("tensorboard")), TensorBoardSink,
                    "note: TensorBoard logging is off (pip install tensorboard); metrics.jsonl has everything"),
    "wandb": (lambda c: bool(c["log"].get("wandb_project")), WandbSink,
              "error: log.wandb_project is set but wandb is not installed; pip install wandb, or unset it"),
}


def open_sinks(run_dir: Path, config: dict, echo: Callable) -> list[Sink]:
    """The backends the run's config asks for; none when the run folder's name is not UTF-8 (they cannot write
    there), with a note."""
    asked = [name for name, (wanted, _, _) in SINKS.items() if wanted(config)]
    if not utf8_path(run_dir):
        if asked:
            echo(f"note: {' and '.join(asked)} logging is off: the run folder's name is not UTF-8, which "
                 f"{'they' if len(asked) > 1 else 'it'} cannot write to; metrics.jsonl has everything")
        return []
    sinks = []
    for name in asked:
        _, kind, missing = SINKS[name]
        try:
            sinks.append(kind(run_dir, config, echo))
        except ImportError:
            if missing.startswith("error: "):
                raise UserError(missing.removeprefix("error: ")) from None
            echo(missing)
    return sinks
