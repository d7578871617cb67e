"""`gpt2lab bench`: training throughput of gpt2lab and, in the same run, of Hugging Face transformers' model
of the same configuration (GPT2LMHeadModel for classic presets, LlamaForCausalLM / Qwen3ForCausalLM for the
modern ones) with the same settings: sdpa attention, bf16 autocast on CUDA, fused AdamW, torch.compile when
asked. Random tokens: the benchmark measures the model and the step, not the data.

Each implementation: build, one step to compile (timed as compile_s), `warmup` steps, then `steps` timed
steps (synchronised). Written as JSON with the device's name, torch version, date and commit.
"""

from __future__ import annotations

import json
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from ..config import build_config
from ..errors import UserError
from ..model import GPT
from ..runtime import resolve_runtime
from .devices import device_peak_flops
from .flops import flops_per_token

IMPLS = ("gpt2lab", "hf-transformers")


def _hf_model(config):
    from ..interop.hf import hf_architecture, hf_gpt2_config, hf_llama_config
    import transformers

    arch = hf_architecture(config)
    if arch == "gpt2":
        cfg = hf_gpt2_config(config)
        cls = transformers.GPT2LMHeadModel
    else:
        cfg = hf_llama_config(config, arch)
        cls = transformers.Qwen3ForCausalLM if arch == "qwen3" else transformers.LlamaForCausalLM
    cfg._attn_implementation = "sdpa"
    return cls(cfg)


def _loss_fn(impl: str):
    if impl == "gpt2lab":
        return lambda model, x, y: model(x, y)[1]
    return lambda model, x, y: model(input_ids=x, labels=x).loss  # transformers' own loss (it shifts the labels)


def bench_one(impl: str, cfg, runtime, micro_batch: int, steps: int, warmup: int, compile_model: bool,
              loss_chunk: int = 0) -> dict:
    torch.manual_seed(0)
    model = GPT(cfg.model) if impl == "gpt2lab" else _hf_model(cfg.model)
    if impl == "gpt2lab":
        model.loss_chunk = loss_chunk
    model = model.to(runtime.device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=runtime.device.type == "cuda" or None)
    step_model = torch.compile(model) if compile_model else model
    loss_fn = _loss_fn(impl)
    seq = cfg.seq_len
    x = torch.randint(0, 50257, (micro_batch, seq + 1), device=runtime.device)
    inputs, targets = x[:, :-1], x[:, 1:]

    def step():
        with runtime.autocast():
            loss = loss_fn(step_model, inputs, targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    def sync():
        if runtime.device.type == "cuda":
            torch.cuda.synchronize()

    if runtime.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    step().item()
    compile_s = time.perf_counter() - start
    for _ in range(warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    seconds = time.perf_counter() - start
    tokens_per_sec = micro_batch * seq * steps / seconds
    peak, _ = device_peak_flops(runtime.describe()["name"], runtime.precision)
    mfu = tokens_per_sec * flops_per_token(cfg.model, seq).training / peak if peak and runtime.device.type == "cuda" else None
    result = {
        "impl": impl, "micro_batch": micro_batch, "seq_len": seq, "tokens_per_sec": round(tokens_per_sec, 1),
        "mfu": round(mfu, 4) if mfu is not None else None, "step_time_s": round(seconds / steps, 5),
        "compile_s": round(compile_s, 2), "compile": compile_model,
        "peak_mem_gb": round(torch.cuda.max_memory_allocated() / 2**30, 3) if runtime.device.type == "cuda" else None,
    }
    return result


def run_bench(preset: str, micro_batch: int, steps: int = 20, warmup: int = 5, compile_model: bool = False,
              device: str = "auto", impls: tuple[str, ...] = IMPLS, seq_len: int = 0, out_dir: str | None = None,
              loss_chunk: int = 0, echo=print) -> dict:
    unknown = [i for i in impls if i not in IMPLS]
    if unknown:
        raise UserError(f"unknown implementation(s) {', '.join(unknown)}; choose from {', '.join(IMPLS)}")
    sets = [f"data.seq_len={seq_len}"] if seq_len else []
    cfg = build_config(preset=preset, sets=sets)
    runtime = resolve_runtime(device)
    results = []
    for impl in impls:
        r = bench_one(impl, cfg, runtime, micro_batch, steps, warmup, compile_model, loss_chunk)
        if runtime.device.type == "cuda":
            torch.cuda.empty_cache()  # the model of the previous implementation is gone: free its memory
        r["preset"] = preset
        results.append(r)
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        echo(f"{impl:16s} {r['tokens_per_sec']:>12,.0f} tok/s | MFU {mfu} | step {r['step_time_s'] * 1000:.1f} ms | "
             f"compile {r['compile_s']:.1f} s | peak mem {r['peak_mem_gb']} GB")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent).stdout.strip() or None
    report = {
        "device": runtime.describe()["name"], "torch": torch.__version__, "cuda": torch.version.cuda,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": commit,
        "precision": runtime.precision, "steps": steps, "warmup": warmup, "loss_chunk": loss_chunk, "results": results,
    }
    if len(results) == 2:
        report["speedup_vs_hf"] = round(results[0]["tokens_per_sec"] / results[1]["tokens_per_sec"], 3)
    if out_dir:
        path = Path(out_dir)
        path.mkdir(parents=True, exist_ok=True)
        name = f"bench_{preset}_{runtime.describe()['name'].replace(' ', '-')}_{datetime.now(timezone.utc):%Y%m%d-%H%M%S}.json"
        (path / name).write_text(json.dumps(report, indent=2) + "\n")
        report["path"] = str(path / name)
    return report
