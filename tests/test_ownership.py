"""Nothing of the user's is lost to a name that looks like one of gpt2lab's (issue 26): real symbolic links planted
under gpt2lab's working-folder and lock names, a user's own config.json or metrics.jsonl in --out, a second demo,
a resume that asks for another optimizer."""

import json

import pytest

from gpt2lab.cli import main
from tests.conftest import MICRO_MODEL, micro_config, trainer


def _treasure(tmp_path):
    """A user's folder with a file in it, and a user's file: what a planted link points at."""
    folder = tmp_path / "precious"
    folder.mkdir()
    (folder / "thesis.txt").write_text("years of work")
    single = tmp_path / "notes.txt"
    single.write_text("do not truncate")
    return folder, single


def _intact(folder, single):
    return (folder / "thesis.txt").read_text() == "years of work" and single.read_text() == "do not truncate"


def test_a_link_named_like_exports_working_folder_is_refused(data_dir, tmp_path, capsys):
    pytest.importorskip("transformers")
    trainer(micro_config(data_dir, "schedule.max_steps=2"), tmp_path / "run", echo=lambda *_: None).fit()
    folder, single = _treasure(tmp_path)
    (tmp_path / ".hf.partial").symlink_to(folder)
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "hf")]) == 2
    assert "symbolic link" in capsys.readouterr().err and _intact(folder, single)


def test_a_link_named_like_prepares_working_folder_is_refused(tmp_path, capsys, tokenizer_dir):
    folder, single = _treasure(tmp_path)
    text = tmp_path / "corpus.txt"
    text.write_text("Some text to tokenize. " * 200)
    (tmp_path / ".data.partial").symlink_to(folder)
    assert main(["prepare", str(text), "--out", str(tmp_path / "data"), "--tokenizer", tokenizer_dir, "--quiet"]) == 2
    assert "symbolic link" in capsys.readouterr().err and _intact(folder, single)


def test_a_link_named_like_the_lock_is_refused_and_its_target_kept(data_dir, tmp_path, capsys):
    folder, single = _treasure(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / ".gpt2lab.lock").symlink_to(single)
    args = ["train", "--data", str(data_dir), "--out", str(run), "--max-steps", "1", "--device", "cpu",
            *[a for s in MICRO_MODEL for a in ("--set", s)]]
    assert main(args) == 2
    assert "symbolic link" in capsys.readouterr().err and _intact(folder, single)


@pytest.mark.parametrize("name", ["config.json", "metrics.jsonl"])
def test_train_never_overwrites_a_users_file_with_a_run_files_name(data_dir, tmp_path, name):
    from gpt2lab.errors import UserError

    run = tmp_path / "run"
    run.mkdir()
    (run / name).write_text("the user's own\n")
    with pytest.raises(UserError, match="does not show it wrote"):
        trainer(micro_config(data_dir, "schedule.max_steps=2"), run, echo=lambda *_: None)
    assert (run / name).read_text() == "the user's own\n"


def test_a_run_stopped_before_its_first_checkpoint_still_starts_over(data_dir, tmp_path):
    """gpt2lab's own files, proven by its record, are still replaced on a fresh start."""
    run = tmp_path / "run"
    t = trainer(micro_config(data_dir, "schedule.max_steps=2"), run, echo=lambda *_: None)
    t.lock.release()  # stopped before fit(): config.json and the record are there, no checkpoint
    messages = []
    trainer(micro_config(data_dir, "schedule.max_steps=2"), run, echo=messages.append).fit()
    assert json.loads((run / ".gpt2lab-run.json").read_text())["files"]["config.json"]


def test_a_second_demo_keeps_the_first(tmp_path, monkeypatch, offline_tokenizer):
    import gpt2lab.commands.demo as demo

    out = tmp_path / "demo"
    (out / "run").mkdir(parents=True)
    (out / "run" / "config.json").write_text("{}")
    (out / "run" / "my-analysis.ipynb").write_text("the user's notebook")
    result = demo.run_demo(str(out), max_steps=1, device="cpu", echo=lambda *_: None)
    assert result["run_dir"] == str(out / "run-2")
    assert (out / "run" / "my-analysis.ipynb").read_text() == "the user's notebook"


def test_resuming_with_another_optimizer_is_one_line_and_sets_nothing_aside(data_dir, tmp_path):
    import gpt2lab.checkpoint as ckpt
    from gpt2lab.errors import UserError

    cfg = micro_config(data_dir, "schedule.max_steps=4", "checkpoint.every=2", "checkpoint.keep_last=none",
                       "optim.name=lion")
    trainer(cfg, tmp_path / "run", echo=lambda *_: None).fit()
    other = micro_config(data_dir, "schedule.max_steps=6", "checkpoint.every=2", "optim.name=adamw")
    with pytest.raises(UserError, match="trained with optim.name=lion"):
        trainer(other, tmp_path / "run", resume=True, echo=lambda *_: None)
    assert len(ckpt.complete_checkpoints(tmp_path / "run")) == 2
    assert not list((tmp_path / "run" / "checkpoints").glob("*.corrupt"))
