"""`gpt2lab report RUN_DIR`: plots and a lab-notebook Markdown page (report.md) in the run directory."""

from __future__ import annotations

import json
import statistics
from datetime import datetime, timezone
from pathlib import Path

from .. import __version__
from ..errors import UserError
from ..metrics.logger import read_metrics
from .diagnose import diagnose
from .plots import write_plots

MODEL_KEYS = ("n_layer", "n_embd", "n_head", "block_size", "vocab_size", "pos", "norm", "mlp", "bias", "qk_norm",
              "tie_embeddings", "dropout")


def _table(rows: list[tuple[str, object]]) -> str:
    return "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _fmt_time(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def final_metrics(records: list[dict], device: dict) -> list[tuple[str, object]]:
    last = records[-1]
    tail = records[-min(20, len(records)):]
    rows = [
        ("steps", f"{last['step']:,}"),
        ("tokens", f"{last['tokens']:,}"),
        ("training time", _fmt_time(last.get("elapsed", sum(r["step_time"] for r in records)))),
        ("train loss (mean of last steps)", f"{statistics.fmean(r['loss'] for r in tail if isinstance(r['loss'], float)):.4f}"),
    ]
    evals = [r for r in records if "val_loss" in r]
    if evals:
        best = min(evals, key=lambda r: r["val_loss"])
        rows += [("final val loss / perplexity", f"{evals[-1]['val_loss']:.4f} / {evals[-1]['val_perplexity']:.2f}"),
                 ("best val loss", f"{best['val_loss']:.4f} at step {best['step']:,}")]
    hs = [r for r in records if "hellaswag_acc_norm" in r]
    if hs:
        rows.append(("HellaSwag acc_norm (final)", f"{hs[-1]['hellaswag_acc_norm']:.4f}"))
    steady = records[min(10, len(records) - 1):]
    rows.append(("median tokens/s", f"{statistics.median(r['tokens_per_sec'] for r in steady):,.0f}"))
    mfus = [r["mfu"] for r in steady if "mfu" in r]
    rows.append(("median MFU", f"{statistics.median(mfus):.1%}" if mfus else f"n/a ({device.get('peak_source', 'no peak')})"))
    peaks = [r["peak_mem_gb"] for r in records if "peak_mem_gb" in r]
    if peaks:
        rows.append(("peak GPU memory", f"{max(peaks):.2f} GB"))
    timed = [r for r in steady if "forward_time" in r]
    if timed:
        total = sum(r["step_time"] for r in timed)
        shares = ", ".join(f"{p} {sum(r[p + '_time'] for r in timed) / total:.0%}" for p in ("data", "forward", "backward", "optimizer"))
        rows.append(("step time", shares))
    return rows


def write_report(run_dir: str, overlap_check: bool = True) -> dict:
    run = Path(run_dir)
    records = read_metrics(run)
    if not records:
        raise UserError(f"{run} has no metrics.jsonl records; is it a gpt2lab run directory?")
    config, device = _read_json(run / "config.json"), _read_json(run / "device.json")
    overlap = None
    data_dir = config.get("data", {}).get("dir")
    if overlap_check and data_dir and Path(data_dir, "meta.json").is_file():
        from ..data.overlap import val_train_overlap

        try:
            overlap = val_train_overlap(data_dir)
        except UserError:
            overlap = None
    findings = diagnose(records, config, device, overlap)
    plots = write_plots(records, run)

    model = config.get("model", {})
    lines = [
        f"# Run report: {run.resolve().name}",
        "",
        f"Written {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} by gpt2lab {__version__} from `{run}`.",
        "",
        "## Model",
        "",
        _table([(k, model.get(k)) for k in MODEL_KEYS if k in model]
               + [("parameters", f"{device.get('parameters', 0):,}"),
                  ("FLOPs per token (fwd+bwd)", f"{device.get('flops_per_token', {}).get('training', 0) / 1e9:.3f} G")]),
        "",
        "## Training configuration",
        "",
        _table([(f"{s}.{k}", v) for s in ("data", "optim", "schedule") for k, v in config.get(s, {}).items()]
               + [(f"run.{k}", v) for k, v in config.get("run", {}).items()
                  if k in ("micro_batch", "batch_tokens", "seed", "precision", "compile", "eval_every", "checkpoint_every")]),
        "",
        "## Device",
        "",
        _table([(k, device.get(k)) for k in ("device", "name", "capability", "memory_gb", "torch", "cuda", "precision",
                                              "compile", "peak_tflops", "peak_source") if k in device]),
        "",
        "## Final metrics",
        "",
        _table(final_metrics(records, device)),
        "",
        "## Diagnosis",
        "",
    ]
    if findings:
        for f in findings:
            lines += [f"- **{f.title}** (`{f.code}`): {f.evidence}. *Try:* {f.advice}.", ""]
    else:
        lines += ["No problems found by the automatic checks.", ""]
    if overlap:
        lines += [f"Validation overlap check: {overlap['fraction']:.2%} of {overlap['sampled']:,} sampled validation "
                  f"{overlap['ngram']}-token runs found in {overlap['train_tokens_scanned']:,} training tokens.", ""]
    if plots:
        lines += ["## Plots", ""] + [f"![{p[:-4]}]({p})" for p in plots] + [""]
    else:
        lines += ["(No plots: install matplotlib, `pip install 'gpt2lab[report]'`.)", ""]
    (run / "report.md").write_text("\n".join(lines))
    return {"report": str(run / "report.md"), "plots": plots, "findings": [f.code for f in findings]}
