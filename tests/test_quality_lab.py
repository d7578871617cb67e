"""The quality lab's arithmetic (bench/lab/) on hand-made run records: which baseline is the target,
where a contender crosses it on the scoring split, and the ratios it reports. Every score comes from the runs'
scoring caches, as for the committed runs whose checkpoints are not kept, so nothing is trained or evaluated."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import lab, quality_lab
from bench.lab.report import planned_for
from tests.lab_records import STEPS, lab_with_runs, micro_checkpoint, write_run

@pytest.fixture
def work(tmp_path):
    return lab_with_runs(tmp_path)


def test_the_target_is_the_best_baselines_scoring_loss_and_the_crossing_is_interpolated(work):
    table = lab.horizon_table(work, "1M", cpus="")
    base = table["baseline"]
    assert base["name"] == "baseline-lr0.0012" and base["target"] == 5.5
    assert [p["lr"] for p in base["sweep_on_tuning_split"]] == [6e-4, 1.2e-3, 2.4e-3]
    assert base["seconds_per_seed"] == [1024.0] and base["cpu_seconds_per_seed"] == [768.0]
    (contender,) = table["contenders"]
    first, second = contender["per_seed"]
    # seed 1337 crosses 5.5 a quarter of the way from step 112 (5.52) to step 128 (5.44): at step 116
    assert first["crossing"]["bracket"] == [112, 128] and first["crossing"]["tokens"] == 116 * lab.TOKENS_PER_STEP
    assert first["token_ratio"] == round(116 / STEPS, 3)
    assert first["time_ratio"] == round(3.0 * 116 / 1024, 3)
    assert first["cpu_time_ratio"] == round(2.0 * 116 / 768, 3)
    # seed 1338 reaches it exactly at step 112; it has no CPU clock, so no CPU-time ratio rather than a wrong one
    assert second["token_ratio"] == round(112 / STEPS, 3) and "cpu_time_ratio" not in second
    assert contender["worst_token_ratio"] == first["token_ratio"]
    assert first["threads"] == 1 and "time_ratio_threads_differ" not in first
    # the best recipe is judged on its worst seed against the horizon's goal (1M: <= 0.20 of the tokens)
    assert table["best_recipe"] == {"name": "speedrun-cpu", "worst_token_ratio": 0.227,
                                    "worst_time_ratio": round(3.0 * 116 / 1024, 3), "seeds": [1337, 1338],
                                    "goal": {"token": 0.20}, "goal_met": {"token": False}, "all_met": False,
                                    "scheduled_shorter": [], "planned_shorter": {}}  # no 256k run of the recipe here


def with_step_times(run, typical, bursts=()):
    """Give a run's records step times: `typical` each, but those at the steps in `bursts`, 20 times as long (a
    neighbour on the core), and its wall clock moved by them."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    late = 0.0
    for r in records:
        r["step_time"] = typical * (20 if r["step"] in bursts else 1)
        late += r["step_time"] - typical
        r["elapsed"] += late
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_the_median_step_time_ratio_leaves_a_neighbours_bursts_out(work):
    """Wall seconds move when a core is shared for a while; the median step does not: the steps to the crossing
    at the run's median step time against the baseline's horizon at its own. A run whose batch grows has none."""
    runs = work / "runs"
    with_step_times(runs / "baseline-lr0.0012-1M-seed1337", 2.0, bursts={16, 32, 48})
    with_step_times(runs / "speedrun-cpu-1M-seed1337", 3.0, bursts={16, 32})
    first, second = lab.horizon_table(work, "1M", cpus="")["contenders"][0]["per_seed"]
    assert first["median_step_time_ratio"] == round(116 * 3.0 / (STEPS * 2.0), 3)
    assert first["time_ratio"] != first["median_step_time_ratio"]  # the bursts moved the wall clocks
    assert "median_step_time_ratio" not in second  # its records have no step times
    ramp = runs / "speedrun-cpu-1M-seed1337" / "metrics.jsonl"  # fewer tokens in its first steps
    records = [json.loads(line) for line in ramp.read_text().splitlines()]
    records[0]["tokens"] //= 2
    ramp.write_text("".join(json.dumps(r) + "\n" for r in records))
    first, _ = lab.horizon_table(work, "1M", cpus="")["contenders"][0]["per_seed"]
    assert "median_step_time_ratio" not in first


def test_a_second_seed_that_finished_alone_is_labelled_with_its_own_seed_and_is_not_the_best(work):
    write_run(work, "speedrun-cpu+ve2", 1338, lambda s: 6 - 8 * s / STEPS, {48: 5.52, 64: 5.44, STEPS: 3.5})
    table = lab.horizon_table(work, "1M", cpus="")
    (row,) = {c["name"]: c for c in table["contenders"]}["speedrun-cpu+ve2"]["per_seed"]
    assert row["seed"] == 1338 and row["token_ratio"] == round(52 / STEPS, 3)
    assert table["best_recipe"]["name"] == "speedrun-cpu"  # one seed is not enough at 1M and 4M


def test_a_time_ratio_between_runs_with_other_thread_counts_is_flagged(work):
    write_run(work, "speedrun-cpu+polar", 1337, lambda s: 6 - 4 * s / STEPS, {112: 5.52, 128: 5.44, STEPS: 4.0},
              threads=2)
    rows = {c["name"]: c for c in lab.horizon_table(work, "1M", cpus="")["contenders"]}
    (row,) = rows["speedrun-cpu+polar"]["per_seed"]
    assert row["time_ratio_threads_differ"] == {"baseline": [1], "this run": 2}


def test_a_time_ratio_between_runs_on_other_processors_is_flagged(work):
    write_run(work, "speedrun-cpu+polar", 1337, lambda s: 6 - 4 * s / STEPS, {112: 5.52, 128: 5.44, STEPS: 4.0},
              device="Intel Xeon Processor")
    rows = {c["name"]: c for c in lab.horizon_table(work, "1M", cpus="")["contenders"]}
    (row,) = rows["speedrun-cpu+polar"]["per_seed"]
    assert row["time_ratio_devices_differ"] == {"baseline": ["AMD EPYC"], "this run": "Intel Xeon Processor"}
    assert all("time_ratio_devices_differ" not in r for r in rows["speedrun-cpu"]["per_seed"])


def test_a_time_ratio_is_taken_against_the_baseline_seeds_on_the_same_processor(work):
    """Lab runs land on whichever machine a session gets. With one baseline seed on each of two processors, a
    contender's wall time is divided by the seed's that ran on its own processor (two machines that a VM names
    alike are told apart by their bf16 units), not by a mean across processors."""
    for run in (work / "runs").glob("*"):  # the fixture's runs: on an AMD EPYC with AVX512-BF16
        (run / "device.json").write_text(json.dumps({"name": "AMD EPYC", "threads": 1, "bf16": "avx512_bf16"}))
    write_run(work, "baseline-lr0.0012", 1338, lambda s: 6 - s / STEPS, {STEPS: 5.5}, clocks=(1.0, 0.5),
              device="Intel Xeon")  # the same final loss: the target stays 5.5; half the seconds per step
    write_run(work, "speedrun-cpu+polar", 1337, lambda s: 6 - 4 * s / STEPS, {112: 5.52, 128: 5.44, STEPS: 4.0},
              clocks=(3.0, 2.0), device="Intel Xeon")
    rows = {c["name"]: c["per_seed"] for c in lab.horizon_table(work, "1M", cpus="")["contenders"]}
    (intel,) = rows["speedrun-cpu+polar"]
    amd = rows["speedrun-cpu"][0]  # crosses at step 116 (as polar does), 3 s a step
    assert intel["time_ratio"] == round(3.0 * 116 / (1.0 * STEPS), 3) and intel["time_baseline_seeds"] == [1338]
    assert intel["cpu_time_ratio"] == round(2.0 * 116 / (0.5 * STEPS), 3) and "time_ratio_devices_differ" not in intel
    assert amd["time_ratio"] == round(3.0 * 116 / (2.0 * STEPS), 3) and amd["time_baseline_seeds"] == [1337]
    assert lab.processor_of(lab.run_dir(work, "speedrun-cpu", "1M", 1337)) == "AMD EPYC (avx512_bf16)"


def test_restore_brings_the_committed_records_back_to_a_new_machines_work_folder(work, tmp_path):
    """The work folder does not travel; the records under bench/results do. Restored into an empty work folder
    they give the same table, and a run already there (one being retrained here) is not overwritten."""
    before = lab.horizon_table(work, "1M", cpus="")
    (work / "runs" / "notes.txt").write_text("not a run")
    (work / "ngram.json").write_text('{"unigram": 6.9}')
    fresh = tmp_path / "fresh"
    (fresh / "runs" / "speedrun-cpu-1M-seed1338").mkdir(parents=True)  # retraining here: left alone
    restored = lab.restore(fresh, work / "runs")
    assert "speedrun-cpu-1M-seed1338" not in restored and len(restored) == 4
    assert not (fresh / "runs" / "notes.txt").exists() and not list((fresh / "runs").glob(".*"))
    assert not (fresh / "ngram.json").exists()  # the n-gram losses sit beside the runs in bench/results, not in runs/
    lab.restore(fresh, work)  # a results folder holding ngram.json beside run folders
    assert json.loads((fresh / "ngram.json").read_text()) == {"unigram": 6.9}
    (fresh / "runs" / "speedrun-cpu-1M-seed1338").rmdir()
    assert lab.restore(fresh, work / "runs") == ["speedrun-cpu-1M-seed1338"]
    assert lab.horizon_table(fresh, "1M", cpus="") == before
    # a run committed before it finished has no checkpoints to continue from: left out, so the lab starts it over
    # (gpt2lab refuses to train into a folder of records it did not write there)
    unfinished = write_run(work, "speedrun-cpu+ve2", 1338, lambda s: 6 - 4 * s / STEPS, {})
    records = (unfinished / "metrics.jsonl").read_text().splitlines()
    (unfinished / "metrics.jsonl").write_text("\n".join(records[:7]) + "\n")  # stopped at step 112
    assert lab.restore(fresh, work / "runs") == [] and not (fresh / "runs" / unfinished.name).exists()


@pytest.mark.parametrize("cpus, threads", [("1", 1), ("0,1", 2), ("0-3", 4), ("0-1,6", 3), ("", 1)])
def test_one_thread_per_pinned_cpu(cpus, threads):
    assert lab.threads_of(cpus) == threads


def test_a_contender_that_never_reaches_the_target_has_no_ratio(work):
    write_run(work, "speedrun-cpu+skips", 1337, lambda s: 6 - 0.5 * s / STEPS, {64: 5.9, STEPS: 5.7})
    rows = {c["name"]: c for c in lab.horizon_table(work, "1M", cpus="")["contenders"]}
    (row,) = rows["speedrun-cpu+skips"]["per_seed"]
    assert row["crossing"] is None and "token_ratio" not in row and rows["speedrun-cpu+skips"]["worst_token_ratio"] is None


def test_the_recipe_scheduled_for_a_shorter_horizon_is_scored_against_the_longer_target(work, monkeypatch):
    four = lab.steps_of("4M")  # a 4M lab beside the 1M one: its sweep (1.2e-3 best; target 4.5) and the recipe
    for lr, drop, final in (("0.0006", 0.8, 4.7), ("0.0012", 1.0, 4.5), ("0.0024", 0.9, 4.6)):
        write_run(work, f"baseline-lr{lr}", 1337, lambda s, d=drop: 5.5 - d * s / four, {four: final},
                  clocks=(2.0, None), every=64, horizon="4M")
    for seed in lab.SEEDS:
        write_run(work, "speedrun-cpu", seed, lambda s: 6 - 2.5 * s / four, {1024: 4.6, 1088: 4.4, four: 3.5},
                  clocks=(3.0, None), every=64, horizon="4M")
    one = lab.run_dir(work, "speedrun-cpu", "1M", 1337)  # the 1M seed 1337 scored late in its decay too
    cache = json.loads((one / "scoring.json").read_text())
    (one / "scoring.json").write_text(json.dumps({**cache, "step_00000400": 4.52, "step_00000416": 4.48}))
    whole = lab.run_dir(work, "speedrun-cpu", "1M", 1338) / "checkpoints" / "step_00000128"  # a replay could start
    # from it, but none is trained
    whole.mkdir(parents=True)
    (whole / "COMPLETE").write_text("{}")
    (whole / "model.safetensors").write_bytes(b"")
    calls = []
    monkeypatch.setattr(lab.runs, "gpt2lab_train", lambda *a, **k: calls.append(a))
    table = lab.horizon_table(work, "4M", cpus="")
    assert table["baseline"]["target"] == 4.5 and table["best_recipe"]["name"] == "speedrun-cpu"
    first, second = table["best_recipe"]["scheduled_shorter"]
    # seed 1337's 1M run crosses 4.5 halfway from step 400 (4.52) to 416 (4.48): 408 steps of the 4M horizon's 2,048
    assert (first["horizon"], first["seed"], first["final_scoring_loss"]) == ("1M", 1337, 4.0)
    assert first["crossing"]["bracket"] == [400, 416] and first["token_ratio"] == round(408 / four, 3)
    assert first["time_ratio"] == round(3.0 * 408 / (2.0 * four), 3) and first["time_baseline_seeds"] == [1337]
    assert first["resolved"] and "time_ratio_threads_differ" not in first  # 16 of 408 steps: within RESOLUTION
    # on the tuning split (6 - 4 s / 512 against the 4M baseline's final 4.5): step 192 of the 4M horizon's 2,048
    assert first["token_ratio_on_tuning_split"] == second["token_ratio_on_tuning_split"] == round(192 / four, 3)
    # seed 1338 has only 128 (5.44) and the end (4.0) around it: interpolated, flagged, never replayed
    assert second["crossing"]["bracket"] == [128, STEPS] and not second["resolved"]
    assert second["token_ratio"] == round((128 + (5.44 - 4.5) / (5.44 - 4.0) * 384) / four, 3)
    assert "replay" not in second["crossing"] and calls == []
    base = lab.run_dir(work, "baseline-lr0.0012", "4M", 1337)  # a target the shorter runs never reach
    (base / "scoring.json").write_text(json.dumps({f"step_{four:08d}": 3.9}))
    rows = lab.horizon_table(work, "4M", cpus="")["best_recipe"]["scheduled_shorter"]
    assert [(r["final_scoring_loss"], r["crossing"]) for r in rows] == [(4.0, None), (4.0, None)]
    assert not any("token_ratio" in r for r in rows)
    assert [r["token_ratio_on_tuning_split"] for r in rows] == [round(192 / four, 3)] * 2  # the tuning books still


def test_a_longer_horizon_with_its_baseline_alone_scores_the_shorter_horizons_best_recipe(work):
    """A 16M baseline trains for hours before any 16M contender: the report scores the best recipe so far (a
    shorter horizon's) scheduled shorter against the new target meanwhile."""
    four = lab.steps_of("4M")
    for lr, drop, final in (("0.0006", 0.8, 4.7), ("0.0012", 1.0, 4.5), ("0.0024", 0.9, 4.6)):
        write_run(work, f"baseline-lr{lr}", 1337, lambda s, d=drop: 5.5 - d * s / four, {four: final},
                  clocks=(2.0, None), every=64, horizon="4M", threads=2)  # two threads, as a 16M baseline
    one = lab.run_dir(work, "speedrun-cpu", "1M", 1337)
    cache = json.loads((one / "scoring.json").read_text())
    (one / "scoring.json").write_text(json.dumps({**cache, "step_00000400": 4.52, "step_00000416": 4.48}))
    tables = lab.horizon_tables(work, cpus="")
    assert list(tables) == list(lab.HORIZONS) and tables["16M"] is None
    assert tables["1M"]["best_recipe"]["name"] == "speedrun-cpu" and tables["4M"]["best_recipe"] is None
    shorter = tables["4M"]["recipe_scheduled_shorter"]
    assert shorter["recipe"] == "speedrun-cpu" and [(r["horizon"], r["seed"]) for r in shorter["rows"]] == [
        ("1M", 1337), ("1M", 1338)]
    assert shorter["rows"][0]["token_ratio"] == round(408 / four, 3)
    assert shorter["rows"][0]["time_ratio_threads_differ"] == {"baseline": [2], "this run": 1}
    assert "recipe_scheduled_shorter" not in tables["1M"]  # it has a best recipe of its own


def test_the_recipe_planned_for_a_quarter_of_1m_is_a_shorter_row_of_the_1m_table(work, monkeypatch):
    """The 1M target is crossed near step 115 of 512, in the recipe's stable phase: the 256k horizon (128 steps, no
    baseline of its own) trains the recipe decayed by then, and the 1M table scores it against the 1M target."""
    quarter = lab.steps_of("256k")
    assert quarter == 128 and lab.parse_run_name("speedrun-cpu+ve2-256k-seed1338") == ("speedrun-cpu+ve2", "256k", 1338)
    monkeypatch.setattr(lab.data, "prepare_data", lambda w: (w / "data", w / "scoring"))
    sets = lab.run_sets(work, "speedrun-cpu+ve2", "256k", 1337)
    assert {"schedule.max_steps=128", "eval.every=4", "checkpoint.every=4", "checkpoint.keep_every=16"} <= set(sets)
    # seed 1337 crosses 5.5 halfway from step 96 (5.52) to 100 (5.48); seed 1338 at its end only
    write_run(work, "speedrun-cpu", 1337, lambda s: 6 - 4 * s / quarter, {96: 5.52, 100: 5.48, quarter: 5.3},
              clocks=(3.0, None), every=4, horizon="256k")
    write_run(work, "speedrun-cpu", 1338, lambda s: 6 - 4 * s / quarter, {quarter: 5.6}, every=4, horizon="256k")
    # a 256k run evaluates every 4 steps, the 1M baseline every 16: its median step, not its wall clock, is the cost
    with_step_times(lab.run_dir(work, "speedrun-cpu", "256k", 1337), 3.0)
    with_step_times(lab.run_dir(work, "baseline-lr0.0012", "1M", 1337), 2.0)
    tables = lab.horizon_tables(work, cpus="")
    assert tables["256k"] is None  # no baseline there: no table, no goal
    rows = tables["1M"]["best_recipe"]["scheduled_shorter"]
    assert [(r["horizon"], r["seed"]) for r in rows] == [("256k", 1337), ("256k", 1338)]
    assert rows[0]["token_ratio"] == round(98 / STEPS, 3) and rows[0]["resolved"]
    assert rows[0]["median_step_time_ratio"] == round(98 * 3.0 / (STEPS * 2.0), 3)
    assert rows[1]["crossing"] is None and "token_ratio" not in rows[1]  # it ends above the target
    # a seed that never reaches the target leaves the planned-for-256k figure unknown, not its other seed's
    assert tables["1M"]["best_recipe"]["planned_shorter"] == {"256k": {
        "seeds": [1337, 1338], "worst_token_ratio": None, "resolved": False, "token_goal_met": None}}
    cache = lab.run_dir(work, "speedrun-cpu", "256k", 1338) / "scoring.json"
    cache.write_text(json.dumps({"step_00000100": 5.52, "step_00000104": 5.44, f"step_{quarter:08d}": 5.3}))
    planned = lab.horizon_tables(work, cpus="")["1M"]["best_recipe"]["planned_shorter"]["256k"]
    # seed 1338 crosses at step 101 of 512: 0.197, the worse seed, within the 1M goal (0.20)
    assert planned == {"seeds": [1337, 1338], "worst_token_ratio": round(101 / STEPS, 4), "resolved": True,
                       "token_goal_met": True}
    # a crossing at 0.2005 of the tokens is printed 0.2 (three places) and still misses a goal of 0.20
    cache.write_text(json.dumps({"step_00000100": 5.52, "step_00000104": 5.52 - 0.02 / 0.66, f"step_{quarter:08d}": 5.3}))
    tables = lab.horizon_tables(work, cpus="")
    (late,) = [r for r in tables["1M"]["best_recipe"]["scheduled_shorter"] if r["seed"] == 1338]
    assert late["crossing"]["tokens"] == pytest.approx(102.64 * lab.TOKENS_PER_STEP, abs=1) and late["token_ratio"] == 0.2
    assert tables["1M"]["best_recipe"]["planned_shorter"]["256k"]["token_goal_met"] is False
    # drawn in the 1M panel of the plot (256k has none), and nowhere else
    assert planned_for(tables, "1M") == ["224k", "256k"] and planned_for(tables, "4M") == []
    with_4m = {**tables, "4M": {"baseline": {}}}  # a 4M table beside it: the 256k runs stay in the 1M panel
    assert planned_for(with_4m, "4M") == [] and planned_for(with_4m, "1M") == ["224k", "256k"]


def test_a_shorter_schedules_time_ratio_against_a_baseline_on_another_processor_is_flagged(work):
    """The 16M baseline and the 4M recipe ran on machines a session drew by chance: a shorter-schedule row whose
    processor has no baseline run of its own is divided by another processor's seconds, and says so."""
    four = lab.steps_of("4M")
    write_run(work, "baseline-lr0.0012", 1337, lambda s: 5.5 - s / four, {four: 4.5}, every=64, horizon="4M",
              device="Intel Xeon Processor")
    one = lab.run_dir(work, "speedrun-cpu", "1M", 1337)
    cache = json.loads((one / "scoring.json").read_text())
    (one / "scoring.json").write_text(json.dumps({**cache, "step_00000400": 4.52, "step_00000416": 4.48}))
    rows = lab.horizon_tables(work, cpus="")["4M"]["recipe_scheduled_shorter"]["rows"]
    assert rows[0]["time_ratio_devices_differ"] == {"baseline": ["Intel Xeon Processor"], "this run": "AMD EPYC"}
    assert "time_ratio_threads_differ" not in rows[0]


@pytest.mark.parametrize("cpus", ["0,x", "1-0", "-1", "0;1"])
def test_a_cpu_list_typo_is_one_line(cpus):
    with pytest.raises(ValueError, match="is not a CPU list"):
        lab.threads_of(cpus)


FAST = {96: 5.6, 112: 5.52, 128: 5.44, STEPS: 4.0}


def test_a_crossing_between_sparse_checkpoints_is_refined_from_its_replay(work):
    """The kept checkpoints at 112 and 128 are 16 steps apart, 14% of a crossing near step 116: the replay from
    step 112 with a checkpoint every 4 steps (already scored here) brackets it to 3.4%."""
    run = write_run(work, "speedrun-cpu+ve2", 1337, lambda s: 6 - 4 * s / STEPS, FAST, clocks=(3.0, 2.0), every=1)
    replay = run / "replays" / "from_00000112_every_4"
    replay.mkdir(parents=True)
    (replay / "scoring.json").write_text(json.dumps({"step_00000116": 5.505, "step_00000120": 5.49,
                                                     "step_00000124": 5.46}))
    with open(replay / "metrics.jsonl", "w") as f:  # the replayed steps' training losses, 2e-4 off the run's
        for step in range(113, 125):
            f.write(json.dumps({"step": step, "tokens": step * lab.TOKENS_PER_STEP,
                                "loss": 6.1 - 4 * step / STEPS + 2e-4}) + "\n")
    cross = lab.crossing(work, run, 5.5, cpus="", guess_step=116)
    # between 116 (5.505) and 120 (5.49), a third of the way: step 117 1/3
    assert cross["bracket"] == [116, 120] and cross["tokens"] == round(352 / 3 * lab.TOKENS_PER_STEP)
    assert cross["seconds"] == round(3.0 * 352 / 3, 1) and cross["cpu_seconds"] == round(2.0 * 352 / 3, 1)
    assert cross["resolution"] == round(4 * 3 / 352, 3) <= lab.RESOLUTION
    assert cross["coarse"]["bracket"] == [112, 128] and cross["coarse"]["resolution"] > lab.RESOLUTION
    assert cross["replay"] == {"from_step": 112, "every": 4, "steps_replayed": 12, "loss_drift": 0.0002}


def test_a_replay_trains_the_stretch_again_from_the_kept_checkpoint(work, monkeypatch):
    """What the lab asks gpt2lab for (the training itself is gpt2lab's resume to a pause, tested in
    test_trainer): the run's own settings, denser checkpoints, no in-run evaluations, a pause before the second
    kept checkpoint, resumed from the first one linked into the replay folder, with the run's thread count."""
    run = write_run(work, "speedrun-cpu", 1339, lambda s: 6 - 4 * s / STEPS, FAST, clocks=(3.0, 2.0), every=1,
                    threads=2)
    start = run / "checkpoints" / "step_00000112"
    start.mkdir(parents=True)
    (start / "COMPLETE").write_text("{}")
    (start / "model.safetensors").write_bytes(b"")
    calls = []
    monkeypatch.setattr(lab.data, "prepare_data", lambda w: (w / "data", w / "scoring"))
    monkeypatch.setattr(lab.runs, "gpt2lab_train", lambda *a, **k: calls.append((a, k)))
    cross = lab.crossing(work, run, 5.5, cpus="1", guess_step=116)
    ((_, out, sets, cpus, threads), kw), = calls
    assert out == run / "replays" / "from_00000112_every_4" and kw["resume"] and (cpus, threads) == ("1", 2)
    assert (out / "checkpoints" / "step_00000112" / "COMPLETE").samefile(start / "COMPLETE")  # linked
    assert sets[:len(lab.run_sets(work, "speedrun-cpu", "1M", 1339))] == lab.run_sets(work, "speedrun-cpu", "1M", 1339)
    warm = lab.run_sets(work, "speedrun-cpu+ve2+mwarm", "4M", 1337)  # the momentum ramp scales with the horizon
    assert warm[-1] == "optim.muon.momentum_warmup_steps=341" and "model.value_embeds=2" in warm
    ramp = lab.run_sets(work, "speedrun-cpu+ve2+ramp", "1M", 1337)  # the batch ramp too: the first quarter
    assert ramp[-1] == "schedule.batch_ramp_steps=128" and "run.micro_batch=2" in ramp and "model.value_embeds=2" in ramp
    both = lab.run_sets(work, "speedrun-cpu+ve2+ramp+mwarm", "1M", 1337)  # the two ramps together, each its own
    assert both[-2:] == ["schedule.batch_ramp_steps=128", "optim.muon.momentum_warmup_steps=85"] and "run.micro_batch=2" in both
    assert not any("ramp_steps" in s or "momentum_warmup" in s for s in lab.run_sets(work, "speedrun-cpu+ve2", "1M", 1337))
    assert sets[-4:] == ["checkpoint.every=4", "eval.every=none", "log.every=none", "run.stop_at_step=124"]
    assert kw["log_name"] == "speedrun-cpu-1M-seed1339-replay-112"
    # nothing was trained here, so the replay has no checkpoints: the two kept ones still bracket the crossing
    assert cross["bracket"] == [112, 128] and cross["replay"]["steps_replayed"] == 0


def test_replay_spacing_and_run_names():
    assert lab.replay_every(116 * 2048, 2048, 16) == 4  # 5% of 116 steps is 5.8 steps
    assert lab.replay_every(512 * 2048, 2048, 64) == 16
    assert lab.replay_every(2048 * 2048, 2048, 256) == 64
    assert lab.replay_every(10 * 2048, 2048, 16) == 1  # finer than a step cannot be had
    assert lab.parse_run_name("speedrun-cpu+ve2-4M-seed1337") == ("speedrun-cpu+ve2", "4M", 1337)
    assert lab.parse_run_name("baseline-lr0.0012-1M-seed1338") == ("baseline-lr0.0012", "1M", 1338)
    assert lab.parse_run_name("speedrun-cpu+ve2+mwarm-1M-seed1337") == ("speedrun-cpu+ve2+mwarm", "1M", 1337)
    with pytest.raises(ValueError, match="not a lab run folder"):
        lab.parse_run_name("speedrun-cpu-4M")


def test_thin_resolves_a_crossing_before_it_reduces_finished_runs_to_weights(work, monkeypatch):
    """`thin`: a contender's crossing is resolved first (its replay starts from a checkpoint that still holds its
    training state); then a finished run keeps its final checkpoint whole, the others and every replay's become
    weights only; an unfinished run is left whole. A crossing that would need a replay from a thinned checkpoint
    afterwards keeps its coarse bracket, and nothing more is trained."""
    from gpt2lab.checkpoint import holds_training_state

    run = write_run(work, "speedrun-cpu", 1339, lambda s: 6 - 4 * s / STEPS, FAST, clocks=(3.0, 2.0), every=1)
    kept = [micro_checkpoint(run, s) for s in (112, 128, STEPS)]
    replayed = micro_checkpoint(run / "replays" / "from_00000064_every_4", 68)
    unfinished = lab.run_dir(work, "speedrun-cpu", "4M", 1337)
    (unfinished / "metrics.jsonl").parent.mkdir(parents=True)
    (unfinished / "metrics.jsonl").write_text(json.dumps({"step": 16, "loss": 6.0}) + "\n")
    early = micro_checkpoint(unfinished, 16)
    calls = []
    monkeypatch.setattr(lab.data, "prepare_data", lambda w: (w / "data", w / "scoring"))
    monkeypatch.setattr(lab.runs, "gpt2lab_train", lambda *a, **k: calls.append(a))
    quality_lab.thin(work, [], cpus="")
    # the 112-128 bracket is 14% of the crossing: replayed from 112 before 112 lost its training state
    assert [a[1].name for a in calls] == ["from_00000112_every_4"]
    assert [holds_training_state(p) for p in kept] == [False, False, True]
    assert not holds_training_state(replayed) and holds_training_state(early)
    assert not (kept[0] / "state.safetensors").exists() and (kept[0] / "model.safetensors").is_file()

    cross = lab.crossing(work, run, 5.5, cpus="1", guess_step=116)
    assert len(calls) == 1 and cross["bracket"] == [112, 128] and "replay" not in cross


def test_thin_final_only_keeps_the_final_checkpoint_and_the_same_crossing(work, monkeypatch):
    """`thin --final-only` (a full disk): the crossing resolved first, then every checkpoint but the final one and
    every replay's deleted; the records and scoring caches stay, so the crossing reads the same with nothing
    trained or scored again, and the final checkpoint can still be scored on other text."""
    run = write_run(work, "speedrun-cpu", 1339, lambda s: 6 - 4 * s / STEPS, FAST, clocks=(3.0, 2.0), every=1)
    kept = [micro_checkpoint(run, s) for s in (112, 128, STEPS)]
    replay = run / "replays" / "from_00000112_every_4"
    calls = []
    monkeypatch.setattr(lab.data, "prepare_data", lambda w: (w / "data", w / "scoring"))

    def replayed(work_, out, sets, *a, **k):  # the replay as gpt2lab trains it: checkpoints and its records
        calls.append(out)
        for step in (116, 120, 124):  # to run.stop_at_step, the last before the bracket's end
            micro_checkpoint(out, step)
        (out / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 6 - 4 * s / STEPS + 0.1}) + "\n"
                                                   for s in range(113, 125)))

    monkeypatch.setattr(lab.runs, "gpt2lab_train", replayed)
    replay.mkdir(parents=True)  # what scoring the replay's checkpoints will give
    (replay / "scoring.json").write_text(json.dumps({"step_00000116": 5.5, "step_00000120": 5.47,
                                                          "step_00000124": 5.45}))
    monkeypatch.setattr(lab.scoring, "score", lambda w, checkpoint, cpus: json.loads(
        (checkpoint.parent.parent / "scoring.json").read_text())[checkpoint.name])
    before = lab.crossing(work, run, 5.5, cpus="", guess_step=116)
    quality_lab.thin(work, [run.name], cpus="", final=True)
    assert [p.is_dir() for p in kept] == [False, False, True] and not (replay / "checkpoints").exists()
    assert calls == [replay], calls
    assert (replay / "metrics.jsonl").is_file() and (run / "scoring.json").is_file()
    assert lab.crossing(work, run, 5.5, cpus="", guess_step=116) == before and len(calls) == 1
    assert before["replay"]["every"] == 4 and before["bracket"] == [112, 116]


def test_thin_saves_each_resolved_runs_records_at_once(work, monkeypatch):
    """What `thin` resolved goes into the committed results folder there and then (a session cut off before its
    report keeps it as a change in the tree; the work folder goes with the machine): the baselines with their
    target scored, the contenders with their crossing's scores; never a run that is unfinished or unresolved."""
    unfinished = lab.run_dir(work, "speedrun-cpu", "1M", 1339)
    unfinished.mkdir(parents=True)
    (unfinished / "metrics.jsonl").write_text(json.dumps({"step": 16, "loss": 6.0}) + "\n")
    write_run(work, "speedrun-cpu", 1337, lambda s: 6 - 2.5 * s / 2048, {2048: 3.5}, every=64, horizon="4M")
    base = lab.run_dir(work, "baseline-lr0.0012", "1M", 1337)
    (base / "scoring.json").write_text("{}")  # its final not scored yet: thin scores it (5.5) before saving
    final = base / "checkpoints" / f"step_{STEPS:08d}"  # on disk, as where it trained
    final.mkdir(parents=True)
    (final / "COMPLETE").write_text("{}")
    (final / "model.safetensors").write_bytes(b"")

    def score(w, checkpoint, cpus):  # the scoring cache as `score` keeps it; the final's loss as evaluation gives it
        cache = json.loads((checkpoint.parent.parent / "scoring.json").read_text())
        loss = cache.get(checkpoint.name, 5.5)
        (checkpoint.parent.parent / "scoring.json").write_text(json.dumps({**cache, checkpoint.name: loss}))
        return loss

    monkeypatch.setattr(lab.scoring, "score", score)
    monkeypatch.setattr(lab.tables, "score", score)
    committed = work / "committed"
    quality_lab.thin(work, [base.name], cpus="", records=committed)
    assert json.loads((committed / base.name / "scoring.json").read_text()) == {f"step_{STEPS:08d}": 5.5}
    quality_lab.thin(work, [], cpus="", records=committed)
    assert sorted(p.name for p in committed.iterdir()) == [f"baseline-lr{lr}-1M-seed1337" for lr in
                                                           ("0.0006", "0.0012", "0.0024")] + [
        "speedrun-cpu-1M-seed1337", "speedrun-cpu-1M-seed1338"]  # not 1339 (unfinished) nor the 4M one (no target)
    saved = json.loads((committed / "speedrun-cpu-1M-seed1337" / "scoring.json").read_text())
    assert {"step_00000112", "step_00000128"} <= set(saved)  # the crossing's bracket, as restore will need it
    assert (committed / "baseline-lr0.0012-1M-seed1337" / "metrics.jsonl").read_text() == (
        lab.run_dir(work, "baseline-lr0.0012", "1M", 1337) / "metrics.jsonl").read_text()


def test_thin_reads_a_plan_shorter_than_its_target_against_the_longer_horizons_target(tmp_path, monkeypatch, capsys):
    """A 256k run has no baseline of its own: `thin` finds its crossing against the 1M target between its kept
    checkpoints, as its row in the 1M table does (never replayed), then thins it; before the 1M baseline has
    finished it is left whole. A 1M contender never borrows the 4M target."""
    from gpt2lab.checkpoint import holds_training_state

    quarter = lab.steps_of("256k")
    plan = write_run(tmp_path, "speedrun-cpu", 1337, lambda s: 6 - 4 * s / quarter, {64: 5.6, 96: 5.4, quarter: 5.3},
                     every=4, horizon="256k")
    kept = [micro_checkpoint(plan, s) for s in (64, 96, quarter)]  # 64-96: a bracket far wider than 5%
    quality_lab.thin(tmp_path, [plan.name], cpus="")
    assert all(holds_training_state(p) for p in kept) and "left whole" in capsys.readouterr().out
    assert lab.scored_against(tmp_path, "256k", cpus="") == (None, None, [])
    lab_with_runs(tmp_path)
    write_run(tmp_path, "baseline-lr0.0012", 1337, lambda s: 5 - s / 2048, {2048: 4.5}, every=64, horizon="4M")
    assert lab.scored_against(tmp_path, "256k", cpus="")[:2] == ("1M", 5.5)
    assert lab.scored_against(tmp_path, "1M", cpus="")[:2] == ("1M", 5.5)
    calls = []
    monkeypatch.setattr(lab.data, "prepare_data", lambda w: (w / "data", w / "scoring"))
    monkeypatch.setattr(lab.runs, "gpt2lab_train", lambda *a, **k: calls.append(a))
    quality_lab.thin(tmp_path, [plan.name], cpus="")
    assert calls == [] and [holds_training_state(p) for p in kept] == [False, False, True]


def test_thin_leaves_a_contender_whole_while_its_horizon_has_no_target(tmp_path, capsys):
    from gpt2lab.checkpoint import holds_training_state

    run = write_run(tmp_path, "speedrun-cpu", 1337, lambda s: 6 - 4 * s / STEPS, FAST)
    first = micro_checkpoint(run, 112)
    micro_checkpoint(run, STEPS)
    quality_lab.thin(tmp_path, [], cpus="")
    assert holds_training_state(first) and "crossing is not known; left whole" in capsys.readouterr().out


def test_thin_takes_a_run_by_its_folders_path_and_stops_on_one_it_does_not_know(tmp_path, capsys):
    """A run named by its folder's path is that run (it once read as 'not finished' and was left whole); a name
    that is no run of the lab stops with one line before any run is thinned."""
    run = write_run(tmp_path, "speedrun-cpu", 1337, lambda s: 6 - 4 * s / STEPS, FAST)
    micro_checkpoint(run, STEPS)
    quality_lab.thin(tmp_path, [str(run)], cpus="")
    assert "crossing is not known; left whole" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"no lab run 'speedrun-cpu-4M-seed1337' in .*name a run folder there"):
        quality_lab.thin(tmp_path, [run.name, "speedrun-cpu-4M-seed1337"], cpus="")
    assert capsys.readouterr().out == ""  # the known run before it was not touched either
    # from the command line: one line and exit 2, as for any other typo
    done = subprocess.run([sys.executable, "bench/quality_lab.py", "thin", "no-such-run", "--work", str(tmp_path)],
                          capture_output=True, text=True, cwd=Path(quality_lab.__file__).parents[1])
    assert done.returncode == 2 and "no lab run 'no-such-run'" in done.stderr.splitlines()[-1]


def test_the_speedrun_cpu_recipe_is_the_labs_best_measured_contender():
    """`gpt2lab train --recipe speedrun-cpu` trains what the lab measured as speedrun-cpu+ve2: the same model,
    optimizer and schedule shape (the lab sets its own horizon, batch and evaluation)."""
    from gpt2lab.config import build_config
    from gpt2lab.training.optim import settings_of

    product = build_config(recipe="speedrun-cpu")
    measured = build_config(preset="gpt2-15m", sets=lab.CONTENDERS["speedrun-cpu+ve2"]["sets"])
    assert product.model == measured.model and product.model.value_embeds == 2
    settings_of(product.optim), settings_of(measured.optim)  # typed, as when the optimizer is built
    assert product.optim == measured.optim
    shape = ("decay", "warmup_steps", "cooldown_fraction", "min_lr_ratio")
    assert [getattr(product.schedule, k) for k in shape] == [getattr(measured.schedule, k) for k in shape]


def test_a_replay_starts_from_the_newest_whole_checkpoint_before_a_thinned_bracket(work, monkeypatch):
    """Lab runs keep every WHOLE-th checkpoint whole and the rest as weights (checkpoint.older=weights): a crossing
    bracketed by thinned checkpoints is replayed from the newest whole one before it, and a replay that already
    reached the stretch (from anywhere at or before it) is reused rather than trained again."""
    from gpt2lab.checkpoint import drop_training_state

    run = write_run(work, "speedrun-cpu", 1339, lambda s: 6 - 4 * s / STEPS, FAST, clocks=(3.0, 2.0), every=1)
    early, late = micro_checkpoint(run, 64), micro_checkpoint(run, 96)
    drop_training_state(micro_checkpoint(run, 112))
    drop_training_state(late)  # the newest whole one at or before 112 is 64
    calls = []
    monkeypatch.setattr(lab.data, "prepare_data", lambda w: (w / "data", w / "scoring"))
    monkeypatch.setattr(lab.runs, "gpt2lab_train", lambda *a, **k: calls.append((a, k)))
    cross = lab.crossing(work, run, 5.5, cpus="1", guess_step=116)
    ((_, out, sets, _, _), kw), = calls
    assert out == run / "replays" / "from_00000064_every_4" and kw["resume"]
    assert (out / "checkpoints" / "step_00000064" / "COMPLETE").samefile(early / "COMPLETE")
    assert sets[-1] == "run.stop_at_step=124" and cross["replay"]["from_step"] == 64
    assert {"checkpoint.keep_last=1", "checkpoint.older=weights", f"checkpoint.keep_every={STEPS // lab.WHOLE}"} <= set(sets)

    for step in (116, 120, 124):  # the replay trained as far as asked (its checkpoints, thinned to weights)
        drop_training_state(micro_checkpoint(out, step))
    (out / "scoring.json").write_text(json.dumps({"step_00000116": 5.505, "step_00000120": 5.49}))
    cross = lab.crossing(work, run, 5.5, cpus="1", guess_step=116)
    assert len(calls) == 1 and cross["bracket"] == [116, 120] and cross["replay"]["from_step"] == 64


def test_newton_schulz_flops_count_only_what_muon_orthogonalises():
    """Muon's extra FLOPs per token come from the hidden matrices alone: value-embedding tables and skip gains go
    to AdamW (gpt2lab's parameter roles), so they add parameters, not Newton-Schulz work."""
    c = lab.compared(None)
    plain = c["speedrun-cpu"]["flops_per_token_optimizer"]
    assert plain > 0 and c["speedrun-cpu+ve2"]["flops_per_token_optimizer"] == plain
    assert c["speedrun-cpu+skips"]["flops_per_token_optimizer"] == plain
    extra = c["speedrun-cpu+ve2"]["parameters"] - c["speedrun-cpu"]["parameters"]
    assert 0 <= extra - 2 * 50304 * 256 < 100  # two tables, and their mixing gains
    assert c["adamw-groups-emb0.003"]["flops_per_token_optimizer"] == 0


def test_a_restored_replay_is_reused_though_its_cache_holds_only_what_bisection_scored(work, monkeypatch):
    """A committed replay keeps its metrics and its scoring cache, not its checkpoints; bisection scored 120 and
    116 of the 116/120/124 it wrote. Restored on a new machine, it is the same replay: nothing trains again, no
    checkpoint is scored that the cache lacks, and the crossing is the one resolved where it was trained."""
    run = write_run(work, "speedrun-cpu+ve2", 1337, lambda s: 6 - 4 * s / STEPS, FAST, clocks=(3.0, 2.0), every=1)
    replay = run / "replays" / "from_00000112_every_4"
    replay.mkdir(parents=True)
    (replay / "scoring.json").write_text(json.dumps({"step_00000116": 5.505, "step_00000120": 5.49}))
    with open(replay / "metrics.jsonl", "w") as f:
        for step in range(113, 125):
            f.write(json.dumps({"step": step, "tokens": step * lab.TOKENS_PER_STEP, "loss": 6.1 - 4 * step / STEPS}) + "\n")
    monkeypatch.setattr(lab.runs, "gpt2lab_train", lambda *a, **k: pytest.fail("a restored replay was trained again"))
    monkeypatch.setattr(lab.data, "prepare_data", lambda w: pytest.fail("a checkpoint the cache lacks was scored"))
    assert lab.reached(replay) == 124
    assert lab.replay_of(run, 112, 128, 4) == replay
    cross = lab.crossing(work, run, 5.5, cpus="", guess_step=116)
    assert cross["bracket"] == [116, 120] and cross["replay"]["from_step"] == 112
    (replay / "checkpoints").mkdir()  # a replay being trained here: its checkpoints on disk say how far it got
    assert lab.reached(replay) == -1 and lab.replay_of(run, 112, 128, 4) is None


def test_a_run_unfinished_here_never_replaces_a_finished_runs_committed_records(work, tmp_path):
    """report copies the work folder's records into the committed folder. A rerun started over a finished run (a
    new machine, a quieter core) and stopped after 16 steps must not overwrite the finished run's 512 steps; a
    finished rerun does replace them. An unfinished run with nothing committed is not saved either: stop 43's
    report committed the 16M run's first hour, records that restore ignores and a reader takes for a result."""
    committed = tmp_path / "committed"
    stale = committed / "speedrun-cpu-1M-seed1337" / "replays" / "from_00000448_every_16"  # a replaced run's
    stale.mkdir(parents=True)  # replay: its scores would bracket this run's crossing with another run's weights
    (stale / "scoring.json").write_text(json.dumps({"step_00000464": 5.0}))
    assert lab.save_records(work, committed) == []
    assert not stale.exists()
    assert len((committed / "speedrun-cpu-1M-seed1337" / "metrics.jsonl").read_text().splitlines()) == STEPS // 16
    rerun = lab.run_dir(work, "speedrun-cpu", "1M", 1337)
    records = (rerun / "metrics.jsonl").read_text().splitlines()
    (rerun / "metrics.jsonl").write_text(records[0] + "\n")
    (rerun / "device.json").write_text('{"name": "another CPU"}')
    stopped = write_run(work, "speedrun-cpu+ve2", 1338, lambda s: 6 - 4 * s / STEPS, {})
    (stopped / "metrics.jsonl").write_text(records[0] + "\n")
    assert lab.save_records(work, committed) == ["speedrun-cpu+ve2-1M-seed1338", "speedrun-cpu-1M-seed1337"]
    kept = committed / "speedrun-cpu-1M-seed1337"
    assert len((kept / "metrics.jsonl").read_text().splitlines()) == STEPS // 16 and "another" not in (kept / "device.json").read_text()
    assert not (committed / stopped.name).exists()
    finished_again = [{**json.loads(r), "loss": 4.0} for r in records]  # the rerun finished (another sample)
    (rerun / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in finished_again))
    assert lab.save_records(work, committed) == ["speedrun-cpu+ve2-1M-seed1338"]  # still under way
    assert (kept / "metrics.jsonl").read_text() == (rerun / "metrics.jsonl").read_text()


def test_the_report_names_the_runs_processors_and_is_written_whole(work, tmp_path):
    """A lab spans machines: the report names the processors and torch versions its runs trained with (from their
    device reports), not the machine that writes it, and each row says its own; the JSON and plot are written
    under the results folder given, with the runs' records beside them and no temporary file left."""
    (work / "ngram.json").write_text(json.dumps({"unigram": 6.9, "bigram": 5.3}))
    for run in (work / "runs").glob("baseline-*"):
        (run / "device.json").write_text(json.dumps({"name": "Intel Xeon", "threads": 1, "bf16": "amx_bf16",
                                                     "torch": "2.13.0+cpu"}))
    # an fp32 twin of the best baseline (bench/lab/precision.py): reported beside it, its records committed too
    write_run(work, "baseline-lr0.0012", 1337, lambda s: 6 - s / STEPS, {STEPS: 5.5}, device="AMD EPYC", precision="fp32")
    out = tmp_path / "results"
    out.mkdir()
    path = lab.report(work, cpus="", out=out)
    result = json.loads(path.read_text())
    assert result["processors"]["runs_per_processor"] == {"Intel Xeon (amx_bf16)": 3, "AMD EPYC": 3}
    assert [r["name"] for r in result["fp32_check"]["1M"]] == ["baseline-lr0.0012"] and "bf16" in result["fp32_check"]["about"]
    assert (out / "quality_lab_runs" / "baseline-lr0.0012-1M-seed1337-fp32" / "metrics.jsonl").is_file()
    assert result["torch"] == ["2.13.0+cpu"]
    table = result["horizons"]["1M"]
    assert table["baseline"]["processor_per_seed"] == ["Intel Xeon (amx_bf16)"]
    assert [r["processor"] for r in table["contenders"][0]["per_seed"]] == ["AMD EPYC", "AMD EPYC"]
    assert path.with_suffix(".png").is_file() and (out / "quality_lab_runs" / "speedrun-cpu-1M-seed1337").is_dir()
    assert not list(out.glob(".*"))
    assert result["trend"]["per_contender"] == {} and "per doubling" in result["trend"]["about"]  # one horizon here


def test_the_trend_is_the_least_squares_drift_per_doubling_and_its_reach_100x_longer():
    """Against numpy's least-squares fit: the worst seed's token ratio against log2 of the horizon's tokens; a
    contender measured at one horizon has no trend, and a horizon with no table (16M not run) or the smoke
    horizon (plumbing) counts for nothing."""
    import numpy as np

    def table(tokens, rows):
        return {"horizon_tokens": tokens, "contenders": [
            {"name": n, "worst_token_ratio": max(r), "per_seed": [{"token_ratio": x} for x in r]} for n, r in rows]}

    horizons = {"1M": table(1 << 20, [("a", [0.224, 0.231]), ("b", [0.5])]),
                "4M": table(1 << 22, [("a", [0.231, 0.230])]), "16M": table(1 << 24, [("a", [0.262])]),
                "smoke": table(1 << 17, [("a", [0.9]), ("b", [0.1])])}
    found = lab.trend.trends(horizons)
    assert list(found) == ["a"]  # b: one real horizon
    slope, intercept = np.polyfit([20, 22, 24], [0.231, 0.231, 0.262], 1)
    a = found["a"]
    assert a["per_doubling"] == pytest.approx(slope, abs=1e-4)
    predicted = a["predicted_at_100x_longest"]
    assert predicted["tokens"] == 100 << 24
    assert predicted["worst_token_ratio"] == pytest.approx(intercept + slope * np.log2(100 << 24), abs=1e-3)
    assert a["per_horizon"]["1M"]["seed_spread"] == 0.007 and a["largest_seed_spread"] == 0.007
    assert lab.trend.trends({**horizons, "16M": None})["a"]["per_doubling"] == 0.0  # worst seeds 0.231, 0.231
