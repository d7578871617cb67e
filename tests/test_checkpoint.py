import pytest
import torch

from gpt2lab.config import build_config
from gpt2lab.errors import UserError
from gpt2lab.model import GPT
from gpt2lab.checkpoint import (
    latest_checkpoint, load_model_from_checkpoint, resolve_checkpoint, save_checkpoint,
)
from tests.conftest import MICRO_MODEL


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
    with pytest.raises(UserError, match="corrupt"):
        load_model_from_checkpoint(path, torch.device("cpu"))
    _, other = saved(tmp_path / "b", 3, sets=["model.pos=rope"])  # no position table
    (other / "config.json").write_text((path / "config.json").read_text())
    with pytest.raises(UserError, match="another architecture"):
        load_model_from_checkpoint(other, torch.device("cpu"))
    with pytest.raises(UserError, match="does not exist"):
        resolve_checkpoint(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no complete checkpoint"):
        resolve_checkpoint(tmp_path / "empty")
