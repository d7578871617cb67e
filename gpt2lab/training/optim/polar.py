"""Newton-Schulz coefficients chosen per iteration (the Polar Express idea), instead of one quintic for all.

Muon maps every singular value s of a normalised matrix (s in (0, 1]) towards 1 by repeating an odd polynomial
p(s) = a s + b s^3 + c s^5 (applied to the matrix as a X + (b X X^T + c (X X^T)^2) X). One fixed quintic has
to serve the first iteration, where singular values may be 1e-3, and the last, where they are near 1. Picking
each iteration's polynomial for the interval the singular values are in at that point does better: iteration t
takes the odd quintic with the smallest worst-case error max |1 - p(s)| over [l_t, u_t], and the next interval
is the image of this one, [min p, max p]. Computed here (a few milliseconds, once per step count) by Lawson's
iteratively reweighted least squares on a dense grid, which converges to the minimax polynomial.

Safety: bf16 rounding can put a singular value a little above u_t, so each polynomial is designed on
[l_t, SAFETY * u_t]; the first interval starts at LOWEST (singular values below it converge more slowly, as with
any fixed polynomial).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

LOWEST = 1e-3
SAFETY = 1.01


def minimax_quintic(low: float, high: float, points: int = 500, rounds: int = 150) -> tuple[np.ndarray, float]:
    """(a, b, c) minimising max |1 - (a s + b s^3 + c s^5)| over s in [low, high], and that maximum."""
    s = np.unique(np.concatenate([np.geomspace(low, high, points), np.linspace(low, high, points)]))
    basis = np.stack([s, s**3, s**5], axis=1)
    weights = np.full(len(s), 1.0 / len(s))
    best, best_error = None, np.inf
    for _ in range(rounds):
        root = np.sqrt(weights)[:, None]
        coefficients = np.linalg.lstsq(basis * root, root[:, 0], rcond=None)[0]
        residual = np.abs(1.0 - basis @ coefficients)
        if residual.max() < best_error:
            best, best_error = coefficients, residual.max()
        weights = weights * residual
        weights /= weights.sum()
    return best, float(best_error)


@lru_cache(maxsize=None)
def polar_coefficients(steps: int) -> tuple[tuple[float, float, float], ...]:
    """Each iteration's (a, b, c) for `steps` iterations, starting from singular values in [LOWEST, 1]."""
    low, high, out = LOWEST, 1.0, []
    for _ in range(steps):
        (a, b, c), _ = minimax_quintic(low, SAFETY * high)
        out.append((float(a), float(b), float(c)))
        grid = np.linspace(low, SAFETY * high, 4001)
        image = a * grid + b * grid**3 + c * grid**5
        low, high = float(image.min()), float(image.max())
    return tuple(out)
