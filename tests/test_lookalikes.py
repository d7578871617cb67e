"""Property: look-alike names never cost the user a byte (issue 26).

Every name gpt2lab writes is planted, as a user's file, a user's folder, or a symbolic link to a user's file or
folder elsewhere, in the folder each command writes to (and beside it, for working folders). Each command then
runs; whatever it does, every planted byte (and every link's target) is still there, and the command either
worked or refused in one line with exit code 2. Every name is planted as each kind at once, and then subsets of
names and kinds are drawn with fixed seeds.
"""

import random
import shutil

import pytest

from gpt2lab.cli import main
from tests.helpers import MICRO_MODEL, micro_config, trainer

pytestmark = pytest.mark.slow

NAMES = [".gpt2lab.lock", ".gpt2lab-run.json", "config.json", "device.json", "metrics.jsonl", "evaluators.json",
         "checkpoints", "tensorboard", "profile", "report.md", "meta.json", "train_000000.bin", "val_000000.bin",
         "model.safetensors", "COMPLETE", "state.json", "vocab.json", "step_00000002"]
SIBLINGS = [".{}.partial", ".{}.import", ".{}.tmp"]
KINDS = ("file", "folder", "link-to-file", "link-to-folder")
TRIALS = [*KINDS, *range(6)]  # every name as each kind at once, then seeded random mixes


def _plant(folder, out_name, rng, elsewhere):
    """Plant a random subset of look-alikes in `folder` (beside it for working-folder names); returns a checker."""
    folder.mkdir(parents=True, exist_ok=True)
    planted = []
    every = isinstance(rng, str)  # a kind: every name planted as that kind at once
    names = NAMES if every else rng.sample(NAMES, k=rng.randint(1, 5))
    siblings = [s.format(out_name) for s in (SIBLINGS if every else rng.sample(SIBLINGS, k=rng.randint(0, 2)))]
    for i, name in enumerate(names + siblings):
        where = folder / name if name in names else folder.parent / name
        kind = rng if every else rng.choice(KINDS)
        content = f"user data {i} {name} {kind}\n".encode()
        if where.is_dir() and not where.is_symlink():  # a real run's own file of that name, replaced by the user's
            shutil.rmtree(where)
        elif where.exists():
            where.unlink()
        if kind == "file":
            where.write_bytes(content)
        elif kind == "folder":
            where.mkdir()
            (where / "mine.txt").write_bytes(content)
        else:
            target = elsewhere / f"target{i}"
            if kind == "link-to-file":
                target.write_bytes(content)
            else:
                target.mkdir()
                (target / "mine.txt").write_bytes(content)
            where.symlink_to(target)
        planted.append((where, kind, content))

    def intact():
        for where, kind, content in planted:
            if kind == "file":
                assert where.is_file() and not where.is_symlink() and where.read_bytes() == content, where
            elif kind == "folder":
                assert (where / "mine.txt").read_bytes() == content, where
            else:
                assert where.is_symlink(), where
                target = where.resolve()
                got = target.read_bytes() if kind == "link-to-file" else (target / "mine.txt").read_bytes()
                assert got == content, where
    return intact


def _run(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code in (0, 2), (argv, code, err)
    if code == 2:
        lines = [line for line in err.splitlines() if not line.startswith("note:")]
        assert len(lines) == 1 and "Traceback" not in err, err
    return code


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    from tests.helpers import make_data_dir

    base = tmp_path_factory.mktemp("source")
    data = make_data_dir(base / "data")
    trainer(micro_config(data, "schedule.max_steps=2"), base / "run", echo=lambda *_: None).fit()
    return base, data


COMMANDS = {
    "train": lambda base, data, out: ["train", "--data", str(data), "--out", str(out), "--max-steps", "2", "--device",
                                      "cpu", *[a for s in MICRO_MODEL for a in ("--set", s)]],
    "export": lambda base, data, out: ["export", str(base / "run"), "--out", str(out)],
    "import-back": None,  # filled below: needs a transformers folder
    "report": lambda base, data, out: ["report", str(out)],
    "compare": lambda base, data, out: ["compare", str(base / "run"), str(base / "run"), "--out", str(out)],
}


@pytest.mark.parametrize("trial", TRIALS)
@pytest.mark.parametrize("command", ["train", "export", "report", "compare", "prepare", "import"])
def test_planted_lookalikes_are_never_lost(command, trial, source_run, tmp_path, capsys, tokenizer_dir):
    base, data = source_run
    rng = trial if isinstance(trial, str) else random.Random(f"{command}-{trial}")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "work" / "out"
    if command == "report":  # report writes into a run folder: a copy of a real run, with look-alikes planted
        shutil.copytree(base / "run", out)
    intact = _plant(out, out.name, rng, elsewhere)
    if command == "prepare":
        text = tmp_path / "corpus.txt"
        text.write_text("Some text to tokenize. " * 200)
        argv = ["prepare", str(text), "--out", str(out), "--tokenizer", tokenizer_dir, "--quiet"]
    elif command == "import":
        transformers = pytest.importorskip("transformers")
        hf = tmp_path / "hf"
        transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=1,
                                                            n_head=2)).save_pretrained(hf)
        capsys.readouterr()  # the setup's own output (transformers' progress bar when no test before turned it off)
        argv = ["import", str(hf), "--out", str(out)]
    else:
        if command == "export":
            pytest.importorskip("transformers")
        argv = COMMANDS[command](base, data, out)
    _run(argv, capsys)
    intact()
