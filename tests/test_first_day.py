"""README's first-day walk-through, run as written: own text with --val, two recipes on a time budget, compare,
report, eval on held-out text, export, and the model loaded in transformers. The only changes: 2-second budgets
instead of 10 minutes (a step or two: what is tested is that every command works on what the one before it
wrote), and `gpt2lab` run as `python3 -m gpt2lab` from this checkout."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def walkthrough() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- first-day -->\s*```bash\n(.*?)```\s*<!-- /first-day -->", text, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_the_first_day_walkthrough_runs_as_written(tmp_path, shared_file, offline_tokenizer):
    pytest.importorskip("transformers")
    plays = shared_file("data", "tinyshakespeare", "input.txt").read_text().split("\n\n")
    (tmp_path / "my_books").mkdir()
    (tmp_path / "held_out").mkdir()
    for i in range(6):  # six small "books" to train on, one held out: enough for a step, small enough to be quick
        (tmp_path / "my_books" / f"book{i}.txt").write_text("\n\n".join(plays[i * 100 : (i + 1) * 100]))
    (tmp_path / "held_out" / "book.txt").write_text("\n\n".join(plays[3600:3640]))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for line in walkthrough():
        line = line.replace("--time-budget 10m", "--time-budget 2s")
        argv = shlex.split(line)
        if argv[0] == "gpt2lab":
            argv = [sys.executable, "-m", "gpt2lab", *argv[1:]]
        elif argv[0] == "python3":
            argv[0] = sys.executable
        argv = [a for arg in argv for a in (sorted(str(p.relative_to(tmp_path)) for p in tmp_path.glob(arg))
                                            if "*" in arg else [arg])]
        out = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, f"{line}\n{out.stdout[-1500:]}\n{out.stderr[-1500:]}"
    assert (tmp_path / "runs" / "compare" / "compare.md").is_file() and (tmp_path / "runs" / "speedrun" / "report.md").is_file()
    assert "Gpt2labForCausalLM" in out.stdout
