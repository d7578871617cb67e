"""Metrics: the metrics.jsonl logger (FLOPs, MFU and the device table arrive with later issues)."""

from .logger import MetricsLogger, read_metrics, truncate_metrics

__all__ = ["MetricsLogger", "read_metrics", "truncate_metrics"]
