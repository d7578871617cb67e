"""CPU time a virtual machine's hypervisor gave to someone else ("steal"), from Linux's /proc/stat.

On a shared cloud VM the same benchmark can run 30-50% slower minutes apart because the host is busy; the
guest sees this only as steal time. `bench` reports the share of CPU time stolen while it timed, so a slow or
noisy result says why. Not Linux, or no steal field: None, never a guess.
"""

from __future__ import annotations

from pathlib import Path

PROC_STAT = Path("/proc/stat")


def cpu_ticks(path: Path = PROC_STAT) -> tuple[int, int] | None:
    """(steal ticks, all ticks) summed over CPUs since boot, or None where the kernel does not say."""
    try:
        first = path.read_text().splitlines()[0].split()
    except (OSError, IndexError, UnicodeDecodeError):
        return None
    if len(first) < 9 or first[0] != "cpu":
        return None
    try:
        # user nice system idle iowait irq softirq steal [guest guest_nice: already counted in user and nice]
        counts = [int(v) for v in first[1:9]]
    except ValueError:
        return None
    return counts[7], sum(counts)


def steal_share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """Fraction of CPU time stolen between two readings of cpu_ticks."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return max(0, after[0] - before[0]) / (after[1] - before[1])


def idle_ticks(path: Path = PROC_STAT, cpus: set[int] | None = None) -> tuple[int, int] | None:
    """(idle + iowait ticks, all ticks) since boot, summed over all CPUs or over the CPUs in `cpus` (the ones a
    pinned process may run on: its cpuN lines), or None where the kernel does not say."""
    try:
        lines = [line.split() for line in path.read_text().splitlines() if line.startswith("cpu")]
    except (OSError, UnicodeDecodeError):
        return None
    wanted = lines[:1] if cpus is None else [f for f in lines if f[0][3:].isdigit() and int(f[0][3:]) in cpus]
    if not wanted:
        return None
    idle = every = 0
    for fields in wanted:
        try:
            counts = [int(v) for v in fields[1:9]]
        except ValueError:
            return None
        if len(counts) != 8:
            return None
        idle, every = idle + counts[3] + counts[4], every + sum(counts)
    return idle, every


def others_share(before: tuple[int, int] | None, after: tuple[int, int] | None, own_cpu_s: float) -> float | None:
    """The share of the machine's CPU time that other processes used between two idle_ticks readings, given the
    CPU seconds this process used meanwhile: what a busy neighbour took from a measurement."""
    import os

    if before is None or after is None or after[1] <= before[1]:
        return None
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total_s = (after[1] - before[1]) / hz
    busy_s = total_s - (after[0] - before[0]) / hz
    return max(0.0, busy_s - own_cpu_s) / total_s
