"""`gpt2lab selftest`: the first command on a new machine. A few minutes of real work on the chosen device, each
check printed PASS/FAIL (or SKIP, with why), exit 1 on any FAIL:

  device      the device resolves (never a silent CPU fallback) and is described
  precision   a small model trained a few steps in the default precision ends within 5% of an fp32 reference
  resume      a checkpoint, and a resume from it that continues as the uninterrupted run did (bitwise on a CPU)
  eval        val loss of the checkpoint on the same device
  sample      tokens generated from the checkpoint
  export      the checkpoint as a transformers folder (SKIP without transformers)
  speed       tokens/s of gpt2lab's training step and MFU against the device's peak

It needs no data or network: a learnable synthetic token stream is written into a temporary folder.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import UserError

VOCAB, STEPS = 256, 16
MODEL = ["model.n_layer=2", "model.n_head=2", "model.n_embd=64", "model.block_size=64", f"model.vocab_size={VOCAB}"]


@dataclass
class Check:
    name: str
    status: str  # PASS, FAIL or SKIP
    detail: str


def write_synthetic_data(folder: Path) -> Path:
    """A prepared data folder of a repeating pattern with noise: learnable in a few steps."""
    from ..data.shards import META_FILE, shard_name, write_shard

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    splits = {}
    for split, n in (("train", 60_000), ("val", 6_000)):
        tokens = (np.arange(n) * 7 + rng.integers(0, 3, n)) % VOCAB
        write_shard(folder / shard_name(split, 0), tokens)
        splits[split] = {"tokens": n, "documents": 1, "shards": [{"file": shard_name(split, 0), "tokens": n}]}
    meta = {"tokenizer": {"name": "synthetic", "n_vocab": VOCAB, "eot": VOCAB - 1}, "splits": splits}
    (folder / META_FILE).write_text(json.dumps(meta))
    return folder


class SelfTest:
    def __init__(self, device: str, work: Path, echo: Callable = print):
        self.device, self.work, self.echo = device, work, echo
        self.data = write_synthetic_data(work / "data")
        self.checks: list[Check] = []

    def _config(self, *sets: str):
        from ..config import build_config

        base = ["schedule.warmup_steps=2", "run.micro_batch=8", "log.every=none", "eval.every=none", "eval.batches=4",
                "checkpoint.every=none", "optim.lr=3e-3", f"run.device={self.device}", f"data.dir={self.data}",
                "run.compile=off"]
        return build_config(sets=MODEL + base + list(sets))

    def _train(self, name: str, *sets: str, resume: bool = False) -> tuple[dict, dict[int, float]]:
        from ..commands.train import make_trainer
        from ..metrics.logger import read_metrics

        out = self.work / name
        result = make_trainer(self._config(*sets), str(out), resume=resume, echo=lambda *_: None).fit()
        return result, {r["step"]: r["loss"] for r in read_metrics(out) if "loss" in r}

    def run(self, name: str, fn: Callable[[], tuple[str, str]]) -> None:
        try:
            status, detail = fn()
        except UserError as exc:
            status, detail = "FAIL", str(exc)
        except Exception as exc:  # a check's failure is a result, reported with where it happened
            where = traceback.extract_tb(exc.__traceback__)[-1]
            status, detail = "FAIL", f"{type(exc).__name__}: {exc} ({Path(where.filename).name}:{where.lineno})"
        self.checks.append(Check(name, status, detail))
        self.echo(f"{status:4s}  {name:9s} {detail}")

    # --- the checks -----------------------------------------------------------------------------------------

    def device_check(self) -> tuple[str, str]:
        from ..runtime import resolve_runtime

        self.runtime = resolve_runtime(self.device, "auto", "off")
        return "PASS", self.runtime.banner().removeprefix("device: ")

    def precision_check(self) -> tuple[str, str]:
        _, default = self._train("default", f"schedule.max_steps={STEPS}")
        _, fp32 = self._train("fp32", f"schedule.max_steps={STEPS}", "run.precision=fp32")
        first, a, b = default[1], default[STEPS], fp32[STEPS]
        gap = abs(a - b) / b
        ok = gap <= 0.05 and a < first and all(math.isfinite(v) for v in default.values())
        return ("PASS" if ok else "FAIL",
                f"{self.runtime.precision}: loss {first:.3f} -> {a:.4f}; fp32 -> {b:.4f} ({gap:.2%} apart, limit 5%)")

    def resume_check(self) -> tuple[str, str]:
        import shutil

        from ..checkpoint import checkpoint_folder

        half = STEPS // 2
        sets = (f"schedule.max_steps={STEPS}", f"checkpoint.every={half}", "checkpoint.keep_last=none")
        _, whole = self._train("whole", *sets)
        # the same run stopped after its step-8 checkpoint: a copy without the final one, then resumed
        shutil.copytree(self.work / "whole", self.work / "resumed", ignore=shutil.ignore_patterns(".gpt2lab.lock"))
        shutil.rmtree(checkpoint_folder(self.work / "resumed", STEPS))
        result, resumed = self._train("resumed", *sets, resume=True)
        self.checkpoint = result["checkpoint"]
        diffs = [abs(whole[s] - resumed[s]) for s in range(half + 1, STEPS + 1)]
        worst = max(diffs)
        exact = worst == 0.0
        # a GPU may pick kernels whose sums are ordered differently between processes: a tiny difference is allowed there
        ok = exact or (self.runtime.device.type != "cpu" and worst <= 1e-4 * abs(whole[STEPS]))
        how = "bitwise" if exact else f"largest difference {worst:.2e}"
        return "PASS" if ok else "FAIL", f"resumed at step {half}, steps {half + 1}-{STEPS} continue {how}"

    def eval_check(self) -> tuple[str, str]:
        from ..commands.eval import EvalOptions, evaluate

        r = evaluate(self.checkpoint, EvalOptions(data=str(self.data), device=self.device, max_batches=4, quiet=True))
        loss = r["val"]["loss"]
        ok = math.isfinite(loss) and loss < math.log(VOCAB)
        return "PASS" if ok else "FAIL", f"val loss {loss:.4f} on {r['val']['tokens']:,} tokens (chance: {math.log(VOCAB):.2f})"

    def sample_check(self) -> tuple[str, str]:
        import torch

        from ..checkpoint import load_model_from_checkpoint
        from ..model.generate import generate

        model, _, _ = load_model_from_checkpoint(self.checkpoint, self.runtime.device)
        prompt = torch.tensor([[7, 14, 21]], device=self.runtime.device)
        out = generate(model, prompt, 12, temperature=0.8, top_k=20)
        tokens = out[0, 3:].tolist()
        ok = len(tokens) == 12 and all(0 <= t < VOCAB for t in tokens)
        return "PASS" if ok else "FAIL", f"12 tokens on {out.device}: {tokens[:6]}..."

    def export_check(self) -> tuple[str, str]:
        try:
            import transformers  # noqa: F401
        except ImportError:
            return "SKIP", "transformers is not installed (pip install 'gpt2lab[hf]')"
        from ..interop.hf import export_hf

        info = export_hf(self.checkpoint, str(self.work / "export"))
        return "PASS", f"{info['architecture']} written to a transformers folder"

    def speed_check(self) -> tuple[str, str]:
        from .bench import BenchOptions, run_bench

        gpu = self.runtime.device.type == "cuda"
        o = BenchOptions(preset="gpt2-124m" if gpu else "tiny", micro_batch=8 if gpu else 4, seq_len=None if gpu else 64,
                         steps=5 if gpu else 2, rounds=3 if gpu else 2, warmup=2 if gpu else 1, device=self.device,
                         compile="off", contenders=("gpt2lab",))
        r = run_bench(o, echo=lambda *_: None)["results"][0]
        mfu = f"MFU {r['mfu']:.1%} of {r['peak_tflops']:.1f} TFLOP/s ({r['peak_source']})" if r["mfu"] else r["peak_source"]
        ok = r["tokens_per_sec"] > 0
        return "PASS" if ok else "FAIL", f"{o.preset}: {r['tokens_per_sec']:,.0f} tokens/s, {mfu}"


def run_selftest(device: str = "auto", echo: Callable = print) -> int:
    """Run every check; 0 when none failed, 1 otherwise."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpt2lab-selftest-") as folder:
        t = SelfTest(device, Path(folder), echo)
        t.run("device", t.device_check)
        if t.checks[-1].status == "FAIL":
            return 1
        for name, fn in (("precision", t.precision_check), ("resume", t.resume_check)):
            t.run(name, fn)
        if getattr(t, "checkpoint", None):
            for name, fn in (("eval", t.eval_check), ("sample", t.sample_check), ("export", t.export_check)):
                t.run(name, fn)
        t.run("speed", t.speed_check)
    failed = [c.name for c in t.checks if c.status == "FAIL"]
    echo(f"selftest: {len(t.checks) - len(failed)} of {len(t.checks)} checks passed in {time.perf_counter() - start:.0f} s"
         + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0
