"""The disk a run's checkpoints will take (gpt2lab/training/disk.py): the estimate against what real saves and
retention leave on disk, and the warning before the first step when the run folder's disk cannot hold it."""

from collections import namedtuple

import pytest

from gpt2lab.training import disk
from gpt2lab.training.disk import checkpoints_bytes, folder_bytes, saved_steps
from tests.helpers import micro_config
from tests.helpers import trainer as make_trainer


def test_saved_steps_are_the_multiples_and_the_end():
    assert saved_steps(4, 10) == [4, 8, 10] and saved_steps(5, 10) == [5, 10] and saved_steps(None, 7) == [7]


@pytest.mark.parametrize("older, optimizer", [("weights", "adamw"), ("delete", "muon")])
def test_the_estimate_is_what_the_saves_and_retention_leave(data_dir, tmp_path, older, optimizer):
    """Against the bytes on disk after a real run: saves every 2 of 12 steps, the newest kept whole, every 4th kept
    whole too, the rest thinned to weights or deleted (the estimate's save in flight is gone by then)."""
    cfg = micro_config(data_dir, "schedule.max_steps=12", "checkpoint.every=2", "checkpoint.keep_last=1",
                       "checkpoint.keep_every=4", f"checkpoint.older={older}", "checkpoint.asynchronous=false",
                       f"optim.name={optimizer}", "model.n_embd=64", "model.vocab_size=512")
    trainer = make_trainer(cfg, tmp_path / "run", echo=lambda *_: None)
    weights, state = 4 * trainer.model.num_params(), trainer.state_bytes
    trainer.fit()
    estimate = checkpoints_bytes(saved_steps(2, 12), 1, 4, older, weights, state) - (weights + state)
    real = folder_bytes(tmp_path / "run" / "checkpoints")
    assert abs(estimate - real) / real < 0.1, (estimate, real)


def test_a_disk_too_small_for_the_runs_checkpoints_is_said_before_the_first_step(data_dir, tmp_path, monkeypatch):
    """The free space is what this machine cannot be made to lack: it is the one thing faked. The run still trains
    (space may be freed meanwhile); a disk that holds it says nothing."""
    Usage = namedtuple("Usage", "total used free")
    cfg = micro_config(data_dir, "schedule.max_steps=4", "checkpoint.every=2")
    for free, warned in ((10_000, True), (10**15, False)):
        monkeypatch.setattr(disk.shutil, "disk_usage", lambda path, free=free: Usage(10**15, 0, free))
        lines = []
        result = make_trainer(cfg, tmp_path / f"run{free}", echo=lines.append).fit()
        said = [line for line in lines if "checkpoints need about" in line]
        assert bool(said) is warned and result["step"] == 4
        if warned:
            assert said[0].startswith("warning: ") and "checkpoint.every" in said[0] and str(tmp_path) in said[0]
