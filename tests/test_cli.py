import json
import subprocess
import sys
from pathlib import Path

import pytest

from gpt2lab.cli import main
from tests.helpers import MICRO_MODEL
from tests.helpers import make_docs, write_jsonl

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


def test_output_into_a_closed_pipe_ends_quietly():
    """`gpt2lab plan ... | head -1`: the reader goes away; that is no error of ours to print a traceback for."""
    import os

    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written: the write fails for certain
    try:
        done = subprocess.run([sys.executable, "-m", "gpt2lab", "plan", "--gpu", "t4", "--tokens", "1e9"], stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert done.returncode == 1 and done.stderr == "", done.stderr


@pytest.mark.slow
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
    assert result["checkpoint"].endswith("step_00000008") and result["val"]["perplexity"] > 1

    assert main(["sample", run, "--prompt", "Document 3", "--max-new-tokens", "5", "--seed", "1",
                 "--tokenizer", tokenizer_dir, "--device", "cpu"]) == 0
    assert capsys.readouterr().out.startswith("Document 3")


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline(tmp_path, offline_tokenizer, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--max-steps", "2", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "val loss" in out and "perplexity" in out and "sample:" in out
    assert (tmp_path / "demo" / "run" / "metrics.jsonl").is_file()
    assert list((tmp_path / "demo" / "run" / "checkpoints").glob("step_*/COMPLETE"))


@pytest.fixture
def gpt2_data(tmp_path, tokenizer_dir):
    src = write_jsonl(tmp_path / "docs.jsonl", make_docs(40))
    main(["prepare", str(src), "--out", str(tmp_path / "data"), "--tokenizer", tokenizer_dir, "--quiet"])
    return tmp_path / "data"


@pytest.mark.slow
def test_import_finetune_eval_export(tmp_path, tokenizer_dir, gpt2_data, shared_file, capsys):
    transformers = pytest.importorskip("transformers")
    import torch

    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=64))
    hf.save_pretrained(tmp_path / "hf_gpt2")
    assert main(["import", str(tmp_path / "hf_gpt2"), "--out", str(tmp_path / "imported")]) == 0
    hellaswag = str(shared_file("data", "hellaswag", "hellaswag_val.jsonl"))
    run = str(tmp_path / "ft")
    assert main(["train", "--init-from", str(tmp_path / "imported"), "--data", str(gpt2_data), "--out", run,
                 "--max-steps", "4", "--micro-batch", "2", "--device", "cpu", "--set", "schedule.warmup_steps=1",
                 "--set", "eval.hellaswag_every=2", "--set", f"eval.hellaswag_path={hellaswag}",
                 "--set", "eval.hellaswag_limit=6", "--set", f"data.tokenizer={tokenizer_dir}"]) == 0
    out = capsys.readouterr().out
    assert "initialised from" in out and "hellaswag" in out
    records = [json.loads(line) for line in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "hellaswag_acc_norm" in r] == [2, 4]

    text = tmp_path / "t.txt"
    text.write_text("Document 1 begins. river stone lamp.\n" * 20)
    assert main(["eval", run, "--data", str(gpt2_data), "--hellaswag", hellaswag, "--limit", "8", "--text", str(text),
                 "--stride", "32", "--tokenizer", tokenizer_dir, "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["hellaswag"]["examples"] == 8 and 0 <= result["hellaswag"]["acc_norm"] <= 1
    assert result["text"]["stride"] == 32 and result["text"]["bits_per_byte"] > 0 and "val" in result

    assert main(["export", run, "--format", "hf", "--out", str(tmp_path / "exported"), "--tokenizer", tokenizer_dir]) == 0
    assert "GPT2LMHeadModel" in capsys.readouterr().out
    assert (tmp_path / "exported" / "model.safetensors").is_file() and (tmp_path / "exported" / "vocab.json").is_file()


def test_init_from_conflicts_and_bad_eval_input(tmp_path, gpt2_data, capsys):
    assert main(["eval", str(tmp_path), "--device", "cpu"]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\x00bad")
    sets = [a for s in MICRO_MODEL if not s.startswith("model.vocab_size") for a in ("--set", s)]
    main(["train", "--data", str(gpt2_data), "--out", str(tmp_path / "r"), *sets, "--max-steps", "1",
          "--set", "schedule.warmup_steps=0", "--device", "cpu"])
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "r"), "--text", str(bad), "--device", "cpu"]) == 2
    assert "not UTF-8" in capsys.readouterr().err
    assert main(["train", "--init-from", str(tmp_path / "r"), "--preset", "tiny", "--data", str(gpt2_data),
                 "--out", str(tmp_path / "r2")]) == 2
    assert "drop --preset" in capsys.readouterr().err


def test_every_option_has_help_and_numeric_defaults_are_stated(capsys):
    from gpt2lab.cli import build_parser

    parser = build_parser("plan")
    for name, sub in parser._subparsers._group_actions[0].choices.items():
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{name} {action.option_strings[0]} has no help text"
                if isinstance(action.default, (int, float)) and not isinstance(action.default, bool):
                    assert "default" in action.help, f"{name} {action.option_strings[0]}: say its default"
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == "gpt2lab 0.2.0"


def test_argument_errors_are_one_line(capsys):
    assert run_module("train", "--max-steps", "ten", "--out", "x").stderr.count("\n") == 1
    assert run_module("sample").stderr.startswith("gpt2lab: error: sample: the following arguments are required")


def test_written_files_follow_the_umask(tmp_path, data_dir):
    import os

    from tests.helpers import micro_config, trainer

    old = os.umask(0o022)
    try:
        trainer(micro_config(data_dir, "schedule.max_steps=2"), tmp_path / "run", echo=lambda *_: None).fit()
    finally:
        os.umask(old)
    for f in (tmp_path / "run" / "checkpoints").rglob("*"):
        if f.is_file():
            assert f.stat().st_mode & 0o777 == 0o644, f


def test_eval_text_counts_every_byte_of_a_crlf_file(tmp_path, tokenizer_dir, gpt2_data, capsys):
    from gpt2lab.tokenizer import load_tokenizer

    sets = [a for s in MICRO_MODEL if not s.startswith("model.vocab_size") for a in ("--set", s)]
    assert main(["train", "--data", str(gpt2_data), "--out", str(tmp_path / "r"), *sets, "--max-steps", "2",
                 "--device", "cpu"]) == 0
    text = "A line of a Windows file.\r\n" * 40
    (tmp_path / "crlf.txt").write_bytes(text.encode())
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "r"), "--text", str(tmp_path / "crlf.txt"), "--tokenizer", tokenizer_dir,
                 "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["text"]
    assert result["bytes"] == len(text.encode()) == 27 * 40
    assert result["tokens"] == len(load_tokenizer(tokenizer_dir).encode(text))  # the \r are tokens too


def test_a_second_text_is_refused_not_silently_used(capsys):
    """Issue 27 item 10: `eval --text a --text b` evaluated b alone, without a word."""
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "run", "--text", "a.txt", "--text", "b.txt"])
    assert exit_info.value.code == 2 and "--text was given twice" in capsys.readouterr().err


def test_each_roles_lr_is_logged_when_roles_differ(data_dir, tmp_path):
    """Issue 27 item 10: with Muon's per-role LRs the `lr` column showed a rate no parameter group used."""
    from gpt2lab.metrics.logger import read_metrics
    from tests.helpers import micro_config, trainer

    cfg = micro_config(data_dir, "schedule.max_steps=3", "optim.name=muon", "optim.matrix_lr=0.02",
                       "optim.embedding_lr=0.2", "optim.head_lr=0.008", "optim.gain_lr=0.02", "model.tie_embeddings=false")
    trainer(cfg, tmp_path / "run", echo=lambda *_: None).fit()
    last = read_metrics(tmp_path / "run")[-1]
    assert last["lr_embedding"] / last["lr_matrix"] == pytest.approx(10) and "lr_head" in last
