"""--auto-batch: the largest micro-batch that fits on the GPU, found by trying, with everything a real step holds.

Candidates divide the sequences per optimizer step, so gradient accumulation keeps the global batch (and so
the training) unchanged. Fitting is assumed monotone (if b fits, smaller fits), so a binary search needs
about log2(candidates) trial steps, starting from twice `gpt2lab plan`'s estimate.

The search runs after the optimizer and the DDP/FSDP wrapper exist, with the optimizer state allocated (a step
skipped on the device creates it and changes nothing) and gradients kept, so a trial holds what training holds.
Only rank 0 searches; every rank takes its answer, so all ranks run the same micro-batch.
"""

from __future__ import annotations

from typing import Callable

import torch


def find_micro_batch(fits: Callable[[int], bool], sequences_per_step: int, upper: int) -> int:
    """The largest b <= upper dividing sequences_per_step with fits(b); 0 if even 1 does not fit."""
    candidates = [b for b in range(1, min(upper, sequences_per_step) + 1) if sequences_per_step % b == 0]
    lo, hi, best = 0, len(candidates) - 1, 0
    while lo <= hi:
        mid = (lo + hi) // 2
        if fits(candidates[mid]):
            best, lo = candidates[mid], mid + 1
        else:
            hi = mid - 1
    return best


def allocate_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Create the optimizer's state without changing a weight: one step that is skipped on the device."""
    if not getattr(optimizer, "skips_on_device", False):
        return
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer.found_inf = torch.ones((), device=params[0].device)
    optimizer.step()
    optimizer.found_inf = None
    optimizer.zero_grad(set_to_none=False)  # gradient buffers stay allocated, as in training


def trial_step(model, runtime, seq_len: int, vocab: int, **forward) -> Callable[[int], bool]:
    """fits(b): one forward and backward of a random batch of b sequences, False on CUDA out-of-memory."""

    def fits(b: int) -> bool:
        x = torch.randint(0, vocab, (b, seq_len), device=runtime.device)
        try:
            with runtime.autocast():
                loss = model(x, x, **forward)[1]
            loss.backward()
            return True
        except torch.cuda.OutOfMemoryError:
            return False
        finally:
            for p in model.parameters():
                if p.grad is not None:
                    p.grad.zero_()
            if runtime.device.type == "cuda":
                torch.cuda.empty_cache()

    return fits


def tune_micro_batch(model, optimizer, runtime, cfg, dist, sequences_per_step: int, upper: int,
                     fits: Callable[[int], bool] | None = None) -> int:
    """Rank 0's largest fitting micro-batch, on every rank."""
    best = 0
    if dist.is_main:
        allocate_optimizer_state(optimizer)
        no_sync = model.no_sync() if hasattr(model, "no_sync") else None
        fits = fits or trial_step(model, runtime, cfg.seq_len, cfg.model.vocab_size, loss_chunk=cfg.run.loss_chunk,
                                  recompute=cfg.run.activation_checkpointing)
        if no_sync is not None:
            with no_sync:  # a trial must not wait for the other ranks' gradients
                best = find_micro_batch(fits, sequences_per_step, upper)
        else:
            best = find_micro_batch(fits, sequences_per_step, upper)
        optimizer.zero_grad(set_to_none=True)
        if runtime.device.type == "cuda":  # the first step's peak memory is training's, not the largest trial's
            torch.cuda.reset_peak_memory_stats(runtime.device)
    return dist.broadcast_int(best, runtime.device)
