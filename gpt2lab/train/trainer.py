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
from ..metrics.logger import MetricsLogger, truncate_metrics
from ..model import GPT
from ..tokenizer import load_tokenizer
from ..runtime import Runtime, resolve_runtime, rng_state, seed_everything, set_rng_state
from . import checkpoint as ckpt
from .optim import build_optimizer, set_lr
from .schedule import lr_at


def forward_backward(model, next_batch: Callable, micro_steps: int, runtime: Runtime, scaler=None) -> torch.Tensor:
    """Accumulate gradients over micro_steps micro-batches, each loss scaled by 1/micro_steps, so that the
    gradient equals that of one batch holding them all. Returns the mean loss (detached)."""
    total = torch.zeros((), device=runtime.device)
    for _ in range(micro_steps):
        x, y = next_batch()
        with runtime.autocast():
            _, loss = model(x, y)
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
        if resume:
            self._restore(existing)
        elif init_from:
            self._init_from(init_from)
        self.hellaswag = self._load_hellaswag()
        self.compiled = torch.compile(self.model) if cfg.run.compile else self.model

        self.run_dir.mkdir(parents=True, exist_ok=True)
        _write_json(self.run_dir / "config.json", cfg.to_dict())
        _write_json(self.run_dir / "device.json", self.runtime.describe())

    def _restore(self, checkpoint: Path) -> None:
        ckpt.load_weights(self.model, checkpoint, self.runtime.device)
        state = ckpt.load_state(checkpoint)
        self.optimizer.load_state_dict(state["optimizer"])
        self.stream.load_state_dict(state["loader"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.step = state["step"]
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
        }
        return ckpt.save_checkpoint(self.run_dir, self.step, self.model, self.cfg, state)

    def evaluate(self) -> dict | None:
        if self.val_windows is None:
            return None
        return evaluate_loss(self.compiled, self.val_windows, self.cfg.run.micro_batch, self.runtime, self.cfg.run.eval_batches)

    def train_step(self) -> dict:
        """One optimizer step; returns its metrics."""
        cfg = self.cfg
        t0 = time.perf_counter()
        lr = lr_at(self.step, cfg.optim.lr, cfg.schedule)
        set_lr(self.optimizer, lr)
        device = self.runtime.device
        loss = forward_backward(self.compiled, lambda: self.stream.next_batch(device), self.accum, self.runtime, self.scaler)
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
        return {
            "step": self.step,
            "tokens": self.step * self.tokens_per_step,
            "loss": loss_value,
            "lr": lr,
            "grad_norm": norm.item(),
            "step_time": dt,
            "tokens_per_sec": self.tokens_per_step / dt,
            "epoch": self.stream.epoch,
        }

    def fit(self) -> dict:
        cfg, run = self.cfg, self.cfg.run
        max_steps = cfg.schedule.max_steps
        self.echo(self.runtime.banner())
        self.echo(
            f"model: {self.model.num_params():,} parameters | {self.tokens_per_step:,} tokens/step "
            f"({run.micro_batch} x {cfg.seq_len} x {self.accum} accumulation) | {len(self.train_windows):,} train windows"
        )
        if self.step >= max_steps:
            self.echo(f"nothing to do: the run is at step {self.step} of {max_steps}; raise --max-steps to go on")
        logger = MetricsLogger(self.run_dir)
        record, last_val, saved_at = {}, None, None
        try:
            while self.step < max_steps:
                record = self.train_step()
                final = self.step == max_steps
                if (run.eval_every and self.step % run.eval_every == 0) or final:
                    last_val = self.evaluate()
                    if last_val is not None:
                        record.update(val_loss=last_val["loss"], val_perplexity=last_val["perplexity"])
                if self.hellaswag and (self.step % run.hellaswag_every == 0 or final):
                    hs = evaluate_hellaswag(self.compiled, self.hellaswag, self.runtime, cfg.model.block_size)
                    record.update(hellaswag_acc=hs["acc"], hellaswag_acc_norm=hs["acc_norm"])
                logger.log(record)
                evaluated = "val_loss" in record or "hellaswag_acc" in record
                if run.log_every and (self.step % run.log_every == 0 or self.step == 1) or evaluated:
                    self.echo(format_record(record, max_steps))
                if (run.checkpoint_every and self.step % run.checkpoint_every == 0) or final:
                    saved_at = self.save()
        finally:
            logger.close()
        return {"step": self.step, "loss": record.get("loss"), "val": last_val, "checkpoint": str(saved_at) if saved_at else None}


def format_record(r: dict, max_steps: int) -> str:
    line = (
        f"step {r['step']:>6}/{max_steps} | loss {r['loss']:.4f} | lr {r['lr']:.2e} | norm {r['grad_norm']:.3f} "
        f"| {r['step_time'] * 1000:,.0f} ms | {r['tokens_per_sec']:,.0f} tok/s"
    )
    if "val_loss" in r:
        line += f" | val loss {r['val_loss']:.4f} ppl {r['val_perplexity']:.2f}"
    if "hellaswag_acc_norm" in r:
        line += f" | hellaswag {r['hellaswag_acc_norm']:.4f}"
    return line
