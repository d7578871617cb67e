"""The table of metric names: what each key of metrics.jsonl is called on the console, in report.md and on
plots, and how it is formatted. Training metrics are listed here; each evaluator declares its own (an
evaluator's file is all a new evaluation needs), and a run directory records its evaluators' metrics in
evaluators.json so that `report` reads them from the run itself."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Metric:
    key: str  # the key in metrics.jsonl
    label: str  # on the console and in report.md
    fmt: str = ".4f"  # format spec of its value
    title: str = ""  # the title of its plot ("" : not plotted on its own)
    better: str = "lower"  # "lower" | "higher"
    log_scale: bool = False

    def format(self, value) -> str:
        return format(value, self.fmt) if isinstance(value, (int, float)) else str(value)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Metric":
        known = {k: d[k] for k in ("key", "label", "fmt", "title", "better", "log_scale") if k in d}
        return cls(**known)


TRAINING = (
    Metric("loss", "loss", ".4f"),
    Metric("lr", "lr", ".2e", "learning rate"),
    Metric("grad_norm", "norm", ".3f"),
    Metric("tokens_per_sec", "tok/s", ",.0f", "throughput", better="higher"),
    Metric("mfu", "MFU", ".1%", "model FLOPs utilisation", better="higher"),
)


def eval_metrics_of(records: list[dict], declared: list[Metric] | None) -> list[Metric]:
    """The evaluation metrics of a run: as its evaluators declared them, or, for a run that did not record
    them, every numeric key that only some steps carry (evaluations are periodic)."""
    if declared:
        return declared
    core = {m.key for m in TRAINING} | {"step", "tokens", "step_time", "epoch", "elapsed", "cpu_seconds",
                                        "checkpoint_time", "mem_gb", "peak_mem_gb", "gpu_util", "data_time", "forward_time",
                                        "backward_time", "optimizer_time", "planned_steps", "compile_time",
                                        "lr_matrix", "lr_embedding", "lr_head", "lr_gain"}
    counts: dict[str, int] = {}
    for r in records:
        for k, v in r.items():
            if k not in core and isinstance(v, (int, float)) and not isinstance(v, bool):
                counts[k] = counts.get(k, 0) + 1
    periodic = [k for k, n in counts.items() if n < len(records)]
    return [Metric(k, k.replace("_", " "), ".4f", k.replace("_", " "), "higher" if "acc" in k else "lower",
                   log_scale="perplexity" in k) for k in periodic]
