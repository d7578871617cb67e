"""README's first-day walk-through, run as written: own text with --val, two recipes on a time budget, compare,
report, eval on held-out text, export, and the model loaded in transformers. The only changes: 2-second budgets
instead of 10 minutes (a step or two: what is tested is that every command works on what the one before it
wrote), and each line run in this process: `gpt2lab ARGS` as the console script runs it (gpt2lab.cli.main), the
`python3 -c` line's code under exec. A process per line cost about 5 s of imports each (torch, then
torch._dynamo at the first optimizer) and tested nothing more: the entry point and exit codes of real processes
are tested in test_cli.py, test_attacks.py and test_full_disk.py."""

import re
import shlex
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def walkthrough() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- first-day -->\s*```bash\n(.*?)```\s*<!-- /first-day -->", text, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_the_first_day_walkthrough_runs_as_written(tmp_path, shared_file, offline_tokenizer, monkeypatch, capsys):
    pytest.importorskip("transformers")
    from gpt2lab.cli import main

    plays = shared_file("data", "tinyshakespeare", "input.txt").read_text().split("\n\n")
    (tmp_path / "my_books").mkdir()
    (tmp_path / "held_out").mkdir()
    for i in range(6):  # six small "books" to train on, one held out: enough for a step, small enough to be quick
        (tmp_path / "my_books" / f"book{i}.txt").write_text("\n\n".join(plays[i * 100 : (i + 1) * 100]))
    (tmp_path / "held_out" / "book.txt").write_text("\n\n".join(plays[3600:3640]))
    monkeypatch.chdir(tmp_path)
    for line in walkthrough():
        line = line.replace("--time-budget 10m", "--time-budget 2s")
        argv = [a for arg in shlex.split(line) for a in (sorted(str(p.relative_to(tmp_path)) for p in tmp_path.glob(arg))
                                                        if "*" in arg else [arg])]
        capsys.readouterr()
        if argv[0] == "gpt2lab":
            code = main(argv[1:])
        else:
            assert argv[:2] == ["python3", "-c"], line
            exec(compile(argv[2], "README.md (first-day)", "exec"), {})
            code = 0
        out = capsys.readouterr()
        assert code == 0, f"{line}\n{out.out[-1500:]}\n{out.err[-1500:]}"
    assert (tmp_path / "runs" / "compare" / "compare.md").is_file() and (tmp_path / "runs" / "speedrun" / "report.md").is_file()
    assert "Gpt2labForCausalLM" in out.out
