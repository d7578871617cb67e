"""PNG plots of a run's metrics.jsonl (matplotlib, imported only here)."""

from __future__ import annotations

from pathlib import Path


def _smooth(values: list[float], span: int) -> list[float]:
    out, acc = [], None
    alpha = 2 / (span + 1)
    for v in values:
        acc = v if acc is None else alpha * v + (1 - alpha) * acc
        out.append(acc)
    return out


def write_plots(records: list[dict], out_dir: Path) -> list[str]:
    """One PNG per metric the run has; returns the file names written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    steps = [r["step"] for r in records]
    evals = [r for r in records if "val_loss" in r]
    written = []

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        written.append(name)

    def simple(key, name, title, ylabel, fmt=None, log=False):
        points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
        if not points:
            return
        fig, ax = plt.subplots(figsize=(7, 3.6))
        ax.plot(*zip(*points), lw=1.2, marker="o" if len(points) < 30 else None)
        ax.set(title=title, xlabel="step", ylabel=ylabel)
        if log:
            ax.set_yscale("log")
        if fmt:
            ax.yaxis.set_major_formatter(fmt)
        ax.grid(alpha=0.3)
        save(fig, name)

    loss = [r["loss"] for r in records if isinstance(r["loss"], float)]
    if loss:
        fig, ax = plt.subplots(figsize=(7, 3.6))
        ax.plot(steps[: len(loss)], loss, lw=0.6, alpha=0.35, color="C0", label="train (per step)")
        ax.plot(steps[: len(loss)], _smooth(loss, max(1, min(25, len(loss) // 10))), lw=1.4, color="C0", label="train (smoothed)")
        if evals:
            ax.plot([r["step"] for r in evals], [r["val_loss"] for r in evals], "o-", color="C1", label="validation")
        ax.set(title="loss", xlabel="step", ylabel="cross-entropy (nats)")
        ax.legend()
        ax.grid(alpha=0.3)
        save(fig, "loss.png")
    from matplotlib.ticker import PercentFormatter

    simple("val_perplexity", "perplexity.png", "validation perplexity", "perplexity", log=True)
    simple("lr", "lr.png", "learning rate", "lr")
    simple("tokens_per_sec", "throughput.png", "throughput", "tokens / s")
    simple("mfu", "mfu.png", "model FLOPs utilisation", "MFU", fmt=PercentFormatter(1.0))
    simple("hellaswag_acc_norm", "hellaswag.png", "HellaSwag acc_norm", "accuracy")
    return written
