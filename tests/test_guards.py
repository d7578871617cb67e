import pytest
import torch

from gpt2lab.errors import UserError
from gpt2lab.training.guards import UtilizationGuard, check_placement
from tests.cuda_double import install, set_utilization


def test_parameters_or_batches_on_the_cpu_stop_a_cuda_run():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(UserError, match="parameters are on the CPU"):
        check_placement(model, torch.zeros(1), torch.device("cuda"))
    check_placement(model, torch.zeros(1), torch.device("cpu"))  # a CPU run on purpose is fine


def test_idle_gpu_stops_the_run(monkeypatch):
    install(monkeypatch)
    set_utilization(monkeypatch, lambda index: 0)
    guard = UtilizationGuard(torch.device("cuda:0"), warmup_steps=2, patience=3)
    assert guard.available
    for step in range(1, 5):
        guard.sample(step)  # warm-up, then two low samples
    with pytest.raises(UserError, match="0% busy for 3 logging steps"):
        guard.sample(5)


def test_busy_gpu_resets_the_count(monkeypatch):
    readings = iter([50, 0, 0, 90, 0, 0, 90, 0, 0])  # the first reading is the probe at construction
    install(monkeypatch)
    set_utilization(monkeypatch, lambda index: next(readings, 90))
    guard = UtilizationGuard(torch.device("cuda:0"), warmup_steps=0, patience=3)
    lows = []
    for step in range(1, 9):
        guard.sample(step)  # never three low readings in a row: no stop
        lows.append(guard.low)
    assert lows == [1, 2, 0, 1, 2, 0, 1, 2]


def test_missing_nvml_turns_the_guard_off_with_a_note(monkeypatch):
    def unavailable(index):
        raise ModuleNotFoundError("pynvml")

    install(monkeypatch)
    set_utilization(monkeypatch, unavailable)
    guard = UtilizationGuard(torch.device("cuda:0"))
    assert not guard.available and "nvidia-ml-py" in guard.note and guard.sample(100) is None


def test_the_spike_guard_uses_standard_deviations():
    """History with mean 3.0 and standard deviation 0.1: a loss 4 sigma up is kept, 7 sigma up is skipped (with the
    variance, 0.01, both would be far above 6)."""
    from gpt2lab.training.guards import LossGuard

    guard = LossGuard(spike_z=6.0)
    for i in range(40):
        guard.accept(torch.tensor(3.0 + (0.1 if i % 2 else -0.1)), torch.tensor(False))
    finite = torch.tensor(1.0)
    code, z = guard.check(torch.tensor(3.4), finite)
    assert int(code) == 0 and float(z) == pytest.approx(4.0, rel=1e-3)
    code, z = guard.check(torch.tensor(3.7), finite)
    assert int(code) == 3 and float(z) == pytest.approx(7.0, rel=1e-3)
    assert int(guard.check(torch.tensor(float("nan")), finite)[0]) == 1
    assert int(guard.check(torch.tensor(3.0), torch.tensor(float("inf")))[0]) == 2
    guard.accept(torch.tensor(9.0), torch.tensor(True))  # a skipped update's loss never enters the history
    assert 9.0 not in guard.history() and len(guard.history()) == 40


def test_the_spike_guard_waits_for_enough_history_and_can_be_off():
    from gpt2lab.training.guards import LossGuard

    guard = LossGuard(spike_z=6.0, min_history=20)
    for _ in range(19):
        guard.accept(torch.tensor(1.0), torch.tensor(False))
    assert int(guard.check(torch.tensor(100.0), torch.tensor(1.0))[0]) == 0  # 19 losses: not enough to judge
    off = LossGuard(spike_z=None)
    for _ in range(50):
        off.accept(torch.tensor(1.0), torch.tensor(False))
    assert int(off.check(torch.tensor(100.0), torch.tensor(1.0))[0]) == 0
