"""The evaluator interface: the registry, eval.tasks, and a metric that reaches metrics.jsonl, the console,
evaluators.json and the report without any of them naming it."""

import json

import pytest

from gpt2lab.cli import main
from gpt2lab.errors import UserError
from gpt2lab.metrics.logger import read_metrics
from tests.helpers import micro_config, trainer


def test_an_evaluation_named_in_eval_tasks_runs_and_reports(data_dir, tmp_path, capsys):
    cfg = micro_config(data_dir, "schedule.max_steps=6", "eval.every=3", "eval.tasks=token_accuracy", "log.every=3")
    lines = []
    trainer(cfg, tmp_path / "run", echo=lines.append).fit()
    records = read_metrics(tmp_path / "run")
    accuracy = [r["val_token_accuracy"] for r in records if "val_token_accuracy" in r]
    assert len(accuracy) == 2 and all(0 <= a <= 1 for a in accuracy)
    assert any("top-1" in line for line in lines)  # the console label comes from the evaluator's metric
    declared = json.loads((tmp_path / "run" / "evaluators.json").read_text())
    assert [e["name"] for e in declared] == ["val", "token_accuracy"]
    assert main(["report", str(tmp_path / "run"), "--no-overlap-check"]) == 0
    report = (tmp_path / "run" / "report.md").read_text()
    assert "top-1 (final / best)" in report and (tmp_path / "run" / "token_accuracy.png").is_file()


def test_an_unknown_task_is_one_line_with_a_suggestion(data_dir, tmp_path):
    with pytest.raises(UserError, match="did you mean 'token_accuracy'"):
        trainer(micro_config(data_dir, "eval.tasks=token_acuracy"), tmp_path / "run")
