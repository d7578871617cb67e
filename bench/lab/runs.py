"""The lab's runs: their folders and settings, training one (gpt2lab train, pinned to CPUs, resumed from its own
checkpoints), the processor and threads it ran on, and its records between the work folder and the committed
results (restore, save_records)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from gpt2lab.files import write_bytes_atomic
from gpt2lab.metrics.logger import read_metrics

from . import data as lab_data
from .protocol import COMMON, CONTENDERS, POINTS, ROOT, WHOLE, parse_run_name, run_dir, steps_of


def threads_of(cpus: str) -> int:
    """One thread per CPU of a taskset list ("1" -> 1, "0,1" and "0-1" -> 2); one when nothing is pinned."""
    count = 0
    for part in filter(None, cpus.split(",")):
        first, _, last = part.partition("-")
        if not (first.isdigit() and (last or first).isdigit() and int(last or first) >= int(first)):
            raise ValueError(f"--cpus {cpus!r} is not a CPU list; give one like 1, 0,1 or 0-3")
        count += int(last or first) - int(first) + 1
    return max(1, count)


def threads_of_run(run: Path) -> int | None:
    """The threads a run trained with, from its device report."""
    return device_of_run(run).get("threads")


def device_of_run(run: Path) -> dict:
    """The run's device report (gpt2lab's device.json: the processor's name, threads, precision); {} without one."""
    device = run / "device.json"
    return json.loads(device.read_text()) if device.is_file() else {}


def processor_of(run: Path) -> str:
    """The processor a run trained on, as its device report names it, with its bf16 support: a VM may name two
    different processors alike ("AMD EPYC"), and the bf16 units tell them apart."""
    device = device_of_run(run)
    return f"{device.get('name')}" + (f" ({device['bf16']})" if device.get("bf16") else "")


def finished(path: Path, horizon: str) -> bool:
    records = read_metrics(path) if path.is_dir() else []
    return bool(records) and records[-1]["step"] >= steps_of(horizon) and "val_loss" in records[-1]


def run_sets(work: Path, name: str, horizon: str, seed: int, precision: str = "bf16") -> list[str]:
    """Every setting of one lab run (the replay of a stretch of it adds its own on top); a run in fp32 (a check of
    what the lab's bf16 changes) differs in its precision alone."""
    data, _ = lab_data.prepare_data(work)
    steps = steps_of(horizon)
    every = steps // POINTS
    sets = [f"data.dir={data}", f"run.seed={seed}", f"schedule.max_steps={steps}", f"eval.every={every}",
            f"checkpoint.every={every}", f"log.every={every}", *COMMON, "checkpoint.keep_last=1",
            f"checkpoint.keep_every={steps // WHOLE}", "checkpoint.older=weights", *CONTENDERS[name]["sets"]]
    if name.startswith(("baseline-", "adamw-groups")):  # the baseline's warmup scales with its horizon (32 steps at 1M, as in v1)
        sets.append(f"schedule.warmup_steps={steps // 16}")
    techniques = name.split("+")[1:]
    if "ramp" in techniques:  # the batch grows over the first quarter of the horizon
        sets.append(f"schedule.batch_ramp_steps={steps // 4}")
    if "mwarm" in techniques:  # Muon's momentum rises over the first sixth of the horizon
        sets.append(f"optim.muon.momentum_warmup_steps={steps // 6}")
    if precision != "bf16":
        sets.append(f"run.precision={precision}")
    return sets


def gpt2lab_train(work: Path, out: Path, sets: list[str], cpus: str, threads: int, resume: bool,
                  log_name: str | None = None) -> None:
    """`gpt2lab train` on the lab's model, pinned to `cpus`, its output in work/logs/; a failure ends the lab."""
    command = [sys.executable, "-m", "gpt2lab", "train", "--preset", "gpt2-15m", "--out", str(out)]
    command += [a for s in sets for a in ("--set", s)] + (["--resume"] if resume else [])
    if cpus and shutil.which("taskset"):
        command = ["taskset", "-c", cpus, *command]
    log = work / "logs" / f"{log_name or out.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    with open(log, "a") as f:
        code = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=env).returncode
    if code != 0:
        sys.exit(f"quality_lab: {out.name} failed (exit {code}); see {log}")


def train(work: Path, name: str, horizon: str, seed: int, cpus: str, precision: str = "bf16") -> Path:
    """One run, resumed from its own checkpoints when it was stopped; skipped when finished."""
    out = run_dir(work, name, horizon, seed, precision)
    if finished(out, horizon):
        return out
    from gpt2lab.checkpoint import latest_checkpoint

    resume = latest_checkpoint(out) is not None
    print(f"[{datetime.now():%H:%M}] {out.name}{' (resuming)' if resume else ''}", flush=True)
    gpt2lab_train(work, out, run_sets(work, name, horizon, seed, precision), cpus, threads_of(cpus), resume)
    return out


def restore(work: Path, results: Path | None = None) -> list[str]:
    """Copy the committed runs' records (bench/results/quality_lab_runs/: metrics, config, device report, scoring
    caches, the replays' records) and the n-gram losses into a work folder that lacks them. The work folder does
    not travel between machines; with the records back, `report` reads every finished run again (their crossings
    from the scoring caches) and only what is missing trains. Runs already in the work folder are left alone, and
    so are unfinished ones: without their checkpoints they cannot continue, so the lab trains them from the start."""
    results = results or ROOT / "bench" / "results" / "quality_lab_runs"
    restored = []
    for source in sorted(p for p in results.glob("*") if p.is_dir()):
        try:
            _, horizon, _ = parse_run_name(source.name)
        except ValueError:
            continue
        target = work / "runs" / source.name
        if target.exists() or not finished(source, horizon):
            continue
        partial = target.with_name(f".{source.name}.{os.getpid()}.tmp")  # whole or not at all
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(source, partial)
        os.replace(partial, target)
        restored.append(source.name)
    if (results / "ngram.json").is_file() and not (work / "ngram.json").is_file():
        work.mkdir(parents=True, exist_ok=True)
        copy_whole(results / "ngram.json", work / "ngram.json")
    return restored


def copy_whole(source: Path, target: Path) -> None:
    """A record copied so that the target is the old file or the new one, never half of it (a full disk)."""
    write_bytes_atomic(target, source.read_bytes(), "a lab record")


def save_records(work: Path, runs_out: Path) -> list[str]:
    """Copy every run's records (metrics, config, device report, scoring cache, the replays' losses and scores)
    into `runs_out`, the folder that is committed. A run that has not finished here is not a result yet (a run
    under way, a rerun, one stopped): its records are not saved, a finished run's records there are kept, and
    `restore` would not read them anyway (they cannot continue without their checkpoints). Returns the names so
    left out."""
    left_out = []
    for run in sorted(p for p in (work / "runs").glob("*") if p.is_dir()):
        target = runs_out / run.name
        try:
            _, horizon, _ = parse_run_name(run.name)
        except ValueError:
            continue
        if not finished(run, horizon):
            left_out.append(run.name)
            continue
        save_run(run, target)
    return left_out


def save_run(run: Path, target: Path) -> None:
    """One finished run's records (metrics, config, device report, scoring cache, the replays' losses and scores)
    copied into `target`, a folder under the committed results."""
    target.mkdir(parents=True, exist_ok=True)
    for name in ("metrics.jsonl", "config.json", "device.json", "scoring.json"):
        if (run / name).is_file():
            copy_whole(run / name, target / name)
    mine = {replay.name for replay in (run / "replays").glob("from_*")}
    for stale in (target / "replays").glob("from_*"):  # a replaced run's replays are not this run's: their scores
        if stale.name not in mine:  # once bracketed a rerun's crossing with another run's checkpoints
            shutil.rmtree(stale)
    for replay in sorted((run / "replays").glob("from_*")):  # the replayed stretches: their losses and scores
        (target / "replays" / replay.name).mkdir(parents=True, exist_ok=True)
        for name in ("metrics.jsonl", "scoring.json"):
            if (replay / name).is_file():
                copy_whole(replay / name, target / "replays" / replay.name / name)
