"""--profile N: a torch.profiler trace of N training steps, after two warm-up steps."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch


class Profiler:
    """Wrap the loop in `with profiler.session():` and each step in `with profiler.step():`; writes
    RUN_DIR/profile/trace.json (RUN_DIR/profile/rankN/ under torchrun; open it in Perfetto or chrome://tracing) and summary.txt (the most expensive
    operators)."""

    def __init__(self, run_dir: Path, steps: int, device: torch.device, rank: int = 0, world_size: int = 1):
        """Under torchrun each rank writes its own trace, to RUN_DIR/profile/rank{N}/."""
        folder = Path(run_dir) / "profile"
        self.dir = folder / f"rank{rank}" if world_size > 1 else folder
        self.steps, self.cuda = steps, device.type == "cuda"
        self.seen, self.prof = 0, None

    @contextlib.contextmanager
    def step(self):
        if self.steps and self.seen == 2 and self.prof is None:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if self.cuda:
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self.prof = torch.profiler.profile(activities=activities, record_shapes=True)
            self.prof.__enter__()
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
        self.prof.__exit__(None, None, None)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.prof.export_chrome_trace(str(self.dir / "trace.json"))
        sort = "cuda_time_total" if self.cuda else "cpu_time_total"
        (self.dir / "summary.txt").write_text(self.prof.key_averages().table(sort_by=sort, row_limit=30) + "\n")
        self.prof = None
