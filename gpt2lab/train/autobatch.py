"""--auto-batch: the largest micro-batch that fits on the GPU, found by trying.

Candidates divide the sequences per optimizer step, so gradient accumulation keeps the global batch (and so
the training) unchanged. Fitting is assumed monotone (if b fits, smaller fits), so a binary search needs
about log2(candidates) trial steps. The search starts from twice `gpt2lab plan`'s estimate.
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


def trial_step(model, runtime, seq_len: int, vocab: int) -> Callable[[int], bool]:
    """fits(b): one forward and backward of a random batch of b sequences, False on CUDA out-of-memory."""

    def fits(b: int) -> bool:
        x = torch.randint(0, vocab, (b, seq_len), device=runtime.device)
        try:
            with runtime.autocast():
                loss = model(x, x)[1]
            loss.backward()
            return True
        except torch.cuda.OutOfMemoryError:
            return False
        finally:
            model.zero_grad(set_to_none=True)
            if runtime.device.type == "cuda":
                torch.cuda.empty_cache()

    return fits
