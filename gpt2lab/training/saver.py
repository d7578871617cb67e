"""Saving checkpoints without stalling training.

The training loop only pays for a snapshot: the weights and the training state copied to CPU memory. A
background thread then writes the folder (atomically, see gpt2lab/checkpoint.py) and applies retention: the
newest keep_last verified checkpoints, every multiple of keep_every, and the protected ones (the newest
checkpoint known to be healthy, which a rollback would return to). A checkpoint that fails verification is set
aside as step_N.corrupt, reported, and never counted as kept. One save is in flight at a time; a new save, or
the end of the run, first waits for the previous one. A failed write (a full disk) surfaces in the training
thread as a one-line error at the first step after it failed (check(), every step), not at the next save hours
later, and the previous checkpoints stay as they were.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Callable

from ..checkpoint import model_weights, prune_checkpoints, save_checkpoint
from ..config import Config


def to_cpu(obj):
    """A deep copy of nested state (optimizer, scaler) with every tensor on the CPU."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


class CheckpointSaver:
    def __init__(self, run_dir: Path, config: Config, echo: Callable = print):
        self.run_dir, self.config, self.echo = run_dir, config, echo
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._notes: list[str] = []
        self.last_saved: Path | None = None

    def save(self, step: int, model, state: dict, protect: set[int] = frozenset()) -> float:
        """Snapshot now, write in the background; returns the seconds the caller was held up."""
        start = time.perf_counter()
        self.wait()
        weights = model_weights(model)
        snapshot = to_cpu(state)
        if self.config.checkpoint.asynchronous:
            self._thread = threading.Thread(target=self._write, args=(step, weights, snapshot, set(protect)),
                                            daemon=True, name=f"checkpoint-{step}")
            self._thread.start()
        else:
            self._write(step, weights, snapshot, set(protect))
            self._raise_pending()
        return time.perf_counter() - start

    def save_sharded(self, step: int, model, optimizer, state: dict, dist, protect: set[int] = frozenset()) -> None:
        """FSDP, on every rank: each rank writes its shards (torch.distributed.checkpoint) into the temporary
        folder; rank 0 then adds the full weights and the rest, and the folder takes its name (synchronously)."""
        from ..checkpoint import checkpoint_folder, temporary_folder
        from .distributed import full_weights, save_sharded

        tmp = temporary_folder(checkpoint_folder(self.run_dir, step))
        if dist.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        dist.barrier()
        save_sharded(tmp, model, optimizer)
        weights = full_weights(model)  # a collective: every rank takes part
        if dist.is_main:
            self._write(step, weights, {**state, "step": step}, set(protect), tmp_prepared=True)
            self._raise_pending()
        dist.barrier()

    def _write(self, step: int, weights: dict, state: dict, protect: set[int], tmp_prepared: bool = False) -> None:
        try:
            self.last_saved = save_checkpoint(self.run_dir, step, weights, self.config, state, tmp_prepared)
            k = self.config.checkpoint
            _, aside = prune_checkpoints(self.run_dir, k.keep_last, k.keep_every, protect | {step}, state.get("run_id"),
                                         k.older)
            self._notes += [f"warning: {p.name.split('.')[0]} failed verification and was set aside as {p.name}"
                            for p in aside]
        except BaseException as exc:  # handed to the training thread
            self._error = exc

    def check(self) -> None:
        """Without waiting: report a background write that has finished, and raise its error if it failed. Called
        every step, so that a full disk met at one save stops the run at once instead of after another interval of
        training that could not be saved either."""
        if self._thread is not None and not self._thread.is_alive():
            self.wait()

    def wait(self) -> None:
        """Block until the save in flight (if any) is on disk; raise its error, if it failed."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._raise_pending()

    def _raise_pending(self) -> None:
        notes, self._notes = self._notes, []
        for note in notes:
            self.echo(note)
        if self._error is not None:
            error, self._error = self._error, None
            raise error
