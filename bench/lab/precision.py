"""What the lab's bf16 changes: a lab run trained again in fp32 (`--precision fp32`, in a folder of its own,
NAME-HORIZON-seedSEED-fp32) beside its bf16 twin, the same contender, horizon and seed, so the same initial
weights and the same data order. The lab's tables hold bf16 runs only; this check measures how far an fp32 run's
numbers can stand in for them, on a machine whose CPU has no bf16 units (where bf16 is emulated, slower than
fp32, and gpt2lab will not train in it).

Per fp32 run: its in-run tuning-split losses minus its twin's at every evaluation both made, the final tuning and
scoring losses of both, and for a contender the token ratio at which it reaches the (bf16) target beside its
twin's; its time ratio is taken against fp32 runs of the best baseline on the same processor only, since fp32 and
bf16 steps take different times. Each run is scored in the precision gpt2lab picks where it is scored (fp32 on a
CPU without bf16 units)."""

from __future__ import annotations

import json
from pathlib import Path

from gpt2lab.metrics.logger import read_metrics
from gpt2lab.report.compare import curve_of

from .protocol import HORIZONS, SEEDS, parse_run_name, run_dir
from .runs import finished, processor_of, threads_of_run
from .scoring import checkpoints, score


def fp32_runs(work: Path, horizon: str) -> list[Path]:
    """The finished fp32 runs at `horizon`."""
    return [run for run in sorted((work / "runs").glob(f"*-{horizon}-seed*-fp32")) if finished(run, horizon)]


def cached_final(run: Path) -> float | None:
    """The run's final checkpoint's scoring-split loss, if its scoring cache holds it (a twin's checkpoints may be
    on another machine: it is never scored here)."""
    kept = checkpoints(run)
    cache = run / "scoring.json"
    known = json.loads(cache.read_text()) if cache.is_file() else {}
    return known.get(kept[-1][1].name) if kept else None


def loss_difference(run: Path, twin: Path) -> dict:
    """fp32 minus bf16 in-run tuning-split loss at every step both evaluated: mean, largest, final."""
    mine = {r["step"]: r["val_loss"] for r in read_metrics(run) if "val_loss" in r}
    theirs = {r["step"]: r["val_loss"] for r in read_metrics(twin) if "val_loss" in r}
    diffs = [mine[s] - theirs[s] for s in sorted(mine.keys() & theirs.keys())]
    if not diffs:
        return {"points": 0}
    return {"points": len(diffs), "mean": round(sum(diffs) / len(diffs), 4), "largest": round(max(diffs, key=abs), 4),
            "final": round(diffs[-1], 4)}


def precision_check(work: Path, horizon: str, table: dict | None, cpus: str) -> list[dict]:
    """One row per finished fp32 run at `horizon`, against its bf16 twin and the horizon's `table` (its target,
    its best baseline, and the twins' token ratios)."""
    from .tables import locate, time_ratio_flags

    rows = []
    base_name = table["baseline"]["name"] if table else None
    base_fp32 = [run_dir(work, base_name, horizon, s, "fp32") for s in SEEDS] if base_name else []
    base_fp32 = [r for r in base_fp32 if finished(r, horizon)]
    twin_rows = {(c["name"], r["seed"]): r for c in (table or {}).get("contenders", []) for r in c["per_seed"]}
    for run in fp32_runs(work, horizon):
        name, _, seed = parse_run_name(run.name)
        twin = run_dir(work, name, horizon, seed)
        last = read_metrics(run)[-1]
        row = {"name": name, "seed": seed, "processor": processor_of(run), "threads": threads_of_run(run),
               "final_tuning_loss": round(curve_of(run).final, 4),
               "final_scoring_loss": round(score(work, checkpoints(run)[-1][1], cpus), 4),
               "seconds_total": round(last["elapsed"], 1)}
        if finished(twin, horizon):
            bf16 = cached_final(twin)
            row["bf16_twin"] = {"processor": processor_of(twin), "final_tuning_loss": round(curve_of(twin).final, 4),
                                "final_scoring_loss": None if bf16 is None else round(bf16, 4),
                                "seconds_total": round(read_metrics(twin)[-1]["elapsed"], 1)}
            row["tuning_loss_fp32_minus_bf16"] = loss_difference(run, twin)
            if bf16 is not None:
                row["scoring_loss_fp32_minus_bf16"] = round(row["final_scoring_loss"] - bf16, 4)
        if table and "carried_from" not in table and not name.startswith("baseline-"):  # its baseline runs are here
            base_runs = [run_dir(work, base_name, horizon, s) for s in table["baseline"]["seeds"]]
            cross, _ = locate(work, run, table["baseline"]["target"], base_runs, cpus)
            row["crossing"] = cross
            if cross:
                row["token_ratio"] = round(cross["tokens"] / HORIZONS[horizon], 3)
                twin_row = twin_rows.get((name, seed), {})
                row["bf16_twin_token_ratio"] = twin_row.get("token_ratio")
                same = [r for r in base_fp32 if processor_of(r) == processor_of(run)]
                if same:  # fp32 against fp32 on one processor, or no time ratio at all
                    seconds = [read_metrics(r)[-1]["elapsed"] for r in same]
                    row["time_ratio_against_fp32_baseline"] = round(cross["seconds"] / (sum(seconds) / len(seconds)), 3)
                    row["time_baseline_seeds"] = [parse_run_name(r.name)[2] for r in same]
                    row.update(time_ratio_flags(run, same))  # other thread counts, on one processor
        rows.append(row)
    return rows
