"""One optimizer step, without making the host wait for the device.

A step accumulates gradients over micro-batches, clips them, decides on the device whether the update is
safe (guards.LossGuard) and lets the optimizer skip it on the device (found_inf), then packs what the log
needs (loss, gradient norm, the guard's verdict, the stop flag) into one small device tensor. That tensor is
read on the host one step later, when the device has long finished it: one host read per step, of the step
before, so the CPU queues step k+1 while the GPU still runs step k. Under DDP/FSDP the loss and the stop flag
are averaged on the device, so every rank takes the same decisions from the same numbers.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..metrics.timing import StepTimer, Timing
from ..runtime import Runtime
from .guards import LossGuard



def forward_backward(model, next_batch: Callable, micro_steps: int, runtime: Runtime, scaler=None,
                     timer: StepTimer | None = None, grad_sync: Callable | None = None, **forward) -> torch.Tensor:
    """Accumulate gradients over micro_steps micro-batches, each loss scaled by 1/micro_steps, so that the
    gradient equals that of one batch holding them all. Returns the mean loss (detached, on the device).

    grad_sync(last) gives the context for a micro-step's backward: across processes, gradients are reduced
    only on the last one. `forward` goes to the model (loss_chunk, recompute)."""
    timer = timer or StepTimer(torch.device("cpu"))
    total = torch.zeros((), device=runtime.device)
    for i in range(micro_steps):
        with timer.host("data"):
            x, y, *doc_ids = next_batch()  # (x, y) or (x, y, document ids)
        sync = grad_sync(i == micro_steps - 1) if grad_sync else contextlib.nullcontext()
        with sync:
            with timer.phase("forward"), runtime.autocast():
                loss = model(x, y, doc_ids=doc_ids[0] if doc_ids else None, **forward)[1]  # logits are not held
            with timer.phase("backward"):
                scaled = loss / micro_steps
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
        total += loss.detach()
    return total / micro_steps


def apply_update(optimizer: torch.optim.Optimizer, skip: torch.Tensor, scaler=None) -> None:
    """optimizer.step() unless `skip` (a device bool); on the device where the optimizer can (fused AdamW,
    Muon), else after one host read. With fp16 the scaler adapts its scale to overflows as usual."""
    if getattr(optimizer, "skips_on_device", False):
        optimizer.found_inf = skip.float()
        optimizer.step()
        optimizer.found_inf = None
    elif not bool(skip):
        optimizer.step()
    if scaler is not None:
        scaler.update()  # it saw the overflow in unscale_; a skip for a spike leaves its scale alone


@dataclass
class Pending:
    """A finished step whose device values have not been read yet."""

    record: dict  # what the host knew at once: step, tokens, lr, epoch, elapsed
    stats: torch.Tensor  # on the device: loss, gradient norm, guard code, z-score, stop flag, guard history length
    timing: Timing
    started: float = 0.0  # clock at the start of the step
    overhead: float = 0.0  # seconds spent after it on evaluations and saving (not step time)
    extra: dict = field(default_factory=dict)  # added before it is read: evaluations, checkpoint time, ...

    def read(self, fp16: bool, step_seconds: float) -> dict:
        """The full metrics record: the one host read of this step's device values."""
        loss, norm, code, z, stop, history, clock, eval_clock = self.stats.tolist()
        r = {**self.record, "loss": loss, "grad_norm": norm, "step_time": step_seconds, **self.timing.seconds()}
        r["agreed_clock"] = (clock, eval_clock)  # the job's clock at the step's start (mean over ranks)
        r["stop_requested"] = stop > 0
        if code:
            r.update(skipped=True, skip_reason=LossGuard.reason(int(code), loss, norm, z, int(history)))
            if fp16 and code == 2 and math.isfinite(loss):
                r["skip_reason"] = "fp16 overflow (the grad scaler lowered its scale)"
        r.update(self.extra)
        return r


def _same(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


@dataclass
class StepParts:
    """What every optimizer step of a run works with, built once: the forward (compiled or not), the optimizer,
    the loss guard, and the settings and collectives of the step."""
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    guard: LossGuard
    runtime: Runtime
    micro_steps: int = 1  # micro-batches accumulated per step
    grad_clip: float | None = None
    scaler: torch.amp.GradScaler | None = None  # fp16 only
    reduce_mean: Callable = _same  # averages a device tensor across ranks (in place); one process: nothing
    full_value: Callable = _same  # a sharded (FSDP) value as the whole; otherwise nothing
    grad_sync: Callable | None = None  # grad_sync(last_micro_step): a context that syncs gradients only at the last
    params: list | None = None  # the parameters to clip (default: the optimizer's)
    forward: dict = field(default_factory=dict)  # passed to the model's forward (loss_chunk, recompute)


def train_step(parts: StepParts, next_batch: Callable, stop_flag: float = 0.0, clock: tuple[float, float] = (0.0, 0.0),
               timer: StepTimer | None = None) -> tuple[torch.Tensor, Timing]:
    """Forward, backward, clip, guard, update: returns (stats on the device, the step's timing), no host read.

    `clock` (seconds trained, seconds of the last evaluation) is averaged across ranks with the loss, so that
    every rank plans a time budget from the same numbers (read one step later, like the loss)."""
    p = parts
    model, optimizer, guard, runtime, scaler = p.model, p.optimizer, p.guard, p.runtime, p.scaler
    timer = timer or StepTimer(runtime.device)
    loss = forward_backward(model, next_batch, p.micro_steps, runtime, scaler, timer, p.grad_sync, **p.forward)
    with timer.phase("optimizer"):
        if scaler is not None:
            scaler.unscale_(optimizer)
        params = p.params if p.params is not None else [q for g in optimizer.param_groups for q in g["params"]]
        norm = p.full_value(torch.nn.utils.clip_grad_norm_(params, p.grad_clip if p.grad_clip else math.inf))
        flag = torch.full((), float(stop_flag), device=loss.device)  # a fill kernel: no host-to-device copy to wait for
        clocks = [torch.full((), float(c), device=loss.device) for c in clock]
        shared = p.reduce_mean(torch.stack([loss.float(), flag, *clocks]))
        loss = shared[0]
        code, z = guard.check(loss, norm)
        skip = code > 0
        apply_update(optimizer, skip, scaler)
        guard.accept(loss, skip)
        optimizer.zero_grad(set_to_none=True)
        history = guard.count.clamp(max=guard.window)
        stats = torch.stack([loss.double(), norm.detach().double(), code.double(), z, shared[1].double(), history.double(),
                             shared[2].double(), shared[3].double()])
    return stats, timer.take()


class Clock:
    """Wall-clock seconds; a test replaces it to simulate a run's timing."""

    def __call__(self) -> float:
        return time.perf_counter()
