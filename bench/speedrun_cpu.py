"""The CPU quality lab: how many tokens and how much time a recipe needs to reach a tuned GPT-2 baseline's loss.

Protocol (fixed, so that every point of the table can be checked on its own):
  data        Gutenberg train-00 (../shared/data/gutenberg) for training; the Gutenberg validation books, given
              to prepare as --val, for validation only; the same first EVAL_BATCHES x 8 windows every time
  model       the gpt2-15m shape (4 layers, 256 wide, 4 heads, context 256, vocab 50304) for every contender
  budget      TOKENS training tokens (512 steps of 8 x 256), bf16 + torch.compile, 1 thread pinned to one core
  baseline    classic GPT-2 + AdamW + cosine, at the best LR of a sweep (BASELINE_LRS; widened if the best is at
              an end)
  contenders  the reports' modern 124M recipe (RoPE, SwiGLU, RMSNorm, AdamW 1.8e-3 cosine), the best recipe
              (speedrun-cpu), and ablations that say what each part of it buys
  seeds       the baseline and the best recipe run with two seeds; their ratios are given with the spread

Usage (from the project root, ../shared beside it):
  python bench/speedrun_cpu.py all                  # the whole protocol, about 2.5 h on one core
  python bench/speedrun_cpu.py run speedrun-cpu     # one contender (seed 1337), then the table so far
  python bench/speedrun_cpu.py report               # table, JSON and PNG from the runs present
  taskset -c 1 python bench/speedrun_cpu.py stepcost  # seconds per step of each contender, interleaved, 1 thread
Options: --work DIR (default runs/speedrun_cpu), --cpus LIST (taskset, default 1), --threads N (default 1).
Results: bench/results/speedrun_cpu_<date>.json and speedrun_cpu_<date>.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpt2lab.commands.bench import source_version  # noqa: E402
from gpt2lab.errors import UserError  # noqa: E402
from gpt2lab.metrics.logger import read_metrics  # noqa: E402
from gpt2lab.report.compare import Curve, curve_of, plot_curves, reach  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
TOKENS = 1_048_576
STEPS = 512
EVAL_EVERY, EVAL_BATCHES = 64, 16
SEEDS = (1337, 1338)
BASELINE_LRS = (6e-4, 1.2e-3, 2.4e-3)

COMMON = ["run.micro_batch=8", f"schedule.max_steps={STEPS}", f"eval.every={EVAL_EVERY}", f"eval.batches={EVAL_BATCHES}",
          "checkpoint.every=none", "log.every=64", "log.tensorboard=false", "run.compile=on", "run.precision=bf16",
          "run.device=cpu"]
MODERN = ["model.pos=rope", "model.mlp=swiglu", "model.norm=rmsnorm", "model.bias=false"]
SPEEDRUN_ARCH = ["model.pos=rope", "model.norm=rmsnorm", "model.bias=false", "model.mlp=relu2", "model.qk_norm=true",
                 "model.zero_init_proj=true", "model.tie_embeddings=false"]
# chosen by 256-step scouts (runs/scout): embedding 0.2 beat 0.05 and 0.6; Muon 0.02 beat 0.03 and 0.04
MUON = ["optim.name=muon", "optim.matrix_lr=0.02", "optim.embedding_lr=0.2", "optim.head_lr=0.008",
        "optim.gain_lr=0.02", "optim.lr=0.004", "optim.weight_decay=0.0", "optim.beta1=0.8", "optim.muon.momentum=0.95"]
WSD = ["schedule.decay=wsd", "schedule.cooldown_fraction=0.4", "schedule.warmup_steps=16", "schedule.min_lr_ratio=0.0"]


def baseline(lr: float) -> list[str]:
    return [f"optim.lr={lr}", "schedule.warmup_steps=32", "schedule.min_lr_ratio=0.1", "schedule.decay=cosine"]


CONTENDERS: dict[str, dict] = {
    **{f"baseline-lr{lr:g}": {"sets": baseline(lr), "about": f"classic GPT-2, AdamW {lr:g}, cosine"} for lr in
       (3e-4, *BASELINE_LRS, 4.8e-3)},
    "modern-124m-recipe": {"sets": MODERN + ["optim.lr=1.8e-3", "schedule.warmup_steps=4", "schedule.min_lr_ratio=0.1"],
                           "about": "the reports' 124M recipe: RoPE, SwiGLU, RMSNorm, no bias; AdamW 1.8e-3, cosine"},
    "speedrun-cpu": {"sets": SPEEDRUN_ARCH + MUON + WSD,
                     "about": "Muon + ReLU^2 + QK-norm + RoPE + RMSNorm + zero-init projections + untied head, WSD"},
    "ablation-muon-classic": {"sets": MUON + WSD, "about": "the speedrun optimizer and schedule on classic GPT-2"},
    "ablation-arch-adamw": {"sets": SPEEDRUN_ARCH + ["optim.lr=1.2e-3"] + WSD,
                            "about": "the speedrun architecture with AdamW at the baseline's best LR, 1.2e-3 (WSD)"},
}


def tokenizer_dir() -> str | None:
    local = SHARED / "gpt2_tokenizer"
    return str(local) if (local / "encoder.json").is_file() else os.environ.get("GPT2LAB_TOKENIZER")


def prepare_data(work: Path) -> Path:
    from gpt2lab.data.prepare import PrepareOptions, prepare

    train, val = SHARED / "gutenberg" / "train-00.jsonl.xz", SHARED / "gutenberg" / "val.jsonl.xz"
    for f in (train, val):
        if not f.is_file():
            sys.exit(f"speedrun_cpu: {f} is missing; the lab needs ../shared (see ../shared/README.md)")
    data = work / "data"
    opts = PrepareOptions(val_inputs=[str(val)], workers=2, tokenizer=tokenizer_dir(), quiet=True)
    try:
        prepare([str(train)], str(data), opts)
    except UserError as exc:  # the inputs' size or mtime changed (say, ../shared copied afresh): tokenize again
        print(f"speedrun_cpu: {exc}; preparing {data} again", flush=True)
        prepare([str(train)], str(data), dataclasses.replace(opts, overwrite=True))
    return data


def run_dir(work: Path, name: str, seed: int) -> Path:
    return work / "runs" / f"{name}-seed{seed}"


def finished(path: Path) -> bool:
    records = read_metrics(path)
    return bool(records) and records[-1]["step"] >= STEPS and "val_loss" in records[-1]


def train(work: Path, name: str, seed: int, cpus: str, threads: int) -> Path:
    """One contender, one seed, in a process of its own pinned to `cpus` (skipped if already done)."""
    out = run_dir(work, name, seed)
    if finished(out):
        return out
    shutil.rmtree(out, ignore_errors=True)
    data = prepare_data(work)
    sets = [f"data.dir={data}", f"run.seed={seed}", *COMMON, *CONTENDERS[name]["sets"]]
    log = work / "logs" / f"{name}-seed{seed}.log"
    print(f"[{datetime.now():%H:%M}] {name} seed {seed} -> {out}", flush=True)
    if launch(out, sets, cpus, threads, log) != 0:
        sys.exit(f"speedrun_cpu: {name} seed {seed} failed; see {log}")
    return out


def launch(out: Path, sets: list[str], cpus: str, threads: int, log: Path) -> int:
    """`gpt2lab train --preset gpt2-15m` with these --set overrides, pinned to `cpus`; its exit code."""
    command = [sys.executable, "-m", "gpt2lab", "train", "--preset", "gpt2-15m", "--out", str(out)]
    command += [a for s in sets for a in ("--set", s)]
    if cpus and shutil.which("taskset"):
        command = ["taskset", "-c", cpus, *command]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        return subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=env).returncode


def best_baseline(work: Path) -> tuple[str, list[dict]]:
    """The baseline LR with the lowest final val loss (seed 1337), and the sweep's points."""
    sweep = []
    for name in CONTENDERS:
        if name.startswith("baseline-") and finished(run_dir(work, name, SEEDS[0])):
            curve = curve_of(run_dir(work, name, SEEDS[0]), name)
            lr = float(CONTENDERS[name]["sets"][0].split("=")[1])
            sweep.append({"name": name, "lr": lr, "final_val_loss": curve.final})
    if not sweep:
        sys.exit("speedrun_cpu: no finished baseline run; run the protocol first")
    best = min(sweep, key=lambda p: p["final_val_loss"])
    return best["name"], sorted(sweep, key=lambda p: p["lr"])


def sweep(work: Path, cpus: str, threads: int) -> str:
    """Run the LR sweep, widening it while the best LR is at an end of the values tried."""
    tried = list(BASELINE_LRS)
    for lr in tried:
        train(work, f"baseline-lr{lr:g}", SEEDS[0], cpus, threads)
    while True:
        name, points = best_baseline(work)
        lrs = [p["lr"] for p in points]
        best = float(CONTENDERS[name]["sets"][0].split("=")[1])
        wider = best / 2 if best == min(lrs) else best * 2 if best == max(lrs) else None
        if wider is None or f"baseline-lr{wider:g}" not in CONTENDERS:
            return name
        train(work, f"baseline-lr{wider:g}", SEEDS[0], cpus, threads)


def mean_curve(curves: list[Curve]) -> Curve:
    """The seeds' curves averaged point by point (they evaluate at the same steps)."""
    n = min(len(c.loss) for c in curves)
    avg = lambda xs: [statistics.fmean(v) for v in zip(*(x[:n] for x in xs))]  # noqa: E731
    return Curve(curves[0].name, avg([c.tokens for c in curves]), avg([c.seconds for c in curves]),
                 avg([c.loss for c in curves]))


def summary(work: Path) -> dict:
    """The table: the tuned baseline (its seeds' mean curve), and each contender against its final loss: the
    tokens and seconds each contender seed needs to get there, as ratios of the baseline's own."""
    import torch

    base_name, points = best_baseline(work)
    seeds = [curve_of(run_dir(work, base_name, s), base_name) for s in SEEDS if finished(run_dir(work, base_name, s))]
    base = mean_curve(seeds)
    target = base.final
    base_tokens, base_seconds = reach(base.tokens, base.loss, target), reach(base.seconds, base.loss, target)
    contenders = [e for e in (_contender(work, name, target, base_tokens, base_seconds) for name in CONTENDERS
                              if not name.startswith("baseline-")) if e]
    commit = source_version(ROOT)
    device = json.loads((run_dir(work, base_name, SEEDS[0]) / "device.json").read_text())
    return {
        "device": f"{device.get('name')} ({device.get('threads')} thread(s), pinned by taskset)",
        "machine": platform.machine(), "torch": torch.__version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": commit or None,
        "tokens_budget": TOKENS, "steps": STEPS, "eval": {"every": EVAL_EVERY, "batches": EVAL_BATCHES, "windows": EVAL_BATCHES * 8},
        "protocol": __doc__.split("Usage")[0].strip(),
        "baseline": {"recipe": base_name, "lr": float(CONTENDERS[base_name]["sets"][0].split("=")[1]),
                     "final_val_loss": round(target, 4), "tokens": round(base_tokens), "seconds": round(base_seconds, 1),
                     "seeds": [SEEDS[i] for i in range(len(seeds))],
                     "final_val_loss_per_seed": [round(c.final, 4) for c in seeds],
                     "seconds_per_seed": [round(c.seconds[-1], 1) for c in seeds], "sweep": points},
        "contenders": contenders,
    }


def _contender(work: Path, name: str, target: float, base_tokens: float, base_seconds: float) -> dict | None:
    """A contender's seeds against the baseline's final loss: tokens and seconds to reach it, and their ratios."""
    curves = [curve_of(run_dir(work, name, s), name) for s in SEEDS if finished(run_dir(work, name, s))]
    if not curves:
        return None
    tokens = [reach(c.tokens, c.loss, target) for c in curves]
    seconds = [reach(c.seconds, c.loss, target) for c in curves]
    return {"name": name, "about": CONTENDERS[name]["about"], "seeds": [SEEDS[i] for i in range(len(curves))],
            "final_val_loss": [round(c.final, 4) for c in curves],
            "tokens_to_baseline_loss": [None if t is None else round(t) for t in tokens],
            "seconds_to_baseline_loss": [None if t is None else round(t, 1) for t in seconds],
            "seconds_total": [round(c.seconds[-1], 1) for c in curves],
            "token_ratio": _ratio(tokens, base_tokens), "time_ratio": _ratio(seconds, base_seconds)}


def _ratio(values: list, base: float) -> dict | None:
    """Mean ratio to the baseline with its spread over seeds; None where a seed never reached the loss."""
    if not values or any(v is None for v in values):
        return None
    ratios = [v / base for v in values]
    return {"mean": round(statistics.fmean(ratios), 3), "min": round(min(ratios), 3), "max": round(max(ratios), 3),
            "per_seed": [round(r, 3) for r in ratios]}


def step_cost(work: Path, names: list[str], threads: int, rounds: int = 5, steps: int = 4) -> dict:
    """Seconds per training step of each contender, measured in one process in interleaved rounds on a quiet core:
    a time ratio that does not depend on what else the machine did during the runs."""
    import torch

    from gpt2lab.commands.bench import Contender
    from gpt2lab.config import build_config
    from gpt2lab.runtime import resolve_runtime

    torch.set_num_threads(threads)
    built = {}
    for name in names:
        sets = [s for s in COMMON if not s.startswith(("run.device", "log."))] + CONTENDERS[name]["sets"]
        cfg = build_config(preset="gpt2-15m", sets=sets)
        runtime = resolve_runtime("cpu", "bf16", "on", None, cfg.run.loss_chunk)
        built[name] = Contender("gpt2lab", cfg, runtime, cfg.run.micro_batch, runtime.loss_chunk)
        built[name].warm_up(2)
    times = {n: [] for n in names}
    for _ in range(rounds):
        for name, c in built.items():
            times[name].append(c.tokens / c.timed(steps))
    cost = {n: {"seconds_per_step": round(statistics.median(v), 4), "spread": round((max(v) - min(v)) / statistics.median(v), 3)}
            for n, v in times.items()}
    (work / "step_cost.json").write_text(json.dumps({"threads": threads, "rounds": rounds, "steps": steps, "cost": cost}, indent=1))
    return cost


def write_results(work: Path) -> Path:
    result = summary(work)
    cost_file = work / "step_cost.json"
    if cost_file.is_file():  # measured apart, on a quiet core: time ratios free of the runs' neighbours
        cost = json.loads(cost_file.read_text())
        base_cost = cost["cost"].get(result["baseline"]["recipe"], {}).get("seconds_per_step")
        result["step_cost"] = cost
        for c in result["contenders"]:
            mine = cost["cost"].get(c["name"], {}).get("seconds_per_step")
            if base_cost and mine and c["token_ratio"]:
                c["step_cost_ratio"] = round(mine / base_cost, 3)
                c["time_ratio_from_step_cost"] = round(c["token_ratio"]["mean"] * mine / base_cost, 3)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d")
    path = out / f"speedrun_cpu_{stamp}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    base_name = result["baseline"]["recipe"]
    base = mean_curve([curve_of(run_dir(work, base_name, s), base_name) for s in SEEDS if finished(run_dir(work, base_name, s))])
    base.name = f"{base_name} (mean of {len(result['baseline']['seeds'])} seeds)"
    curves = [base] + [curve_of(run_dir(work, c["name"], SEEDS[0]), c["name"]) for c in result["contenders"]]
    plot_curves(curves, out / f"speedrun_cpu_{stamp}.png", "gpt2-15m val loss (Gutenberg)")
    b = result["baseline"]
    print(f"baseline {b['recipe']}: final {b['final_val_loss']} (seeds {b['final_val_loss_per_seed']}) at "
          f"{b['tokens']:,} tokens, {b['seconds']:.0f} s")
    for c in result["contenders"]:
        tr, ti = c["token_ratio"], c["time_ratio"]
        print(f"{c['name']:24s} final {c['final_val_loss']} | tokens to baseline loss {c['tokens_to_baseline_loss']} "
              f"| token ratio {tr and tr['mean']} | time ratio {ti and ti['mean']}")
    print(f"wrote {path} and its PNG")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["all", "run", "report", "stepcost"])
    parser.add_argument("name", nargs="?", help="the contender, with `run`: " + ", ".join(CONTENDERS))
    parser.add_argument("--seed", type=int, default=SEEDS[0])
    parser.add_argument("--work", default=str(ROOT / "runs" / "speedrun_cpu"))
    parser.add_argument("--cpus", default="1", help="taskset CPU list for the runs ('' for none)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    work = Path(args.work)
    if args.what == "run":
        if args.name not in CONTENDERS:
            sys.exit(f"speedrun_cpu: name one of {', '.join(CONTENDERS)}")
        train(work, args.name, args.seed, args.cpus, args.threads)
    elif args.what == "stepcost":
        base, _ = best_baseline(work)
        print(step_cost(work, [base, "modern-124m-recipe", "speedrun-cpu", "ablation-muon-classic", "ablation-arch-adamw"],
                        args.threads))
    elif args.what == "all":
        base = sweep(work, args.cpus, args.threads)
        for name in ("speedrun-cpu", "modern-124m-recipe"):
            train(work, name, SEEDS[0], args.cpus, args.threads)
        for name in (base, "speedrun-cpu"):
            train(work, name, SEEDS[1], args.cpus, args.threads)
        for name in ("ablation-muon-classic", "ablation-arch-adamw"):
            train(work, name, SEEDS[0], args.cpus, args.threads)
    write_results(work)


if __name__ == "__main__":
    main()
