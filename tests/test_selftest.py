"""`gpt2lab selftest` on the CPU, as CI runs it: every check passes, and a device that cannot be had fails in one line."""

import pytest

from gpt2lab.cli import main


@pytest.mark.slow
def test_selftest_passes_every_check_on_the_cpu(capsys):
    assert main(["selftest", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    for name in ("device", "precision", "resume", "eval", "sample", "export", "speed"):
        assert any(line.startswith(("PASS", "SKIP")) and f" {name} " in line for line in out.splitlines()), name
    assert "continue bitwise" in out and "FAIL" not in out


def test_selftest_fails_with_exit_1_on_a_device_that_is_not_there(capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)  # what a Linux CPU answers anyway
    assert main(["selftest", "--device", "mps"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAIL  device") and "MPS is not usable here" in out
