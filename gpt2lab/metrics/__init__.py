"""Metrics: FLOPs per token, device peaks (GPU table, CPU probe), the memory model, step timing, the metric
name table, the metrics.jsonl logger, the console line and profiling."""
