"""The lab's table for one horizon: the baseline sweep's best LR (on the tuning split), the target (its final
loss on the scoring split), and per contender and seed the token and time ratios at which it reaches it."""

from __future__ import annotations

from pathlib import Path

from gpt2lab.metrics.logger import read_metrics
from gpt2lab.report.compare import curve_of, reach

from .protocol import CONTENDERS, GOALS, HORIZONS, PLANS_ONLY, RESOLUTION, SEEDS, TOKENS_PER_STEP, parse_run_name, run_dir, steps_of
from .runs import finished, processor_of, threads_of_run
from .scoring import checkpoints, crossing, score


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
    # tokens judged unrounded, from the crossings: a ratio of 0.2005 is printed 0.2 and misses a goal of 0.20
    worst = {"token": max(exact_token_ratio(r, horizon) for r in best["per_seed"]), "time": best["worst_time_ratio"]}
    met = {k: worst[k] <= v for k, v in goal.items()}
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


def scored_against(work: Path, horizon: str, cpus: str) -> tuple[str | None, float | None, list[Path]]:
    """The horizon whose target a contender's run of `horizon` is scored against, that target and its baseline
    runs: its own; for a plan that has no baseline by protocol (224k, 256k), the next longer horizon that has
    one, the table it is a shorter row of; (None, None, []) while that horizon's baseline has not finished."""
    against = horizon if horizon not in PLANS_ONLY else min(
        (h for h in HORIZONS if h not in (*PLANS_ONLY, "smoke") and HORIZONS[h] > HORIZONS[horizon]), key=HORIZONS.get)
    target, base_runs = target_of(work, against, cpus)
    return (against, target, base_runs) if target is not None else (None, None, [])


def horizon_table(work: Path, horizon: str, cpus: str, recipe: str | None = None) -> dict | None:
    """The horizon's table; `recipe` (a shorter horizon's best) is scored scheduled shorter against this target
    when no contender has finished here yet (a 16M baseline trains hours before a 16M contender does)."""
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
                          "threads_per_seed": [threads_of_run(r) for r in base_runs],
                          "processor_per_seed": [processor_of(r) for r in base_runs]},
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
    if table["best_recipe"]:
        rows = scheduled_shorter(work, table["best_recipe"]["name"], horizon, target, base_runs, cpus)
        table["best_recipe"]["scheduled_shorter"] = rows
        table["best_recipe"]["planned_shorter"] = planned_shorter(rows, horizon)
    elif recipe:
        table["recipe_scheduled_shorter"] = {"recipe": recipe, "rows": scheduled_shorter(work, recipe, horizon, target,
                                                                                         base_runs, cpus)}
    return table


def horizon_tables(work: Path, cpus: str) -> dict:
    """Every horizon's table, the shortest first, each given the best recipe so far: a longer horizon scores it
    scheduled shorter against its target before any contender has run there."""
    tables, best = {}, None
    for h in sorted(HORIZONS, key=HORIZONS.get):
        tables[h] = horizon_table(work, h, cpus, recipe=best)
        if tables[h] and tables[h]["best_recipe"]:
            best = tables[h]["best_recipe"]["name"]
    return {h: tables[h] for h in HORIZONS}


def scheduled_shorter(work: Path, name: str, horizon: str, target: float, base_runs: list[Path], cpus: str) -> list[dict]:
    """The recipe's runs scheduled for a shorter horizon (their decay ends there) against this horizon's target:
    where each reaches it, as a share of this horizon's tokens and of the baseline's seconds (the same processor's
    seeds). A run in its stable phase at this horizon's crossing has not decayed yet; one scheduled to end sooner
    shows what a user who plans for the target would pay. Interpolated between kept checkpoints, not replayed
    (its resolution is in the crossing: a run restored from its records has only the checkpoints it scored)."""
    rows = []
    shorter = [h for h in HORIZONS if h != "smoke" and HORIZONS[h] < HORIZONS[horizon]]
    for h in shorter:
        for seed, run in finished_seeds(work, name, h).items():
            final = score(work, checkpoints(run)[-1][1], cpus)
            cross = locate(work, run, target, base_runs, cpus, resolve=False)[0] if final <= target else None
            t = tuning_crossing(run, base_runs)  # its records hold every evaluation: dense where the scores are not
            row = {"horizon": h, "seed": seed, "final_scoring_loss": round(final, 4), "crossing": cross,
                   "token_ratio_on_tuning_split": round(t / HORIZONS[horizon], 3) if t is not None else None}
            if cross:
                same = [r for r in base_runs if processor_of(r) == processor_of(run)] or base_runs
                seconds = sum(read_metrics(r)[-1]["elapsed"] for r in same) / len(same)
                row.update(resolved=cross["resolution"] <= RESOLUTION,  # else its kept checkpoints are too sparse
                           token_ratio=round(cross["tokens"] / HORIZONS[horizon], 3),
                           time_ratio=round(cross["seconds"] / seconds, 3),
                           time_baseline_seeds=[parse_run_name(r.name)[2] for r in same])
                # a short plan evaluates 4x as densely: its wall clock holds more evaluation per step than the baseline's
                row.update(median_step_field(run, cross["tokens"], same), **time_ratio_flags(run, same))
            rows.append(row)
    return rows


def planned_shorter(rows: list[dict], horizon: str) -> dict:
    """Per shorter horizon the recipe was planned for, its worst seed's token ratio against this horizon's target
    and whether that meets this horizon's token goal: the figure a user who plans for the target pays, beside the
    in-run one (`goal_met`). Only where every seed ran and every seed crossed (None otherwise: a seed that never
    reaches the target is not a ratio)."""
    out = {}
    for h in sorted({r["horizon"] for r in rows}, key=HORIZONS.get):
        mine = [r for r in rows if r["horizon"] == h]
        ratios = [r.get("token_ratio") for r in mine]
        worst = None if len(mine) < len(SEEDS) or None in ratios else max(exact_token_ratio(r, horizon) for r in mine)
        goal = GOALS.get(horizon, {}).get("token")
        out[h] = {"seeds": [r["seed"] for r in mine], "worst_token_ratio": None if worst is None else round(worst, 4),
                  "resolved": all(r.get("resolved") for r in mine),
                  "token_goal_met": None if worst is None or goal is None else worst <= goal}
    return out


def exact_token_ratio(row: dict, horizon: str) -> float:
    """A seed row's token ratio unrounded, from its crossing's tokens: what a goal is judged on."""
    return row["crossing"]["tokens"] / HORIZONS[horizon]


def step_at(run: Path, tokens: float) -> int:
    """The first step by which the run had trained on `tokens` (from its records: a ramped batch takes fewer
    tokens per step early on, so tokens / TOKENS_PER_STEP would guess too early)."""
    records = read_metrics(run)
    return next((r["step"] for r in records if r.get("tokens", 0) >= tokens), records[-1]["step"])


def locate(work: Path, run: Path, target: float, base_runs: list[Path], cpus: str,
           resolve: bool = True) -> tuple[dict | None, float | None]:
    """The run's crossing of `target` on the scoring split, searched from where its tuning-split curve reaches the
    baseline's final tuning loss, and that tuning-split crossing in tokens (None when it never gets there)."""
    t = tuning_crossing(run, base_runs)
    return crossing(work, run, target, cpus, None if t is None else step_at(run, t), resolve), t


def tuning_crossing(run: Path, base_runs: list[Path]) -> float | None:
    """The tokens at which the run's tuning-split curve first reaches the baseline's final tuning loss (None when
    it never does)."""
    tuning = curve_of(run)
    return reach(tuning.tokens, tuning.loss, curve_of(base_runs[0]).final)


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
           "threads": threads_of_run(run), "processor": processor_of(run),
           "token_ratio_on_tuning_split": None if t is None else round(t / HORIZONS[horizon], 3)}
    if cross:
        row["token_ratio"] = round(cross["tokens"] / HORIZONS[horizon], 3)
        # a ratio of wall times is a ratio of recipes only on one processor: against the baseline seeds that ran
        # on this run's, when there are any; else against all of them, flagged
        same = [i for i, r in enumerate(base_runs) if processor_of(r) == processor_of(run)] or range(len(base_runs))
        seconds, cpu = [base_seconds[i] for i in same], [base_cpu[i] for i in same]
        row["time_ratio"] = round(cross["seconds"] / (sum(seconds) / len(seconds)), 3)
        row["time_baseline_seeds"] = [parse_run_name(base_runs[i].name)[2] for i in same]
        same_runs = [base_runs[i] for i in same]
        row.update(time_ratio_flags(run, same_runs))
        if "cpu_seconds" in cross and None not in cpu:
            row["cpu_time_ratio"] = round(cross["cpu_seconds"] / (sum(cpu) / len(cpu)), 3)
        row.update(median_step_field(run, cross["tokens"], same_runs))
    return row


def time_ratio_flags(run: Path, base_runs: list[Path]) -> dict:
    """What keeps a time ratio against `base_runs` from being a ratio of recipes: baseline runs at other thread
    counts ("time_ratio_threads_differ") or on another processor ("time_ratio_devices_differ"); {} when none."""
    flags = {}
    base_threads = {threads_of_run(r) for r in base_runs}
    if base_threads != {threads_of_run(run)}:
        flags["time_ratio_threads_differ"] = {"baseline": sorted(base_threads, key=str), "this run": threads_of_run(run)}
    base_devices = {processor_of(r) for r in base_runs}
    if base_devices != {processor_of(run)}:
        flags["time_ratio_devices_differ"] = {"baseline": sorted(base_devices), "this run": processor_of(run)}
    return flags


def median_step_field(run: Path, tokens: float, base_runs: list[Path]) -> dict:
    """{"median_step_time_ratio": ...} for a row, or {} when the runs cannot give one."""
    steady = median_step_time_ratio(run, tokens, base_runs)
    return {} if steady is None else {"median_step_time_ratio": steady}


def median_step_time(run: Path) -> float | None:
    """The median of a run's per-step training times (its records' step_time): what a step costs with the
    evaluations, checkpoints and other processes' bursts left out."""
    times = sorted(r["step_time"] for r in read_metrics(run) if r.get("step_time"))
    return times[len(times) // 2] if times else None


def median_step_time_ratio(run: Path, tokens: float, base_runs: list[Path]) -> float | None:
    """The time ratio from median step times: the steps to the crossing at this run's median step time, against
    the baseline's whole horizon at its median step time (the mean over the seeds given). A neighbour that shared a
    core for part of a run moves its wall seconds, not its median step. None for a batch that grows (its steps do
    not cost alike, as its records' tokens show) or when a run has no step times."""
    if any(r.get("tokens") != r["step"] * TOKENS_PER_STEP for r in read_metrics(run)):
        return None
    mine, theirs = median_step_time(run), [median_step_time(r) for r in base_runs]
    if mine is None or not theirs or None in theirs:
        return None
    base = sum(t * steps_of(parse_run_name(r.name)[1]) for t, r in zip(theirs, base_runs)) / len(theirs)
    return round(tokens / TOKENS_PER_STEP * mine / base, 3)
