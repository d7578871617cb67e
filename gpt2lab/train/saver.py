"""Saving checkpoints without stalling training.

The training loop only pays for a snapshot: the weights, optimizer and scaler state copied to CPU memory.
A background thread then writes the folder (atomically, see checkpoint.py) and applies the retention policy
(keep the newest keep_last, plus every step that is a multiple of keep_every). One save is in flight at a
time; a new save, or the end of the run, first waits for the previous one. A failed write (a full disk)
surfaces in the training thread as a one-line error at the next save or at the end.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from ..config import Config
from .checkpoint import model_weights, prune_checkpoints, save_checkpoint, to_cpu


class CheckpointSaver:
    def __init__(self, run_dir: Path, config: Config, asynchronous: bool = True, keep_last: int = 0, keep_every: int = 0):
        self.run_dir, self.config = run_dir, config
        self.asynchronous, self.keep_last, self.keep_every = asynchronous, keep_last, keep_every
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.last_saved: Path | None = None

    def save(self, step: int, model, state: dict) -> float:
        """Snapshot now, write in the background; returns the seconds the caller was held up."""
        start = time.perf_counter()
        self.wait()
        weights = model_weights(model)
        snapshot = to_cpu(state)
        if self.asynchronous:
            self._thread = threading.Thread(target=self._write, args=(step, weights, snapshot), daemon=True,
                                            name=f"checkpoint-{step}")
            self._thread.start()
        else:
            self._write(step, weights, snapshot)
            self._raise_pending()
        return time.perf_counter() - start

    def _write(self, step: int, weights: dict, state: dict) -> None:
        try:
            self.last_saved = save_checkpoint(self.run_dir, step, weights, self.config, state)
            prune_checkpoints(self.run_dir, self.keep_last, self.keep_every)
        except BaseException as exc:  # handed to the training thread
            self._error = exc

    def wait(self) -> None:
        """Block until the save in flight (if any) is on disk; raise its error, if it failed."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._raise_pending()

    def _raise_pending(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
