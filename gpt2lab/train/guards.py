"""Checks that stop a run which is quietly going wrong, with a message that says what and why."""

from __future__ import annotations

import math
import statistics

import torch

from ..errors import UserError


def check_placement(model: torch.nn.Module, batch: torch.Tensor, device: torch.device) -> None:
    """On CUDA, every parameter and the batch must be on the GPU: a CPU fallback is a bug, never a mode."""
    if device.type != "cuda":
        return
    stray = [name for name, p in model.named_parameters() if p.device.type != "cuda"]
    if stray:
        raise UserError(f"CUDA was requested but {len(stray)} parameters are on the CPU (e.g. {stray[0]}); "
                        "training would run on the CPU at a fraction of the speed")
    if batch.device.type != "cuda":
        raise UserError("CUDA was requested but the batches are on the CPU; training would run on the CPU")


class UtilizationGuard:
    """Stops the run when the GPU stays almost idle across several logging steps after warm-up.

    Reads NVML through torch.cuda.utilization(); where NVML is missing the guard is off and says so once.
    """

    def __init__(self, device: torch.device, warmup_steps: int = 20, patience: int = 5, threshold: float = 2.0):
        self.device, self.warmup, self.patience, self.threshold = device, warmup_steps, patience, threshold
        self.low = 0
        self.available = False
        self.note = None
        if device.type == "cuda":
            try:
                torch.cuda.utilization(device)
                self.available = True
            except Exception as exc:  # pynvml missing or NVML unusable
                self.note = f"GPU utilisation is not monitored ({type(exc).__name__}); pip install nvidia-ml-py to enable it"

    def sample(self, step: int) -> float | None:
        if not self.available:
            return None
        util = float(torch.cuda.utilization(self.device))
        if step > self.warmup:
            self.low = self.low + 1 if util < self.threshold else 0
            if self.low >= self.patience:
                raise UserError(
                    f"the GPU has been {util:.0f}% busy for {self.low} logging steps in a row at step {step}: "
                    "the work is not reaching it (data loading stalls or a CPU fallback); see the step-time breakdown"
                )
        return util


class LossGuard:
    """Decides whether an update is safe to apply.

    Unsafe: a non-finite loss or gradient norm, or a loss spike, a loss more than `spike_z` standard deviations
    above the mean of the last `window` accepted losses (once `min_history` of them exist; spike_z 0 is off).
    """

    def __init__(self, spike_z: float = 6.0, window: int = 100, min_history: int = 20):
        self.spike_z, self.window, self.min_history = spike_z, window, min_history
        self.history: list[float] = []

    def check(self, loss: float, grad_norm: float) -> str | None:
        """None when the update may go ahead, else the reason to skip it."""
        if not math.isfinite(loss):
            return f"non-finite loss ({loss})"
        if not math.isfinite(grad_norm):
            return f"non-finite gradient norm ({grad_norm})"
        if self.spike_z and len(self.history) >= self.min_history:
            mean = statistics.fmean(self.history)
            std = statistics.pstdev(self.history) or 1e-8
            z = (loss - mean) / std
            if z > self.spike_z:
                return f"loss spike ({loss:.4f}, z = {z:.1f} over the last {len(self.history)} steps)"
        return None

    def accept(self, loss: float) -> None:
        self.history.append(loss)
        del self.history[: -self.window]

    def state_dict(self) -> dict:
        return {"history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.history = list(state.get("history", []))
