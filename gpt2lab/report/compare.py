"""`gpt2lab compare RUN_DIR...`: several runs' validation loss against tokens and against wall time, in one PNG,
and a table of how many tokens and how much time each run needed to reach the first run's final loss.

A run "reaches" a loss where its validation curve first gets to it, interpolated linearly between the two
evaluations around that point (in tokens, and in elapsed seconds). A run that never gets there has no value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..files import absolute, write_error, write_text_atomic
from ..metrics.logger import number, read_metrics


@dataclass
class Curve:
    name: str
    tokens: list[float]
    seconds: list[float]
    loss: list[float]

    @property
    def final(self) -> float:
        return self.loss[-1]


def curve_of(run_dir: str | Path, name: str | None = None) -> Curve:
    """A run's validation curve: (tokens, elapsed seconds, val loss) at each evaluation."""
    run = absolute(run_dir)
    points = [(number(r, "tokens"), number(r, "elapsed"), number(r, "val_loss")) for r in read_metrics(run)]
    points = [p for p in points if all(v is not None and math.isfinite(v) for v in p)]  # a damaged record is no point
    if not points:
        raise UserError(f"{run} has no validation loss (with its tokens and elapsed time) in metrics.jsonl; compare "
                        "needs runs with evaluations")
    tokens, seconds, loss = (list(v) for v in zip(*points))
    return Curve(name or run.name, tokens, seconds, loss)


def reach(xs: list[float], losses: list[float], target: float) -> float | None:
    """The x (tokens or seconds) at which the curve first gets down to target, interpolated; None if never."""
    for i, loss in enumerate(losses):
        if loss <= target:
            if i == 0:
                return xs[0]
            x0, x1, l0 = xs[i - 1], xs[i], losses[i - 1]
            return x0 + (x1 - x0) * (l0 - target) / (l0 - loss) if l0 != loss else x1
    return None


def comparison(curves: list[Curve]) -> list[dict]:
    """Per run: its final loss, and the tokens and seconds it took to reach the first run's final loss, with
    their ratios to the first run's own."""
    base = curves[0]
    target = base.final
    base_tokens, base_seconds = reach(base.tokens, base.loss, target), reach(base.seconds, base.loss, target)
    rows = []
    for c in curves:
        tokens, seconds = reach(c.tokens, c.loss, target), reach(c.seconds, c.loss, target)
        rows.append({"name": c.name, "final_val_loss": c.final, "tokens": c.tokens[-1], "seconds": c.seconds[-1],
                     "tokens_to_baseline_loss": tokens, "seconds_to_baseline_loss": seconds,
                     "token_ratio": tokens / base_tokens if tokens is not None and base_tokens else None,
                     "time_ratio": seconds / base_seconds if seconds is not None and base_seconds else None})
    return rows


def markdown_table(rows: list[dict]) -> str:
    def fmt(value, spec):
        return "never" if value is None else format(value, spec)

    lines = [f"Reference: {rows[0]['name']}, final val loss {rows[0]['final_val_loss']:.4f}.", "",
             "| run | final val loss | tokens | time (s) | tokens to reference loss | time to reference loss (s) "
             "| token ratio | time ratio |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['final_val_loss']:.4f} | {r['tokens']:,.0f} | {r['seconds']:,.0f} | "
                     f"{fmt(r['tokens_to_baseline_loss'], ',.0f')} | {fmt(r['seconds_to_baseline_loss'], ',.0f')} | "
                     f"{fmt(r['token_ratio'], '.2f')} | {fmt(r['time_ratio'], '.2f')} |")
    return "\n".join(lines)


def plot_curves(curves: list[Curve], path: Path, title: str = "validation loss") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_tokens, by_time) = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    for i, c in enumerate(curves):
        style = dict(lw=1.6 if i == 0 else 1.2, marker="o" if len(c.loss) < 25 else None, ms=3)
        by_tokens.plot([t / 1e6 for t in c.tokens], c.loss, label=c.name, **style)
        by_time.plot([s / 60 for s in c.seconds], c.loss, label=c.name, **style)
    target = curves[0].final
    for ax, xlabel in ((by_tokens, "tokens (millions)"), (by_time, "wall time (minutes)")):
        ax.axhline(target, color="gray", lw=0.8, ls="--")
        ax.set(xlabel=xlabel)
        ax.grid(alpha=0.3)
    by_tokens.set(ylabel="val loss (nats)", title=f"{title} against tokens")
    by_time.set(title=f"{title} against wall time")
    by_tokens.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


MIN_POINTS = 5  # validation points below which a token or time ratio is called out as resting on too few


def default_out(run_dirs: list[str]) -> Path:
    """Where compare writes without --out: compare-FIRSTRUN in the current folder."""
    return absolute(f"compare-{absolute(run_dirs[0]).name}")


def compare_runs(run_dirs: list[str], out: str | None = None, names: list[str] | None = None) -> dict:
    if names and len(names) != len(run_dirs):
        raise UserError(f"--names gives {len(names)} labels for {len(run_dirs)} runs; give one per run")
    curves = [curve_of(d, names[i] if names else None) for i, d in enumerate(run_dirs)]
    rows = comparison(curves)
    table = markdown_table(rows)
    thin = [c.name for c in curves if len(c.loss) < MIN_POINTS]
    warnings = [f"{', '.join(thin)} {'has' if len(thin) == 1 else 'have'} fewer than {MIN_POINTS} validation points: "
                "a ratio there rests on a coarse interpolation between them (or on the first evaluation alone); "
                "evaluate more often (eval.every)"] if thin else []
    if warnings:
        table += "\n\n" + "\n".join(f"Note: {w}" for w in warnings)
    folder = absolute(out) if out else default_out(run_dirs)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        plot_curves(curves, folder / "compare.png")
    except OSError as exc:
        raise write_error("the comparison", folder, exc) from None
    write_text_atomic(folder / "compare.md", table + "\n", "the comparison table")
    return {"rows": rows, "table": table, "png": str(folder / "compare.png"), "markdown": str(folder / "compare.md"),
            "warnings": warnings}
