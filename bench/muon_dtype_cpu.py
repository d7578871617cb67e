"""Muon's optimizer step on a CPU with Newton-Schulz in bf16 against fp32: interleaved rounds in one process, on the
lab's speedrun-cpu model (gpt2-15m shape, every hidden matrix to Muon), one thread by default.

    python bench/muon_dtype_cpu.py [--rounds 5] [--steps 2] [--threads 1] [--save DIR]

Newton-Schulz runs in bf16 where bf16 matmuls are native (AVX512-BF16, AMX, every GPU) and in fp32 elsewhere
(gpt2lab.training.optim.muon.newton_schulz_dtype). This measures what that choice is worth on the machine it runs
on: two copies of the model with the same gradients, one optimizer each, the dtype set in each optimizer's own
per-device choice (Muon.ns_dtypes) before its rounds. It also reports how orthogonal each dtype's result is
(singular values of one orthogonalised gradient).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.speedrun_cpu import MUON, SPEEDRUN_ARCH  # noqa: E402
from gpt2lab.commands.bench import source_version  # noqa: E402
from gpt2lab.config import build_config  # noqa: E402
from gpt2lab.files import write_json_atomic  # noqa: E402
from gpt2lab.model import GPT  # noqa: E402
from gpt2lab.runtime import cpu_bf16_native, cpu_name  # noqa: E402
from gpt2lab.training.optim import build_optimizer  # noqa: E402
from gpt2lab.training.optim.muon import newton_schulz_dtype, orthogonalize  # noqa: E402

CPU = torch.device("cpu")
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--save", help="folder for the JSON result")
    a = parser.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = build_config(preset="gpt2-15m", sets=SPEEDRUN_ARCH + MUON)
    base = GPT(cfg.model)
    grads = {n: torch.randn_like(p) * 1e-3 for n, p in base.named_parameters()}  # one set, the same for both
    contenders = {}
    for name, dtype in DTYPES.items():
        model = copy.deepcopy(base)
        for n, p in model.named_parameters():
            p.grad = grads[n].clone()
        optimizer = build_optimizer(model, cfg.optim, CPU)
        optimizer.ns_dtypes[CPU] = dtype  # the optimizer's own per-device choice, set as the machine would set it
        optimizer.step()  # warm-up: state allocated, first-call costs out of the timing
        contenders[name] = optimizer
    seconds: dict[str, list[float]] = {name: [] for name in DTYPES}
    for _ in range(a.rounds):
        for name, optimizer in contenders.items():
            start = time.perf_counter()
            for _ in range(a.steps):
                optimizer.step()
            seconds[name].append((time.perf_counter() - start) / a.steps)
    assert all(o.orthogonalized for o in contenders.values()), "no matrix was orthogonalised: nothing was measured"
    g = next(grads[n] for n in grads if n.endswith("mlp.c_fc.weight"))
    singular = {name: torch.linalg.svdvals(orthogonalize(g, dtype=dtype).float()) for name, dtype in DTYPES.items()}
    native, units = cpu_bf16_native()
    commit = source_version(ROOT)
    result = {"device": cpu_name(), "bf16_native": native, "bf16_units": units, "threads": a.threads,
              "torch": torch.__version__, "commit": commit, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "model": "gpt2-15m speedrun-cpu (Muon on every hidden matrix)", "steps_per_round": a.steps,
              "gpt2lab_picks": str(newton_schulz_dtype(CPU)).removeprefix("torch."), "results": {}}
    for name, values in seconds.items():
        median = statistics.median(values)
        result["results"][name] = {"optimizer_step_seconds": round(median, 4),
                                   "spread": round((max(values) - min(values)) / median, 4),
                                   "rounds": [round(v, 4) for v in values],
                                   "singular_values_min_max": [round(singular[name].min().item(), 3),
                                                               round(singular[name].max().item(), 3)]}
        print(f"Newton-Schulz in {name}: {median:7.3f} s per optimizer step  spread {(max(values) - min(values)) / median:.1%}"
              f"  singular values {result['results'][name]['singular_values_min_max']}")
    ratios = [b / f for b, f in zip(seconds["bf16"], seconds["fp32"])]
    result["bf16_over_fp32_per_round"] = [round(r, 2) for r in ratios]
    result["bf16_over_fp32_median"] = round(statistics.median(ratios), 2)
    print(f"bf16 / fp32 step time: median {statistics.median(ratios):.2f} (rounds {min(ratios):.2f}-{max(ratios):.2f}) on "
          f"{cpu_name()} ({units}), {a.threads} thread(s); gpt2lab picks {result['gpt2lab_picks']} here")
    if a.save:
        path = Path(a.save) / f"muon_dtype_cpu_{datetime.now(timezone.utc):%Y%m%d-%H%M%S}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, result, "the benchmark result")


if __name__ == "__main__":
    main()
