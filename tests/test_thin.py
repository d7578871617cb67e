"""gpt2lab thin: older checkpoints reduced to their weights. Checked against the checkpoints before thinning (same
weights, loaded the way eval loads them) and against an uninterrupted run (a resume past thinned checkpoints)."""

import pytest
import torch

from gpt2lab import checkpoint as ckpt
from gpt2lab.cli import main
from gpt2lab.commands.thin import thin_run
from gpt2lab.errors import UserError
from gpt2lab.files import FolderLock
from gpt2lab.metrics.logger import read_metrics
from tests.helpers import micro_config
from tests.helpers import trainer as make_trainer

SETS = ("checkpoint.every=3", "checkpoint.keep_last=none")
QUIET = {"echo": lambda *_: None}


def weights(path):
    model, _, _ = ckpt.load_model_from_checkpoint(path, torch.device("cpu"))
    return {k: v.clone() for k, v in model.state_dict().items()}


def losses(run):
    return [(r["loss"], r["grad_norm"]) for r in read_metrics(run) if "loss" in r]


def test_thinning_keeps_the_weights_and_the_newest_state_and_the_run_resumes(data_dir, tmp_path):
    make_trainer(micro_config(data_dir, "schedule.max_steps=12", *SETS), tmp_path / "full", **QUIET).fit()
    run = tmp_path / "cut"
    make_trainer(micro_config(data_dir, "schedule.max_steps=12", *SETS, "run.stop_at_step=9"), run, **QUIET).fit()
    before = {p.name: (weights(p), {f.name: f.stat().st_size for f in p.iterdir()}) for p in ckpt.complete_checkpoints(run)}

    info = thin_run(run, keep=1)
    assert info["thinned"] == ["step_00000006", "step_00000003"] and info["kept"] == ["step_00000009"]
    for name in info["thinned"]:
        path = run / "checkpoints" / name
        assert sorted(f.name for f in path.iterdir()) == ["COMPLETE", "config.json", "model.safetensors"]
        assert ckpt.verify(path, deep=True)["weights_only"] and not ckpt.holds_training_state(path)
        after = weights(path)  # what eval, sample and export read: unchanged
        assert all(torch.equal(after[k], v) for k, v in before[name][0].items())
    assert info["freed_bytes"] == sum(size for n in info["thinned"] for f, size in before[n][1].items()
                                      if not (run / "checkpoints" / n / f).exists())  # the state's files
    assert thin_run(run, keep=1)["thinned"] == []  # again: nothing left to thin

    resumed = micro_config(data_dir, "schedule.max_steps=12", *SETS)
    make_trainer(resumed, run, resume=True, **QUIET).fit()
    assert losses(run) == losses(tmp_path / "full")  # the uninterrupted run's steps


def test_a_resume_past_a_thinned_checkpoint_says_so_and_retraces(data_dir, tmp_path):
    cfg = micro_config(data_dir, "schedule.max_steps=9", *SETS)
    make_trainer(cfg, tmp_path / "run", **QUIET).fit()
    first = losses(tmp_path / "run")
    ckpt.drop_training_state(tmp_path / "run" / "checkpoints" / "step_00000009")
    said = []
    make_trainer(cfg, tmp_path / "run", resume=True, echo=said.append).fit()
    assert any("step_00000009 holds weights only (thinned); resuming from step_00000006" in s for s in said), said
    assert losses(tmp_path / "run") == first
    assert ckpt.holds_training_state(tmp_path / "run" / "checkpoints" / "step_00000009")  # saved again, whole


def test_a_run_thinned_to_nothing_resumable_is_a_one_line_error(data_dir, tmp_path, capsys):
    cfg = micro_config(data_dir, "schedule.max_steps=6", *SETS)
    make_trainer(cfg, tmp_path / "run", **QUIET).fit()
    assert main(["thin", str(tmp_path / "run"), "--keep", "0"]) == 0
    assert "thinned 2 checkpoint(s) to their weights, freeing" in capsys.readouterr().out
    with pytest.raises(UserError, match="every checkpoint in .* was thinned .* --init-from .*step_00000006"):
        make_trainer(micro_config(data_dir, "schedule.max_steps=9", *SETS), tmp_path / "run", resume=True, **QUIET)
    with pytest.raises(UserError, match="already holds a run"):  # a fresh start still sees the run
        make_trainer(cfg, tmp_path / "run", **QUIET)
    # a new run from the thinned weights is what the error offers
    make_trainer(micro_config(data_dir, "schedule.max_steps=2", *SETS), tmp_path / "next", **QUIET,
                 init_from=str(tmp_path / "run" / "checkpoints" / "step_00000006")).fit()


def test_thin_refuses_a_run_in_use_and_leaves_damage_alone(data_dir, tmp_path, capsys):
    cfg = micro_config(data_dir, "schedule.max_steps=6", *SETS)
    make_trainer(cfg, tmp_path / "run", **QUIET).fit()
    lock = FolderLock(tmp_path / "run", "the run directory").acquire()  # as a training process holds it
    try:
        assert main(["thin", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err
        assert "is in use by gpt2lab process" in err and "once that run has finished" in err and "--out" not in err
    finally:
        lock.release()
    assert all(ckpt.holds_training_state(p) for p in ckpt.complete_checkpoints(tmp_path / "run"))

    damaged = tmp_path / "run" / "checkpoints" / "step_00000003"
    (damaged / "state.safetensors").write_bytes(b"x")
    assert main(["thin", str(tmp_path / "run")]) == 0
    assert "step_00000003 left as it is: state.safetensors has 1 bytes" in capsys.readouterr().err
    assert (damaged / "state.safetensors").is_file() and ckpt.holds_training_state(damaged)
    assert main(["thin", str(tmp_path / "run"), "--keep", "-1"]) == 2
    assert main(["thin", str(tmp_path / "nothing")]) == 2
    assert "holds no checkpoints folder" in capsys.readouterr().err


def test_a_crash_between_the_new_manifest_and_the_deletion_leaves_a_good_checkpoint(data_dir, tmp_path, monkeypatch):
    make_trainer(micro_config(data_dir, "schedule.max_steps=3", *SETS), tmp_path / "run", **QUIET).fit()
    path = tmp_path / "run" / "checkpoints" / "step_00000003"
    before = weights(path)

    def crash(*_a, **_k):
        raise OSError("power cut")

    monkeypatch.setattr(ckpt.Path, "unlink", crash)
    with pytest.raises(OSError):
        ckpt.drop_training_state(path)
    monkeypatch.undo()
    assert ckpt.verify(path, deep=True)["weights_only"]  # the state files are extra, the manifest's files intact
    assert all(torch.equal(weights(path)[k], v) for k, v in before.items())
    assert ckpt.drop_training_state(path) == 0


def test_retention_can_keep_the_weights_of_the_checkpoints_it_does_not_keep(data_dir, tmp_path):
    """checkpoint.older=weights: what keep_last / keep_every would delete is thinned instead, as the run goes; the
    run resumes from its newest whole checkpoint as an uninterrupted run would, and the default still deletes."""
    full = tmp_path / "full"
    make_trainer(micro_config(data_dir, "schedule.max_steps=12", *SETS), full, **QUIET).fit()
    sets = ("schedule.max_steps=12", "checkpoint.every=2", "checkpoint.keep_last=1", "checkpoint.keep_every=6",
            "checkpoint.older=weights")
    run = tmp_path / "run"
    make_trainer(micro_config(data_dir, *sets, "run.stop_at_step=10"), run, **QUIET).fit()
    whole = {p.name: ckpt.holds_training_state(p) for p in ckpt.complete_checkpoints(run)}
    assert whole == {"step_00000010": True, "step_00000008": False, "step_00000006": True, "step_00000004": False,
                     "step_00000002": False}
    same_steps = {p.name: weights(p) for p in ckpt.complete_checkpoints(full)}
    assert all(torch.equal(weights(run / "checkpoints" / "step_00000006")[k], v)
               for k, v in same_steps["step_00000006"].items())
    make_trainer(micro_config(data_dir, *sets), run, resume=True, **QUIET).fit()
    assert losses(run) == losses(full)
    assert [p.name for p in ckpt.complete_checkpoints(run)][:2] == ["step_00000012", "step_00000010"]

    deleted = tmp_path / "deleted"
    make_trainer(micro_config(data_dir, *sets[:-1], "run.stop_at_step=10"), deleted, **QUIET).fit()
    assert [p.name for p in ckpt.complete_checkpoints(deleted)] == ["step_00000010", "step_00000006"]


def test_a_typo_in_what_retention_does_is_one_line():
    from gpt2lab.config import build_config

    with pytest.raises(UserError, match="checkpoint.older='weight' is not one of delete, weights"):
        build_config(sets=["checkpoint.older=weight"])
