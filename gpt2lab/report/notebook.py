"""`gpt2lab report RUN_DIR`: plots and a lab-notebook Markdown page (report.md) in the run directory."""

from __future__ import annotations

import math
import statistics
from datetime import datetime, timezone
from pathlib import Path

from .. import __version__
from ..errors import UserError
from ..files import absolute, write_error, write_text_atomic
from ..formats import BadFile, read_json
from ..formats.json_file import MB
from ..progress import progress_bar
from ..metrics.logger import read_metrics
from ..metrics.names import Metric, eval_metrics_of
from .diagnose import diagnose

MODEL_KEYS = ("n_layer", "n_embd", "n_head", "block_size", "vocab_size", "pos", "norm", "mlp", "bias", "qk_norm",
              "tie_embeddings", "zero_init_proj", "logit_softcap", "dropout")


def _table(rows: list[tuple[str, object]]) -> str:
    return "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def _read_json(path: Path):
    try:
        return read_json(path, max_bytes=MB, max_depth=8)
    except BadFile:  # a report shows what it can read
        return {}


def _fmt_time(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def _finite(records: list[dict], key: str) -> list[float]:
    return [r[key] for r in records if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)
            and math.isfinite(r[key])]


def final_metrics(records: list[dict], device: dict, evaluations: list[Metric]) -> list[tuple[str, object]]:
    last = records[-1]
    tail = records[-min(20, len(records)):]
    losses = _finite(tail, "loss")
    rows = [("steps", f"{last['step']:,}"), ("tokens", f"{last.get('tokens', 0):,}")]
    elapsed = last.get("elapsed") if isinstance(last.get("elapsed"), (int, float)) else sum(_finite(records, "step_time"))
    rows.append(("training time", _fmt_time(elapsed)))
    rows.append(("train loss (mean of last steps)", f"{statistics.fmean(losses):.4f}" if losses else "n/a (not finite)"))
    rows += _evaluation_rows(records, evaluations)
    return rows + _speed_rows(records, device)


def _evaluation_rows(records: list[dict], evaluations: list[Metric]) -> list[tuple[str, object]]:
    rows = []
    for metric in evaluations:
        points = [(r["step"], r[metric.key]) for r in records if _finite([r], metric.key)]
        if points:
            best = (min if metric.better == "lower" else max)(points, key=lambda p: p[1])
            rows.append((f"{metric.label} (final / best)",
                         f"{metric.format(points[-1][1])} / {metric.format(best[1])} at step {best[0]:,}"))
    return rows


def _speed_rows(records: list[dict], device: dict) -> list[tuple[str, object]]:
    rows = []
    steady = records[min(10, len(records) - 1):]
    rates = _finite(steady, "tokens_per_sec")
    rows.append(("median tokens/s", f"{statistics.median(rates):,.0f}" if rates else "n/a"))
    mfus = _finite(steady, "mfu")
    rows.append(("median MFU", f"{statistics.median(mfus):.1%} ({device.get('peak_source', '')})" if mfus
                 else f"n/a ({device.get('peak_source', 'no peak')})"))
    compile_times = _finite(records, "compile_time")
    if compile_times:
        rows.append(("compile time (first step)", f"{compile_times[0]:.1f} s"))
    peaks = _finite(records, "peak_mem_gb")
    if peaks:
        rows.append(("peak GPU memory", f"{max(peaks):.2f} GB"))
    timed = [r for r in steady if all(_finite([r], f"{p}_time") for p in ("data", "forward", "backward", "optimizer"))]
    total = sum(_finite(timed, "step_time"))
    if timed and total > 0:
        shares = ", ".join(f"{p} {sum(r[p + '_time'] for r in timed) / total:.0%}" for p in ("data", "forward", "backward", "optimizer"))
        rows.append(("step time", shares))
    return rows


def _evaluations(run: Path, records: list[dict]) -> list[Metric]:
    """The run's evaluation metrics, as its evaluators recorded them (evaluators.json), else from the records."""
    declared = _read_json(run / "evaluators.json")
    metrics = []
    if isinstance(declared, list):
        for entry in declared:
            for m in entry.get("metrics", []) if isinstance(entry, dict) else []:
                if isinstance(m, dict) and isinstance(m.get("key"), str):
                    metrics.append(Metric.from_dict(m))
    return eval_metrics_of(records, metrics)


def write_report(run_dir: str, overlap_check: bool = True) -> dict:
    run = absolute(run_dir)
    records = read_metrics(run)
    if not records:
        raise UserError(f"{run} has no metrics.jsonl records; is it a gpt2lab run directory?")
    config, device = _read_json(run / "config.json"), _read_json(run / "device.json")
    config, device = (config if isinstance(config, dict) else {}), (device if isinstance(device, dict) else {})
    overlap = _overlap(config) if overlap_check else None
    findings = diagnose(records, config, device, overlap)
    evaluations = _evaluations(run, records)
    plots, plot_note = _plots(records, run, evaluations)
    lines = _page(run, records, config, device, evaluations, findings, overlap, plots, plot_note)
    try:
        write_text_atomic(run / "report.md", "\n".join(lines), "the report")
    except UserError:
        raise
    except OSError as exc:
        raise write_error("the report", run / "report.md", exc) from None
    return {"report": str(run / "report.md"), "plots": plots, "findings": [f.code for f in findings], "plot_note": plot_note}


def _overlap(config: dict) -> dict | None:
    data_dir = (config.get("data") or {}).get("dir") if isinstance(config.get("data"), dict) else None
    if not isinstance(data_dir, str) or not Path(data_dir, "meta.json").is_file():
        return None
    from ..data.overlap import val_train_overlap
    from ..data.shards import read_meta

    try:
        total = min(500_000_000, read_meta(data_dir)["splits"].get("train", {}).get("tokens", 0))
        with progress_bar(total, "overlap scan", "tok", unit_scale=True) as bar:
            return val_train_overlap(data_dir, progress=bar.update)
    except UserError:
        return None


def _plots(records: list[dict], run: Path, evaluations: list[Metric]) -> tuple[list[str], str]:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return [], " (no plots: matplotlib is missing; pip install matplotlib)"
    from .plots import write_plots

    try:
        return write_plots(records, run, evaluations), ""
    except OSError as exc:
        raise write_error("plots in", run, exc) from None


def _page(run, records, config, device, evaluations, findings, overlap, plots, plot_note) -> list[str]:
    model = config.get("model", {}) if isinstance(config.get("model"), dict) else {}
    flops = device.get("flops_per_token", {}) if isinstance(device.get("flops_per_token"), dict) else {}
    sections = ("data", "optim", "schedule", "run", "eval", "checkpoint")
    lines = [
        f"# Run report: {run.name}", "",
        f"Written {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} by gpt2lab {__version__} from `{run}`.", "",
        "## Model", "",
        _table([(k, model.get(k)) for k in MODEL_KEYS if k in model]
               + [("parameters", f"{device.get('parameters', 0):,}"),
                  ("FLOPs per token (fwd+bwd)", f"{(flops.get('training') or 0) / 1e9:.3f} G")]), "",
        "## Training configuration", "",
        _table([(f"{s}.{k}", v) for s in sections if isinstance(config.get(s), dict) for k, v in config[s].items()]), "",
        "## Device", "",
        _table([(k, device.get(k)) for k in ("device", "name", "capability", "memory_gb", "threads", "torch", "cuda",
                                              "precision", "precision_reason", "compile", "peak_tflops", "peak_source")
                if k in device]), "",
        "## Final metrics", "",
        _table(final_metrics(records, device, evaluations)), "",
        "## Diagnosis", "",
    ]
    return lines + _diagnosis_and_plots(findings, overlap, plots, plot_note)


def _diagnosis_and_plots(findings, overlap, plots, plot_note) -> list[str]:
    lines = []
    for f in findings:
        lines += [f"- **{f.title}** (`{f.code}`): {f.evidence}. *Try:* {f.advice}.", ""]
    if not findings:
        lines += ["No problems found by the automatic checks.", ""]
    if overlap:
        lines += [f"Validation overlap check: {overlap['fraction']:.2%} of {overlap['sampled']:,} sampled validation "
                  f"{overlap['ngram']}-token runs found in {overlap['train_tokens_scanned']:,} training tokens.", ""]
    if plots:
        lines += ["## Plots", ""] + [f"![{p[:-4]}]({p})" for p in plots] + [""]
    else:
        lines += [f"(No plots{plot_note}.)", ""]
    return lines
