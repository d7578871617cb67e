import math

import pytest

from gpt2lab.config import ScheduleConfig
from gpt2lab.train.schedule import lr_at


def test_warmup_peak_and_end():
    s = ScheduleConfig(max_steps=1000, warmup_steps=100, min_lr=1e-4, decay="cosine")
    assert lr_at(0, 1e-3, s) == pytest.approx(1e-5)
    assert lr_at(49, 1e-3, s) == pytest.approx(5e-4)
    assert lr_at(99, 1e-3, s) == pytest.approx(1e-3)  # the peak, at the last warmup step
    assert lr_at(100, 1e-3, s) == pytest.approx(1e-3)
    assert lr_at(550, 1e-3, s) == pytest.approx(1e-4 + 0.5 * 9e-4)  # halfway through the decay
    assert lr_at(1000, 1e-3, s) == pytest.approx(1e-4)
    assert lr_at(5000, 1e-3, s) == pytest.approx(1e-4)  # past the end it stays at min_lr


def test_cosine_is_monotone_after_warmup():
    s = ScheduleConfig(max_steps=300, warmup_steps=10, min_lr=0.0)
    lrs = [lr_at(i, 1.0, s) for i in range(10, 301)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)


def test_linear_and_constant():
    lin = ScheduleConfig(max_steps=110, warmup_steps=10, min_lr=0.0, decay="linear")
    assert lr_at(60, 2.0, lin) == pytest.approx(1.0)
    const = ScheduleConfig(max_steps=110, warmup_steps=0, decay="constant")
    assert lr_at(0, 2.0, const) == lr_at(109, 2.0, const) == 2.0


def test_no_warmup():
    s = ScheduleConfig(max_steps=10, warmup_steps=0, min_lr=0.0)
    assert lr_at(0, 1.0, s) == 1.0
    assert lr_at(5, 1.0, s) == pytest.approx(0.5 * (1 + math.cos(math.pi / 2)))
