"""The lab's report: every horizon's table with what each contender is, written as JSON with a plot (loss against
tokens and against time, one row per horizon) and the runs' records, under bench/results."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from gpt2lab.commands.bench import source_version
from gpt2lab.files import write_json_atomic
from gpt2lab.metrics.logger import read_metrics

from . import protocol
from .data import ngram_losses
from . import precision
from .protocol import HORIZONS, ROOT, compared, parse_run_name, precision_of_name
from .runs import device_of_run, processor_of, save_records
from .tables import horizon_tables
from . import trend


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


def report(work: Path, cpus: str, out: Path | None = None) -> Path:
    """Every horizon's table into out (bench/results) as quality_lab_DATE.json and .png, with the runs' records
    (quality_lab_runs/). The processors and torch versions are the runs' own, from their device reports (a lab
    spans machines), not the machine that writes the report."""
    import torch

    runs = [run for run in sorted((work / "runs").glob("*")) if (run / "device.json").is_file()]
    result = {"processors": {"runs_per_processor": dict(Counter(processor_of(run) for run in runs)),
                             "pinning": "taskset; each run's threads in its row"},
              "torch": sorted({device_of_run(run).get("torch") for run in runs} - {None}) or [torch.__version__],
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "commit": source_version(ROOT),
              "protocol": protocol.__doc__.strip(),
              "splits": {"tuning": "val.jsonl.xz books 0,2,4,...,16", "scoring": "val.jsonl.xz books 1,3,5,...,17"},
              "word_statistics_on_scoring_split": ngram_losses(work), "contenders": compared(work),
              "horizons": horizon_tables(work, cpus)}
    checks = {h: precision.precision_check(work, h, result["horizons"][h], cpus) for h in HORIZONS}
    if any(checks.values()):  # fp32 twins of lab runs: what the lab's bf16 changes
        about = " ".join(precision.__doc__.split())
        result["fp32_check"] = {"about": about, **{h: rows for h, rows in checks.items() if rows}}
    out = out or ROOT / "bench" / "results"
    carry_over(result["horizons"], out)
    result["trend"] = {"about": " ".join(trend.__doc__.split()), "per_contender": trend.trends(result["horizons"])}
    path = out / f"quality_lab_{datetime.now(timezone.utc):%Y%m%d}.json"
    write_json_atomic(path, result, "the lab report")
    runs_out = out / "quality_lab_runs"  # the raw curves, small enough to commit
    for skipped in save_records(work, runs_out):
        print(f"{skipped}: not finished here, so not saved (a finished run's records in {runs_out} are kept)")
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
    name, planned, seed = parse_run_name(folder.name)
    fp32 = precision_of_name(folder.name) == "fp32"  # a check of the lab's bf16: dashed, named so
    label = f"{name} seed {seed}" + (" (fp32 check)" if fp32 else "") + (f" (planned for {planned})" if planned != horizon else "")
    for ax, key in zip(row, ("tokens", "elapsed")):
        line, = ax.plot([r[key] for r in records], [r["val_loss"] for r in records], lw=1.2, label=label,
                        ls="--" if fp32 else "-")
        ax.plot([r[key] for r, _ in points], [loss for _, loss in points], "o", ms=4, color=line.get_color())


def planned_for(tables: dict, horizon: str) -> list[str]:
    """The horizons with no table of their own (no baseline there: the recipe planned shorter, as 256k for 1M) whose
    runs are drawn in `horizon`'s panel: the next longer horizon that has a table."""
    with_table = sorted((h for h, t in tables.items() if t and h != "smoke"), key=HORIZONS.get)
    return [g for g in HORIZONS if g != "smoke" and not tables.get(g)
            and next((h for h in with_table if HORIZONS[h] > HORIZONS[g]), None) == horizon]


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
        for folder in sorted(runs.glob(f"*-{h}-seed*")) + [f for g in planned_for(result["horizons"], h)
                                                            for f in sorted(runs.glob(f"*-{g}-seed*"))]:
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
