"""The chunked head loss in an eager CPU step: the in-place form (what eager CPU runs take) against the fusable
form (what GPUs and compiled runs keep), interleaved rounds in one process, in gpt2lab's whole training step
(forward, chunked loss, backward, clipping, AdamW), eager, bf16 autocast where the CPU has bf16. With
`--phase eval`, in an evaluation batch instead (the model's forward to the loss, no gradients: what `gpt2lab eval`
and the in-run evaluations do per batch).

    python bench/head_loss_eager_cpu.py [--phase train|eval] [--preset tiny] [--micro-batch 8] [--rounds 7]
                                        [--steps 3] [--save DIR]

Eager is what a CPU run gets when compile's `auto` says the run is too short to earn the compile back (the
demo, the notebook walk-through, `tiny`, every test); compiled runs fuse the fusable form into one pass anyway.
Both contenders are `gpt2lab bench`'s own contender with compile off; the form is switched with
gpt2lab.model.loss._in_place_chunks before each contender's rounds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpt2lab.commands.bench import Contender, source_version
from gpt2lab.config import build_config
from gpt2lab.files import write_json_atomic
from gpt2lab.model import loss as loss_module
from gpt2lab.runtime import resolve_runtime

IN_PLACE = loss_module._in_place_chunks
FORMS = {"in place (eager CPU form)": IN_PLACE, "fusable (GPU/compiled form)": lambda h: False}


def timed(contender: Contender, steps: int, phase: str) -> float:
    """Tokens per second over `steps` training steps or evaluation batches, the loss read once at the end."""
    start = time.perf_counter()
    for _ in range(steps):
        if phase == "train":
            stats = contender.step()
        else:
            with torch.no_grad(), contender.runtime.autocast():
                stats = contender.model(*contender.batch, loss_chunk=contender.loss_chunk)[1][None]
    float(stats[0])
    return contender.tokens * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase", choices=("train", "eval"), default="train")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--save", help="folder for the JSON result")
    a = parser.parse_args()
    cfg = build_config(preset=a.preset)
    runtime = resolve_runtime("cpu", "auto", "off")
    contenders = {name: Contender("gpt2lab", cfg, runtime, a.micro_batch, runtime.loss_chunk) for name in FORMS}
    for name, c in contenders.items():  # warm-up: first-call costs out of the timing
        loss_module._in_place_chunks = FORMS[name]
        timed(c, 2, a.phase)
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(a.rounds):
        for name, c in contenders.items():
            loss_module._in_place_chunks = FORMS[name]
            rates[name].append(timed(c, a.steps, a.phase))
    loss_module._in_place_chunks = IN_PLACE
    device = runtime.describe()["name"]
    commit = source_version(Path(__file__).resolve().parents[1])
    result = {"device": device, "threads": torch.get_num_threads(), "torch": torch.__version__, "commit": commit,
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "phase": a.phase, "preset": a.preset,
              "micro_batch": a.micro_batch, "seq_len": cfg.seq_len, "vocab": cfg.model.vocab_size,
              "precision": runtime.precision, "compile": runtime.compile, "loss_chunk": runtime.loss_chunk,
              "steps_per_round": a.steps, "results": {}}
    for name, values in rates.items():
        median = statistics.median(values)
        result["results"][name] = {"tokens_per_sec": round(median, 1), "spread": round((max(values) - min(values)) / median, 4),
                                   "rounds": [round(v, 1) for v in values]}
        print(f"{name:28s} {median:8,.0f} tok/s  spread {(max(values) - min(values)) / median:.1%}")
    ratios = [x / y for x, y in zip(*rates.values())]
    result["ratio_per_round"] = [round(r, 3) for r in ratios]
    result["ratio_median"] = round(statistics.median(ratios), 3)
    print(f"in place / fusable: median {statistics.median(ratios):.3f} (rounds {min(ratios):.3f}-{max(ratios):.3f}) "
          f"on {device}, {result['threads']} threads, {a.phase}, {a.preset}, micro-batch {a.micro_batch}, {runtime.precision} eager")
    if a.save:
        phase = "" if a.phase == "train" else "eval_"
        path = Path(a.save) / f"head_loss_eager_cpu_{phase}{a.preset}_{datetime.now(timezone.utc):%Y%m%d-%H%M%S}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, result, "the bench result")


if __name__ == "__main__":
    main()
