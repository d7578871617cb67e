"""Is the CPU peak behind MFU stable? Two probes on a quiet machine, then one beside a busy loop on every core.

    python bench/cpu_peak_stability.py [--save bench/results]

Each probe is gpt2lab.metrics.cpu_peak.measure (repeated until two measurements agree within 10%, checked against
one thread, judged quiet or busy). Expected: the quiet probes within 10% of each other and stable; the busy one
either within 10% of the quiet ones or marked unstable (then it is never cached). The busy loops are processes
this script starts and stops.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from gpt2lab.metrics.cpu_peak import measure
from gpt2lab.runtime import cpu_name


def _spin(seconds: float) -> None:
    end = time.time() + seconds
    while time.time() < end:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", help="write the JSON into this folder")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    out = {"device": cpu_name(), "threads": threads, "cores": os.cpu_count(), "torch": torch.__version__,
           "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "probes": {}}
    for precision, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        quiet = [measure(dtype, threads) for _ in range(2)]
        loops = [mp.Process(target=_spin, args=(120,)) for _ in range(os.cpu_count() or 1)]
        for p in loops:
            p.start()
        try:
            time.sleep(1)
            busy = measure(dtype, threads)
        finally:
            for p in loops:
                p.terminate()
                p.join()
        a, b = quiet[0]["flops"], quiet[1]["flops"]
        out["probes"][precision] = {
            "quiet": quiet, "busy": busy, "quiet_agree": abs(a - b) / max(a, b),
            "busy_vs_quiet": abs(busy["flops"] - max(a, b)) / max(a, b),
            "busy_kept": busy["stable"],
        }
        r = out["probes"][precision]
        print(f"{precision}: quiet {a / 1e12:.3f} and {b / 1e12:.3f} TFLOP/s ({r['quiet_agree']:.1%} apart, stable "
              f"{quiet[0]['stable']}/{quiet[1]['stable']}); busy {busy['flops'] / 1e12:.3f} "
              f"({r['busy_vs_quiet']:.0%} off, {'kept' if busy['stable'] else 'not kept: ' + busy['why']})")
    if args.save:
        folder = Path(args.save)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"cpu_peak_stability_{datetime.now(timezone.utc):%Y%m%d-%H%M%S}.json"
        path.write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
