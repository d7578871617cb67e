"""The outsider's reproduced breakages, each through the command a user runs: a file gpt2lab wrote, changed
afterwards, ends in one line and exit 2, or in a checkpoint set aside and an earlier one used; never a traceback.
(tests/test_hostile_files.py mutates every format at random; these are the named cases.)"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from gpt2lab import checkpoint as ckpt
from gpt2lab.cli import main
from gpt2lab.metrics.logger import MetricsLogger, read_metrics
from tests.helpers import MICRO_MODEL

NESTED = "[" * 100_000 + "]" * 100_000  # about 200 kB: enough for RecursionError in a reader that does not limit depth


def gpt2lab(capsys, *args) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("gpt2lab: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    sets = [*MICRO_MODEL, "schedule.warmup_steps=2", "run.micro_batch=4", "eval.batches=2", "run.precision=fp32",
            "log.every=none", "log.tensorboard=false"]
    return ["train", "--data", str(data), "--out", str(out), "--device", "cpu", "--max-steps", "8",
            "--checkpoint-every", "4", "--eval-every", "2", *[a for s in sets for a in ("--set", s)], *extra]


@pytest.fixture
def finished_run(small_run) -> tuple[Path, Path]:
    return small_run.data, small_run.run


@pytest.fixture
def run(finished_run, tmp_path) -> tuple[Path, Path]:
    data, run = finished_run
    shutil.copytree(run, tmp_path / "run")
    return data, tmp_path / "run"


def reseal(checkpoint: Path) -> None:
    from tests.helpers import reseal as reseal_manifest

    reseal_manifest(checkpoint)


def edit_json(path: Path, change) -> None:
    value = json.loads(path.read_text())
    change(value)
    path.write_text(json.dumps(value))


@pytest.mark.parametrize("name", [ckpt.MARKER, ckpt.CONFIG, ckpt.STATE_JSON])
def test_deeply_nested_json_in_a_checkpoint_sets_it_aside(run, capsys, name):
    data, run_dir = run
    newest = ckpt.checkpoint_folder(run_dir, 8)
    (newest / name).write_text(NESTED)
    if name != ckpt.MARKER:
        reseal(newest)
    code, out, err = gpt2lab(capsys, *train_args(data, run_dir, "--resume", "--max-steps", "12"))
    assert code == 0, err
    assert "step_00000008 is corrupt" in out and "step_00000004 at step 4" in out
    assert (run_dir / "checkpoints" / "step_00000008.corrupt").is_dir()


def test_deeply_nested_run_config_and_data_meta_are_one_line(run, capsys, tmp_path):
    data, run_dir = run
    (run_dir / "config.json").write_text(NESTED)  # the run falls back to its checkpoint's config, and says so
    code, out, err = gpt2lab(capsys, *train_args(data, run_dir, "--resume", "--max-steps", "12"))
    assert code == 0 and "config.json is damaged" in out, err
    bad_data = tmp_path / "data"
    shutil.copytree(data, bad_data)
    (bad_data / "meta.json").write_text(NESTED)
    code, _, err = gpt2lab(capsys, *train_args(bad_data, tmp_path / "other"))
    one_line_error(code, err, "meta.json", "nested deeper")


@pytest.mark.parametrize("field,value", [("position", None), ("position", "12"), ("seed", [1])])
def test_a_retyped_loader_position_sets_the_checkpoint_aside(run, capsys, field, value):
    data, run_dir = run
    newest = ckpt.checkpoint_folder(run_dir, 8)
    edit_json(newest / ckpt.STATE_JSON, lambda s: s["loader"].__setitem__(field, value))
    reseal(newest)
    code, out, err = gpt2lab(capsys, *train_args(data, run_dir, "--resume", "--max-steps", "12"))
    assert code == 0, err
    assert f"loader.{field}" in out and (run_dir / "checkpoints" / "step_00000008.corrupt").is_dir()


@pytest.mark.parametrize("field, value", [("elapsed", "soon"), ("cpu_seconds", "soon"), ("cpu_seconds", -1.0),
                                          ("cpu_seconds", float("inf"))])
def test_a_clock_that_is_not_a_number_of_seconds_sets_the_checkpoint_aside(run, capsys, field, value):
    data, run_dir = run
    newest = ckpt.checkpoint_folder(run_dir, 8)
    edit_json(newest / ckpt.STATE_JSON, lambda s: s.__setitem__(field, value))
    reseal(newest)
    code, out, err = gpt2lab(capsys, *train_args(data, run_dir, "--resume", "--max-steps", "12"))
    assert code == 0 and f"field {field}" in out, err


def test_an_integer_where_the_manifest_has_an_object(run, capsys):
    data, run_dir = run
    edit_json(ckpt.checkpoint_folder(run_dir, 8) / ckpt.MARKER, lambda m: m["files"].__setitem__(ckpt.WEIGHTS, 5))
    code, _, err = gpt2lab(capsys, "sample", str(ckpt.checkpoint_folder(run_dir, 8)), "--device", "cpu",
                           "--max-new-tokens", "4")
    one_line_error(code, err, "corrupt", "files.model.safetensors")


def test_compare_skips_damaged_metrics_values(run, capsys, tmp_path):
    _, run_dir = run
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    evals = [i for i, line in enumerate(lines) if "val_loss" in json.loads(line)]
    first, second = json.loads(lines[evals[0]]), json.loads(lines[evals[1]])
    first["val_loss"], second["tokens"] = None, "soon"
    lines[evals[0]], lines[evals[1]] = json.dumps(first), json.dumps(second)
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    os.chdir(tmp_path)
    code, out, err = gpt2lab(capsys, "compare", str(run_dir), str(run_dir))
    assert code == 0, err
    folder = tmp_path / "compare-run"
    assert f"wrote {folder / 'compare.png'}" in out and (folder / "compare.md").is_file()
    good = [r for r in read_metrics(run_dir) if isinstance(r.get("val_loss"), float)]
    assert f"final val loss {good[-1]['val_loss']:.4f}" in (folder / "compare.md").read_text()


def test_a_file_where_a_checkpoint_folder_goes(finished_run, capsys, tmp_path):
    data, _ = finished_run
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "step_00000004").write_text("my notes\n")
    code, _, err = gpt2lab(capsys, *train_args(data, run_dir))
    one_line_error(code, err, "step_00000004", "is a file", "move it away")
    assert (run_dir / "checkpoints" / "step_00000004").read_text() == "my notes\n"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_while_appending_metrics_is_one_line(tmp_path):
    """/dev/full answers every write with ENOSPC, as a full disk does; the logger says so once and closes cleanly."""
    (tmp_path / "metrics.jsonl").symlink_to("/dev/full")
    logger = MetricsLogger(tmp_path)
    with pytest.raises(Exception) as raised:
        logger.log({"step": 1, "loss": 2.0})
    assert type(raised.value).__name__ == "UserError" and "No space left on device" in str(raised.value)
    logger.close()  # nothing buffered is written again: no second error


def test_training_into_a_folder_whose_name_is_not_utf8(finished_run, capsys, tmp_path):
    data, _ = finished_run
    run_dir = os.fsdecode(os.fsencode(str(tmp_path)) + b"/run\xff")
    args = [a.replace("log.tensorboard=false", "log.tensorboard=true") for a in train_args(data, Path(run_dir))]
    code, out, err = gpt2lab(capsys, *args)
    assert code == 0, err
    assert "not UTF-8" in out and len(read_metrics(run_dir)) >= 8


def test_align_documents_without_an_end_of_text_id(finished_run, capsys, tmp_path):
    data, _ = finished_run
    no_eot = tmp_path / "data"
    shutil.copytree(data, no_eot)
    edit_json(no_eot / "meta.json", lambda m: m["tokenizer"].pop("eot"))
    code, _, err = gpt2lab(capsys, *train_args(no_eot, tmp_path / "run", "--set", "data.align_documents=true"))
    one_line_error(code, err, "data.align_documents", "end-of-text")


def test_an_intact_checkpoint_of_a_newer_gpt2lab_is_refused_not_set_aside(run, capsys):
    """A config.json with a key this version does not know, its SHA-256 resealed (as a newer gpt2lab writes it):
    the run stops with one line and renames nothing; a damaged one would be set aside."""
    data, run_dir = run
    newest = ckpt.checkpoint_folder(run_dir, 8)
    edit_json(newest / ckpt.CONFIG, lambda c: c["optim"].__setitem__("future_knob", 3))
    reseal(newest)
    code, _, err = gpt2lab(capsys, *train_args(data, run_dir, "--resume", "--max-steps", "12"))
    one_line_error(code, err, "step_00000008", "newer gpt2lab", "nothing was set aside")
    assert newest.is_dir() and not list((run_dir / "checkpoints").glob("*.corrupt"))
