"""The disk a run's checkpoints will take, said before the first step when the run folder's disk cannot hold it.

A run that fills its disk stops at a save (it keeps its last complete checkpoint and says how to go on), hours in.
From the checkpoint settings the run's saves are known in advance (every `checkpoint.every` steps and at the end),
and so is what retention keeps of them (the newest keep_last and the multiples of keep_every whole; the rest
deleted, or reduced to weights with checkpoint.older=weights). A whole checkpoint holds the weights and the
optimizer's state; one more is on disk while a save is written, before retention runs. The estimate leaves out
the small files (config, manifest, the run's records) and a sharded run's per-rank copies of the same bytes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..checkpoint import CHECKPOINTS, retained

GB = 2**30


def saved_steps(every: int | None, last: int) -> list[int]:
    """The steps a run saves at up to `last` (where this invocation stops): multiples of `every`, and `last`."""
    return sorted(set(range(every, last + 1, every) if every else ()) | ({last} if last > 0 else set()))


def checkpoints_bytes(steps: list[int], keep_last: int | None, keep_every: int | None, older: str,
                      weights: int, state: int) -> int:
    """What a run's checkpoints at these steps take once retention has run, with one more whole save in flight."""
    kept = retained(steps, keep_last, keep_every)
    thinned = len(steps) - len(kept) if older == "weights" else 0
    return len(kept) * (weights + state) + thinned * weights + (weights + state if steps else 0)


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def disk_note(run_dir: Path, every: int | None, keep_last: int | None, keep_every: int | None, older: str,
              last: int, weights: int, state: int) -> str | None:
    """A warning when the run folder's disk has less free space than the run's checkpoints still need (what they
    will take where this invocation stops, less what its checkpoints folder holds already: a resumed run's earlier
    saves); None when it fits."""
    need = checkpoints_bytes(saved_steps(every, last), keep_last, keep_every, older, weights, state)
    need -= folder_bytes(run_dir / CHECKPOINTS)
    where = next((p for p in (run_dir, *run_dir.parents) if p.exists()), run_dir)
    try:
        free = shutil.disk_usage(where).free
    except OSError:  # a file system that does not say: the save itself will tell, as before
        return None
    if need <= free:
        return None
    return (f"this run's checkpoints need about {need / GB:.1f} GB more and {where} has {free / GB:.1f} GB free: "
            f"the run will stop at the save that fills the disk (keeping its last complete checkpoint). Free space, "
            f"or save less: checkpoint.every, checkpoint.keep_last, checkpoint.older=delete")
