"""Checks that stop a run which is quietly going wrong, with a message that says what and why."""

from __future__ import annotations


import torch

from ..errors import UserError


def check_placement(model: torch.nn.Module, batch: torch.Tensor, device: torch.device) -> None:
    """On a GPU (CUDA or MPS), every parameter and the batch must be on it: a CPU fallback is a bug, never a mode."""
    if device.type == "cpu":
        return
    kind = "CUDA" if device.type == "cuda" else device.type.upper()
    stray = [name for name, p in model.named_parameters() if p.device.type != device.type]
    if stray:
        raise UserError(f"{kind} was requested but {len(stray)} parameters are on the CPU (e.g. {stray[0]}); "
                        "training would run on the CPU at a fraction of the speed")
    if batch.device.type != device.type:
        raise UserError(f"{kind} was requested but the batches are on the CPU; training would run on the CPU")


def misplaced(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
              batch: torch.Tensor | None = None) -> list[str]:
    """Every tensor a step reads that is not on its parameter's device: parameters and gradients against the
    model's device, optimizer state against its parameter's, the batch. torch's own rule for the `step` count
    applies: it may stay on the CPU unless its group is fused or capturable (then the kernel reads it on the
    device). Only metadata is read: no host synchronisation."""
    params = list(model.parameters())
    if not params:
        return []
    device = params[0].device
    stray = [f"parameter {n} on {p.device}" for n, p in model.named_parameters() if p.device != device]
    stray += [f"gradient of {n} on {p.grad.device}" for n, p in model.named_parameters()
              if p.grad is not None and p.grad.device != p.device]
    if batch is not None and batch.device != device:
        stray.append(f"batch on {batch.device}")
    return stray + (_misplaced_state(model, optimizer) if optimizer is not None else [])


def _misplaced_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """Optimizer state tensors not on their parameter's device (`step` by torch's fused/capturable rule)."""
    names = {id(p): n for n, p in model.named_parameters()}
    stray = []
    for group in optimizer.param_groups:
        on_device_step = bool(group.get("fused") or group.get("capturable"))
        for p in group["params"]:
            for key, value in optimizer.state.get(p, {}).items():
                cpu_step = key == "step" and value.device.type == "cpu" and not on_device_step
                if isinstance(value, torch.Tensor) and value.device != p.device and not cpu_step:
                    stray.append(f"optimizer state {key!r} of {names.get(id(p), '?')} on {value.device}")
    return stray


def check_step_placement(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: torch.Tensor) -> None:
    """Refuse to take a step whose tensors are split across devices (misplaced())."""
    stray = misplaced(model, optimizer, batch)
    if stray:
        raise UserError(f"{len(stray)} tensor(s) of the training step are not on the parameters' device "
                        f"({'; '.join(stray[:3])}); this is a bug in gpt2lab: please report it")


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
    """Decides on the device whether an update is safe to apply, so the host never waits for the answer.

    Unsafe: a non-finite loss (code 1) or gradient norm (code 2), or a loss spike (code 3): a loss more than
    `spike_z` standard deviations above the mean of the last `window` accepted losses (once `min_history` of
    them exist; spike_z None is off). The accepted losses live in a ring buffer on the device.
    """

    REASONS = {1: "non-finite loss", 2: "non-finite gradient norm", 3: "loss spike"}

    def __init__(self, spike_z: float | None = 6.0, device: torch.device | str = "cpu", window: int = 100,
                 min_history: int = 20):
        self.spike_z, self.window, self.min_history = spike_z, window, min_history
        self.buffer = torch.zeros(window, dtype=torch.float64, device=device)
        self.count = torch.zeros((), dtype=torch.long, device=device)  # accepted losses so far

    def check(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(code: 0 safe, else the reason; z-score of the loss), both 0-d device tensors."""
        loss = loss.detach().double()
        n = self.count.clamp(max=self.window)
        filled = (torch.arange(self.window, device=self.buffer.device) < n).double()
        mean = (self.buffer * filled).sum() / n.clamp(min=1)
        std = (((self.buffer - mean) ** 2 * filled).sum() / n.clamp(min=1)).sqrt().clamp(min=1e-8)
        z = torch.where(torch.isfinite(loss), (loss - mean) / std, torch.zeros_like(loss))
        spike = (n >= self.min_history) & (z > self.spike_z) if self.spike_z else torch.zeros_like(n, dtype=torch.bool)
        code = torch.where(~torch.isfinite(loss), 1, torch.where(~torch.isfinite(grad_norm.detach()), 2,
                                                                torch.where(spike, 3, 0)))
        return code, z

    def accept(self, loss: torch.Tensor, skip: torch.Tensor) -> None:
        """Add the loss to the history unless its update was skipped."""
        slot = (self.count % self.window).view(1)
        kept = torch.where(skip, self.buffer.index_select(0, slot), loss.detach().double().view(1))
        self.buffer.index_copy_(0, slot, kept)
        self.count += (~skip).long()

    @classmethod
    def reason(cls, code: int, loss: float, norm: float, z: float, history: int) -> str:
        if code == 1:
            return f"non-finite loss ({loss})"
        if code == 2:
            return f"non-finite gradient norm ({norm})"
        return f"loss spike ({loss:.4f}, z = {z:.1f} over the last {history} steps)"

    def history(self) -> list[float]:
        """The accepted losses, oldest first (a host read: for checkpoints)."""
        n, count = min(int(self.count), self.window), int(self.count)
        values = self.buffer.tolist()
        return [values[(count - n + i) % self.window] for i in range(n)]

    def state_dict(self) -> dict:
        return {"history": self.history(), "count": int(self.count)}

    def load_state_dict(self, state: dict) -> None:
        history = list(state.get("history", []))[-self.window:]
        self.buffer.zero_()
        if history:
            self.buffer[: len(history)] = torch.tensor(history, dtype=torch.float64)
        self.count.fill_(len(history))
