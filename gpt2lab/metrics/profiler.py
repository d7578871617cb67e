"""--profile N: a torch.profiler trace of N training steps, after two warm-up steps."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import torch


class Profiler:
    """Wrap the loop in `with profiler.session():` and each step in `with profiler.step():`; writes
    RUN_DIR/profile/trace.json (RUN_DIR/profile/rankN/ under torchrun; open it in Perfetto or chrome://tracing) and
    summary.txt: first how much of the profiled wall time the device computed (a GPU busy far less than the steps
    took is waiting on the host: launches, Python, data), then the most expensive operators."""

    def __init__(self, run_dir: Path, steps: int, device: torch.device, rank: int = 0, world_size: int = 1):
        """Under torchrun each rank writes its own trace, to RUN_DIR/profile/rank{N}/."""
        folder = Path(run_dir) / "profile"
        self.dir = folder / f"rank{rank}" if world_size > 1 else folder
        self.steps, self.cuda = steps, device.type == "cuda"
        self.seen, self.prof, self.started = 0, None, 0.0

    @contextlib.contextmanager
    def step(self):
        if self.steps and self.seen == 2 and self.prof is None:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if self.cuda:
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self.prof = torch.profiler.profile(activities=activities, record_shapes=True)
            self.prof.__enter__()
            self.started = time.perf_counter()
        yield
        self.seen += 1
        if self.prof is not None and self.seen == 2 + self.steps:
            self.close()

    @contextlib.contextmanager
    def session(self):
        try:
            yield self
        finally:
            self.close()

    def close(self) -> None:
        if self.prof is None:
            return
        if self.cuda:
            torch.cuda.synchronize()  # the wall time covers the work the profiled steps queued
        wall = time.perf_counter() - self.started
        self.prof.__exit__(None, None, None)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.prof.export_chrome_trace(str(self.dir / "trace.json"))
        averages = self.prof.key_averages()
        steps = self.seen - 2
        head = f"{steps} steps in {wall * 1e3:,.1f} ms of wall time ({wall * 1e3 / max(steps, 1):,.2f} ms per step)"
        if self.cuda:
            busy = gpu_busy_seconds(averages)
            head += (f"; the GPU computed for {busy * 1e3:,.1f} ms of it ({busy / wall:.0%}): "
                     + ("the rest it waited on the host (launches, Python, data): try compile, a larger micro-batch"
                        if busy < 0.7 * wall else "the device is the bottleneck"))
            tables = [("by GPU time", "cuda_time_total"), ("by CPU time", "cpu_time_total")]
        else:
            tables = [("by CPU time", "cpu_time_total")]
        body = "".join(f"\n{title}:\n{averages.table(sort_by=key, row_limit=30)}\n" for title, key in tables)
        (self.dir / "summary.txt").write_text(head + "\n" + body)
        self.prof = None


def gpu_busy_seconds(averages) -> float:
    """Seconds the GPU spent in kernels and copies: the device-side events' own time, as torch's table totals it.
    Annotations (a compiled graph's "## Call CompiledFxGraph" ranges) also carry device time, spanning the
    kernels inside them; counting them too gave a GPU busy for 205% of the wall time on the H200."""
    return sum(e.self_device_time_total for e in averages
               if e.device_type == torch.autograd.DeviceType.CUDA and not e.is_user_annotation) / 1e6
