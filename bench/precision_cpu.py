"""bf16 autocast against fp32 on the CPU: the same gpt2-15m run (the quality lab's data, baseline and seed) in both
precisions, and whether their val losses agree within 1% after the same steps.

    python bench/precision_cpu.py [--steps 128] [--cpus 0]

bf16 runs as gpt2lab runs it by default on a CPU with native bf16 (autocast + torch.compile); fp32 is eager, as
`auto` chooses there. Results: bench/results/precision_cpu_<date>.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speedrun_cpu as lab  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--cpus", default="0", help="taskset CPU list ('' for none)")
    parser.add_argument("--work", default=str(lab.ROOT / "runs" / "precision_cpu"))
    args = parser.parse_args()
    work = Path(args.work)
    data = lab.prepare_data(lab.ROOT / "runs" / "speedrun_cpu")
    common = [s for s in lab.COMMON if not s.startswith(("schedule.max_steps", "run.compile", "run.precision",
                                                          "eval.every"))]
    results = {}
    for precision, compile_ in (("bf16", "on"), ("fp32", "off")):
        out = work / precision
        shutil.rmtree(out, ignore_errors=True)
        sets = [f"data.dir={data}", "run.seed=1337", *common, *lab.baseline(1.2e-3), f"schedule.max_steps={args.steps}",
                f"run.precision={precision}", f"run.compile={compile_}", f"eval.every={args.steps}"]
        print(f"[{datetime.now():%H:%M}] {precision}", flush=True)
        if lab.launch(out, sets, args.cpus, 1, work / f"{precision}.log") != 0:
            sys.exit(f"precision_cpu: the {precision} run failed; see {work / f'{precision}.log'}")
        records = lab.read_metrics(out)
        steps = [r for r in records if "loss" in r]
        results[precision] = {"val_loss": records[-1]["val_loss"], "train_loss_last": steps[-1]["loss"],
                              "median_step_time": statistics.median(r["step_time"] for r in steps[2:])}
    gap = abs(results["bf16"]["val_loss"] - results["fp32"]["val_loss"]) / results["fp32"]["val_loss"]
    device = json.loads((work / "bf16" / "device.json").read_text())
    report = {"device": device.get("name"), "threads": 1, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "preset": "gpt2-15m", "steps": args.steps, "tokens": args.steps * 8 * 256, "lr": 1.2e-3,
              "results": results, "relative_gap": round(gap, 5), "within_1_percent": gap < 0.01}
    path = lab.ROOT / "bench" / "results" / f"precision_cpu_{datetime.now(timezone.utc):%Y%m%d}.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
