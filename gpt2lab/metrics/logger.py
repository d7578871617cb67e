"""Where metrics go: metrics.jsonl always (one JSON object per optimizer step, flushed as it is written);
TensorBoard when installed (log.tensorboard); Weights & Biases when log.wandb_project is set (offline mode
works with WANDB_MODE=offline).

Non-finite values are written as the strings "nan", "inf" and "-inf" (JSON has no NaN) and read back as floats.
Reading tolerates what a kill or a stranger leaves: a cut-off last line, lines that are not records (over 1 MB,
nested, not JSON, no whole-number step); in a record, only numbers, strings and booleans are kept (a null, a
list or a number beyond 2**63 is dropped), and `number()` is how a reader takes a metric as a float.
Each record is one unbuffered write: a full disk fails that write (one line), and nothing is left to flush later.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ..files import write_error, write_text_atomic
from ..formats import BadFile, parse_json
from ..formats.json_file import MB
from .sinks import open_sinks

METRICS_FILE = "metrics.jsonl"
NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "NaN": math.nan, "Infinity": math.inf,
              "-Infinity": -math.inf}


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN or Infinity
    return value


class MetricsLogger:
    """metrics.jsonl, and the sinks (TensorBoard, W&B, ...: metrics/sinks.py) the run's config asks for."""

    def __init__(self, run_dir: str | os.PathLike, config: dict | None = None, echo=print):
        self.path = Path(run_dir) / METRICS_FILE
        self._file = self._open()
        self.sinks = open_sinks(Path(run_dir), config, echo) if config else []

    def _open(self):
        try:
            return open(self.path, "ab", buffering=0)
        except OSError as exc:
            raise write_error("metrics", self.path, exc) from None

    def log(self, record: dict) -> None:
        line = (json.dumps({k: _clean(v) for k, v in record.items()}) + "\n").encode("utf-8", errors="surrogateescape")
        try:
            view = memoryview(line)
            while view:  # a raw write may write less than asked
                view = view[self._file.write(view):]
        except OSError as exc:
            raise write_error("metrics", self.path, exc) from None
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}
        for sink in self.sinks:
            sink.log(scalars, record["step"])

    def truncate(self, last_step: int) -> None:
        """Forget records after last_step (a rollback writes them again)."""
        self._file.close()
        truncate_metrics(self.path.parent, last_step)
        self._file = self._open()

    def close(self) -> None:
        self._file.close()  # unbuffered: nothing left to write, so a full disk cannot fail here
        for sink in self.sinks:
            sink.close()


LIMIT = 1 << 63


def _value(v):
    """A kept value: a string (non-finite spellings as floats), a boolean, or a number within 2**63; else None."""
    if isinstance(v, str):
        return NON_FINITE.get(v, v)
    if isinstance(v, bool) or (isinstance(v, float)) or (isinstance(v, int) and -LIMIT < v < LIMIT):
        return v
    return None


def _record(line: str) -> dict | None:
    """A metrics record, or None for a line that is not one (cut short by a kill, or foreign)."""
    if len(line) > MB:
        return None
    try:
        record = parse_json(line, METRICS_FILE, max_depth=4)
    except BadFile:
        return None
    step = record.get("step") if isinstance(record, dict) else None
    if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step < LIMIT:
        return None
    values = {k: _value(v) for k, v in record.items()}
    return {k: v for k, v in values.items() if v is not None}


def number(record: dict, key: str) -> float | None:
    """A metric as a float (nan and inf included), or None when the record has no number under that key."""
    v = record.get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


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
