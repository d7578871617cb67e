"""`gpt2lab thin RUN_DIR`: a finished or paused run's older checkpoints reduced to their weights, so that a run
that saved many (a lab's evaluation points, a sweep) keeps every one of them for eval, sample and export at about
a third of the disk. The newest --keep checkpoints keep their training state, so the run can still be resumed.
The run folder's lock is taken first: a run being trained there is never thinned under it."""

from __future__ import annotations

import os
from pathlib import Path

from .. import checkpoint as ckpt
from ..errors import UserError
from ..files import FolderLock


def thin_run(run_dir: str | os.PathLike, keep: int = 1) -> dict:
    """Drop the training state of every complete checkpoint in RUN_DIR but the newest `keep` that hold it.
    Returns {"thinned": [names], "kept": [names], "skipped": {name: why}, "freed_bytes"}."""
    run = Path(run_dir)
    if keep < 0:
        raise UserError(f"--keep {keep}: give how many of the newest checkpoints keep their training state (0 or more)")
    if not (run / ckpt.CHECKPOINTS).is_dir():
        raise UserError(f"{run} holds no checkpoints folder; pass a run directory (the --out of gpt2lab train)")
    lock = FolderLock(run, "the run directory",
                      remedy="thin it once that run has finished or paused (--stop-at, or SIGTERM: it saves first)").acquire()
    try:
        full = [p for p in ckpt.complete_checkpoints(run) if ckpt.holds_training_state(p)]
        thinned, skipped, freed = [], {}, 0
        for path in full[keep:]:
            try:
                freed += ckpt.drop_training_state(path)
                thinned.append(path.name)
            except ckpt.CorruptCheckpoint as exc:  # left as it is: --resume sets it aside and says why
                skipped[path.name] = str(exc)
        return {"thinned": thinned, "kept": [p.name for p in full[:keep]], "skipped": skipped, "freed_bytes": freed}
    finally:
        lock.release()
