"""Metrics backends are sinks behind one interface: a new one is a class and a row of metrics/sinks.SINKS."""

from __future__ import annotations

import importlib.util

import pytest

from gpt2lab.errors import UserError
from gpt2lab.metrics import sinks
from gpt2lab.metrics.logger import MetricsLogger, read_metrics
from tests.helpers import make_data_dir, micro_config, trainer


class Recording:
    """A sink of the test's own: it keeps what it is given."""
    seen: list = []

    def __init__(self, run_dir, config, echo):
        Recording.seen = []

    def log(self, scalars, step):
        Recording.seen.append((step, scalars))

    def close(self):
        Recording.seen.append("closed")


def test_a_new_sink_is_one_row_and_gets_every_record(tmp_path, monkeypatch):
    monkeypatch.setitem(sinks.SINKS, "recording", (lambda c: True, Recording, "note: off"))
    data = make_data_dir(tmp_path / "data")
    trainer(micro_config(data, "log.every=1", "log.tensorboard=false"), tmp_path / "run").fit()
    records = read_metrics(tmp_path / "run")
    assert [s for s, _ in Recording.seen[:-1]] == [r["step"] for r in records] and Recording.seen[-1] == "closed"
    assert Recording.seen[-2][1]["loss"] == records[-1]["loss"] and "step" not in Recording.seen[-2][1]


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_an_asked_for_backend_that_is_not_installed_is_one_line(tmp_path):
    with pytest.raises(UserError, match="wandb is not installed"):
        MetricsLogger(tmp_path, {"log": {"wandb_project": "x"}})


def test_a_view_that_is_not_installed_is_a_note(tmp_path, monkeypatch):
    class Missing:
        def __init__(self, *_):
            raise ImportError("no such package")

    monkeypatch.setitem(sinks.SINKS, "missing", (lambda c: True, Missing, "note: missing logging is off"))
    notes = []
    MetricsLogger(tmp_path, {"log": {}}, notes.append).close()
    assert notes == ["note: missing logging is off"]
