"""The CPU quality lab, version 2: tokens and wall time a recipe needs to reach a baseline tuned for the same
horizon, scored on held-out books that no choice was made on.

Protocol (fixed; every number in the JSON can be checked on its own):
  data       Gutenberg train-00 for training. The 18 validation books, whole, in two disjoint splits by position
             in val.jsonl.xz: TUNING (books 0, 2, 4, ...) is what every run evaluates during training and what
             every choice (an LR sweep's best, a scout) is made on; SCORING (books 1, 3, 5, ...) is read only by
             `gpt2lab eval` on saved checkpoints, and every reported ratio is measured on it.
  model      gpt2-15m (4 layers, 256 wide, 4 heads, context 256, vocab 50304) for every contender
  horizons   1M and 4M training tokens (512 and 2,048 steps of 8 x 256); each run's schedule ends at its horizon
  eval       in-run on the whole tuning split's first EVAL_WINDOWS windows, at 32 evenly spaced points; a
             checkpoint at each point, kept, so any text can score them later (every 4th and the newest whole,
             the others as weights only: checkpoint.older=weights)
  scoring    the baseline's final checkpoint on the whole scoring split is the target; a contender's crossing is
             found by bisection over its kept checkpoints on the scoring split, interpolated between the two
             around it (in tokens, and in the run's own elapsed seconds); when those two are more than 5% of the
             crossing's tokens apart, the stretch is trained again from the newest whole checkpoint at or before
             the first (gpt2lab's resume, pausing before the second) with checkpoints dense enough, and those are
             scored: a crossing to 5%
  baseline   classic GPT-2 + AdamW + cosine to the horizon; its LR swept per horizon on the tuning split
  contenders speedrun-cpu (Muon + ReLU^2 + QK-norm + RoPE + RMSNorm + zero-init projections + untied head, WSD);
             adamw-groups-embLR (classic GPT-2, AdamW with the embeddings at their own LR: what per-group LRs
             alone are worth); speedrun-cpu+skips, +ve2, +polar, +ramp, +aligned (one technique each on top)
  tokens     read from each run's records (a ramped batch takes fewer tokens per step early on)
  reference  unigram and bigram losses of the training text on the scoring split, beside every table
  resume     every run continues from its own latest checkpoint (gpt2lab train --resume); `report` reads whatever
             has finished; a stopped lab started again skips what is done

Usage (project root, ../shared beside it; each run is pinned to --cpus with one thread per CPU named: `--cpus 1`
is one thread on CPU 1, as every 1M and 4M run; `--cpus 0,1` two threads, to bring a 16M run within a few hours):
  python bench/quality_lab.py run baseline-lr0.0012 --horizon 4M
  python bench/quality_lab.py queue baseline-lr0.0012@4M speedrun-cpu@4M     # one after another
  python bench/quality_lab.py score RUN/checkpoints/step_N ...   # score ahead of `report`, on --cpus
  python bench/quality_lab.py report        # a horizon with no runs here keeps the newest earlier report's table
  python bench/quality_lab.py thin [RUN ...] # finished runs: crossings resolved, then checkpoints but the last to weights
  python bench/quality_lab.py restore      # a new machine: the committed runs' records back into the work folder
Results: bench/results/quality_lab_<date>.json (and the runs' metrics under bench/results/quality_lab_runs/).
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.speedrun_cpu import MUON, SPEEDRUN_ARCH, WSD, tokenizer_dir  # noqa: E402
from gpt2lab.metrics.logger import read_metrics  # noqa: E402
from gpt2lab.report.compare import curve_of, reach  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
TOKENS_PER_STEP = 8 * 256
HORIZONS = {"1M": 1 << 20, "4M": 1 << 22, "16M": 1 << 24, "smoke": 1 << 17}  # smoke: checks the lab's plumbing
POINTS = 32
RESOLUTION = 0.05  # a crossing is bracketed to this share of its tokens (refined by a replay when the points are sparser)
EVAL_WINDOWS = 256  # 32 batches of 8: 65,536 tokens of the tuning split per in-run evaluation
SEEDS = (1337, 1338)
GOALS = {"1M": {"token": 0.20}, "4M": {"token": 0.25, "time": 0.30}, "16M": {"token": 0.25}}  # worst seed, issue 23
COMMON = ["run.micro_batch=8", f"eval.batches={EVAL_WINDOWS // 8}", "log.tensorboard=false", "run.compile=on",
          "run.precision=bf16", "run.device=cpu"]
WHOLE = 8  # checkpoints per run that keep their training state (a replay starts from one): the others, weights only


def baseline(lr: float) -> list[str]:
    return [f"optim.lr={lr}", "schedule.min_lr_ratio=0.1", "schedule.decay=cosine"]


CONTENDERS = {
    **{f"baseline-lr{lr:g}": {"sets": baseline(lr), "about": f"classic GPT-2, AdamW {lr:g}, cosine to the horizon",
                              "lr": lr} for lr in (3e-4, 6e-4, 1.2e-3, 2.4e-3, 4.8e-3)},
    "speedrun-cpu": {"sets": SPEEDRUN_ARCH + MUON + WSD,
                     "about": "Muon + ReLU^2 + QK-norm + RoPE + RMSNorm + zero-init projections + untied head, WSD"},
    # the fair split of the gain: classic GPT-2 with AdamW and per-group LRs (the embedding LR swept, the matrices
    # at the baseline's tuned 1.2e-3), cosine like the baseline: what "LRs per group" alone is worth
    **{f"adamw-groups-emb{lr:g}": {"sets": baseline(1.2e-3) + [f"optim.embedding_lr={lr}"],
                                   "about": f"classic GPT-2, AdamW 1.2e-3, embeddings at {lr:g}, cosine", "lr": 1.2e-3}
       for lr in (1e-3, 3e-3, 1e-2, 3e-2)},  # 1e-3: the first sweep's best was at its low end
    # ablations of the record's techniques on top of speedrun-cpu (one seed, at 4M)
    "speedrun-cpu+skips": {"sets": SPEEDRUN_ARCH + MUON + WSD + ["model.skips=true"],
                           "about": "speedrun-cpu with U-net skips (embeddings into every block, mirrors joined)"},
    "speedrun-cpu+ve2": {"sets": SPEEDRUN_ARCH + MUON + WSD + ["model.value_embeds=2"],
                         "about": "speedrun-cpu with two value-embedding tables (layers 0, 2 and 1, 3)"},
    "speedrun-cpu+polar": {"sets": SPEEDRUN_ARCH + MUON + WSD + ["optim.muon.coefficients=polar"],
                           "about": "speedrun-cpu with per-iteration Newton-Schulz coefficients"},
    "speedrun-cpu+ramp": {"sets": SPEEDRUN_ARCH + MUON + WSD + ["run.micro_batch=2", f"run.batch_tokens={TOKENS_PER_STEP}"],
                          "about": "speedrun-cpu with a batch growing from 2 to 8 sequences over the first quarter "
                                   "(micro-batches of 2, accumulated)"},
    "speedrun-cpu+aligned": {"sets": SPEEDRUN_ARCH + MUON + WSD + ["data.align_documents=true"],
                             "about": "speedrun-cpu with training windows that start at a document boundary"},
}


def steps_of(horizon: str) -> int:
    return HORIZONS[horizon] // TOKENS_PER_STEP


def split_books(work: Path) -> tuple[Path, Path]:
    """tuning.jsonl (books 0, 2, ...) and scoring.jsonl (books 1, 3, ...) of the validation file, whole books."""
    tuning, scoring = work / "tuning.jsonl", work / "scoring.jsonl"
    if not (tuning.is_file() and scoring.is_file()):
        with lzma.open(SHARED / "gutenberg" / "val.jsonl.xz", "rt", encoding="utf-8") as f:
            books = [line for line in f if line.strip()]
        work.mkdir(parents=True, exist_ok=True)
        tuning.write_text("".join(books[0::2]))
        scoring.write_text("".join(books[1::2]))
    return tuning, scoring


def prepare_data(work: Path) -> tuple[Path, Path]:
    """(training data whose val split is the tuning books, a data folder whose train split is the scoring books)."""
    from gpt2lab.data.prepare import PrepareOptions, prepare

    tuning, scoring = split_books(work)
    train_dir, scoring_dir = work / "data", work / "scoring"
    if not (train_dir / "meta.json").is_file():
        prepare([str(SHARED / "gutenberg" / "train-00.jsonl.xz")], str(train_dir),
                PrepareOptions(val_inputs=[str(tuning)], workers=1, tokenizer=tokenizer_dir(), quiet=True))
    if not (scoring_dir / "meta.json").is_file():
        prepare([str(scoring)], str(scoring_dir), PrepareOptions(val_fraction=0.0, tokenizer=tokenizer_dir(), quiet=True))
    return train_dir, scoring_dir


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


def run_dir(work: Path, name: str, horizon: str, seed: int) -> Path:
    return work / "runs" / f"{name}-{horizon}-seed{seed}"


def finished(path: Path, horizon: str) -> bool:
    records = read_metrics(path) if path.is_dir() else []
    return bool(records) and records[-1]["step"] >= steps_of(horizon) and "val_loss" in records[-1]


def run_sets(work: Path, name: str, horizon: str, seed: int) -> list[str]:
    """Every setting of one lab run (the replay of a stretch of it adds its own on top)."""
    data, _ = prepare_data(work)
    steps = steps_of(horizon)
    every = steps // POINTS
    sets = [f"data.dir={data}", f"run.seed={seed}", f"schedule.max_steps={steps}", f"eval.every={every}",
            f"checkpoint.every={every}", f"log.every={every}", *COMMON, "checkpoint.keep_last=1",
            f"checkpoint.keep_every={steps // WHOLE}", "checkpoint.older=weights", *CONTENDERS[name]["sets"]]
    if name.startswith(("baseline-", "adamw-groups")):  # the baseline's warmup scales with its horizon (32 steps at 1M, as in v1)
        sets.append(f"schedule.warmup_steps={steps // 16}")
    if name.endswith("+ramp"):  # the batch grows over the first quarter of the horizon
        sets.append(f"schedule.batch_ramp_steps={steps // 4}")
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


def train(work: Path, name: str, horizon: str, seed: int, cpus: str) -> Path:
    """One run, resumed from its own checkpoints when it was stopped; skipped when finished."""
    out = run_dir(work, name, horizon, seed)
    if finished(out, horizon):
        return out
    from gpt2lab.checkpoint import latest_checkpoint

    resume = latest_checkpoint(out) is not None
    print(f"[{datetime.now():%H:%M}] {out.name}{' (resuming)' if resume else ''}", flush=True)
    gpt2lab_train(work, out, run_sets(work, name, horizon, seed), cpus, threads_of(cpus), resume)
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
        partial = work / f".ngram.json.{os.getpid()}.tmp"
        shutil.copy(results / "ngram.json", partial)
        os.replace(partial, work / "ngram.json")
    return restored


def thin(work: Path, names: list[str], cpus: str) -> None:
    """`gpt2lab thin` on finished runs (all, or the run folders named): every checkpoint but the final one, and
    every replay's, reduced to its weights, which is all scoring needs (a third of the disk). A contender's
    crossing is resolved first (scored, and replayed when its bracket is too wide), since a replay needs the
    training state of the checkpoint it starts from; a contender whose horizon has no target yet is left whole.
    A crossing that later moves (a new baseline in the sweep) past a thinned checkpoint keeps its coarse bracket."""
    from gpt2lab.commands.thin import thin_run

    for run in sorted(work.glob("runs/*")) if not names else [work / "runs" / n for n in names]:
        try:
            name, horizon, _ = parse_run_name(run.name)
        except ValueError as exc:
            print(f"{exc}; left as it is")
            continue
        if not finished(run, horizon):
            print(f"{run.name}: not finished; left whole (its next crossing may need a replay)")
            continue
        if not name.startswith("baseline-"):
            target, base_runs = target_of(work, horizon, cpus)
            if target is None:
                print(f"{run.name}: no baseline has finished at {horizon}, so its crossing is not known; left whole")
                continue
            locate(work, run, target, base_runs, cpus)
        freed = thin_run(run, keep=1)["freed_bytes"] if (run / "checkpoints").is_dir() else 0
        freed += sum(thin_run(replay, keep=0)["freed_bytes"] for replay in sorted(run.glob("replays/*"))
                     if (replay / "checkpoints").is_dir())
        print(f"{run.name}: {freed / 2**30:.2f} GiB freed", flush=True)


# --- scoring ---------------------------------------------------------------------------------------------------

def score(work: Path, checkpoint: Path, cpus: str) -> float:
    """A checkpoint's loss on the whole scoring split (cached beside the checkpoint)."""
    cache = checkpoint.parent.parent / "scoring.json"
    known = json.loads(cache.read_text()) if cache.is_file() else {}
    if checkpoint.name in known:
        return known[checkpoint.name]
    _, scoring_dir = prepare_data(work)
    command = [sys.executable, "-m", "gpt2lab", "eval", str(checkpoint), "--data", str(scoring_dir), "--split", "train",
               "--device", "cpu", "--batch-size", "8", "--json", "--quiet"]
    if cpus and shutil.which("taskset"):
        command = ["taskset", "-c", cpus, *command]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads_of(cpus)), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
    if done.returncode != 0:
        sys.exit(f"quality_lab: scoring {checkpoint} failed: {done.stderr.strip()[-300:]}")
    loss = json.loads(done.stdout.strip().splitlines()[-1])["train"]["loss"]
    known = json.loads(cache.read_text()) if cache.is_file() else {}  # again: another core may have scored meanwhile
    known[checkpoint.name] = loss
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(known, indent=1))
    os.replace(tmp, cache)
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


def crossing(work: Path, run: Path, target: float, cpus: str, guess_step: float | None = None) -> dict | None:
    """Where the run first reaches `target` on the scoring split, interpolated in tokens and in the run's own
    elapsed seconds between the two kept checkpoints around it, then refined (see `refine`) when those two are
    more than RESOLUTION of the crossing's tokens apart. The search starts at the checkpoint nearest
    `guess_step` (where the tuning-split curve crosses)."""
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
    if coarse["resolution"] <= RESOLUTION:
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
        sets = run_sets(work, name, horizon, seed) + [f"checkpoint.every={every}", "eval.every=none", "log.every=none",
                                                      f"run.stop_at_step={step_hi - every}"]
        print(f"[{datetime.now():%H:%M}] {run.name}: replaying steps {step_of_name(begin)}-{step_hi - every} "
              f"(a checkpoint every {every})", flush=True)
        gpt2lab_train(work, replay, sets, cpus, threads_of_run(run) or threads_of(cpus), resume=True,
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


def parse_run_name(folder: str) -> tuple[str, str, int]:
    """NAME-HORIZON-seedSEED (as run_dir names it) -> (name, horizon, seed)."""
    rest, _, seed = folder.rpartition("-seed")
    name, _, horizon = rest.rpartition("-")
    if name not in CONTENDERS or horizon not in HORIZONS or not seed.isdigit():
        raise ValueError(f"{folder!r} is not a lab run folder (NAME-HORIZON-seedSEED)")
    return name, horizon, int(seed)


def _cpu(seconds: float | None) -> dict:
    """The CPU seconds the run's process had (runs from gpt2lab 0.x before it recorded them have none)."""
    return {} if seconds is None else {"cpu_seconds": round(seconds, 1)}


# --- word statistics: how far past them a horizon gets ------------------------------------------------------------

def ngram_losses(work: Path) -> dict:
    """Unigram and bigram (interpolated with the unigram; weight chosen on the tuning split) losses, in nats per
    token, of counts over the whole training file, measured on the whole scoring split."""
    cache = work / "ngram.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    import numpy as np

    from gpt2lab.data.shards import split_shards

    data, scoring = prepare_data(work)
    train = np.concatenate([np.asarray(s, dtype=np.int64) for s in split_shards(str(data), "train")])
    vocab = 50304
    uni = np.bincount(train, minlength=vocab).astype(np.float64) + 0.5
    p_uni = uni / uni.sum()
    pairs, counts = np.unique(train[:-1] * vocab + train[1:], return_counts=True)
    prev_total = np.bincount(train[:-1], minlength=vocab).astype(np.float64)

    def loss(tokens: np.ndarray, weight: float | None) -> float:
        if weight is None:
            return float(-np.log(p_uni[tokens[1:]]).mean())
        keys = tokens[:-1] * vocab + tokens[1:]
        at = np.searchsorted(pairs, keys)
        at = np.minimum(at, len(pairs) - 1)
        c = np.where(pairs[at] == keys, counts[at], 0).astype(np.float64)
        total = prev_total[tokens[:-1]]
        p_bi = np.divide(c, total, out=np.zeros_like(c), where=total > 0)
        return float(-np.log(weight * p_bi + (1 - weight) * p_uni[tokens[1:]]).mean())

    tuning = np.concatenate([np.asarray(s, dtype=np.int64) for s in split_shards(str(data), "val")])
    weight = min((w / 20 for w in range(1, 20)), key=lambda w: loss(tuning, w))
    held_out = np.concatenate([np.asarray(s, dtype=np.int64) for s in split_shards(str(scoring), "train")])
    result = {"unigram": round(loss(held_out, None), 4), "bigram": round(loss(held_out, weight), 4),
              "bigram_weight": weight, "train_tokens": int(train.size), "scoring_tokens": int(held_out.size),
              "tuning_tokens": int(tuning.size)}
    cache.write_text(json.dumps(result, indent=1))
    return result


# --- the report --------------------------------------------------------------------------------------------------

def best_baseline(work: Path, horizon: str) -> tuple[str | None, list[dict]]:
    """The baseline LR with the lowest final loss on the TUNING split (seed 1337), and the sweep's points."""
    sweep = []
    for name, c in CONTENDERS.items():
        run = run_dir(work, name, horizon, SEEDS[0])
        if name.startswith("baseline-") and finished(run, horizon):
            sweep.append({"name": name, "lr": c["lr"], "final_tuning_loss": round(curve_of(run).final, 4)})
    if not sweep:
        return None, []
    best = min(sweep, key=lambda p: p["final_tuning_loss"])
    lrs = sorted(p["lr"] for p in sweep)
    best["at_an_end"] = len(lrs) < 3 or best["lr"] in (lrs[0], lrs[-1])
    return best["name"], sorted(sweep, key=lambda p: p["lr"])


def finished_seeds(work: Path, name: str, horizon: str) -> dict[int, Path]:
    """seed -> run folder, for the seeds of `name` that finished at `horizon` (a second seed may finish first)."""
    runs = {s: run_dir(work, name, horizon, s) for s in SEEDS}
    return {s: r for s, r in runs.items() if finished(r, horizon)}


def best_recipe(contenders: list[dict], horizon: str) -> dict | None:
    """The contender with the lowest worst-seed token ratio among those run on every seed (one is enough at
    16M), and whether it meets the horizon's GOAL."""
    needed = 1 if horizon == "16M" else len(SEEDS)
    full = [c for c in contenders if len(c["per_seed"]) >= needed and c["worst_token_ratio"] is not None]
    if not full:
        return None
    best = min(full, key=lambda c: c["worst_token_ratio"])
    goal = GOALS.get(horizon, {})
    met = {k: best[f"worst_{k}_ratio"] <= v for k, v in goal.items()}
    return {"name": best["name"], "worst_token_ratio": best["worst_token_ratio"],
            "worst_time_ratio": best["worst_time_ratio"], "seeds": [r["seed"] for r in best["per_seed"]],
            "goal": goal, "goal_met": met, "all_met": all(met.values()) if met else None}


def target_of(work: Path, horizon: str, cpus: str) -> tuple[float | None, list[Path]]:
    """The horizon's target (the best baseline's final loss on the scoring split, over its finished seeds) and
    those runs; (None, []) before any baseline has finished there."""
    base_name, _ = best_baseline(work, horizon)
    runs = list(finished_seeds(work, base_name, horizon).values()) if base_name else []
    finals = [score(work, checkpoints(r)[-1][1], cpus) for r in runs]
    return (sum(finals) / len(finals) if finals else None), runs


def horizon_table(work: Path, horizon: str, cpus: str) -> dict | None:
    base_name, sweep = best_baseline(work, horizon)
    if base_name is None:
        return None
    base_seeds = finished_seeds(work, base_name, horizon)
    target, base_runs = target_of(work, horizon, cpus)
    finals = [score(work, checkpoints(r)[-1][1], cpus) for r in base_runs]  # cached by target_of
    base_last = [read_metrics(r)[-1] for r in base_runs]
    base_seconds = [r["elapsed"] for r in base_last]
    base_cpu = [r.get("cpu_seconds") for r in base_last]
    table = {"horizon_tokens": HORIZONS[horizon], "steps": steps_of(horizon),
             "baseline": {"name": base_name, "sweep_on_tuning_split": sweep, "seeds": list(base_seeds),
                          "final_scoring_loss_per_seed": [round(x, 4) for x in finals], "target": round(target, 4),
                          "tokens": HORIZONS[horizon], "seconds_per_seed": [round(s, 1) for s in base_seconds],
                          "cpu_seconds_per_seed": [None if s is None else round(s, 1) for s in base_cpu],
                          "threads_per_seed": [threads_of_run(r) for r in base_runs]},
             "contenders": []}
    for name in CONTENDERS:
        runs = finished_seeds(work, name, horizon)
        if name.startswith("baseline-") or not runs:
            continue
        rows = [_seed_row(work, seed, run, horizon, target, base_runs, (base_seconds, base_cpu), cpus)
                for seed, run in runs.items()]
        worst = [r.get("token_ratio") for r in rows]
        table["contenders"].append({"name": name, "about": CONTENDERS[name]["about"], "per_seed": rows,
                                    "worst_token_ratio": None if None in worst else max(worst),
                                    "worst_time_ratio": None if None in worst else max(r["time_ratio"] for r in rows)})
    table["best_recipe"] = best_recipe(table["contenders"], horizon)
    return table


def step_at(run: Path, tokens: float) -> int:
    """The first step by which the run had trained on `tokens` (from its records: a ramped batch takes fewer
    tokens per step early on, so tokens / TOKENS_PER_STEP would guess too early)."""
    records = read_metrics(run)
    return next((r["step"] for r in records if r.get("tokens", 0) >= tokens), records[-1]["step"])


def locate(work: Path, run: Path, target: float, base_runs: list[Path], cpus: str) -> tuple[dict | None, float | None]:
    """The run's crossing of `target` on the scoring split, searched from where its tuning-split curve reaches the
    baseline's final tuning loss, and that tuning-split crossing in tokens (None when it never gets there)."""
    tuning = curve_of(run)
    t = reach(tuning.tokens, tuning.loss, curve_of(base_runs[0]).final)
    return crossing(work, run, target, cpus, None if t is None else step_at(run, t)), t


def _seed_row(work: Path, seed: int, run: Path, horizon: str, target: float, base_runs: list[Path],
              base_clocks: tuple[list[float], list[float | None]], cpus: str) -> dict:
    """One contender seed: where it crosses the baseline's scoring-split loss (tokens, its own seconds), its final
    scoring loss, and (for comparison) the crossing on the tuning split's in-run curve. The time ratio is in wall
    seconds; the CPU-time ratio, in the CPU seconds each process had, is given when both runs recorded them: it
    leaves out what other processes and the hypervisor took, which moves wall time by a third from day to day."""
    base_seconds, base_cpu = base_clocks
    cross, t = locate(work, run, target, base_runs, cpus)
    final = score(work, checkpoints(run)[-1][1], cpus)
    last = read_metrics(run)[-1]
    row = {"seed": seed, "final_scoring_loss": round(final, 4), "crossing": cross,
           "seconds_total": round(last["elapsed"], 1),
           "cpu_seconds_total": None if last.get("cpu_seconds") is None else round(last["cpu_seconds"], 1),
           "threads": threads_of_run(run),
           "token_ratio_on_tuning_split": None if t is None else round(t / HORIZONS[horizon], 3)}
    if cross:
        row["token_ratio"] = round(cross["tokens"] / HORIZONS[horizon], 3)
        # a ratio of wall times is a ratio of recipes only on one processor: against the baseline seeds that ran
        # on this run's, when there are any; else against all of them, flagged
        same = [i for i, r in enumerate(base_runs) if processor_of(r) == processor_of(run)] or range(len(base_runs))
        seconds, cpu = [base_seconds[i] for i in same], [base_cpu[i] for i in same]
        row["time_ratio"] = round(cross["seconds"] / (sum(seconds) / len(seconds)), 3)
        row["time_baseline_seeds"] = [parse_run_name(base_runs[i].name)[2] for i in same]
        base_threads = {threads_of_run(base_runs[i]) for i in same}
        if base_threads != {row["threads"]}:  # nor at other thread counts
            row["time_ratio_threads_differ"] = {"baseline": sorted(base_threads, key=str), "this run": row["threads"]}
        base_devices = {processor_of(base_runs[i]) for i in same}
        if base_devices != {processor_of(run)}:
            row["time_ratio_devices_differ"] = {"baseline": sorted(base_devices), "this run": processor_of(run)}
        if "cpu_seconds" in cross and None not in cpu:
            row["cpu_time_ratio"] = round(cross["cpu_seconds"] / (sum(cpu) / len(cpu)), 3)
    return row


def compared(work: Path) -> dict:
    """What each contender is: parameters, FLOPs per token (Muon's Newton-Schulz included), schedule."""
    from gpt2lab.config import build_config
    from gpt2lab.metrics.flops import flops_per_token
    from gpt2lab.model import GPT
    from gpt2lab.training.optim.groups import role_of

    out = {}
    for name, c in CONTENDERS.items():
        cfg = build_config(preset="gpt2-15m", sets=[s for s in COMMON if not s.startswith("run.device")] + c["sets"])
        with __import__("torch").device("meta"):
            model = GPT(cfg.model)
        per_token = flops_per_token(cfg.model, cfg.seq_len)
        matrices = [p.shape for n, p in model.named_parameters() if role_of(n, p) == "matrix"]  # what Muon gets
        ns = 0
        if cfg.optim.name == "muon":  # 5 Newton-Schulz iterations per matrix per step: ~ (4 m n^2 + 2 n^3) each
            ns = sum(5 * (4 * max(s) * min(s) ** 2 + 2 * min(s) ** 3) for s in matrices) / TOKENS_PER_STEP
        out[name] = {"parameters": model.num_params(), "flops_per_token_model": per_token.training,
                     "flops_per_token_optimizer": round(ns), "tokens_per_step": TOKENS_PER_STEP,
                     "optimizer": cfg.optim.name, "decay": cfg.schedule.decay, "weight_decay": cfg.optim.weight_decay,
                     "warmup_steps": cfg.schedule.warmup_steps if not name.startswith(("baseline-", "adamw-groups")) else "steps // 16",
                     "data_order": "run.seed 1337: the same windows in the same order for every contender"}
    return out


def carry_over(horizons: dict, results: Path) -> None:
    """A horizon with no finished runs in this work folder keeps its table from the newest earlier report (the
    checkpoints behind it live in another machine's work folder; its raw curves are in quality_lab_runs/)."""
    for earlier in sorted(results.glob("quality_lab_2*.json"), reverse=True):
        try:
            before = json.loads(earlier.read_text())
        except (OSError, ValueError):
            continue
        source = f"{earlier.name} of {before.get('date')} (commit {before.get('commit')})"
        for h, table in (before.get("horizons") or {}).items():
            if horizons.get(h) is None and table is not None:
                horizons[h] = {**table, "carried_from": table.get("carried_from", source)}


def save_records(work: Path, runs_out: Path) -> list[str]:
    """Copy every run's records (metrics, config, device report, scoring cache, the replays' losses and scores)
    into `runs_out`, the folder that is committed. A run that has not finished here never replaces a finished
    run's records there (a rerun under way, or one stopped, is not yet a result): the names so left out."""
    left_out = []
    for run in sorted(p for p in (work / "runs").glob("*") if p.is_dir()):
        target = runs_out / run.name
        try:
            _, horizon, _ = parse_run_name(run.name)
        except ValueError:
            continue
        if not finished(run, horizon) and finished(target, horizon):
            left_out.append(run.name)
            continue
        target.mkdir(parents=True, exist_ok=True)
        for name in ("metrics.jsonl", "config.json", "device.json", "scoring.json"):
            if (run / name).is_file():
                shutil.copy(run / name, target / name)
        for replay in sorted((run / "replays").glob("from_*")):  # the replayed stretches: their losses and scores
            (target / "replays" / replay.name).mkdir(parents=True, exist_ok=True)
            for name in ("metrics.jsonl", "scoring.json"):
                if (replay / name).is_file():
                    shutil.copy(replay / name, target / "replays" / replay.name / name)
    return left_out


def report(work: Path, cpus: str) -> Path:
    import torch

    device = next((json.loads((p / "device.json").read_text()) for p in sorted((work / "runs").glob("*"))
                   if (p / "device.json").is_file()), {})
    result = {"device": f"{device.get('name')} (pinned by taskset; each run's threads in its row)",
              "torch": torch.__version__,
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                       cwd=ROOT).stdout.strip(),
              "protocol": __doc__.split("Usage")[0].strip(),
              "splits": {"tuning": "val.jsonl.xz books 0,2,4,...,16", "scoring": "val.jsonl.xz books 1,3,5,...,17"},
              "word_statistics_on_scoring_split": ngram_losses(work), "contenders": compared(work),
              "horizons": {h: horizon_table(work, h, cpus) for h in HORIZONS}}
    out = ROOT / "bench" / "results"
    carry_over(result["horizons"], out)
    path = out / f"quality_lab_{datetime.now(timezone.utc):%Y%m%d}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    runs_out = out / "quality_lab_runs"  # the raw curves, small enough to commit
    for skipped in save_records(work, runs_out):
        print(f"{skipped}: not finished here; the finished run's records in {runs_out} are kept")
    png = plot(result, runs_out, path.with_suffix(".png"))
    print(json.dumps(result["horizons"], indent=1))
    print(f"wrote {path} and {png}")
    return path


def plot_run(row, folder: Path, horizon: str) -> None:
    """One run on a row of two axes (against tokens, against seconds): its in-run curve and its scored checkpoints."""
    records = [r for r in read_metrics(folder) if "val_loss" in r]
    scored = json.loads((folder / "scoring.json").read_text()) if (folder / "scoring.json").is_file() else {}
    at = {r["step"]: r for r in records}
    points = sorted((int(name.rsplit("_", 1)[-1]), loss) for name, loss in scored.items())
    points = [(at[step], loss) for step, loss in points if step in at]
    label = f"{folder.name.rsplit('-' + horizon, 1)[0]} seed {folder.name.rsplit('seed', 1)[-1]}"
    for ax, key in zip(row, ("tokens", "elapsed")):
        line, = ax.plot([r[key] for r in records], [r["val_loss"] for r in records], lw=1.2, label=label)
        ax.plot([r[key] for r, _ in points], [loss for _, loss in points], "o", ms=4, color=line.get_color())


def plot(result: dict, runs: Path, path: Path) -> Path:
    """One row per horizon with results: validation loss against tokens and against the run's own seconds. Lines:
    the in-run curve on the tuning split; dots: kept checkpoints scored on the scoring split; the dashed line is
    the target (the baseline's final scoring loss), the dotted one the bigram model's loss on the scoring split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    horizons = [h for h, t in result["horizons"].items() if t]
    fig, axes = plt.subplots(len(horizons), 2, figsize=(12, 4 * len(horizons)), squeeze=False)
    bigram = result["word_statistics_on_scoring_split"]["bigram"]
    for row, h in zip(axes, horizons):
        table = result["horizons"][h]
        for folder in sorted(runs.glob(f"*-{h}-seed*")):
            plot_run(row, folder, h)
        for ax, label in zip(row, ("training tokens", "seconds (the run's own clock, one core)")):
            ax.axhline(table["baseline"]["target"], ls="--", color="grey", lw=1)
            ax.axhline(bigram, ls=":", color="black", lw=1)
            ax.set(xlabel=label, ylabel="loss (nats/token)", title=f"{h} tokens", ylim=(bigram - 1.0, bigram + 2.5))
            ax.legend(fontsize=7)
    fig.suptitle("CPU quality lab v2: lines = tuning split (in run), dots = scoring split; dashed = target, "
                 "dotted = bigram", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["run", "queue", "report", "ngram", "score", "thin", "restore"])
    parser.add_argument("names", nargs="*", help="run: a contender; queue: NAME@HORIZON[@SEED] ...")
    parser.add_argument("--horizon", default="1M", choices=list(HORIZONS))
    parser.add_argument("--seed", type=int, default=SEEDS[0])
    parser.add_argument("--work", default=str(ROOT / "runs" / "quality_lab"))
    parser.add_argument("--cpus", default="1")
    parser.add_argument("--no-report", action="store_true", help="run, queue: train only (report later, elsewhere)")
    args = parser.parse_args()
    try:
        threads_of(args.cpus)  # a typo in --cpus stops here (one line, exit 2), before anything runs
    except ValueError as bad:
        parser.error(str(bad))
    work = Path(args.work)
    if args.what in ("run", "queue"):
        from gpt2lab.errors import UserError
        from gpt2lab.runtime import resolve_runtime

        try:  # gpt2lab's own refusal, before a queue starts, not in the first run's log
            resolve_runtime("cpu", "bf16")
        except UserError as exc:
            sys.exit(f"quality_lab: the lab trains in bf16 (its runs compare only so); run it on a CPU with AVX512-BF16 "
                     f"or AMX ({exc})")
    if args.what == "run":
        for name in args.names:
            train(work, name, args.horizon, args.seed, args.cpus)
    elif args.what == "queue":
        for item in args.names:
            name, horizon, *seed = item.split("@")
            train(work, name, horizon, int(seed[0]) if seed else SEEDS[0], args.cpus)
    elif args.what == "ngram":
        print(ngram_losses(work))
        return
    elif args.what == "score":  # score checkpoints ahead of `report` (RUN/checkpoints/step_N ...), on --cpus
        for path in args.names:
            print(path, score(work, Path(path), args.cpus), flush=True)
        return
    elif args.what == "thin":
        thin(work, args.names, args.cpus)
        return
    elif args.what == "restore":  # a new machine: the committed runs' records into the work folder
        names = restore(work)
        print(f"restored {len(names)} runs' records into {work / 'runs'}" + "".join(f"\n  {n}" for n in names))
        return
    if not args.no_report:
        report(work, args.cpus)


if __name__ == "__main__":
    main()
