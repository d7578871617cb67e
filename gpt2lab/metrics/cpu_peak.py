"""A CPU's peak matmul rate, measured: the denominator of MFU on CPUs, where no datasheet figure applies.

A short probe (about two seconds) multiplies matrices in the precision training uses (fp32, or bf16 where the
CPU has it natively; an fp16 run is measured against the fp32 probe) with torch's own threads, into
preallocated outputs, and keeps the best rate of a few rounds and shapes. The shapes include contractions as narrow as the small models' width (256, 512): on an AMX
CPU those run fastest (about 1.0-1.1 TFLOP/s in bf16 on this project's 2-core VM, against 0.5-0.7 for
2048-deep ones), and a peak that leaves them out overstates MFU by a third (probe version 1 did).
A peak that other runs reuse must be stable first: the probe repeats until two consecutive measurements agree
within 10%, is checked against one thread's rate, and is kept only when the machine was quiet (steal and load
low). The result, with its spread and date, is cached per machine (CPU model, threads, torch version, precision,
probe version) in $GPT2LAB_CACHE or ~/.cache/gpt2lab/cpu_peak.json; run.peak_tflops overrides it, `bench
--reprobe` measures afresh. MFU against it is labelled "measured", and "unstable" when it was not kept.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import torch

from ..errors import UserError
from ..files import write_json_atomic
from ..formats import BadFile, read_json
from ..formats.json_file import MB

SHAPES = ((2048, 2048, 2048), (4096, 1024, 4096), (2048, 768, 3072), (8192, 256, 2048), (4096, 512, 4096))
PROBE_VERSION = 3  # part of the cache key: a peak measured by an older probe is measured again (3: stable only)


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


AGREE = 0.10  # consecutive probes must agree this closely before a peak is kept
MAX_TRIES = 5
BUSY_STEAL, BUSY_OTHERS = 0.05, 0.25  # while probing: the hypervisor's share, other processes' share of the CPU
_measured: dict[str, tuple[float, str]] = {}  # this process's measurements: an unstable probe is not repeated


def _plausible(value) -> bool:
    """A cached peak worth trusting: a finite, positive number below an exaFLOP/s (JSON admits NaN and
    Infinity, and anyone can edit the file)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1e18


@contextlib.contextmanager
def _threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def busy_reason(steal: float | None, others: float | None) -> str | None:
    """Why this machine was too busy for a peak worth keeping (the hypervisor or other processes took the CPU
    while the probe ran)."""
    if steal is not None and steal > BUSY_STEAL:
        return f"the hypervisor took {steal:.0%} of the CPU while probing"
    if others is not None and others > BUSY_OTHERS:
        return f"other processes used {others:.0%} of the CPU while probing"
    return None


def measure(dtype: torch.dtype, threads: int) -> dict:
    """Probe until two consecutive measurements agree within AGREE (at most MAX_TRIES), check the rate against one
    thread's (n threads cannot be much more than n times one, nor much slower than one), and judge whether the
    machine was quiet. {"flops", "spread", "tries", "stable", "why"}: stable is what may be cached."""
    from .steal import cpu_ticks, idle_ticks, others_share, steal_share

    ticks, idle, own = cpu_ticks(), idle_ticks(), time.process_time()
    rates: list[float] = []
    with _threads(threads):
        while len(rates) < MAX_TRIES:
            rates.append(probe(dtype))
            if len(rates) >= 2 and abs(rates[-1] - rates[-2]) <= AGREE * max(rates[-2:]):
                break
    agreed = len(rates) >= 2 and abs(rates[-1] - rates[-2]) <= AGREE * max(rates[-2:])
    flops = max(rates[-2:])
    why = None if agreed else f"{len(rates)} probes never agreed within {AGREE:.0%} ({min(rates):.3g}-{max(rates):.3g})"
    if why is None and threads > 1:
        with _threads(1):
            one = probe(dtype)
        if not 0.6 * one <= flops <= 1.25 * threads * one:
            why = f"{threads} threads measured {flops / one:.1f}x one thread"
    why = why or busy_reason(steal_share(ticks, cpu_ticks()), others_share(idle, idle_ticks(), time.process_time() - own))
    spread = (max(rates[-2:]) - min(rates[-2:])) / flops if flops else None
    return {"flops": flops, "spread": round(spread, 4) if spread is not None else None, "tries": len(rates),
            "stable": why is None, "why": why, "date": time.strftime("%Y-%m-%d")}


def cpu_peak_flops(precision: str, cpu: str, threads: int | None = None, fresh: bool = False) -> tuple[float, str]:
    """(peak FLOP/s for this precision, where it came from), measured once per machine and cached when the
    measurement was stable and the machine quiet; `fresh` measures again (bench --reprobe)."""
    threads = threads or torch.get_num_threads()
    probed = "bf16" if precision == "bf16" else "fp32"  # fp16 on a CPU: the fp32 probe, one cache entry for both
    key = f"{cpu}|{threads} threads|torch {torch.__version__}|{probed}|probe {PROBE_VERSION}"
    label = f"measured: {probed} matmul probe on this CPU ({threads} threads)"
    path = cache_file()
    try:
        cache = read_json(path, max_bytes=MB, max_depth=8)
    except BadFile:  # a damaged cache is measured again
        cache = {}
    if not isinstance(cache, dict):
        cache = {}
    entry = cache.get(key)
    if not fresh and isinstance(entry, dict) and _plausible(entry.get("flops")):
        return float(entry["flops"]), label
    if not fresh and key in _measured:
        return _measured[key]
    result = measure(torch.bfloat16 if probed == "bf16" else torch.float32, threads)
    if not result["stable"]:
        _measured[key] = result["flops"], f"{label}; unstable, not kept ({result['why']}): MFU is approximate"
        return _measured[key]
    cache[key] = {k: result[k] for k in ("flops", "spread", "tries", "date")}
    try:  # ranks may probe at once: each writes its own temporary file
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, cache, "the CPU peak cache")
    except (OSError, UserError):  # an unwritable cache only means probing again next time; no partial file stays
        pass
    return result["flops"], label
