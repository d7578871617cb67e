"""A strict CUDA double: the machine with GPUs that a CPU build of torch cannot simulate by itself.

It fakes only what a CPU build cannot answer, at the level torch's C extension answers it: that the build has
CUDA (`torch._C._cuda_getDeviceCount`), how many GPUs there are, which is current (`_cuda_getDevice`,
`_cuda_setDevice`, `_cuda_exchangeDevice`), each GPU's properties (name, capability, memory), memory figures,
synchronisation, one RNG generator per GPU, and whether a bf16 tensor can be made on it (what
`is_bf16_supported`'s emulation check tries). Every Python-level function of torch.cuda the project calls
stays torch's own: `set_device` still refuses `torch.device("cuda")` without an index, `_get_device_index`,
`is_bf16_supported(including_emulation=...)`, `get_device_properties`' range check, `torch.device` parsing.

A test may not replace a torch function the project calls with something more permissive than torch:
tests/test_cuda_double.py checks every test file for `monkeypatch.setattr(torch...` outside this module.

Tensors cannot be created on the fake GPUs: a test that needs placement uses the meta device as a stand-in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch


@dataclass
class FakeGPU:
    name: str = "NVIDIA H100 80GB HBM3"
    major: int = 9
    minor: int = 0
    total_memory: int = 80 * 2**30
    multi_processor_count: int = 132
    # what the allocator would report
    allocated: int = 0
    peak: int = 0
    free: int | None = None

    @property
    def gcnArchName(self) -> str:  # noqa: N802 (torch's attribute name)
        return "NVIDIA"


T4 = dict(name="Tesla T4", major=7, minor=5, total_memory=15 * 2**30, multi_processor_count=40)
A100 = dict(name="NVIDIA A100-SXM4-80GB", major=8, minor=0, total_memory=80 * 2**30, multi_processor_count=108)
H100 = dict(name="NVIDIA H100 80GB HBM3", major=9, minor=0, total_memory=80 * 2**30, multi_processor_count=132)
RTX4090 = dict(name="NVIDIA GeForce RTX 4090", major=8, minor=9, total_memory=24 * 2**30, multi_processor_count=128)


@dataclass
class CudaMachine:
    gpus: list[FakeGPU]
    current: int = 0
    calls: list[tuple] = field(default_factory=list)  # (what, device index) for every C-level call
    generators: list[torch.Generator] = field(default_factory=list)

    def gpu(self, index: int) -> FakeGPU:
        if not 0 <= index < len(self.gpus):
            raise RuntimeError(f"CUDA error: invalid device ordinal {index}")
        return self.gpus[index]


def install(monkeypatch, *gpus: dict) -> CudaMachine:
    """Make torch.cuda see these GPUs (default: one H100). Returns the machine, whose `calls` record the
    C-level requests (set device, synchronize, reset peak)."""
    # modules that bind CUDA's C functions when they are first imported on a CUDA build: imported as a CPU build
    import torch._dynamo.device_interface  # noqa: F401
    import torch.distributed.fsdp  # noqa: F401

    machine = CudaMachine([FakeGPU(**g) for g in (gpus or (H100,))])
    machine.generators = [torch.Generator() for _ in machine.gpus]
    C = torch._C

    def get_count():
        return len(machine.gpus)

    def get_device():
        return machine.current

    def set_device(index):
        if not isinstance(index, int):
            raise TypeError(f"_cuda_setDevice(): argument 'device' must be int, not {type(index).__name__}")
        machine.gpu(index)
        machine.calls.append(("set_device", index))
        machine.current = index

    def exchange_device(index):
        previous = machine.current
        if index >= 0:
            set_device(index)
        return previous

    def properties(index):
        g = machine.gpu(index)
        return g

    def memory_stats(index):
        g = machine.gpu(index)
        return {"allocated_bytes.all.current": g.allocated, "allocated_bytes.all.peak": g.peak,
                "reserved_bytes.all.current": g.allocated, "reserved_bytes.all.peak": g.peak}

    def reset_peak(index):
        g = machine.gpu(index)
        machine.calls.append(("reset_peak", index))
        g.peak = g.allocated

    def synchronize():
        machine.calls.append(("synchronize", machine.current))

    def empty_cache():
        machine.calls.append(("empty_cache", machine.current))

    for name, fn in (("_cuda_getDeviceCount", get_count), ("_cuda_getDevice", get_device),
                     ("_cuda_setDevice", set_device), ("_cuda_exchangeDevice", exchange_device),
                     ("_cuda_maybeExchangeDevice", exchange_device), ("_cuda_memoryStats", memory_stats),
                     ("_cuda_resetPeakMemoryStats", reset_peak), ("_cuda_synchronize", synchronize),
                     ("_cuda_emptyCache", empty_cache)):
        monkeypatch.setattr(C, name, fn, raising=False)
    # the state _lazy_init() would have set up: initialised, with the property reader it defines
    monkeypatch.setattr(torch.cuda, "_initialized", True)
    monkeypatch.setattr(torch.cuda, "_cached_device_count", None)
    monkeypatch.setattr(torch.cuda, "_get_device_properties", properties, raising=False)
    monkeypatch.setattr(torch.cuda, "default_generators", tuple(machine.generators))
    # torch.cuda binds these two C functions at import time, where a CPU build has none
    monkeypatch.setattr(torch.cuda, "_exchange_device", exchange_device)
    monkeypatch.setattr(torch.cuda, "_maybe_exchange_device", exchange_device)
    # is_bf16_supported(including_emulation=True) asks whether a bf16 tensor can be made on the GPU, which a CPU
    # build cannot try: a real GPU of compute capability 5.3 or newer holds one (every GPU above, a T4 included,
    # where bf16 is emulated), so the double says so, as the GPU would; torch's own function still decides
    def bf16_tensor_supported(device):
        from torch.cuda._utils import _get_device_index

        g = machine.gpu(_get_device_index(device, optional=True))
        return (g.major, g.minor) >= (5, 3)

    monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", bf16_tensor_supported)
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.version, "hip", None)
    return machine


def set_utilization(monkeypatch, reading) -> None:
    """NVML's utilisation reading (what `nvidia-smi` shows), which no CPU machine has: `reading(index)` gives the
    percentage or raises as a missing pynvml would. torch's own device check stays: an index it refuses is refused."""
    from torch.cuda._utils import _get_device_index

    def utilization(device=None):
        return reading(_get_device_index(device, optional=True))

    monkeypatch.setattr(torch.cuda, "utilization", utilization)


@pytest.fixture
def cuda_machine(monkeypatch):
    """One H100 by default; call cuda_machine.install(monkeypatch, T4, H100) in a test for another machine."""
    return install(monkeypatch)
