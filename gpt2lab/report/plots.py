"""PNG plots of a run's metrics.jsonl (matplotlib, imported only here). The evaluation plots come from the
metric table the run recorded (metrics/names.py): one plot per evaluation metric that has a title."""

from __future__ import annotations

import math
from pathlib import Path

from ..metrics.names import TRAINING, Metric


def _smooth(values: list[float], span: int) -> list[float]:
    out, acc = [], None
    alpha = 2 / (span + 1)
    for v in values:
        acc = v if acc is None else alpha * v + (1 - alpha) * acc
        out.append(acc)
    return out


def _points(records: list[dict], key: str) -> list[tuple[int, float]]:
    return [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)
            and math.isfinite(r[key])]


def write_plots(records: list[dict], out_dir: Path, evaluations: list[Metric] = ()) -> list[str]:
    """One PNG per metric the run has; returns the file names written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import PercentFormatter

    written = []
    changes = [r["step"] for r in records if r.get("schedule_change")]

    def save(fig, ax, name):
        for step in changes:  # where a resumed run changed the LR schedule
            ax.axvline(step, color="C3", lw=0.8, ls="--")
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        written.append(name)

    def simple(metric: Metric, name: str):
        points = _points(records, metric.key)
        if not points:
            return
        fig, ax = plt.subplots(figsize=(7, 3.6))
        ax.plot(*zip(*points), lw=1.2, marker="o" if len(points) < 30 else None)
        ax.set(title=metric.title or metric.label, xlabel="step", ylabel=metric.label)
        if metric.log_scale:
            ax.set_yscale("log")
        if metric.fmt.endswith("%"):
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.grid(alpha=0.3)
        save(fig, ax, name)

    loss = _points(records, "loss")
    if loss:
        steps, values = zip(*loss)
        fig, ax = plt.subplots(figsize=(7, 3.6))
        ax.plot(steps, values, lw=0.6, alpha=0.35, color="C0", label="train (per step)")
        ax.plot(steps, _smooth(list(values), max(1, min(25, len(values) // 10))), lw=1.4, color="C0", label="train (smoothed)")
        val = _points(records, "val_loss")
        if val:
            ax.plot(*zip(*val), "o-", color="C1", label="validation")
        ax.set(title="loss", xlabel="step", ylabel="cross-entropy (nats)")
        ax.legend()
        ax.grid(alpha=0.3)
        save(fig, ax, "loss.png")
    for metric in TRAINING:
        if metric.title:
            simple(metric, f"{metric.key.replace('tokens_per_sec', 'throughput')}.png")
    for metric in evaluations:
        if metric.title and metric.key != "val_loss":
            simple(metric, f"{metric.key.removeprefix('val_')}.png")
    return written
