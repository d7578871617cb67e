"""Where metrics go: metrics.jsonl always (one JSON object per optimizer step, flushed as it is written);
TensorBoard when installed (log.tensorboard); Weights & Biases when log.wandb_project is set (offline mode
works with WANDB_MODE=offline).

Non-finite values are written as the strings "nan", "inf" and "-inf" (JSON has no NaN) and read back as floats.
Reading tolerates what a kill or a stranger leaves: a cut-off last line, lines that are not records.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ..errors import UserError
from ..files import write_error, write_text_atomic

METRICS_FILE = "metrics.jsonl"
NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "NaN": math.nan, "Infinity": math.inf,
              "-Infinity": -math.inf}


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN or Infinity
    return value


class MetricsLogger:
    def __init__(self, run_dir: str | os.PathLike, tensorboard: bool = False, wandb_project: str | None = None,
                 config: dict | None = None, echo=print):
        self.path = Path(run_dir) / METRICS_FILE
        try:
            self._file = open(self.path, "a", encoding="utf-8")
        except OSError as exc:
            raise write_error("metrics", self.path, exc) from None
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
                raise UserError("log.wandb_project is set but wandb is not installed; pip install wandb, or unset it") from None
            self._wandb = wandb.init(project=wandb_project, dir=str(run_dir), config=config, name=Path(run_dir).name)

    def log(self, record: dict) -> None:
        try:
            self._file.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")
            self._file.flush()
        except OSError as exc:
            raise write_error("metrics", self.path, exc) from None
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}
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


def _record(line: str) -> dict | None:
    """A metrics record, or None for a line that is not one (cut short by a kill, or foreign)."""
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, ValueError):
        return None
    step = record.get("step") if isinstance(record, dict) else None
    if not isinstance(step, int) or isinstance(step, bool):
        return None
    return {k: NON_FINITE.get(v, v) if isinstance(v, str) else v for k, v in record.items()}


def _parsed(path: Path) -> list[tuple[str, dict]]:
    out = []
    text = path.read_bytes().decode("utf-8", errors="replace")
    for line in text.splitlines():
        record = _record(line)
        if record is not None:
            out.append((line, record))
    return out


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    path = Path(run_dir) / METRICS_FILE
    return [record for _, record in _parsed(path)] if path.is_file() else []


def truncate_metrics(run_dir: str | os.PathLike, last_step: int) -> None:
    """Drop records after last_step (a resumed run writes them again) and any partial line; atomic."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return
    kept = [line for line, record in _parsed(path) if record["step"] <= last_step]
    write_text_atomic(path, "".join(line + "\n" for line in kept), "metrics")
