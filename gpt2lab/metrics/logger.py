"""Where metrics go: metrics.jsonl always (one JSON object per optimizer step, flushed as it is written);
TensorBoard when installed (run.tensorboard); Weights & Biases when run.wandb_project is set (offline mode
works with WANDB_MODE=offline)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ..errors import UserError

METRICS_FILE = "metrics.jsonl"


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN or Infinity
    return value


class MetricsLogger:
    def __init__(self, run_dir: str | os.PathLike, tensorboard: bool = False, wandb_project: str = "",
                 config: dict | None = None, echo=print):
        self.path = Path(run_dir) / METRICS_FILE
        self._file = open(self.path, "a", encoding="utf-8")
        self._tb = self._wandb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
            except ImportError:
                echo("note: TensorBoard logging is off (pip install tensorboard); metrics.jsonl has everything")
        if wandb_project:
            try:
                import wandb
            except ImportError:
                raise UserError("run.wandb_project is set but wandb is not installed; pip install wandb, or unset it") from None
            self._wandb = wandb.init(project=wandb_project, dir=str(run_dir), config=config, name=Path(run_dir).name)

    def log(self, record: dict) -> None:
        self._file.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")
        self._file.flush()
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(key, value, record["step"])
        if self._wandb is not None:
            self._wandb.log(scalars, step=record["step"])

    def truncate(self, last_step: int) -> None:
        """Forget records after last_step (a rollback writes them again)."""
        self._file.close()
        truncate_metrics(self.path.parent, last_step)
        self._file = open(self.path, "a", encoding="utf-8")

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def _parsed(path: Path) -> list[tuple[str, dict]]:
    """(line, record) for each complete record; a line cut short by a kill is left out."""
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append((line, json.loads(line)))
        except json.JSONDecodeError:
            continue
    return out


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    path = Path(run_dir) / METRICS_FILE
    return [record for _, record in _parsed(path)] if path.exists() else []


def truncate_metrics(run_dir: str | os.PathLike, last_step: int) -> None:
    """Drop records after last_step (a resumed run writes them again) and any partial line; atomic."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return
    kept = [line for line, record in _parsed(path) if record.get("step", 0) <= last_step]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)
