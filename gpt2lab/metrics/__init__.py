"""Metrics: FLOPs per token, the GPU peak table, step timing, the metrics.jsonl logger, profiling, benchmarks."""

from .logger import MetricsLogger, read_metrics, truncate_metrics

__all__ = ["MetricsLogger", "read_metrics", "truncate_metrics"]
