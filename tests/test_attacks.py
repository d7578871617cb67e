"""What an outsider tried: damaged and foreign files, odd paths, read-only folders, a killed lock holder. Each
ends in exit 0, or exit 2 with one line and no traceback; nothing of the user's is deleted."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gpt2lab.cli import main
from gpt2lab.data.shards import write_shard
from tests.helpers import MICRO_MODEL, make_data_dir

ROOT = Path(__file__).resolve().parents[1]
SETS = [a for s in MICRO_MODEL + ["run.device=cpu", "log.tensorboard=false"] for a in ("--set", s)]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("attacks")
    data = make_data_dir(base / "data")
    assert main(["train", "--data", str(data), "--out", str(base / "run"), "--max-steps", "2", *SETS]) == 0
    return base, data


def one_line(args, capsys, code=2, contains=""):
    capsys.readouterr()
    try:
        got = main(args)
    except SystemExit as exit_:
        got = exit_.code
    err = capsys.readouterr().err
    assert got == code, (args, got, err)
    if code == 2:
        assert err.startswith("gpt2lab: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
        assert contains in err, err
    return err


def damaged_meta(base: Path, data: Path, meta) -> Path:
    target = base / f"meta-{abs(hash(json.dumps(meta)))}"
    shutil.copytree(data, target)
    (target / "meta.json").write_text(json.dumps(meta))
    return target


@pytest.mark.parametrize("meta", [
    [1, 2, 3],
    {"tokenizer": None, "splits": {}},
    {"tokenizer": {"n_vocab": "64"}, "splits": {}},
    {"tokenizer": {"n_vocab": 64, "eot": 63}, "splits": {"train": {"documents": 1}}},
    {"tokenizer": {"n_vocab": 64}, "splits": {"train": {"shards": [{"file": "../../etc/passwd", "tokens": 10}]}}},
])
def test_a_damaged_meta_json_is_one_line(world, capsys, meta):
    base, data = world
    bad = damaged_meta(base, data, meta)
    for command in (["train", "--data", str(bad), "--out", str(base / "x"), *SETS], ["data-info", str(bad)],
                    ["eval", str(base / "run"), "--data", str(bad), "--device", "cpu"]):
        one_line(command, capsys, contains="meta.json")
    assert not (base / "x").exists()


def test_token_ids_beyond_the_vocabulary(world, capsys):
    base, data = world
    bad = base / "big-ids"
    shutil.copytree(data, bad)
    meta = json.loads((bad / "meta.json").read_text())
    n = meta["splits"]["train"]["shards"][0]["tokens"]
    import numpy as np

    # an id the 64-token model lacks, in every window: the first batch reads it (deterministic, one step)
    write_shard(bad / "train_000000.bin", np.array([5, 60000] * (n // 2)))
    write_shard(bad / "val_000000.bin", np.array([70] * meta["splits"]["val"]["shards"][0]["tokens"]))
    err = one_line(["train", "--data", str(bad), "--out", str(base / "ids"), "--max-steps", "1", *SETS], capsys)
    assert "token id 60000" in err or "token id 70" in err  # whichever split is read first
    one_line(["eval", str(base / "run"), "--data", str(bad), "--device", "cpu", "--quiet"], capsys, contains="token id 70")
    one_line(["data-info", str(bad), "--tokenizer", "/nonexistent"], capsys, code=0)


def test_a_truncated_run_config_on_resume_uses_the_checkpoints(world, capsys, tmp_path):
    base, _ = world
    run = tmp_path / "run"
    shutil.copytree(base / "run", run)
    (run / "config.json").write_text((run / "config.json").read_text()[:100])
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--max-steps", "3"]) == 0
    assert "damaged; using the config saved with step_00000002" in capsys.readouterr().out


@pytest.mark.parametrize("text,message", [
    ("1: 2\nrun:\n  seed: 3\n", "unknown config section"),
    ("model: &a [1, *a]\n", "anchors and aliases"),
    ("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b, *b, *b]\n",
     "anchors and aliases"),
    ("run: [1, 2]\n", "must be a table"),
    ("run:\n  2: 3\n", "must be text"),
    ("model: !!python/object/apply:os.system [echo hi]\n", "could not determine a constructor"),
])
@pytest.mark.parametrize("parser", ["libyaml", "PyYAML without libyaml"])
def test_hostile_yaml(world, capsys, tmp_path, text, message, parser, monkeypatch):
    import yaml

    if parser != "libyaml":  # a PyYAML built without libyaml: the Python parser and its own alias check
        monkeypatch.setattr(yaml, "__with_libyaml__", False)
    elif not yaml.__with_libyaml__:
        pytest.skip("this PyYAML has no libyaml")
    base, data = world
    (tmp_path / "c.yaml").write_text(text)
    one_line(["train", "--data", str(data), "--out", str(tmp_path / "r"), "--config", str(tmp_path / "c.yaml")], capsys,
             contains=message)


def test_report_reads_what_a_kill_or_a_stranger_leaves(world, capsys, tmp_path):
    base, _ = world
    run = tmp_path / "run"
    shutil.copytree(base / "run", run)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('[1, 2]\n"text"\n{"no": "step"}\n{"step": "3"}\n')
        f.write(json.dumps({"step": 3, "tokens": 1, "loss": "nan", "lr": 1e-3, "grad_norm": "inf", "step_time": 0.1,
                            "tokens_per_sec": 10.0}) + "\n")
        f.write('{"step": 4, "loss": 1.0, "tok')  # cut short by a kill
    one_line(["report", str(run), "--no-overlap-check"], capsys, code=0)
    assert "n/a" in (run / "report.md").read_text() or "nan" in (run / "report.md").read_text()


@pytest.mark.slow
def test_dot_as_out(world, capsys, tmp_path, monkeypatch, tokenizer_dir):
    base, _ = world
    (tmp_path / "corpus.txt").write_text("a small corpus\n" * 50)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    one_line(["prepare", str(tmp_path / "corpus.txt"), "--out", ".", "--tokenizer", tokenizer_dir, "--quiet"], capsys, code=0)
    assert (empty / "meta.json").is_file() and not list(tmp_path.glob(".*.partial"))
    monkeypatch.chdir(tmp_path)
    one_line(["export", str(base / "run"), "--out", "."], capsys, contains="")  # not empty: refused, nothing deleted
    assert (tmp_path / "corpus.txt").is_file()


def test_a_checkpoint_copied_without_its_manifest_says_what_is_missing(world, capsys, tmp_path):
    """A downloaded or half-copied checkpoint (weights and config, no COMPLETE) is refused by name, with the fix."""
    base, _ = world
    step = sorted((base / "run" / "checkpoints").iterdir())[-1]
    part = tmp_path / "downloaded"
    part.mkdir()
    for name in ("model.safetensors", "config.json"):
        shutil.copy(step / name, part / name)
    for command in (["eval", str(part), "--data", str(base / "data"), "--device", "cpu"], ["sample", str(part), "--device", "cpu"],
                    ["export", str(part), "--out", str(tmp_path / "hf")]):
        one_line(command, capsys, contains="no COMPLETE manifest")
    assert not (tmp_path / "hf").exists()


def test_import_never_deletes_a_folder(world, capsys, tmp_path):
    base, _ = world
    transformers = pytest.importorskip("transformers")
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=64))
    hf.save_pretrained(tmp_path / "hf")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    for target in (tmp_path / "mine", base / "run", tmp_path / "hf"):
        before = sorted(p.name for p in target.iterdir())
        one_line(["import", str(tmp_path / "hf"), "--out", str(target)], capsys, contains="not empty")
        assert sorted(p.name for p in target.iterdir()) == before
    one_line(["import", str(tmp_path / "hf"), "--out", str(tmp_path / "new")], capsys, code=0)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; checked with a tmpfs in test_full_disk")
def test_read_only_out(world, capsys, tmp_path):
    base, data = world
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        for args in (["train", "--data", str(data), "--out", str(locked / "r"), *SETS],
                     ["export", str(base / "run"), "--out", str(locked / "e")]):
            one_line(args, capsys, contains="Permission denied")
    finally:
        locked.chmod(0o700)


def test_read_only_out_as_root(world, capsys, tmp_path, tokenizer_dir):
    """Root ignores permissions; a read-only mount does not."""
    base, data = world
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("a read-only mount needs root")
    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        shutil.copytree(base / "run", mount / "run")
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        for args in (["train", "--data", str(data), "--out", str(mount / "r"), *SETS],
                     ["export", str(base / "run"), "--out", str(mount / "e")],
                     ["prepare", str(data / "meta.json"), "--out", str(mount / "p"), "--quiet", "--tokenizer", tokenizer_dir],
                     ["report", str(mount / "run"), "--no-overlap-check"]):
            one_line(args, capsys, contains="Read-only file system")
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_run_folder_whose_name_is_not_utf8(world, capsys, tmp_path):
    base, data = world
    odd = os.fsencode(str(tmp_path)) + b"/run-\xff-name"
    out = os.fsdecode(odd)
    one_line(["train", "--data", str(data), "--out", out, "--max-steps", "2", *SETS], capsys, code=0)
    one_line(["report", out, "--no-overlap-check"], capsys, code=0)
    one_line(["sample", out, "--device", "cpu"], capsys, contains="vocabulary")


@pytest.mark.slow
def test_a_lock_left_by_a_killed_process_is_free(world, tmp_path, capsys):
    """kill -9 a training process: its lock goes with it, and the next command on the folder proceeds."""
    base, data = world
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "gpt2lab", "train", "--data", str(data), "--out", str(run),
                             "--max-steps", "100000", *SETS], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import time

        deadline = time.time() + 60
        while time.time() < deadline and not (run / "metrics.jsonl").is_file():
            time.sleep(0.1)
        # the next commands run in this process (the lock is held by another process either way)
        one_line(["train", "--out", str(run), "--resume"], capsys, contains=f"in use by gpt2lab process {proc.pid}")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # the lock was free; the stopped run had no checkpoint: started over
    assert main(["train", "--data", str(data), "--out", str(run), "--max-steps", "2", *SETS]) == 0
