"""The strict CUDA double keeps torch's own checks, and no test replaces a torch function more permissively."""

import re
from pathlib import Path

import pytest
import torch

from tests.cuda_double import H100, T4, install

TESTS = Path(__file__).resolve().parent

# Every place a test replaces something of torch's, and why it is no more permissive than torch. A new one fails
# test_no_test_replaces_a_torch_function_more_permissively until it is reviewed and listed here.
ALLOWED = {
    ("test_cpu_peak.py", "torch.mm"): "a counting wrapper that calls the real torch.mm",
    ("test_host_reads.py", "torch.Tensor"): "counting wrappers that call the real Tensor methods",
    ("test_model.py", "torch.amp"): "is_autocast_available made LESS permissive: the real answer after a graph break, "
                                    "as torch 2.11's compiler saw it",
    ("test_optim.py", "torch.nn.Parameter"): "adds full_tensor, the one DTensor attribute Muon looks for",
    ("test_runtime.py", "torch.backends.mps"): "MPS availability and the macOS version: what a Linux CPU cannot answer",
    ("test_selftest.py", "torch.backends.mps"): "MPS availability: False, as a Linux CPU answers anyway",
}
PATCH = re.compile(r"(?:monkeypatch\.setattr|setattr|mock\.patch(?:\.object)?)\(\s*[\"']?(torch(?:\.\w+)*)(?:\s*,\s*[\"'](\w+))?")


def test_no_test_replaces_a_torch_function_more_permissively():
    found = set()
    for path in TESTS.glob("*.py"):
        if path.name in ("cuda_double.py", Path(__file__).name):
            continue
        for target, attribute in PATCH.findall(path.read_text()):
            found.add((path.name, f"{target}.{attribute}" if target == "torch" and attribute else target))
    unreviewed = {f for f in found if f not in ALLOWED}
    assert not unreviewed, f"tests patch torch outside tests/cuda_double.py: {sorted(unreviewed)}"


def test_the_double_keeps_torchs_own_checks(monkeypatch):
    machine = install(monkeypatch, H100, T4)
    assert torch.cuda.is_available() and torch.cuda.device_count() == 2
    with pytest.raises(ValueError, match="specified index"):
        torch.cuda.set_device(torch.device("cuda"))  # torch's own refusal, which a lambda used to swallow
    with pytest.raises(RuntimeError, match="invalid device ordinal"):
        torch.cuda.set_device(5)
    with pytest.raises(AssertionError, match="Invalid device id"):
        torch.cuda.get_device_properties(2)
    assert torch.cuda.is_bf16_supported(including_emulation=False)  # asks the current GPU: the H100
    torch.cuda.set_device(torch.device("cuda:1"))
    assert machine.current == 1 and not torch.cuda.is_bf16_supported(including_emulation=False)
    assert torch.cuda.get_device_name() == "Tesla T4" and torch.cuda.get_device_capability(0) == (9, 0)
    machine.gpus[1].allocated, machine.gpus[1].peak = 2**30, 3 * 2**30
    assert torch.cuda.memory_allocated(1) == 2**30 and torch.cuda.max_memory_allocated(1) == 3 * 2**30
    torch.cuda.reset_peak_memory_stats(1)
    assert torch.cuda.max_memory_allocated(1) == 2**30
    torch.cuda.synchronize(torch.device("cuda:0"))
    assert ("synchronize", 0) in machine.calls and machine.current == 1  # the device switch was undone
    with pytest.raises(Exception):
        torch.zeros(1, device="cuda:0")  # no tensors on the fake GPUs: placement tests use the meta device


def test_the_double_answers_bf16_as_the_gpu_would(monkeypatch):
    """A T4 has no bf16 tensor cores but holds bf16 tensors (emulated): torch's `is_bf16_supported()` says yes
    there and `including_emulation=False` says no; an H100 says yes to both. A double that could make no bf16
    tensor said no to the first, and a check that forgot `including_emulation=False` passed its test."""
    install(monkeypatch, H100, T4)
    torch.cuda.set_device(1)
    assert torch.cuda.is_bf16_supported() and not torch.cuda.is_bf16_supported(including_emulation=False)
    torch.cuda.set_device(0)
    assert torch.cuda.is_bf16_supported(including_emulation=False)
