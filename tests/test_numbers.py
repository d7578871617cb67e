"""Every numeric option of every command, and every numeric config key, fed boundary and random values: the
command either works (exit 0) or stops with exit 2 and one line on stderr, never a traceback or a hang.

The heavy part of a command that would run with a valid value (training, generating, timing a benchmark) is
replaced by a stub, so that a valid but enormous value (a billion steps) is accepted quickly; validation and
set-up run for real."""

import dataclasses
import json
import random

import pytest

from gpt2lab.cli import main
from gpt2lab.config import SECTIONS, _SECTION_TYPES, _declared
from tests.helpers import MICRO_MODEL, make_data_dir

pytestmark = pytest.mark.slow  # multi-process or long: run by .ci/run, not the fast tier


BOUNDARY = ["0", "-1", "1", "2", "nan", "inf", "-inf", "1e400", "-1e400", "1e23", "2.5", "-0.5", "1e-30", "abc", "",
            "100000000", "9" * 40, "0x10", "1_000", " 3 "]
RANDOM = random.Random(20261122)
VALUES = BOUNDARY + [str(RANDOM.randint(-10**6, 10**9)) for _ in range(4)] + [f"{RANDOM.uniform(-5, 5):.3g}" for _ in range(4)]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("numbers")
    data = make_data_dir(base / "data")
    sets = [a for s in MICRO_MODEL + ["run.device=cpu", "log.tensorboard=false"] for a in ("--set", s)]
    gpt2_vocab = sets + ["--set", "model.vocab_size=50304"]  # so that text and HellaSwag can be scored with it
    assert main(["train", "--data", str(data), "--out", str(base / "run"), "--max-steps", "2", *gpt2_vocab]) == 0
    (base / "hs.jsonl").write_text(json.dumps({"ctx": "a b", "endings": [" c", " d", " e", " f"], "label": 1}) + "\n")
    (base / "t.txt").write_text("some text to score\n" * 5)
    return base, data, sets


@pytest.fixture(autouse=True)
def no_heavy_work(monkeypatch):
    """Training, generation, benchmark timing and the CPU peak probe (about 10 s for each new thread count that
    --threads or run.threads asks for) return at once; everything before them runs."""
    from gpt2lab.commands import bench, demo, sample
    from gpt2lab.metrics import cpu_peak
    from gpt2lab.training import trainer

    def fit(self):
        self.lock.release()
        return {"step": 0, "loss": None, "val": {"loss": 1.0, "perplexity": 2.7}, "checkpoint": None, "stopped_by": None}

    monkeypatch.setattr(trainer.Trainer, "fit", fit)
    monkeypatch.setattr(sample, "generate", lambda model, idx, *a, **k: idx)
    monkeypatch.setattr(demo, "sample_text", lambda *a, **k: [""])  # the stubbed training leaves no checkpoint
    monkeypatch.setattr(bench.Contender, "__init__", lambda self, name, cfg, runtime, mb, chunk: _fake_contender(self, name, runtime, mb, cfg))
    monkeypatch.setattr(bench.Contender, "warm_up", lambda self, steps: 0.0)
    monkeypatch.setattr(bench.Contender, "timed", lambda self, steps: 1000.0)
    monkeypatch.setattr(cpu_peak, "_measured", {})  # what this test measures stays in this test
    monkeypatch.setattr(cpu_peak, "measure", lambda dtype, threads: {"flops": 1e12, "spread": None, "tries": 0,
                                                                     "stable": False, "why": "not probed in this test"})


def _fake_contender(self, name, runtime, micro_batch, cfg):
    self.name, self.runtime, self.tokens = name, runtime, micro_batch * cfg.seq_len


def run(args, capsys):
    capsys.readouterr()
    try:
        code = main(args)
    except SystemExit as exit_:  # argparse
        code = exit_.code
    err = capsys.readouterr().err
    assert code in (0, 2), (args, code, err)
    if code == 2:
        assert err.startswith("gpt2lab: error: ") and err.count("\n") == 1 and "Traceback" not in err, (args, err)
    return code


def command_options(base, data, sets):
    run_dir = str(base / "run")
    return {
        ("prepare", "--val-fraction"): ["prepare", str(base / "t.txt"), "--out", str(base / "p"), "--quiet"],
        ("prepare", "--workers"): ["prepare", str(base / "t.txt"), "--out", str(base / "p"), "--quiet"],
        ("prepare", "--shard-tokens"): ["prepare", str(base / "t.txt"), "--out", str(base / "p"), "--quiet"],
        ("prepare", "--seed"): ["prepare", str(base / "t.txt"), "--out", str(base / "p"), "--quiet"],
        ("data-info", "--samples"): ["data-info", str(data)],
        ("data-info", "--sample-tokens"): ["data-info", str(data)],
        **{("train", flag): ["train", "--data", str(data), "--out", str(base / "t"), *sets]
           for flag in ("--max-steps", "--eval-every", "--checkpoint-every", "--micro-batch", "--seed", "--profile",
                        "--time-budget")},
        **{("eval", flag): ["eval", run_dir, "--data", str(data), "--device", "cpu", "--quiet", "--max-batches", "1"]
           for flag in ("--batch-size", "--max-batches")},
        ("eval", "--limit"): ["eval", run_dir, "--hellaswag", str(base / "hs.jsonl"), "--device", "cpu", "--quiet"],
        ("eval", "--stride"): ["eval", run_dir, "--text", str(base / "t.txt"), "--device", "cpu", "--quiet"],
        **{("sample", flag): ["sample", run_dir, "--device", "cpu"]
           for flag in ("--max-new-tokens", "--temperature", "--top-k", "--top-p", "--seed", "--num-samples")},
        **{("plan", flag): ["plan", "--gpu", "rtx4090", "--tokens", "1e9"] for flag in ("--tokens", "--micro-batch", "--mfu", "--price")},
        **{("bench", flag): ["bench", "--preset", "tiny", "--device", "cpu", "--contender", "gpt2lab"]
           for flag in ("--micro-batch", "--seq-len", "--steps", "--rounds", "--warmup", "--loss-chunk", "--threads")},
        ("demo", "--max-steps"): ["demo", "--out", str(base / "demo"), "--device", "cpu"],
    }


COMMANDS = ("prepare", "data-info", "train", "eval", "sample", "plan", "bench", "demo")


@pytest.mark.parametrize("name", COMMANDS)  # one test per command, so that workers share them out
def test_every_numeric_option_of_every_command(name, world, capsys, tokenizer_dir, monkeypatch):
    monkeypatch.setenv("GPT2LAB_TOKENIZER", tokenizer_dir)
    base, data, sets = world
    outcomes = {}
    options = command_options(base, data, sets)
    assert {command for command, _ in options} == set(COMMANDS)
    for (command, flag), args in options.items():
        if command != name:
            continue
        for value in BOUNDARY + VALUES[-2:]:
            code = run([*args, flag, value], capsys)
            outcomes.setdefault((command, flag), set()).add(code)
            for leftover in (base / "t", base / "p", base / "demo"):  # each attempt starts fresh
                if leftover.exists():
                    import shutil

                    shutil.rmtree(leftover)
    one_sided = {option: codes for option, codes in outcomes.items() if codes != {0, 2}}
    assert not one_sided, one_sided  # each option both works and refuses something


def numeric_keys():
    for section in SECTIONS:
        for f in dataclasses.fields(_SECTION_TYPES[section]):
            if f.name != "notes" and _declared(section, f.name)[0] in (int, float):
                yield f"{section}.{f.name}"


@pytest.mark.parametrize("section", SECTIONS)
def test_every_numeric_config_key(section, world, capsys):
    base, data, sets = world
    assert len(list(numeric_keys())) >= 40
    for key in (k for k in numeric_keys() if k.startswith(f"{section}.")):
        for value in VALUES:
            out = base / "k"
            run(["train", "--data", str(data), "--out", str(out), *sets, "--set", f"{key}={value}", "--max-steps", "4"], capsys)
            if out.exists():
                import shutil

                shutil.rmtree(out)
