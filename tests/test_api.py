"""The Python API: README's notebook walk-through run as written, and the API's own checks (one-line
UserErrors, keyword-only arguments, results that match what the files say)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import gpt2lab
from gpt2lab.metrics.logger import read_metrics
from tests.helpers import MICRO_MODEL, make_data_dir

ROOT = Path(__file__).resolve().parents[1]


def walkthrough() -> str:
    text = (ROOT / "README.md").read_text()
    return re.search(r"<!-- api-walkthrough -->\s*```python\n(.*?)```\s*<!-- /api-walkthrough -->", text, re.S).group(1)


@pytest.mark.slow
def test_the_readme_notebook_walkthrough_runs_as_written(tmp_path, monkeypatch, offline_tokenizer, capsys):
    pytest.importorskip("transformers")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(walkthrough(), "README.md (api-walkthrough)", "exec"), namespace)
    result = namespace["result"]
    assert isinstance(result, gpt2lab.TrainResult) and result.steps == 10
    assert result.val_loss == read_metrics(tmp_path / "work" / "run")[-1]["val_loss"]
    assert namespace["scores"]["val"]["loss"] == pytest.approx(result.val_loss, rel=1e-3)
    assert json.loads((tmp_path / "work" / "hf" / "config.json").read_text())["model_type"] == "gpt2"
    assert isinstance(namespace["model"].generate("x", max_new_tokens=3, seed=0), str)


def micro(**extra):
    return {"model": dict(s.removeprefix("model.").split("=") for s in MICRO_MODEL), "run": {"micro_batch": 4},
            "schedule": {"warmup_steps": 2}, "eval": {"every": 4, "batches": 2},
            "log": {"tensorboard": False}, "checkpoint": {"every": 4}, **extra}


def test_train_returns_what_the_run_wrote(tmp_path):
    data = make_data_dir(tmp_path / "data")
    result = gpt2lab.train(data=data, out=tmp_path / "run", max_steps=8, device="cpu", echo=None,
                           optim={"lr": 1e-2}, **micro())
    records = read_metrics(tmp_path / "run")
    assert result.steps == 8 and result.checkpoint == tmp_path / "run" / "checkpoints" / "step_00000008"
    assert result.val_loss == records[-1]["val_loss"] and result.tokens == records[-1]["tokens"] == 8 * 4 * 32
    assert result.config.optim.lr == 1e-2 and result.config.model.n_layer == 2
    again = gpt2lab.train(data=data, out=tmp_path / "run", max_steps=12, resume=True, echo=None, **micro())
    assert again.steps == 12 and again.config.optim.lr == 1e-2  # the resumed run keeps its saved settings
    model = gpt2lab.load(tmp_path / "run")
    assert model.checkpoint.name == "step_00000012" and not model.module.training


def test_api_mistakes_are_one_line_user_errors(tmp_path):
    data = make_data_dir(tmp_path / "data")
    cases = [
        (lambda: gpt2lab.train("tiny", data=data, out=tmp_path / "a", optimm={"lr": 1}), "did you mean 'optim'"),
        (lambda: gpt2lab.train("tiny", data=data, out=tmp_path / "b", optim=3e-4), "takes a dict of optim settings"),
        (lambda: gpt2lab.train("tiny", data=data, out=tmp_path / "c", optim={"lr": "fast"}), "optim.lr"),
        (lambda: gpt2lab.train("tiny", out=tmp_path / "d"), "no training data"),
        (lambda: gpt2lab.train("gpt2-124", data=data, out=tmp_path / "e"), "did you mean 'gpt2-124m'"),
        (lambda: gpt2lab.load(tmp_path / "nowhere"), "does not exist"),
        (lambda: gpt2lab.evaluate(tmp_path / "nowhere", data=data, split="test"), "split must be"),
    ]
    for call, needle in cases:
        with pytest.raises(gpt2lab.UserError) as raised:
            call()
        assert needle in str(raised.value) and "\n" not in str(raised.value), str(raised.value)
    assert not (tmp_path / "c").exists() and not (tmp_path / "e").exists()  # nothing half-written


def test_arguments_after_the_first_are_keyword_only(tmp_path):
    with pytest.raises(TypeError):
        gpt2lab.train("tiny", tmp_path / "data", tmp_path / "run")  # positional: refused
    with pytest.raises(TypeError):
        gpt2lab.prepare("corpus.jsonl", tmp_path / "data")


def test_import_gpt2lab_loads_no_torch():
    import subprocess
    import sys

    code = "import sys, gpt2lab; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "False", out.stderr
