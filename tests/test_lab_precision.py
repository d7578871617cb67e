"""The lab's fp32 check (bench/lab/precision.py): an fp32 run of a lab contender lives in a folder of its own,
trains with the same settings but its precision, never enters the lab's tables, and is reported beside its bf16
twin. Records are hand-made, as in test_quality_lab; every score comes from the runs' scoring caches."""

import json
import sys

from bench import lab, quality_lab
from gpt2lab.config import build_config
import pytest

from tests.lab_records import STEPS, lab_with_runs, write_run


@pytest.fixture
def work(tmp_path):
    return lab_with_runs(tmp_path)


def fp32_run(work, name, seed, loss_at, scored, clocks=(1.0, None), device="AMD EPYC"):
    return write_run(work, name, seed, loss_at, scored, clocks=clocks, device=device, precision="fp32")


def test_an_fp32_run_has_its_own_folder_and_differs_from_its_twin_in_precision_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(lab.data, "prepare_data", lambda work: (work / "data", work / "scoring"))
    run = lab.run_dir(tmp_path, "speedrun-cpu+ve2", "4M", 1338, "fp32")
    assert run.name == "speedrun-cpu+ve2-4M-seed1338-fp32" and run != lab.run_dir(tmp_path, "speedrun-cpu+ve2", "4M", 1338)
    assert lab.parse_run_name(run.name) == ("speedrun-cpu+ve2", "4M", 1338)
    assert lab.precision_of_name(run.name) == "fp32" and lab.precision_of_name("speedrun-cpu-1M-seed1337") == "bf16"
    bf16 = lab.run_sets(tmp_path, "speedrun-cpu+ve2", "4M", 1338)
    fp32 = lab.run_sets(tmp_path, "speedrun-cpu+ve2", "4M", 1338, "fp32")
    assert fp32 == bf16 + ["run.precision=fp32"]
    assert build_config(preset="gpt2-15m", sets=[s for s in fp32 if not s.startswith("data.dir")]).run.precision == "fp32"
    assert build_config(preset="gpt2-15m", sets=[s for s in bf16 if not s.startswith("data.dir")]).run.precision == "bf16"


def test_fp32_runs_never_enter_the_labs_table(work):
    """An fp32 baseline that ends far lower would be the best of the sweep and move the target; an fp32 contender
    would add a row. Neither may: the table is the bf16 lab's."""
    before = lab.horizon_table(work, "1M", cpus="")
    fp32_run(work, "baseline-lr0.0006", 1337, lambda s: 6 - 3 * s / STEPS, {STEPS: 3.0})
    fp32_run(work, "speedrun-cpu+polar", 1337, lambda s: 6 - 4 * s / STEPS, {112: 5.52, 128: 5.44, STEPS: 4.0})
    after = lab.horizon_table(work, "1M", cpus="")
    assert after == before


def test_the_fp32_check_sets_each_run_beside_its_bf16_twin(work):
    """The baseline's fp32 twin: its tuning-loss differences at every common evaluation and its final scoring loss
    against the twin's. A contender's fp32 twin: its token ratio against the bf16 target beside the twin's, and a
    time ratio only against an fp32 baseline on its own processor."""
    base = fp32_run(work, "baseline-lr0.0012", 1337, lambda s: 6 - s / STEPS + 0.01 * (s == STEPS), {STEPS: 5.52},
                    clocks=(4.0, None))
    fp32_run(work, "speedrun-cpu", 1337, lambda s: 6 - 4 * s / STEPS, {112: 5.53, 128: 5.45, STEPS: 4.0},
             clocks=(6.0, None))
    table = lab.horizon_table(work, "1M", cpus="")
    rows = {r["name"]: r for r in lab.precision_check(work, "1M", table, cpus="")}
    b = rows["baseline-lr0.0012"]
    assert b["tuning_loss_fp32_minus_bf16"] == {"points": STEPS // 16, "mean": round(0.01 / (STEPS // 16), 4),
                                                "largest": 0.01, "final": 0.01}
    assert b["final_scoring_loss"] == 5.52 and b["bf16_twin"]["final_scoring_loss"] == 5.5
    assert b["scoring_loss_fp32_minus_bf16"] == 0.02 and "token_ratio" not in b
    c = rows["speedrun-cpu"]
    # 5.5 is three eighths of the way from 5.53 (step 112) to 5.45 (step 128): step 118
    assert c["token_ratio"] == round(118 / STEPS, 3) and c["bf16_twin_token_ratio"] == round(116 / STEPS, 3)
    assert c["time_ratio_against_fp32_baseline"] == round(6.0 * 118 / (4.0 * STEPS), 3)
    assert c["time_baseline_seeds"] == [1337]
    (base / "device.json").write_text(json.dumps({"name": "Intel Xeon", "threads": 1}))  # another processor
    rows = {r["name"]: r for r in lab.precision_check(work, "1M", table, cpus="")}
    assert "time_ratio_against_fp32_baseline" not in rows["speedrun-cpu"]  # no ratio across processors


def test_an_fp32_run_without_a_twin_reports_its_own_numbers(work):
    fp32_run(work, "speedrun-cpu+ve2", 1338, lambda s: 6 - 4 * s / STEPS, {112: 5.52, 128: 5.44, STEPS: 4.0})
    table = lab.horizon_table(work, "1M", cpus="")
    (row,) = lab.precision_check(work, "1M", table, cpus="")
    assert row["seed"] == 1338 and row["token_ratio"] == round(116 / STEPS, 3)
    assert "bf16_twin" not in row and row["bf16_twin_token_ratio"] is None


def test_the_lab_offers_fp32_where_it_refuses_bf16(tmp_path, monkeypatch, capsys):
    """A typo'd precision is one line; where gpt2lab refuses bf16 (no bf16 units), the lab's refusal names the
    fp32 check as the alternative, before anything is written."""
    def run(*args):
        monkeypatch.setattr(sys, "argv", ["quality_lab.py", *args, "--work", str(tmp_path)])
        with pytest.raises(SystemExit) as stop:
            quality_lab.main()
        return stop.value.code

    assert run("queue", "x@1M", "--precision", "fp16") == 2
    assert "--precision" in capsys.readouterr().err
    from gpt2lab.errors import UserError
    from gpt2lab.runtime import resolve_runtime

    try:
        resolve_runtime("cpu", "bf16")
    except UserError:
        message = run("queue", "baseline-lr0.0012@smoke")
        assert "--precision fp32" in message and "\n" not in message
        assert not (tmp_path / "runs").exists()
