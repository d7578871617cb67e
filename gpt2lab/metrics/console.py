"""The console line of a logging step."""

from __future__ import annotations

from .names import Metric


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def format_record(r: dict, max_steps: int, eta_seconds: float | None = None, evaluations: tuple[Metric, ...] = (),
                  world_size: int = 1) -> str:
    """One line: step, loss, LR, gradient norm, time, throughput, MFU (per GPU), data share, memory, skips, the
    evaluations this step ran (with their names), ETA."""
    line = (
        f"step {r['step']:>6}/{max_steps} | loss {r['loss']:.4f} | lr {r['lr']:.2e} | norm {r['grad_norm']:.3f} "
        f"| {r['step_time'] * 1000:,.0f} ms | {r['tokens_per_sec']:,.0f} tok/s"
    )
    if "mfu" in r:
        line += f" | MFU {r['mfu']:.1%}" + (" per GPU" if world_size > 1 else "")
    if r.get("step_time"):
        line += f" | data {r.get('data_time', 0) / r['step_time']:.0%}"
    if "peak_mem_gb" in r:
        line += f" | mem {r['peak_mem_gb']:.1f} GB"
    if r.get("skipped"):
        line += f" | SKIPPED: {r['skip_reason']}"
    for metric in evaluations:
        if metric.key in r:
            line += f" | {metric.label} {metric.format(r[metric.key])}"
    if eta_seconds is not None and r["step"] < max_steps:
        line += f" | eta {format_duration(eta_seconds)}"
    return line
