"""A finished run whose checkpoints were lost (restored from its committed records on a new machine) trained
again, bit for bit, for its final checkpoint: what other text is scored on. A one-thread run repeats exactly on
the processor it trained on (same bf16 kernels); on another processor, or with more threads, it is another run,
so it is refused before anything trains. The rebuild trains in work/rebuilds/RUN (resumed when stopped), every
training and evaluation loss of its records is compared with the run's, and only then its final checkpoint moves
into the run's folder; the run's records (its clocks among them) stay as they were measured."""

from __future__ import annotations

import shutil
from pathlib import Path

from gpt2lab.metrics.logger import read_metrics

from .protocol import parse_run_name, precision_of_name, steps_of
from .runs import finished, gpt2lab_train, processor_of, run_sets, threads_of, threads_of_run


class RebuildError(ValueError):
    """A run that cannot be rebuilt, or whose rebuild is not the run (one line, what to do)."""


def this_processor() -> str:
    """This machine's processor as a run's device report names it (processor_of): its name and its bf16 units."""
    from gpt2lab.runtime import cpu_bf16_native, cpu_name

    return f"{cpu_name()} ({cpu_bf16_native()[1]})"


def final_checkpoint(run: Path) -> Path | None:
    """The run's final checkpoint on disk (the step its horizon ends at), or None."""
    from gpt2lab.checkpoint import complete_checkpoints, step_of

    _, horizon, _ = parse_run_name(run.name)
    return next((p for p in complete_checkpoints(run) if step_of(p) == steps_of(horizon)), None)


def check_rebuildable(run: Path, cpus: str) -> None:
    """RebuildError unless `run` finished and can repeat here: its processor, one thread then and now."""
    _, horizon, _ = parse_run_name(run.name)
    if not finished(run, horizon):
        raise RebuildError(f"{run.name} has not finished; `run` or `queue` continues it instead of a rebuild")
    threads = threads_of_run(run)
    if threads != 1 or threads_of(cpus) != 1:
        raise RebuildError(f"{run.name} trained on {threads} thread(s) and --cpus {cpus!r} gives {threads_of(cpus)}: "
                           "only a one-thread run repeats bit for bit; rebuild one-thread runs with one CPU (--cpus 1)")
    if processor_of(run) != this_processor():
        raise RebuildError(f"{run.name} trained on {processor_of(run)} and this machine is {this_processor()}: its bf16 "
                           "losses would not repeat; rebuild it on that processor, or move its records aside and `run` "
                           "it here as a new run")


def first_difference(run: Path, rebuilt: Path) -> str | None:
    """The first record (by step) whose training or evaluation loss differs between the two runs, described; None
    when every step the run recorded is in the rebuild with the same losses."""
    mine = {r["step"]: r for r in read_metrics(rebuilt)}
    for record in read_metrics(run):
        other = mine.get(record["step"])
        if other is None:
            return f"step {record['step']} is missing from the rebuild"
        for key in ("loss", "val_loss"):
            if record.get(key) != other.get(key):
                return f"step {record['step']}'s {key} is {other.get(key)} against the records' {record.get(key)}"
    return None


def rebuild(work: Path, run: Path, cpus: str) -> Path:
    """`run`'s final checkpoint trained again and checked against its records; returns the checkpoint's path in
    the run's folder. A run that has its final checkpoint is left alone."""
    kept = final_checkpoint(run)
    if kept is not None:
        return kept
    check_rebuildable(run, cpus)
    from gpt2lab.checkpoint import latest_checkpoint

    name, horizon, seed = parse_run_name(run.name)
    rebuilt = work / "rebuilds" / run.name
    if not finished(rebuilt, horizon):
        print(f"{run.name}: trained again in {rebuilt}", flush=True)
        gpt2lab_train(work, rebuilt, run_sets(work, name, horizon, seed, precision_of_name(run.name)), cpus, 1,
                      resume=latest_checkpoint(rebuilt) is not None, log_name=f"{run.name}-rebuild")
    difference = first_difference(run, rebuilt)
    if difference is not None:
        raise RebuildError(f"{run.name}: the rebuild is another run ({difference}); it is left in {rebuilt} and the "
                           "run keeps no checkpoint")
    final = final_checkpoint(rebuilt)
    target = run / "checkpoints" / final.name
    target.parent.mkdir(parents=True, exist_ok=True)
    final.rename(target)  # one filesystem: whole or not at all
    shutil.rmtree(rebuilt)
    return target
