"""The training loop: warmup + decay, gradient accumulation, clipping, mixed precision, eval, checkpoints."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Callable

import torch

from ..config import Config
from ..data.loader import BatchStream, Windows
from ..data.shards import read_meta
from ..errors import UserError
from ..eval.hellaswag import encode_examples, evaluate_hellaswag, read_examples
from ..eval.perplexity import evaluate_loss
from ..metrics.devices import device_peak_flops
from ..metrics.flops import flops_per_token
from ..metrics.logger import MetricsLogger, truncate_metrics
from ..metrics.timing import StepTimer, memory_stats
from ..model import GPT
from ..tokenizer import load_tokenizer
from ..runtime import Runtime, resolve_runtime, rng_state, seed_everything, set_rng_state
from . import checkpoint as ckpt
from .guards import UtilizationGuard, check_placement
from .optim import build_optimizer, set_lr
from .schedule import lr_at


def forward_backward(model, next_batch: Callable, micro_steps: int, runtime: Runtime, scaler=None,
                     timer: StepTimer | None = None) -> torch.Tensor:
    """Accumulate gradients over micro_steps micro-batches, each loss scaled by 1/micro_steps, so that the
    gradient equals that of one batch holding them all. Returns the mean loss (detached)."""
    timer = timer or StepTimer(torch.device("cpu"))
    total = torch.zeros((), device=runtime.device)
    for _ in range(micro_steps):
        with timer.host("data"):
            x, y = next_batch()
        with timer.phase("forward"), runtime.autocast():
            loss = model(x, y)[1]  # do not hold the logits: they are the largest activation
        with timer.phase("backward"):
            scaled = loss / micro_steps
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        total += loss.detach()
    return total / micro_steps


def check_data_fits(cfg: Config, meta: dict) -> None:
    n_vocab = meta.get("tokenizer", {}).get("n_vocab", 0)
    if n_vocab > cfg.model.vocab_size:
        raise UserError(
            f"the data's tokenizer has {n_vocab} tokens but model.vocab_size is {cfg.model.vocab_size}; "
            f"set model.vocab_size to at least {n_vocab} (50304 for GPT-2)"
        )


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


class Trainer:
    def __init__(self, cfg: Config, run_dir: str | os.PathLike, resume: bool = False, init_from: str | None = None,
                 echo: Callable = print):
        self.cfg, self.run_dir, self.echo = cfg, Path(run_dir), echo
        if not cfg.data.dir:
            raise UserError("no training data: pass --data DATA_DIR (a folder written by `gpt2lab prepare`)")
        existing = ckpt.latest_checkpoint(self.run_dir)
        if existing is not None and not resume:
            raise UserError(f"{self.run_dir} already holds a run (latest {existing.name}); pass --resume to continue it or choose a new --out")
        if resume and existing is None:
            raise UserError(f"--resume: {self.run_dir} holds no complete checkpoint to resume from")
        self.runtime = resolve_runtime(cfg.run.device, cfg.run.precision)
        meta = read_meta(cfg.data.dir)
        check_data_fits(cfg, meta)
        self.accum = cfg.grad_accum_steps()
        self.tokens_per_step = self.accum * cfg.run.micro_batch * cfg.seq_len
        self.train_windows = Windows(cfg.data.dir, "train", cfg.seq_len)
        self.val_windows = Windows(cfg.data.dir, "val", cfg.seq_len) if "val" in meta.get("splits", {}) else None

        seed_everything(cfg.run.seed)
        self.model = GPT(cfg.model).to(self.runtime.device)
        self.optimizer = build_optimizer(self.model, cfg.optim, self.runtime.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.runtime.precision == "fp16" else None
        self.stream = BatchStream(self.train_windows, cfg.run.micro_batch, cfg.run.seed)
        self.step = 0
        self.elapsed = 0.0  # wall seconds of training so far, across resumes
        self._placement_checked = False
        if resume:
            self._restore(existing)
        elif init_from:
            self._init_from(init_from)
        self.hellaswag = self._load_hellaswag()
        self.compiled = torch.compile(self.model) if cfg.run.compile else self.model

        self.flops = flops_per_token(cfg.model, cfg.seq_len)
        device_name = self.runtime.describe()["name"]
        self.peak_flops, self.peak_source = (None, "no MFU on the CPU")
        if self.runtime.device.type == "cuda" or cfg.run.peak_tflops:
            self.peak_flops, self.peak_source = device_peak_flops(device_name, self.runtime.precision, cfg.run.peak_tflops)
        self.timer = StepTimer(self.runtime.device)
        self.utilization = UtilizationGuard(self.runtime.device)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        _write_json(self.run_dir / "config.json", cfg.to_dict())
        _write_json(self.run_dir / "device.json", self.device_report())

    def device_report(self) -> dict:
        return {
            **self.runtime.describe(),
            "compile": self.cfg.run.compile,
            "peak_tflops": self.peak_flops / 1e12 if self.peak_flops else None,
            "peak_source": self.peak_source,
            "parameters": self.model.num_params(),
            "flops_per_token": self.flops.as_dict(),
            "tokens_per_step": self.tokens_per_step,
        }

    def _restore(self, checkpoint: Path) -> None:
        ckpt.load_weights(self.model, checkpoint, self.runtime.device)
        state = ckpt.load_state(checkpoint)
        self.optimizer.load_state_dict(state["optimizer"])
        self.stream.load_state_dict(state["loader"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.step = state["step"]
        self.elapsed = state.get("elapsed", 0.0)
        truncate_metrics(self.run_dir, self.step)
        self.echo(f"resumed from {checkpoint} at step {self.step}")

    def _init_from(self, path: str) -> None:
        source = ckpt.resolve_checkpoint(path)
        source_model = ckpt.load_config(source).model
        if source_model != self.cfg.model:
            raise UserError(f"--init-from {source}: its model settings differ from this run's; drop --preset and model.* overrides")
        ckpt.load_weights(self.model, source, self.runtime.device)
        self.echo(f"initialised from {source}")

    def _load_hellaswag(self):
        run = self.cfg.run
        if not run.hellaswag_every:
            return None
        if not run.hellaswag_path:
            self.echo(f"note: HellaSwag every {run.hellaswag_every} steps is off until run.hellaswag_path names hellaswag_val.jsonl")
            return None
        rows = read_examples(run.hellaswag_path, run.hellaswag_limit)
        return encode_examples(rows, load_tokenizer(self.cfg.data.tokenizer or None))

    def save(self) -> Path:
        state = {
            "optimizer": self.optimizer.state_dict(),
            "loader": self.stream.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rng_state(),
            "elapsed": self.elapsed,
        }
        return ckpt.save_checkpoint(self.run_dir, self.step, self.model, self.cfg, state)

    def evaluate(self) -> dict | None:
        if self.val_windows is None:
            return None
        return evaluate_loss(self.compiled, self.val_windows, self.cfg.run.micro_batch, self.runtime, self.cfg.run.eval_batches)

    def train_step(self) -> dict:
        """One optimizer step; returns its metrics."""
        cfg, timer = self.cfg, self.timer
        t0 = time.perf_counter()
        lr = lr_at(self.step, cfg.optim.lr, cfg.schedule)
        set_lr(self.optimizer, lr)
        device = self.runtime.device

        def next_batch():
            x, y = self.stream.next_batch(device)
            if not self._placement_checked:
                check_placement(self.model, x, device)
                self._placement_checked = True
            return x, y

        loss = forward_backward(self.compiled, next_batch, self.accum, self.runtime, self.scaler, timer)
        with timer.phase("optimizer"):
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            clip = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else math.inf
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        loss_value = loss.item()  # waits for the GPU, so the step time below is real
        dt = time.perf_counter() - t0
        self.step += 1
        record = {
            "step": self.step,
            "tokens": self.step * self.tokens_per_step,
            "loss": loss_value,
            "lr": lr,
            "grad_norm": norm.item(),
            "step_time": dt,
            "tokens_per_sec": self.tokens_per_step / dt,
            "epoch": self.stream.epoch,
            **timer.collect(),
        }
        if self.peak_flops:
            record["mfu"] = record["tokens_per_sec"] * self.flops.training / self.peak_flops
        return record

    def fit(self) -> dict:
        cfg, run = self.cfg, self.cfg.run
        max_steps = cfg.schedule.max_steps
        self.echo(self.runtime.banner() + f", compile {'on' if run.compile else 'off'}")
        self.echo(
            f"model: {self.model.num_params():,} parameters, {self.flops.training / 1e9:.3f} GFLOP/token (fwd+bwd) | "
            f"{self.tokens_per_step:,} tokens/step ({run.micro_batch} x {cfg.seq_len} x {self.accum} accumulation) | "
            f"{len(self.train_windows):,} train windows | MFU peak: {self.peak_source}"
        )
        if self.utilization.note:
            self.echo(f"note: {self.utilization.note}")
        if self.step >= max_steps:
            self.echo(f"nothing to do: the run is at step {self.step} of {max_steps}; raise --max-steps to go on")
        logger = MetricsLogger(self.run_dir, run.tensorboard, run.wandb_project, cfg.to_dict(), self.echo)
        profiler = Profiler(self.run_dir, run.profile_steps, self.runtime.device)
        record, last_val, saved_at = {}, None, None
        start, start_step, elapsed_before = time.perf_counter(), self.step, self.elapsed
        try:
            while self.step < max_steps:
                with profiler:
                    record = self.train_step()
                final = self.step == max_steps
                if (run.eval_every and self.step % run.eval_every == 0) or final:
                    last_val = self.evaluate()
                    if last_val is not None:
                        record.update(val_loss=last_val["loss"], val_perplexity=last_val["perplexity"])
                if self.hellaswag and (self.step % run.hellaswag_every == 0 or final):
                    hs = evaluate_hellaswag(self.compiled, self.hellaswag, self.runtime, cfg.model.block_size)
                    record.update(hellaswag_acc=hs["acc"], hellaswag_acc_norm=hs["acc_norm"])
                evaluated = "val_loss" in record or "hellaswag_acc" in record
                log_now = run.log_every and (self.step % run.log_every == 0 or self.step == 1)
                if log_now:
                    record.update(memory_stats(self.runtime.device))
                    util = self.utilization.sample(self.step)
                    if util is not None:
                        record["gpu_util"] = util
                self.elapsed = elapsed_before + time.perf_counter() - start
                record["elapsed"] = self.elapsed
                if (run.checkpoint_every and self.step % run.checkpoint_every == 0) or final:
                    t = time.perf_counter()
                    saved_at = self.save()
                    record["checkpoint_time"] = time.perf_counter() - t
                logger.log(record)
                if log_now or evaluated:
                    elapsed = time.perf_counter() - start
                    eta = elapsed / (self.step - start_step) * (max_steps - self.step)
                    self.echo(format_record(record, max_steps, eta))
        finally:
            logger.close()
            profiler.close()
        return {"step": self.step, "loss": record.get("loss"), "val": last_val, "checkpoint": str(saved_at) if saved_at else None}


class Profiler:
    """torch.profiler over `steps` training steps, after two warm-up steps; writes RUN_DIR/profile/trace.json
    (open it in chrome://tracing or Perfetto) and summary.txt (the most expensive operators)."""

    def __init__(self, run_dir: Path, steps: int, device: torch.device):
        self.dir, self.steps, self.cuda = run_dir / "profile", steps, device.type == "cuda"
        self.seen, self.prof = 0, None

    def __enter__(self):
        if self.steps and self.seen == 2 and self.prof is None:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if self.cuda:
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self.prof = torch.profiler.profile(activities=activities, record_shapes=True)
            self.prof.__enter__()
        return self

    def __exit__(self, *exc):
        self.seen += 1
        if self.prof is not None and self.seen == 2 + self.steps:
            self.close()
        return False

    def close(self) -> None:
        if self.prof is None:
            return
        self.prof.__exit__(None, None, None)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.prof.export_chrome_trace(str(self.dir / "trace.json"))
        sort = "cuda_time_total" if self.cuda else "cpu_time_total"
        (self.dir / "summary.txt").write_text(self.prof.key_averages().table(sort_by=sort, row_limit=30) + "\n")
        self.prof = None


def format_record(r: dict, max_steps: int, eta_seconds: float | None = None) -> str:
    line = (
        f"step {r['step']:>6}/{max_steps} | loss {r['loss']:.4f} | lr {r['lr']:.2e} | norm {r['grad_norm']:.3f} "
        f"| {r['step_time'] * 1000:,.0f} ms | {r['tokens_per_sec']:,.0f} tok/s"
    )
    if "mfu" in r:
        line += f" | MFU {r['mfu']:.1%}"
    if r.get("step_time"):
        line += f" | data {r.get('data_time', 0) / r['step_time']:.0%}"
    if "peak_mem_gb" in r:
        line += f" | mem {r['peak_mem_gb']:.1f} GB"
    if "val_loss" in r:
        line += f" | val loss {r['val_loss']:.4f} ppl {r['val_perplexity']:.2f}"
    if "hellaswag_acc_norm" in r:
        line += f" | hellaswag {r['hellaswag_acc_norm']:.4f}"
    if eta_seconds is not None and r["step"] < max_steps:
        line += f" | eta {format_duration(eta_seconds)}"
    return line


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"
