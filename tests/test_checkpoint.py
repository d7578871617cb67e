import json

import pytest
import torch

from gpt2lab.checkpoint import (
    _digest, latest_checkpoint, load_model_from_checkpoint, resolve_checkpoint, save_checkpoint,
)
from gpt2lab.config import build_config
from gpt2lab.errors import UserError
from gpt2lab.model import GPT
from tests.helpers import MICRO_MODEL


def saved(tmp_path, step=3, sets=()):
    cfg = build_config(sets=MICRO_MODEL + list(sets))
    torch.manual_seed(step)
    model = GPT(cfg.model)
    return model, save_checkpoint(tmp_path / "run", step, model, cfg, {"note": "x"})


def test_round_trip_and_run_directory_means_latest(tmp_path):
    model, path = saved(tmp_path, 3)
    _, newer = saved(tmp_path, 7)
    assert resolve_checkpoint(tmp_path / "run") == newer == latest_checkpoint(tmp_path / "run")
    loaded, cfg, where = load_model_from_checkpoint(path, torch.device("cpu"))
    assert where == path and cfg.model.n_embd == 32
    for (n, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), n
    assert loaded.lm_head.weight is loaded.transformer.wte.weight  # still tied after loading


def test_incomplete_checkpoint_is_ignored(tmp_path):
    _, good = saved(tmp_path, 3)
    _, bad = saved(tmp_path, 9)
    (bad / "COMPLETE").unlink()  # as if killed before the marker was written
    assert latest_checkpoint(tmp_path / "run") == good


def test_corrupt_or_foreign_checkpoints_are_clear_errors(tmp_path):
    _, path = saved(tmp_path, 3)
    (path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserError, match="is corrupt or was altered \\(model.safetensors has 7 bytes"):
        load_model_from_checkpoint(path, torch.device("cpu"))
    _, other = saved(tmp_path / "b", 3, sets=["model.pos=rope"])  # no position table
    (other / "config.json").write_text((path / "config.json").read_text())
    marker = json.loads((other / "COMPLETE").read_text())  # consistent with its manifest: foreign, not altered
    marker["files"]["config.json"] = _digest(other / "config.json")
    (other / "COMPLETE").write_text(json.dumps(marker))
    with pytest.raises(UserError, match="another architecture"):
        load_model_from_checkpoint(other, torch.device("cpu"))
    with pytest.raises(UserError, match="does not exist"):
        resolve_checkpoint(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no complete checkpoint"):
        resolve_checkpoint(tmp_path / "empty")


class Payload:
    """Unpickling this runs code: it creates the file named in the instance."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_planted_pickle_in_a_checkpoint_does_not_run(tmp_path):
    """A downloaded or tampered checkpoint of the 0.1 layout (state.pt, a pickle) whose state executes code when
    unpickled: loading it is refused, the code does not run, and the checkpoint counts as corrupt."""
    from gpt2lab.checkpoint import CorruptCheckpoint, LEGACY_STATE, STATE_JSON, TENSORS, load_state

    _, path = saved(tmp_path, 3)
    (path / STATE_JSON).unlink()
    (path / TENSORS).unlink()
    marker = tmp_path / "pwned"
    torch.save({"step": 3, "optimizer": Payload(marker)}, path / LEGACY_STATE)
    with pytest.raises(CorruptCheckpoint, match="training state"):
        load_state(path)
    assert not marker.exists()


def test_state_is_json_and_tensors_and_round_trips_exactly(tmp_path):
    import json
    import random

    import numpy as np

    from gpt2lab.checkpoint import STATE_JSON, load_state

    state = {"rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
             "optimizer": {"state": {0: {"exp_avg": torch.randn(3, 2)}}, "groups": [{"lr": 1e-3}]},
             "loss_guard": {"history": [1.0, float("nan"), float("inf")]}, "elapsed": 1.5}
    cfg = build_config(sets=MICRO_MODEL)
    path = save_checkpoint(tmp_path / "run", 7, GPT(cfg.model), cfg, state)
    json.loads((path / STATE_JSON).read_text())  # plain JSON: no code can be in it
    back = load_state(path)
    assert back["step"] == 7 and back["rng"]["python"] == random.getstate()
    assert np.array_equal(back["rng"]["numpy"][1], np.random.get_state()[1]) and back["rng"]["numpy"][0] == "MT19937"
    assert torch.equal(back["rng"]["torch"], state["rng"]["torch"])
    assert torch.equal(back["optimizer"]["state"][0]["exp_avg"], state["optimizer"]["state"][0]["exp_avg"])
    history = back["loss_guard"]["history"]
    assert history[0] == 1.0 and history[1] != history[1] and history[2] == float("inf")


def test_a_01_checkpoint_still_loads_safely():
    from pathlib import Path

    from gpt2lab.checkpoint import load_state, verify

    old = Path(__file__).parent / "fixtures" / "v0_run" / "run" / "checkpoints" / "step_00000004"
    assert verify(old)["format"] == 0
    state = load_state(old)
    assert state["step"] == 4 and state["loader"]["position"] == 32 and len(state["optimizer"]["param_groups"]) == 2


@pytest.mark.parametrize("steps,keep_last,keep_every,protect,kept", [
    ([2, 4, 6, 8, 10], 2, None, set(), {10, 8}),
    ([2, 4, 6, 8, 10], 2, 4, set(), {10, 8, 4}),
    ([2, 4, 6, 8, 10], 1, None, {4}, {10, 4}),
    ([2, 4, 6], None, None, set(), {2, 4, 6}),
    ([5], 3, None, set(), {5}),
    ([2, 4, 6, 8], 3, 100, {99}, {8, 6, 4}),
])
def test_retention_keeps_exactly_these(steps, keep_last, keep_every, protect, kept):
    from gpt2lab.checkpoint import retained

    assert retained(steps, keep_last, keep_every, protect) == kept


def test_corrupt_checkpoints_are_set_aside_not_counted_and_the_good_one_survives(tmp_path):
    from gpt2lab.checkpoint import complete_checkpoints, prune_checkpoints

    for step in (2, 4, 6, 8):
        saved(tmp_path, step)
    run = tmp_path / "run" / "checkpoints"
    (run / "step_00000008" / "model.safetensors").write_bytes(b"x" * 10)  # truncated
    (run / "step_00000006" / "state.safetensors").unlink()  # a file missing
    removed, aside = prune_checkpoints(tmp_path / "run", keep_last=2)
    assert sorted(p.name for p in aside) == ["step_00000006.corrupt", "step_00000008.corrupt"]
    assert [p.name for p in complete_checkpoints(tmp_path / "run")] == ["step_00000004", "step_00000002"]
    assert removed == [] and (run / "step_00000008.corrupt" / "CORRUPT.txt").read_text().startswith("model.safetensors")


def test_complete_is_written_and_synced_before_the_rename(tmp_path, monkeypatch):
    import os

    import gpt2lab.checkpoint as ckpt

    events, real_replace, real_fsync = [], os.replace, os.fsync

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("rename", str(src), (Path(src) / "COMPLETE").is_file()))
        return real_replace(src, dst)

    from pathlib import Path

    monkeypatch.setattr(ckpt.os, "fsync", fsync)
    monkeypatch.setattr(ckpt.os, "replace", replace)
    saved(tmp_path, 3)
    rename = next(i for i, e in enumerate(events) if e[0] == "rename")
    assert events[rename][2]  # the marker was already in the folder being renamed
    synced = [e[1] for e in events[:rename] if e[0] == "fsync"]
    assert any(s.endswith(".step_00000003.tmp") for s in synced)  # the folder (with the marker) was synced first
    assert any(s.endswith("model.safetensors") for s in synced)
    assert any(s.endswith(".step_00000003.tmp/COMPLETE") for s in synced)  # the marker's own bytes, too
