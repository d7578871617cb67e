"""Where a training step's time goes: data wait, forward, backward, optimizer.

On CUDA each phase is bracketed by CUDA events; the trainer reads a step's events one step later, when the
GPU is long past them, so timing adds no synchronisation. Data wait is host time: the loader runs on the CPU,
and time the GPU spends idle waiting for it shows up as a gap between phases.
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager

import torch

PHASES = ("data", "forward", "backward", "optimizer")


class Timing:
    """The measurements of one finished step."""

    def __init__(self, host: dict[str, float], events: list[tuple[str, object, object]]):
        self.host, self.events = host, events

    def seconds(self) -> dict[str, float]:
        """Seconds per phase. Reads CUDA events: call it for a step the device has finished (one step later)."""
        out = {f"{p}_time": 0.0 for p in PHASES}
        for name, value in self.host.items():
            out[f"{name}_time"] += value
        for name, start, end in self.events:
            end.synchronize()
            out[f"{name}_time"] += start.elapsed_time(end) / 1000.0
        return out


class StepTimer:
    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self._events: list[tuple[str, object, object]] = []
        self._host: dict[str, float] = defaultdict(float)

    @contextmanager
    def host(self, name: str):
        """Host-side time, e.g. fetching a batch."""
        start = time.perf_counter()
        yield
        self._host[name] += time.perf_counter() - start

    @contextmanager
    def phase(self, name: str):
        """Device time of the work launched inside the block (host time off CUDA, where work is synchronous)."""
        if not self.cuda:
            with self.host(name):
                yield
            return
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        yield
        end.record()
        self._events.append((name, start, end))

    def take(self) -> Timing:
        """This step's measurements (not yet read); the next step starts afresh."""
        timing = Timing(dict(self._host), list(self._events))
        self._events.clear()
        self._host.clear()
        return timing


def memory_stats(device: torch.device) -> dict[str, float]:
    """Current and peak allocated GPU memory in GB since the last call (peak is reset each time). Allocator
    statistics: host-side, no synchronisation."""
    if device.type != "cuda":
        return {}
    stats = {"mem_gb": torch.cuda.memory_allocated(device) / 2**30, "peak_mem_gb": torch.cuda.max_memory_allocated(device) / 2**30}
    torch.cuda.reset_peak_memory_stats(device)
    return stats
