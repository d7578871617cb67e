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


@pytest.mark.parametrize("total,per_rank,world", [(0, 4, 1), (10, 4, 1), (10, 4, 2), (17, 3, 4), (5, 8, 3)])
def test_rank_rounds_cover_every_item_once_with_the_same_rounds_on_every_rank(total, per_rank, world):
    from gpt2lab.eval.evaluator import rank_rounds

    rounds = [list(rank_rounds(total, per_rank, (rank, world))) for rank in range(world)]
    assert len({len(r) for r in rounds}) == 1  # the same number of forward passes on every rank
    items = [i for r in rounds for _, mine in r for i in mine]
    assert sorted(items) == list(range(total))
    single = [i for _, mine in rank_rounds(total, per_rank) for i in mine]
    assert single == list(range(total))


def test_gpt2lab_eval_runs_the_registered_evaluators_by_name(small_run, capsys):
    """`gpt2lab eval --tasks` builds the same evaluators as training, from the checkpoint's config: its val loss is
    the data path's, to the last bit; token_accuracy comes from the same class the loop runs."""
    import json

    from gpt2lab.cli import main
    from gpt2lab.eval.token_accuracy import TokenAccuracy

    assert main(["eval", str(small_run.run), "--data", str(small_run.data), "--tasks", "val,token_accuracy",
                 "--device", "cpu", "--json", "--quiet", "--batch-size", "4"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["tasks"]["val_loss"] == result["val"]["loss"]
    assert 0 <= result["tasks"]["val_token_accuracy"] <= 1 and TokenAccuracy.name == "token_accuracy"
    assert main(["eval", str(small_run.run), "--data", str(small_run.data), "--tasks", "perplexity"]) == 2
    assert "not an evaluation of gpt2lab" in capsys.readouterr().err
