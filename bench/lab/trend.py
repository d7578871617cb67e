"""How a contender's token ratio moves with the horizon: per doubling of the horizon's tokens, and what that drift
predicts for runs 100x longer than the longest horizon measured (issue 23 asks for both when the ratio grows).

A least-squares line through (log2 of the horizon's tokens, the worst seed's token ratio) over the horizons where
the contender crossed the target; with two horizons it is the line through them. The seeds' spread at each horizon
is given beside it: a drift per doubling smaller than that spread is not a trend the lab can see."""

from __future__ import annotations

import math

LONGER = 100  # the prediction's reach: runs this many times longer than the longest horizon measured


def line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """The least-squares line of ratio against log2(tokens): (its slope, the change per doubling of the horizon;
    its value at 1 token, log2 = 0)."""
    xs = [math.log2(tokens) for tokens, _ in points]
    ys = [ratio for _, ratio in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return slope, my - slope * mx


def contender_trend(name: str, horizons: dict) -> dict | None:
    """One contender's ratios per horizon and their drift; None where it crossed at fewer than two horizons."""
    per_horizon = {}
    for h, table in horizons.items():
        if not table:
            continue
        row = next((c for c in table["contenders"] if c["name"] == name), None)
        if row is None or row["worst_token_ratio"] is None:
            continue
        ratios = [r["token_ratio"] for r in row["per_seed"] if r.get("token_ratio") is not None]
        per_horizon[h] = {"tokens": table["horizon_tokens"], "worst_token_ratio": row["worst_token_ratio"],
                          "seeds": len(ratios), "seed_spread": round(max(ratios) - min(ratios), 3)}
    if len(per_horizon) < 2:
        return None
    points = sorted((p["tokens"], p["worst_token_ratio"]) for p in per_horizon.values())
    per_doubling, at_one = line(points)
    longest = points[-1][0]
    spreads = [p["seed_spread"] for p in per_horizon.values() if p["seeds"] > 1]
    return {"per_horizon": per_horizon, "per_doubling": round(per_doubling, 4),
            "largest_seed_spread": max(spreads) if spreads else None,
            f"predicted_at_{LONGER}x_longest": {"tokens": longest * LONGER,
                                                "worst_token_ratio": round(at_one + per_doubling * math.log2(longest * LONGER), 3)}}


def trends(horizons: dict) -> dict:
    """Every contender that crossed at two or more horizons (the smoke horizon, plumbing only, left out)."""
    measured = {h: t for h, t in horizons.items() if h != "smoke" and t}
    names = {c["name"] for t in measured.values() for c in t["contenders"]}
    found = {name: contender_trend(name, measured) for name in sorted(names)}
    return {name: t for name, t in found.items() if t is not None}
