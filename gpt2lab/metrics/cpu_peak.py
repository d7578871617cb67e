"""A CPU's peak matmul rate, measured: the denominator of MFU on CPUs, where no datasheet figure applies.

A short probe (about two seconds) multiplies matrices in the precision training uses (fp32, or bf16 where the
CPU has it natively) with torch's own threads, into preallocated outputs, and keeps the best rate of a few
rounds and shapes. The shapes include contractions as narrow as the small models' width (256, 512): on an AMX
CPU those run fastest (about 1.0-1.1 TFLOP/s in bf16 on this project's 2-core VM, against 0.5-0.7 for
2048-deep ones), and a peak that leaves them out overstates MFU by a third (probe version 1 did).
The result is cached per machine (CPU model, threads, torch version, precision, probe version) in
$GPT2LAB_CACHE or ~/.cache/gpt2lab/cpu_peak.json; run.peak_tflops overrides it. MFU against it is labelled
"measured", not taken from a table.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import torch

SHAPES = ((2048, 2048, 2048), (4096, 1024, 4096), (2048, 768, 3072), (8192, 256, 2048), (4096, 512, 4096))
PROBE_VERSION = 2  # part of the cache key: a peak measured by an older probe is measured again


def cache_file() -> Path:
    root = os.environ.get("GPT2LAB_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gpt2lab"
    return Path(root) / "cpu_peak.json"


def probe(dtype: torch.dtype, rounds: int = 3, seconds_per_shape: float = 0.25) -> float:
    """Best sustained FLOP/s of torch.matmul in dtype over SHAPES."""
    best = 0.0
    generator = torch.Generator().manual_seed(0)  # never the global RNG: a probe must not change a run's numbers
    for m, k, n in SHAPES:
        a = torch.randn(m, k, generator=generator).to(dtype)
        b = torch.randn(k, n, generator=generator).to(dtype)
        out = torch.empty(m, n, dtype=dtype)  # the multiply, not the allocator and its page faults
        torch.mm(a, b, out=out)  # warm-up: thread pool, kernel selection
        for _ in range(rounds):
            reps, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds_per_shape / rounds or reps == 0:
                torch.mm(a, b, out=out)
                reps += 1
            best = max(best, 2 * m * k * n * reps / (time.perf_counter() - start))
    return best


def _plausible(value) -> bool:
    """A cached peak worth trusting: a finite, positive number below an exaFLOP/s (JSON admits NaN and
    Infinity, and anyone can edit the file)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1e18


def cpu_peak_flops(precision: str, cpu: str, threads: int | None = None) -> tuple[float, str]:
    """(peak FLOP/s for this precision, where it came from), measured once per machine and cached."""
    threads = threads or torch.get_num_threads()
    key = f"{cpu}|{threads} threads|torch {torch.__version__}|{precision}|probe {PROBE_VERSION}"
    path = cache_file()
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if not isinstance(cache, dict):
        cache = {}
    if not _plausible(cache.get(key)):
        cache[key] = probe(torch.bfloat16 if precision == "bf16" else torch.float32)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # per process: ranks may probe at once
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(cache, indent=1) + "\n")
            os.replace(tmp, path)
        except OSError:  # an unwritable cache only means probing again next time; no partial file stays
            with contextlib.suppress(OSError):
                tmp.unlink()
    return float(cache[key]), f"measured: {precision} matmul probe on this CPU ({threads} threads)"
