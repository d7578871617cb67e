"""Scoring checkpoints on the scoring split and finding where a run first reaches a target there: bisection over
its kept checkpoints, interpolation between the two around the crossing, and a replay of that stretch with
denser checkpoints when they are more than RESOLUTION of its tokens apart."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from gpt2lab.files import write_json_atomic
from gpt2lab.metrics.logger import read_metrics

from . import data as lab_data, runs
from .protocol import RESOLUTION, ROOT, parse_run_name, precision_of_name


def score(work: Path, checkpoint: Path, cpus: str) -> float:
    """A checkpoint's loss on the whole scoring split (cached beside the checkpoint)."""
    cache = checkpoint.parent.parent / "scoring.json"
    known = json.loads(cache.read_text()) if cache.is_file() else {}
    if checkpoint.name in known:
        return known[checkpoint.name]
    _, scoring_dir = lab_data.prepare_data(work)
    command = [sys.executable, "-m", "gpt2lab", "eval", str(checkpoint), "--data", str(scoring_dir), "--split", "train",
               "--device", "cpu", "--batch-size", "8", "--json", "--quiet"]
    if cpus and shutil.which("taskset"):
        command = ["taskset", "-c", cpus, *command]
    env = {**os.environ, "OMP_NUM_THREADS": str(runs.threads_of(cpus)), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
    if done.returncode != 0:
        sys.exit(f"quality_lab: scoring {checkpoint} failed: {done.stderr.strip()[-300:]}")
    loss = json.loads(done.stdout.strip().splitlines()[-1])["train"]["loss"]
    known = json.loads(cache.read_text()) if cache.is_file() else {}  # again: another core may have scored meanwhile
    known[checkpoint.name] = loss
    write_json_atomic(cache, known, "the scoring cache")
    return loss


def checkpoints(run: Path) -> list[tuple[int, Path]]:
    """The run's checkpoints as (step, path): those on disk and those its scoring cache names (a run whose records
    alone were kept, as committed under bench/results, or whose checkpoints were thinned out after scoring), so
    that `report` reads their cached scores."""
    from gpt2lab.checkpoint import complete_checkpoints, step_of

    found = {step_of(p): p for p in complete_checkpoints(run)}
    if (run / "scoring.json").is_file():
        for name in json.loads((run / "scoring.json").read_text()):
            found.setdefault(int(name.rsplit("_", 1)[-1]), run / "checkpoints" / name)
    return sorted(found.items())


def first_below(work: Path, kept: list[tuple[int, Path]], target: float, cpus: str, guess: int) -> int:
    """The index of the first checkpoint whose scoring loss is at or below `target` (the last one is), starting
    at `guess` and walking to it: the loss falls nearly monotonically, so two or three scorings find it."""
    i = guess
    if score(work, kept[i][1], cpus) <= target:
        while i > 0 and score(work, kept[i - 1][1], cpus) <= target:
            i -= 1
        return i
    while score(work, kept[i + 1][1], cpus) > target:
        i += 1
    return i + 1


def crossing(work: Path, run: Path, target: float, cpus: str, guess_step: float | None = None,
             resolve: bool = True) -> dict | None:
    """Where the run first reaches `target` on the scoring split, interpolated in tokens and in the run's own
    elapsed seconds between the two kept checkpoints around it, then refined (see `refine`) when those two are
    more than RESOLUTION of the crossing's tokens apart and `resolve` asks for it. The search starts at the
    checkpoint nearest `guess_step` (where the tuning-split curve crosses)."""
    kept = checkpoints(run)
    if not kept or score(work, kept[-1][1], cpus) > target:
        return None
    steps = [s for s, _ in kept]
    guess = min(range(len(kept)), key=lambda j: abs(steps[j] - guess_step)) if guess_step else len(kept) // 2
    hi = first_below(work, kept, target, cpus, guess)
    by_step = {r["step"]: r for r in read_metrics(run)}
    step_hi, loss_hi = kept[hi][0], score(work, kept[hi][1], cpus)
    if hi == 0:
        return {"tokens": by_step[step_hi]["tokens"], "seconds": by_step[step_hi]["elapsed"],
                **_cpu(by_step[step_hi].get("cpu_seconds")), "bracket": [None, step_hi]}
    coarse = interpolate(by_step, (kept[hi - 1][0], score(work, kept[hi - 1][1], cpus)), (step_hi, loss_hi), target)
    if coarse["resolution"] <= RESOLUTION or not resolve:
        return coarse
    return refine(work, run, target, cpus, coarse, by_step) or coarse


def interpolate(by_step: dict, lo: tuple[int, float], hi: tuple[int, float], target: float) -> dict:
    """The crossing between two scored steps: the run's own token count and clocks, interpolated like its loss."""
    (step_lo, loss_lo), (step_hi, loss_hi) = lo, hi
    f = (loss_lo - target) / (loss_lo - loss_hi) if loss_lo != loss_hi else 1.0

    def between(key: str) -> float | None:
        a, b = by_step[step_lo].get(key), by_step[step_hi].get(key)
        return None if a is None or b is None else a + f * (b - a)

    tokens = between("tokens")
    return {"tokens": round(tokens), "seconds": round(between("elapsed"), 1), **_cpu(between("cpu_seconds")),
            "bracket": [step_lo, step_hi], "scoring_losses": [round(loss_lo, 4), round(loss_hi, 4)],
            "resolution": round((by_step[step_hi]["tokens"] - by_step[step_lo]["tokens"]) / tokens, 3)}


def replay_every(crossing_tokens: float, tokens_per_step: float, gap: int) -> int:
    """Checkpoint spacing (a power of two, in steps, below `gap`) that brackets a crossing to RESOLUTION of its
    tokens."""
    every = 1
    while every * 2 < gap and every * 2 * tokens_per_step <= RESOLUTION * crossing_tokens:
        every *= 2
    return every


def refine(work: Path, run: Path, target: float, cpus: str, coarse: dict, by_step: dict) -> dict | None:
    """The crossing to RESOLUTION: the run's stretch between the two kept checkpoints around it, trained again from
    the newest checkpoint at or before the first that holds its training state (gpt2lab's resume, in
    RUN/replays/, pausing before the second) with checkpoints dense enough, which are scored by bisection. The
    replay retraces the run: its per-step training losses are compared with the run's own (`loss_drift`;
    compile and thread scheduling may move the last digits). Tokens and seconds still come from the run's own
    records, which hold every step. None when no such checkpoint is left and no earlier replay reached it."""
    step_lo, step_hi = coarse["bracket"]
    every = replay_every(coarse["tokens"], (by_step[step_hi]["tokens"] - by_step[step_lo]["tokens"]) / (step_hi - step_lo),
                         step_hi - step_lo)
    replay = replay_of(run, step_lo, step_hi, every)
    if replay is None:  # no checkpoint at or before the stretch holds its training state
        return None
    if reached(replay) < step_hi - every:
        begin = run / "checkpoints" / replay.name.split("_every_")[0].replace("from_", "step_")
        if not (replay / "checkpoints" / begin.name).is_dir():  # the run's checkpoint, linked, not copied
            shutil.copytree(begin, replay / "checkpoints" / begin.name, copy_function=os.link)
        name, horizon, seed = parse_run_name(run.name)
        sets = runs.run_sets(work, name, horizon, seed, precision_of_name(run.name))  # an fp32 run replays in fp32
        sets += [f"checkpoint.every={every}", "eval.every=none", "log.every=none", f"run.stop_at_step={step_hi - every}"]
        print(f"[{datetime.now():%H:%M}] {run.name}: replaying steps {step_of_name(begin)}-{step_hi - every} "
              f"(a checkpoint every {every})", flush=True)
        runs.gpt2lab_train(work, replay, sets, cpus, runs.threads_of_run(run) or runs.threads_of(cpus), resume=True,
                      log_name=f"{run.name}-replay-{step_of_name(begin)}")
    start = run / "checkpoints" / f"step_{step_lo:08d}"
    # every checkpoint the replay wrote, scored or not, so that bisection takes the same path on restored records
    # (whose scoring cache holds only the ones it scored) as it did where they were trained
    wrote = range(step_lo + every, min(step_hi, reached(replay) + 1), every)
    kept = [(step_lo, start)] + [(s, replay / "checkpoints" / f"step_{s:08d}") for s in wrote]
    kept.append((step_hi, run / "checkpoints" / f"step_{step_hi:08d}"))  # both ends: the run's own, scored already
    lo, hi = 0, len(kept) - 1
    while hi - lo > 1:  # bisection: log2 of the new checkpoints' count in scorings
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if score(work, kept[mid][1], cpus) <= target else (mid, hi)
    fine = interpolate(by_step, (kept[lo][0], score(work, kept[lo][1], cpus)), (kept[hi][0], score(work, kept[hi][1], cpus)),
                       target)
    again = [r for r in read_metrics(replay) if "loss" in r] if (replay / "metrics.jsonl").is_file() else []
    drift = max((abs(r["loss"] - by_step[r["step"]]["loss"]) for r in again if "loss" in by_step.get(r["step"], {})),
                default=None)
    return {**fine, "coarse": {k: coarse[k] for k in ("tokens", "bracket", "resolution")},
            "replay": {"from_step": step_of_name(replay), "every": every, "steps_replayed": len(again),
                       "loss_drift": None if drift is None else round(drift, 5)}}


def replay_of(run: Path, step_lo: int, step_hi: int, every: int) -> Path | None:
    """The replay folder for the stretch step_lo..step_hi at `every` steps: one that already reached it (trained
    from at or before step_lo, its checkpoints on disk or in its scoring cache), else a new one from the newest
    checkpoint at or before step_lo that holds its training state; None when there is none."""
    from gpt2lab.checkpoint import holds_training_state, is_checkpoint

    for done in sorted(run.glob(f"replays/from_*_every_{every}"), reverse=True):
        if step_of_name(done) <= step_lo and reached(done) >= step_hi - every:
            return done
    whole = [s for s, p in checkpoints(run) if s <= step_lo and is_checkpoint(p) and holds_training_state(p)]
    return run / "replays" / f"from_{max(whole):08d}_every_{every}" if whole else None


def reached(replay: Path) -> int:
    """The last step a replay trained to: its newest checkpoint on disk, or, for a replay whose records alone were
    kept (committed under bench/results after it finished, then restored), the last step of its metrics. Its
    scoring cache is no guide: bisection scores only some of the checkpoints it wrote."""
    from gpt2lab.checkpoint import complete_checkpoints, step_of

    on_disk = [step_of(p) for p in complete_checkpoints(replay)]
    if on_disk or (replay / "checkpoints").is_dir() or not (replay / "metrics.jsonl").is_file():
        return max(on_disk, default=-1)
    return max((r["step"] for r in read_metrics(replay)), default=-1)


def step_of_name(path: Path) -> int:
    """step_00000448 or from_00000448_every_16 -> 448."""
    return int(path.name.split("_")[1])


def _cpu(seconds: float | None) -> dict:
    """The CPU seconds the run's process had (runs from gpt2lab 0.x before it recorded them have none)."""
    return {} if seconds is None else {"cpu_seconds": round(seconds, 1)}
