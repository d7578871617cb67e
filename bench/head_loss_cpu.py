"""The chunked head loss on a CPU: one exp per logit (what CPU runs use) against two (what GPUs keep), interleaved
rounds in one process, either in the full compiled gpt2lab training step or for the head alone (forward and
backward of the chunked loss at the preset's micro-batch, compiled, bf16 autocast where the CPU has bf16).

    python bench/head_loss_cpu.py [--part step|head] [--preset gpt2-15m] [--micro-batch 8] [--rounds 7] [--save DIR]

Both contenders are gpt2lab's `bench` contender (bf16 autocast + torch.compile where the CPU has bf16); the
second has the CPU form swapped for the GPU's two-exp form before it is compiled. Dynamo guards on the function
it traced, so each compiled step keeps its own form; the script checks that no recompilation happens while timing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpt2lab.commands.bench import Contender  # noqa: E402
from gpt2lab.config import build_config  # noqa: E402
from gpt2lab.metrics.cpu_peak import cpu_peak_flops  # noqa: E402
from gpt2lab.metrics.flops import flops_per_token  # noqa: E402
from gpt2lab.model import loss as loss_module  # noqa: E402
from gpt2lab.runtime import resolve_runtime  # noqa: E402

ONE_EXP = loss_module._chunk_loss_and_grad_one_exp


def two_exp(logits, targets, valid, squashed, dtype):
    loss, lse = loss_module._chunk_loss(logits, targets, valid)
    return loss, loss_module._chunk_grad(logits, lse, targets, valid, squashed, dtype)


class HeadOnly:
    """The head's chunked loss, forward and backward, on random hidden states of the step's shape."""

    def __init__(self, cfg, runtime, micro_batch: int):
        generator = torch.Generator().manual_seed(0)
        d, vocab = cfg.model.n_embd, cfg.model.vocab_size
        self.hidden = torch.randn(micro_batch, cfg.seq_len, d, generator=generator).requires_grad_()
        self.weight = (torch.randn(vocab, d, generator=generator) * 0.02).requires_grad_()
        self.targets = torch.randint(0, vocab, (micro_batch, cfg.seq_len), generator=generator)
        self.runtime, self.tokens, self.chunk = runtime, micro_batch * cfg.seq_len, runtime.loss_chunk

        def head():
            with runtime.autocast():
                loss = loss_module.head_loss(self.hidden, self.weight, self.targets, self.chunk)
            loss.backward()

        self.run = torch.compile(head) if runtime.compile else head

    def warm_up(self, steps: int) -> None:
        for _ in range(steps + 1):
            self.run()

    def timed(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            self.run()
        return self.tokens * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="gpt2-15m")
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--part", choices=("step", "head"), default="step")
    parser.add_argument("--save", help="folder for the JSON result")
    a = parser.parse_args()
    cfg = build_config(preset=a.preset)
    tokens = a.micro_batch * cfg.seq_len
    contenders = {}
    for name, form in (("one-exp (CPU form)", ONE_EXP), ("two-exp (GPU form)", two_exp)):
        loss_module._chunk_loss_and_grad_one_exp = form
        runtime = resolve_runtime("cpu", "auto", "auto", 10**9, None)
        c = Contender("gpt2lab", cfg, runtime, a.micro_batch, runtime.loss_chunk)
        contenders[name] = c if a.part == "step" else HeadOnly(cfg, runtime, a.micro_batch)
        contenders[name].warm_up(2)
    frames = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    rates = {name: [] for name in contenders}
    for _ in range(a.rounds):
        for name, c in contenders.items():
            loss_module._chunk_loss_and_grad_one_exp = ONE_EXP if name.startswith("one") else two_exp
            rates[name].append(c.timed(a.steps))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == frames, "recompiled while timing"
    peak, source = cpu_peak_flops(runtime.precision, runtime.describe()["name"])
    flops = flops_per_token(cfg.model, cfg.seq_len).training
    result = {"device": runtime.describe()["name"], "threads": torch.get_num_threads(), "torch": torch.__version__,
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "preset": a.preset,
              "micro_batch": a.micro_batch, "part": a.part, "precision": runtime.precision, "compile": runtime.compile,
              "peak_tflops": round(peak / 1e12, 3), "peak_source": source, "results": {}}
    for name, values in rates.items():
        median = statistics.median(values)
        mfu = median * flops / peak if a.part == "step" else None
        result["results"][name] = {"tokens_per_sec": round(median, 1), "spread": round((max(values) - min(values)) / median, 4),
                                   "rounds": [round(v, 1) for v in values], "mfu": round(mfu, 4) if mfu else None}
        print(f"{name:20s} {median:8,.0f} tok/s  spread {(max(values) - min(values)) / median:.1%}"
              + (f"  MFU {mfu:.1%}" if mfu else ""))
    ratios = [x / y for x, y in zip(*rates.values())]
    result["ratio_per_round"] = [round(r, 3) for r in ratios]
    result["ratio_median"] = round(statistics.median(ratios), 3)
    print(f"one-exp / two-exp: median {statistics.median(ratios):.3f} (rounds {min(ratios):.3f}-{max(ratios):.3f}) "
          f"on {result['device']}, {result['threads']} threads; peak {peak / 1e12:.2f} TFLOP/s ({source})")
    if a.save:
        path = Path(a.save) / f"head_loss_cpu_{a.part}_{datetime.now(timezone.utc):%Y%m%d}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1) + "\n")
        tmp.replace(path)


if __name__ == "__main__":
    main()
