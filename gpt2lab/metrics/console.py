"""The console line of a logging step."""

from __future__ import annotations


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def format_record(r: dict, max_steps: int, eta_seconds: float | None = None) -> str:
    line = (
        f"step {r['step']:>6}/{max_steps} | loss {r['loss']:.4f} | lr {r['lr']:.2e} | norm {r['grad_norm']:.3f} "
        f"| {r['step_time'] * 1000:,.0f} ms | {r['tokens_per_sec']:,.0f} tok/s"
    )
    if "mfu" in r:
        line += f" | MFU {r['mfu']:.1%}"
    if r.get("step_time"):
        line += f" | data {r.get('data_time', 0) / r['step_time']:.0%}"
    if "peak_mem_gb" in r:
        line += f" | mem {r['peak_mem_gb']:.1f} GB"
    if r.get("skipped"):
        line += f" | SKIPPED: {r['skip_reason']}"
    if "val_loss" in r:
        line += f" | val loss {r['val_loss']:.4f} ppl {r['val_perplexity']:.2f}"
    if "hellaswag_acc_norm" in r:
        line += f" | hellaswag {r['hellaswag_acc_norm']:.4f}"
    if eta_seconds is not None and r["step"] < max_steps:
        line += f" | eta {format_duration(eta_seconds)}"
    return line
