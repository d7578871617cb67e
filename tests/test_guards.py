import pytest
import torch

from gpt2lab.errors import UserError
from gpt2lab.train.guards import UtilizationGuard, check_placement


def test_parameters_or_batches_on_the_cpu_stop_a_cuda_run():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(UserError, match="parameters are on the CPU"):
        check_placement(model, torch.zeros(1), torch.device("cuda"))
    check_placement(model, torch.zeros(1), torch.device("cpu"))  # a CPU run on purpose is fine


def test_idle_gpu_stops_the_run(monkeypatch):
    monkeypatch.setattr(torch.cuda, "utilization", lambda device=None: 0)
    guard = UtilizationGuard(torch.device("cuda"), warmup_steps=2, patience=3)
    assert guard.available
    for step in range(1, 5):
        guard.sample(step)  # warm-up, then two low samples
    with pytest.raises(UserError, match="0% busy for 3 logging steps"):
        guard.sample(5)


def test_busy_gpu_resets_the_count(monkeypatch):
    readings = iter([0, 0, 90, 0, 0, 90])
    monkeypatch.setattr(torch.cuda, "utilization", lambda device=None: next(readings, 90))
    guard = UtilizationGuard(torch.device("cuda"), warmup_steps=0, patience=3)
    for step in range(1, 7):
        guard.sample(step)


def test_missing_nvml_turns_the_guard_off_with_a_note(monkeypatch):
    def unavailable(device=None):
        raise ModuleNotFoundError("pynvml")

    monkeypatch.setattr(torch.cuda, "utilization", unavailable)
    guard = UtilizationGuard(torch.device("cuda"))
    assert not guard.available and "nvidia-ml-py" in guard.note and guard.sample(100) is None
