import json
import subprocess
import sys
from pathlib import Path

import pytest

from gpt2lab.cli import main
from tests.conftest import MICRO_MODEL
from tests.test_prepare import make_docs, write_jsonl

ROOT = Path(__file__).resolve().parents[1]


def run_module(*args, env_extra=None):
    import os

    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "gpt2lab", *args], capture_output=True, text=True, cwd=ROOT, env=env)


@pytest.mark.parametrize("command", ["prepare", "train", "eval", "sample", "demo"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert "usage: gpt2lab " + command in capsys.readouterr().out


def test_python_dash_m_and_train_help_lists_presets_and_recipes():
    out = run_module("train", "--help")
    assert out.returncode == 0
    assert "gpt2-124m-modern" in out.stdout and "gpt2-25m-wikitext103" in out.stdout


def test_user_errors_are_one_line_without_traceback(tmp_path):
    out = run_module("train", "--preset", "gpt2-124", "--data", str(tmp_path), "--out", str(tmp_path / "r"))
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr
    assert out.stderr.startswith("gpt2lab: error: unknown preset 'gpt2-124'; did you mean 'gpt2-124m'?")
    assert not (tmp_path / "r").exists()


def test_prepare_train_eval_sample_end_to_end(tmp_path, tokenizer_dir, capsys):
    src = write_jsonl(tmp_path / "docs.jsonl", make_docs(40))
    data, run = str(tmp_path / "data"), str(tmp_path / "run")
    assert main(["prepare", str(src), "--out", data, "--tokenizer", tokenizer_dir, "--quiet"]) == 0
    sets = [a for s in MICRO_MODEL if not s.startswith("model.vocab_size") for a in ("--set", s)]
    train = ["train", "--data", data, "--out", run, *sets, "--set", "run.micro_batch=4", "--max-steps", "6",
             "--eval-every", "3", "--checkpoint-every", "3", "--device", "cpu", "--set", "schedule.warmup_steps=2"]
    assert main(train) == 0
    assert "val loss" in capsys.readouterr().out
    # resume without repeating the settings: the run keeps its saved config, --max-steps extends it
    assert main(["train", "--out", run, "--resume", "--max-steps", "8"]) == 0
    assert "resumed from" in capsys.readouterr().out
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))

    assert main(["eval", run, "--data", data, "--json", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["checkpoint"].endswith("step_00000008") and result["perplexity"] > 1

    assert main(["sample", run, "--prompt", "Document 3", "--max-new-tokens", "5", "--seed", "1",
                 "--tokenizer", tokenizer_dir, "--device", "cpu"]) == 0
    assert capsys.readouterr().out.startswith("Document 3")


def test_demo_runs_the_whole_pipeline(tmp_path, offline_tokenizer, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--max-steps", "2", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "val loss" in out and "perplexity" in out and "sample:" in out
    assert (tmp_path / "demo" / "run" / "metrics.jsonl").is_file()
    assert list((tmp_path / "demo" / "run" / "checkpoints").glob("step_*/COMPLETE"))
