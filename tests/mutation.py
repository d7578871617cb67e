"""The project's own mutation check: plausible bugs planted one at a time, and whether the tests notice.

Each mutant replaces one piece of source text (which must occur exactly once) in a copy of the package and runs
the test files that should catch it; the mutant is killed when they fail. The copy lives in a temporary folder,
so the working tree is never touched. Run from the project root:

    python tests/mutation.py                      # every mutant, with transformers as installed
    python tests/mutation.py --no-transformers    # the same with transformers hidden (its tests skip)
    python tests/mutation.py --only rope-direction attention-scale

It prints a line per mutant and the kill rate, and writes the result as JSON with --json FILE.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Mutant:
    name: str
    file: str
    before: str
    after: str
    tests: tuple[str, ...]


M = Mutant
MUTANTS = [
    M("disk-estimate-forgets-thinned-weights", "gpt2lab/training/disk.py",
      'thinned = len(steps) - len(kept) if older == "weights" else 0', "thinned = 0", ("test_disk.py",)),
    M("disk-note-never-said", "gpt2lab/training/disk.py", "    if need <= free:\n", "    if True:\n", ("test_disk.py",)),
    M("cpu-watch-counts-the-neighbours-core", "gpt2lab/training/loop.py",
      "taken = 0.0 if others is None else (others * cores - (cores - used)) / used", "taken = others or 0.0",
      ("test_trainer.py::test_only_the_cores_a_run_may_use_are_watched",)),
    M("plan-precision-always-bf16", "gpt2lab/commands/plan.py",
      'return "bf16" if gpu.bf16 is not None else "fp16"', 'return "bf16"', ("test_plan.py",)),
    M("plan-compile-ignores-run-length", "gpt2lab/commands/plan.py",
      "if tokens < COMPILE_MIN_TOKENS_CUDA:", "if tokens < 0:", ("test_plan.py",)),
    M("cli-broken-pipe-traceback", "gpt2lab/cli.py", "except BrokenPipeError:", "except ZeroDivisionError:",
      ("test_cli.py::test_output_into_a_closed_pipe_ends_quietly",)),
    M("lab-ramp-only-as-the-last-technique", "bench/lab/runs.py", 'if "ramp" in techniques:',
      'if name.endswith("+ramp"):', ("test_quality_lab.py",)),
    M("lab-shorter-schedule-replays", "bench/lab/scoring.py", 'if coarse["resolution"] <= RESOLUTION or not resolve:',
      'if coarse["resolution"] <= RESOLUTION:', ("test_quality_lab.py",)),
    M("lab-shorter-schedule-includes-its-own-horizon", "bench/lab/tables.py", "HORIZONS[h] < HORIZONS[horizon]]",
      "HORIZONS[h] <= HORIZONS[horizon]]", ("test_quality_lab.py",)),
    M("lab-shorter-tuning-ratio-of-its-own-horizon", "bench/lab/tables.py",
      'round(t / HORIZONS[horizon], 3) if t is not None else None}',
      'round(t / HORIZONS[h], 3) if t is not None else None}', ("test_quality_lab.py",)),
    M("lab-planned-shorter-best-seed", "bench/lab/tables.py", "None in ratios else max(exact_token_ratio",
      "None in ratios else min(exact_token_ratio", ("test_quality_lab.py",)),
    M("lab-planned-shorter-one-seed-enough", "bench/lab/tables.py", "len(mine) < len(SEEDS) or None in ratios",
      "len(mine) < 1", ("test_quality_lab.py",)),
    M("lab-planned-for-drawn-in-every-longer-panel", "bench/lab/report.py",
      "next((h for h in with_table if HORIZONS[h] > HORIZONS[g]), None) == horizon",
      "any(HORIZONS[h] > HORIZONS[g] for h in with_table if h == horizon)", ("test_quality_lab.py",)),
    M("lab-shorter-row-without-median-step", "bench/lab/tables.py",
      "row.update(median_step_field(run, cross[\"tokens\"], same), **",
      "row.update(**", ("test_quality_lab.py",)),
    M("lab-thin-replays-a-shorter-plan", "bench/quality_lab.py", "resolve=against == horizon)", "resolve=True)",
      ("test_quality_lab.py",)),
    M("lab-plan-keeps-its-own-target", "bench/lab/tables.py", "against = horizon if horizon not in PLANS_ONLY else",
      "against = horizon if True else", ("test_quality_lab.py",)),
    M("lab-plan-against-the-longest", "bench/lab/tables.py", "HORIZONS[h] > HORIZONS[horizon]), key=HORIZONS.get)",
      "HORIZONS[h] > HORIZONS[horizon]), key=lambda h: -HORIZONS[h])", ("test_quality_lab.py",)),
    M("lab-rebuild-ignores-eval-losses", "bench/lab/rebuild.py", 'for key in ("loss", "val_loss"):',
      'for key in ("loss",):', ("test_quality_lab_rebuild.py",)),
    M("lab-rebuild-any-processor", "bench/lab/rebuild.py", "if processor_of(run) != this_processor():",
      "if False:", ("test_quality_lab_rebuild.py",)),
    M("lab-rebuild-unchecked", "bench/lab/rebuild.py", "    difference = first_difference(run, rebuilt)\n",
      "    difference = None\n", ("test_quality_lab_rebuild.py",)),
    M("lab-rebuild-any-threads", "bench/lab/rebuild.py", "if threads != 1 or threads_of(cpus) != 1:",
      "if threads_of(cpus) != threads:", ("test_quality_lab_rebuild.py",)),
    M("lab-rebuild-checks-as-it-goes", "bench/quality_lab.py", "                    check_rebuildable(run, args.cpus)\n",
      "                    pass\n", ("test_quality_lab_rebuild.py",)),
    M("lab-thin-saves-no-records", "bench/quality_lab.py", "save_run(run, records / run.name)", "pass",
      ("test_quality_lab.py",)),
    M("lab-thin-saves-a-baseline-unscored", "bench/quality_lab.py", "target_of(work, horizon, cpus)\n        if records",
      "pass\n        if records", ("test_quality_lab.py",)),
    M("lab-longer-horizon-forgets-the-recipe", "bench/lab/tables.py", "tables[h] = horizon_table(work, h, cpus, recipe=best)",
      "tables[h] = horizon_table(work, h, cpus)", ("test_quality_lab.py",)),
    M("lab-records-keep-a-replaced-runs-replays", "bench/lab/runs.py", "            shutil.rmtree(stale)\n",
      "            pass\n", ("test_quality_lab.py",)),
    M("lab-trend-predicts-at-the-longest", "bench/lab/trend.py",
      "math.log2(longest * LONGER)", "math.log2(longest)", ("test_quality_lab.py",)),
    M("lab-median-step-is-the-mean", "bench/lab/tables.py",
      "return times[len(times) // 2] if times else None", "return sum(times) / len(times) if times else None",
      ("test_quality_lab.py",)),
    M("lab-median-ratio-for-a-growing-batch", "bench/lab/tables.py",
      'if any(r.get("tokens") != r["step"] * TOKENS_PER_STEP for r in read_metrics(run)):', "if False:",
      ("test_quality_lab.py",)),
    # model
    M("attention-scale", "gpt2lab/model/gpt.py", "q, k, v, attn_mask=mask, is_causal", "q, k, v, scale=1.0 / self.head_dim, attn_mask=mask, is_causal",
      ("test_reference.py", "test_model.py")),
    M("mlp-wrong-norm", "gpt2lab/model/gpt.py", "return x + self.mlp(self.ln_2(x))", "return x + self.mlp(self.ln_1(x))",
      ("test_reference.py",)),
    M("rope-direction", "gpt2lab/model/gpt.py", "rotated = torch.cat([-x2, x1], dim=-1)", "rotated = torch.cat([x2, -x1], dim=-1)",
      ("test_reference.py", "test_model.py")),
    M("mlp-residual-init", "gpt2lab/model/gpt.py",
      "self.c_proj = nn.Linear(config.hidden_dim, config.n_embd, bias=config.bias)\n        self.c_proj.is_residual_projection = True",
      "self.c_proj = nn.Linear(config.hidden_dim, config.n_embd, bias=config.bias)", ("test_reference.py", "test_model.py")),
    M("not-causal", "gpt2lab/model/gpt.py", "is_causal=T > 1 and mask is None", "is_causal=False", ("test_reference.py", "test_model.py")),
    M("untied", "gpt2lab/model/gpt.py", "self.lm_head.weight = self.transformer.wte.weight", "pass", ("test_reference.py", "test_model.py")),
    M("gelu-exact", "gpt2lab/model/gpt.py", 'F.gelu(h, approximate="tanh")', "F.gelu(h)", ("test_reference.py",)),
    M("swiglu-swapped", "gpt2lab/model/gpt.py", "h = F.silu(gate) * up", "h = F.silu(up) * gate", ("test_reference.py",)),
    M("softcap-scale", "gpt2lab/model/gpt.py", "logits = cap * torch.tanh(logits / cap)", "logits = torch.tanh(logits / cap)",
      ("test_reference.py",)),
    M("qknorm-k-skipped", "gpt2lab/model/gpt.py", "k = F.rms_norm(k, (self.head_dim,), self.k_norm.weight.to(k.dtype), self.k_norm.eps)",
      "k = k", ("test_reference.py",)),
    M("chunk-loss-ignored-targets", "gpt2lab/model/loss.py", "grad = (torch.exp(logits - lse[:, None]) - one_hot) * valid[:, None]",
      "grad = torch.exp(logits - lse[:, None]) - one_hot", ("test_bench.py",)),
    M("in-place-loss-ignored-targets", "gpt2lab/model/loss.py", "buf.mul_((valid / sums)[:, None])",
      "buf.div_(sums[:, None])", ("test_bench.py",)),
    M("in-place-loss-one-hot-added", "gpt2lab/model/loss.py", "-valid[:, None])  # minus the one-hot",
      "valid[:, None])  # minus the one-hot", ("test_bench.py",)),
    M("in-place-logits-uncapped", "gpt2lab/model/loss.py", "if keep_tanh else None\n        buf.mul_(cap)",
      "if keep_tanh else None", ("test_bench.py",)),
    M("in-place-loss-inside-compiled-graphs", "gpt2lab/model/loss.py",
      'return h.device.type == "cpu" and not torch.compiler.is_compiling()', 'return h.device.type == "cpu"',
      ("test_host_reads.py",)),
    M("resume-restarts-the-cpu-clock", "gpt2lab/training/state.py",
      'self.cpu_seconds = state.get("cpu_seconds", 0.0)', "self.cpu_seconds = 0.0", ("test_trainer.py",)),
    M("lab-crossing-from-the-wrong-end", "bench/lab/scoring.py", "f = (loss_lo - target) / (loss_lo - loss_hi)",
      "f = (target - loss_hi) / (loss_lo - loss_hi)", ("test_quality_lab.py",)),
    M("lab-replay-bisects-the-wrong-half", "bench/lab/scoring.py",
      "lo, hi = (lo, mid) if score(work, kept[mid][1], cpus) <= target else (mid, hi)",
      "lo, hi = (mid, hi) if score(work, kept[mid][1], cpus) <= target else (lo, mid)", ("test_quality_lab.py",)),
    M("pause-without-a-checkpoint", "gpt2lab/training/loop.py",
      "if t.cfg.run.stop_at_step is not None and t.step >= t.cfg.run.stop_at_step:",
      "if False:", ("test_trainer.py",)),
    M("resume-keeps-the-pause", "gpt2lab/commands/train.py",
      'if resume and base and isinstance(base.get("run"), dict):', "if False:", ("test_trainer.py",)),
    M("thin-drops-the-newest-state", "gpt2lab/commands/thin.py", "for path in full[keep:]:", "for path in full:",
      ("test_thin.py",)),
    M("resume-from-a-thinned-checkpoint", "gpt2lab/training/run_folder.py",
      "candidates = [p for p in complete if ckpt.holds_training_state(p)]", "candidates = complete", ("test_thin.py",)),
    M("thin-deletes-before-the-manifest", "gpt2lab/checkpoint.py",
      'thinned = {**marker, "files": {k: v for k, v in marker["files"].items() if k in keep}, "weights_only": True}',
      'thinned = {**marker, "weights_only": True}', ("test_thin.py",)),
    M("lab-time-ratio-across-processors-unflagged", "bench/lab/tables.py",
      "if base_devices != {processor_of(run)}:", "if False:", ("test_quality_lab.py",)),
    M("lab-cpu-ratio-against-wall-seconds", "bench/lab/tables.py",
      'round(cross["cpu_seconds"] / (sum(cpu) / len(cpu)), 3)',
      'round(cross["cpu_seconds"] / (sum(seconds) / len(seconds)), 3)', ("test_quality_lab.py",)),
    M("lab-time-ratio-across-processors", "bench/lab/tables.py",
      "enumerate(base_runs) if processor_of(r) == processor_of(run)]", "enumerate(base_runs) if r]",
      ("test_quality_lab.py",)),
    M("lab-replay-reached-by-its-cache", "bench/lab/scoring.py",
      "if reached(replay) < step_hi - every:",
      "if step_hi - every not in [s for s, _ in checkpoints(replay)]:", ("test_quality_lab.py",)),
    M("lab-report-saves-unfinished-runs", "bench/lab/runs.py",
      "        if not finished(run, horizon):\n            left_out", "        if False:\n            left_out",
      ("test_quality_lab.py",)),
    M("muon-momentum-warmup-ignored", "gpt2lab/training/optim/muon.py",
      "return start + (self.momentum - start) * step / steps", "return self.momentum", ("test_optim.py",)),
    M("muon-momentum-warmup-not-applied", "gpt2lab/training/trainer.py", "        set_step(self.optimizer, self.step)\n", "",
      ("test_trainer.py::test_the_trainer_ramps_muons_momentum_step_by_step",)),
    M("profile-counts-annotations", "gpt2lab/metrics/profiler.py",
      "and not e.is_user_annotation", "", ("test_gpu_paths.py",)),
    M("auto-batch-peak-kept", "gpt2lab/training/autobatch.py",
      "            torch.cuda.reset_peak_memory_stats(runtime.device)\n", "            pass\n", ("test_gpu_paths.py",)),
    M("cuda-compile-without-triton", "gpt2lab/runtime.py", "else None if triton_installed() else", "else None if True else",
      ("test_runtime.py",)),
    M("lab-restores-unfinished-runs", "bench/lab/runs.py",
      "if target.exists() or not finished(source, horizon):", "if target.exists():", ("test_quality_lab.py",)),
    M("lab-fp32-run-trains-in-bf16", "bench/lab/runs.py",
      'sets.append(f"run.precision={precision}")', "pass", ("test_lab_precision.py",)),
    M("lab-fp32-runs-in-the-table", "bench/lab/tables.py",
      "runs = {s: run_dir(work, name, horizon, s) for s in SEEDS}",
      "runs = {s: run_dir(work, name, horizon, s, p) for p in ('bf16', 'fp32') for s in SEEDS}", ("test_lab_precision.py",)),
    M("lab-fp32-time-ratio-across-processors", "bench/lab/precision.py",
      "same = [r for r in base_fp32 if processor_of(r) == processor_of(run)]", "same = base_fp32",
      ("test_lab_precision.py",)),
    M("muon-bf16-on-every-cpu", "gpt2lab/training/optim/muon.py",
      "return torch.bfloat16 if cpu_bf16_native()[0] else torch.float32", "return torch.bfloat16", ("test_optim.py",)),
    M("peak-cache-trusts-any-number", "gpt2lab/metrics/cpu_peak.py",
      "return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1e18",
      "return isinstance(value, (int, float))", ("test_cpu_peak.py",)),
    M("steal-counts-guest-twice", "gpt2lab/metrics/steal.py", "counts = [int(v) for v in first[1:9]]",
      "counts = [int(v) for v in first[1:11]]", ("test_bench.py",)),
    M("chunk-loss-last-chunk-only", "gpt2lab/model/loss.py", "grad_w += F.linear(grad.t(), hc.t()).float()",
      "grad_w = F.linear(grad.t(), hc.t()).float()", ("test_bench.py",)),
    # generation
    M("top-k-keeps-k-1", "gpt2lab/model/generate.py", "torch.topk(logits, top_k, dim=-1).values[:, -1:]",
      "torch.topk(logits, top_k, dim=-1).values[:, -2:-1]", ("test_generate.py",)),
    M("temperature-multiplies", "gpt2lab/model/generate.py", "logits = logits / temperature", "logits = logits * temperature",
      ("test_generate.py",)),
    M("cache-position", "gpt2lab/model/gpt.py", "start = cache.length if cache is not None else 0", "start = 0",
      ("test_generate.py",)),
    # optimizers, schedule, step, guards
    M("decay-on-gains", "gpt2lab/training/optim/groups.py", '"weight_decay": 0.0 if role == "gain" else cfg.weight_decay',
      '"weight_decay": cfg.weight_decay', ("test_optim.py",)),
    M("muon-scale", "gpt2lab/training/optim/muon.py", "max(1.0, u.size(0) / u.size(1)) ** 0.5", "max(1.0, u.size(0) / u.size(1))",
      ("test_optim.py",)),
    M("muon-ignores-skip", "gpt2lab/training/optim/muon.py", "buf.copy_(new_buf if keep is None else torch.where(keep, buf, new_buf))", "buf.copy_(new_buf)",
      ("test_optim.py",)),
    M("no-clipping", "gpt2lab/training/step.py", "p.grad_clip if p.grad_clip else math.inf", "math.inf", ("test_trainer.py",)),
    M("accumulation-unscaled", "gpt2lab/training/step.py", "scaled = loss / micro_steps", "scaled = loss", ("test_trainer.py",)),
    M("skip-not-applied", "gpt2lab/training/step.py", "optimizer.found_inf = skip.float()", "optimizer.found_inf = None",
      ("test_resilience.py",)),
    M("guard-variance", "gpt2lab/training/guards.py", ".sqrt().clamp(min=1e-8)", ".clamp(min=1e-8)", ("test_guards.py",)),
    M("guard-keeps-skipped", "gpt2lab/training/guards.py", "self.count += (~skip).long()", "self.count += 1", ("test_guards.py",)),
    M("warmup-off-by-one", "gpt2lab/training/schedule.py", "return (step + 1) / warmup", "return step / warmup", ("test_schedule.py",)),
    M("cosine-upside-down", "gpt2lab/training/schedule.py", "0.5 * (1.0 + math.cos(math.pi * progress))",
      "0.5 * (1.0 - math.cos(math.pi * progress))", ("test_schedule.py",)),
    M("wsd-late", "gpt2lab/training/schedule.py", "start = max(warmup, total_steps - math.ceil(schedule.cooldown_fraction * total_steps))",
      "start = max(warmup, total_steps - math.ceil(schedule.cooldown_fraction * total_steps) + 5)", ("test_schedule.py",)),
    M("overlapping-windows-counted-twice", "gpt2lab/data/loader.py", "np.minimum(np.diff(offsets), self.seq_len + 1)",
      "np.full(len(offsets) - 1, self.seq_len + 1)", ("test_loader.py",)),
    # trainer and checkpoints
    M("failed-save-noticed-late", "gpt2lab/training/loop.py", "        t.saver.check()", "        pass",
      ("test_resilience.py",)),
    M("rollback-to-latest", "gpt2lab/training/resume.py", "                step = self.trusted\n",
      "                step = ckpt.step_of(ckpt.latest_checkpoint(self.run_dir))\n", ("test_resilience.py",)),
    M("mfu-not-per-gpu", "gpt2lab/training/trainer.py", 'r["tokens_per_sec"] / self.dist.world_size * self.flops.training',
      'r["tokens_per_sec"] * self.flops.training', ("test_gpu_paths.py",)),
    M("resume-keeps-stale-metrics", "gpt2lab/training/resume.py", "                truncate_metrics(self.run_dir, self.step)\n            self.echo(f\"resumed",
      "                pass\n            self.echo(f\"resumed", ("test_trainer.py",)),
    M("retention-one-too-many", "gpt2lab/checkpoint.py", "newest[:keep_last]", "newest[: keep_last + 1]", ("test_checkpoint.py",)),
    M("marker-not-synced", "gpt2lab/checkpoint.py", "        f.flush()\n        os.fsync(f.fileno())\n    fsync_dir(tmp)",
      "        f.flush()\n    fsync_dir(tmp)", ("test_checkpoint.py",)),
    M("corrupt-counted-as-kept", "gpt2lab/checkpoint.py", "aside.append(set_aside(path, str(exc)))", "good.append(path)",
      ("test_checkpoint.py",)),
    M("pickle-trusted", "gpt2lab/checkpoint.py", "return torch.load(path, map_location=\"cpu\", weights_only=True)",
      "return torch.load(path, map_location=\"cpu\", weights_only=False)", ("test_checkpoint.py",)),
    # data
    M("eot-after-document", "gpt2lab/data/prepare.py", "arr[0] = tok.eot\n        arr[1:] = ids", "arr[-1] = tok.eot\n        arr[:-1] = ids",
      ("test_prepare.py",)),
    M("val-files-train", "gpt2lab/data/sources.py", 'yield "val", text', "yield None, text", ("test_prepare.py",)),
    M("progress-trusted", "gpt2lab/data/prepare.py", "    for entry in shards:\n        try:", "    for entry in shards[:0]:\n        try:",
      ("test_prepare.py",)),
    M("crlf-translated", "gpt2lab/data/sources.py", 'io.TextIOWrapper(raw, encoding="utf-8", newline="")',
      'io.TextIOWrapper(raw, encoding="utf-8")', ("test_prepare.py",)),
    M("overwrite-deletes-all", "gpt2lab/data/prepare.py", "remove_owned(out, [META_FILE] + sorted(replaced - {META_FILE}))",
      "remove_owned(out, [p.name for p in out.iterdir()])", ("test_prepare.py",)),
    M("windows-overlap", "gpt2lab/data/loader.py", "dtype=np.int64) * seq_len for s in self.shards]",
      "dtype=np.int64) * (seq_len // 2) for s in self.shards]", ("test_loader.py",)),
    M("no-reshuffle", "gpt2lab/data/loader.py", "np.random.default_rng([self.seed, epoch])", "np.random.default_rng([self.seed, 0])",
      ("test_loader.py",)),
    M("ranks-overlap", "gpt2lab/data/loader.py", "first = position + self.rank * self.batch_size", "first = position",
      ("test_loader.py",)),
    # evaluation
    M("acc-norm-not-normalised", "gpt2lab/eval/hellaswag.py", "torch.stack([total, total / count], dim=1)",
      "torch.stack([total, total], dim=1)", ("test_hellaswag.py",)),
    M("ending-mask-off-by-one", "gpt2lab/eval/hellaswag.py", "y[i, len(seq) - 1 - n_end : len(seq) - 1]",
      "y[i, len(seq) - 2 - n_end : len(seq) - 1]", ("test_hellaswag.py",)),
    M("text-windows-overlap", "gpt2lab/eval/perplexity.py", "end = min(first + stride, n_targets)",
      "end = min(first + stride + 1, n_targets)", ("test_perplexity.py",)),
    M("bits-per-character", "gpt2lab/eval/perplexity.py", 'n_bytes = len(text.encode("utf-8"))', "n_bytes = len(text)",
      ("test_perplexity.py",)),
    # numbers and devices
    M("flops-attention-halved", "gpt2lab/metrics/flops.py", "attention_scores=L * 2 * 2 * T * d", "attention_scores=L * 2 * T * d",
      ("test_flops.py",)),
    M("flops-training-2x", "gpt2lab/metrics/flops.py", "return 3 * self.forward", "return 2 * self.forward", ("test_flops.py",)),
    # exact names come first, so row order alone no longer decides (the old row-swap mutant was equivalent); the
    # anchoring of each pattern still does: unanchored, "RTX 4090 Laptop GPU" would read as a desktop 4090
    M("device-pattern-unanchored", "gpt2lab/metrics/devices.py", 'r"RTX 4090\\s*$", 24, 165.2', 'r"RTX 4090", 24, 165.2',
      ("test_devices.py",)),
    M("plan-grads-2-bytes", "gpt2lab/metrics/memory.py", "weights=4 * n_params, gradients=4 * n_params",
      "weights=4 * n_params, gradients=2 * n_params", ("test_plan.py",)),
    M("bf16-emulation-counts", "gpt2lab/runtime.py", "if torch.cuda.is_bf16_supported(including_emulation=False):\n        return \"bf16\"",
      "if torch.cuda.is_bf16_supported():\n        return \"bf16\"", ("test_gpu_paths.py",)),
    # interop
    M("export-conv1d-untransposed", "gpt2lab/interop/hf.py", "return {k: (v.t() if k.endswith(_CONV1D) else v).contiguous()",
      "return {k: v.contiguous()", ("test_interop_hf.py",)),
    M("llama-qk-swapped", "gpt2lab/interop/hf.py", 'q, k, v = sd[f"transformer.h.{i}.attn.c_attn.weight"].chunk(3, dim=0)',
      'k, q, v = sd[f"transformer.h.{i}.attn.c_attn.weight"].chunk(3, dim=0)', ("test_interop_hf.py",)),
    M("ranks-never-compared", "gpt2lab/training/distributed.py", "enumerate(everyone[1:], start=1)",
      "enumerate(everyone[:0], start=1)", ("test_rank_decisions.py",)),
    M("import-ignores-layer-scaling", "gpt2lab/interop/hf.py",
      'getattr(hf, "scale_attn_by_inverse_layer_idx", False)),', "False),", ("test_interop_hf.py",)),
]


def hide_transformers(folder: Path) -> Path:
    """A sitecustomize that makes `import transformers` fail, as on a machine without it."""
    site = folder / "hide"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text("import sys\nsys.modules['transformers'] = None\n")
    return site


def copy_sources(work: Path) -> None:
    """Fresh copies of the package and of bench/'s scripts (the lab's arithmetic is tested too), not its results."""
    for folder in ("gpt2lab", "bench"):
        shutil.rmtree(work / folder, ignore_errors=True)
        shutil.copytree(ROOT / folder, work / folder, ignore=shutil.ignore_patterns("__pycache__", "results"))


def run_mutant(m: Mutant, work: Path, env: dict) -> tuple[bool, float]:
    """(killed, seconds): the mutant applied to a fresh copy of the package (and of bench/), its tests run."""
    copy_sources(work)
    target = work / m.file
    text = target.read_text()
    if text.count(m.before) != 1:
        raise SystemExit(f"mutation: {m.name}: the text to replace occurs {text.count(m.before)} times in {m.file}")
    target.write_text(text.replace(m.before, m.after))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                           *[f"tests/{t}" for t in m.tests]], cwd=work, env=env, capture_output=True, text=True)
    return done.returncode != 0, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-transformers", action="store_true", help="hide transformers (its tests skip)")
    parser.add_argument("--only", nargs="+", help="mutant names")
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    with tempfile.TemporaryDirectory(prefix="gpt2lab-mutation-") as tmp:
        work = Path(tmp)
        shutil.copytree(ROOT / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__", "mutation.py"))
        copy_sources(work)
        paths = [str(work)] + ([str(hide_transformers(work))] if args.no_transformers else [])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "GPT2LAB_SHARED": str(ROOT.parent / "shared"),
               "PYTHONDONTWRITEBYTECODE": "1"}
        check = subprocess.run([sys.executable, "-c", "import gpt2lab, sys; print(gpt2lab.__file__); "
                                "import importlib.util as u; print(u.find_spec('transformers') is None)"],
                               cwd=work, env=env, capture_output=True, text=True)
        origin = check.stdout.split()
        assert origin and origin[0].startswith(str(work)), f"the copy is not the package imported: {check.stdout}{check.stderr}"
        assert origin[1] == str(args.no_transformers), f"transformers is {'not ' if args.no_transformers else ''}hidden"
        unmutated = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "tests/test_reference.py"],
                                   cwd=work, env=env, capture_output=True, text=True)
        assert unmutated.returncode == 0, "the unmutated copy fails its tests:\n" + unmutated.stdout[-2000:]
        results = []
        for m in chosen:
            killed, seconds = run_mutant(m, work, env)
            results.append({"name": m.name, "file": m.file, "killed": killed, "seconds": round(seconds, 1), "tests": m.tests})
            print(f"{'killed ' if killed else 'SURVIVED'} {m.name:32s} {m.file:32s} {seconds:6.1f} s", flush=True)
    killed = sum(r["killed"] for r in results)
    rate = killed / len(results)
    label = "without transformers" if args.no_transformers else "with transformers"
    print(f"{killed} of {len(results)} mutants killed ({rate:.0%}) {label}")
    survivors = [r["name"] for r in results if not r["killed"]]
    if survivors:
        print("survivors: " + ", ".join(survivors))
    if args.json:
        Path(args.json).write_text(json.dumps({"transformers": not args.no_transformers, "killed": killed,
                                               "mutants": len(results), "rate": round(rate, 3), "results": results},
                                              indent=1) + "\n")


if __name__ == "__main__":
    main()
