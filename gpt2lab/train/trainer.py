"""The training loop: warmup + decay, gradient accumulation, clipping, mixed precision, eval, checkpoints,
and the guards that keep a long run from going silently wrong (skipped bad updates, rollback, clean stops)."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Callable

import torch

from ..config import Config
from ..data.loader import BatchStream, Windows, document_ids
from ..data.shards import read_meta
from ..errors import UserError
from ..files import write_json_atomic
from ..eval.hellaswag import encode_examples, evaluate_hellaswag, read_examples
from ..eval.perplexity import evaluate_loss
from ..metrics.console import format_record
from ..metrics.devices import device_peak_flops
from ..metrics.flops import flops_per_token
from ..metrics.logger import MetricsLogger, truncate_metrics
from ..metrics.profiler import Profiler
from ..metrics.timing import StepTimer, memory_stats
from ..model import GPT
from ..runtime import Runtime, resolve_runtime, rng_state, seed_everything, set_rng_state
from ..tokenizer import load_tokenizer
from . import checkpoint as ckpt
from .autobatch import find_micro_batch, trial_step
from .distributed import (full_weights, gradient_sync, init_distributed, load_sharded, local_device, local_value,
                          save_sharded, shutdown, wrap_model)
from .guards import LossGuard, UtilizationGuard, check_placement
from .optim import build_optimizer, set_lr
from .saver import CheckpointSaver
from .schedule import lr_at

MAX_ROLLBACKS = 3


def forward_backward(model, next_batch: Callable, micro_steps: int, runtime: Runtime, scaler=None,
                     timer: StepTimer | None = None, grad_sync: Callable | None = None) -> torch.Tensor:
    """Accumulate gradients over micro_steps micro-batches, each loss scaled by 1/micro_steps, so that the
    gradient equals that of one batch holding them all. Returns the mean loss (detached).

    grad_sync(last) gives the context for a micro-step's backward: across processes, gradients are reduced
    only on the last one."""
    timer = timer or StepTimer(torch.device("cpu"))
    total = torch.zeros((), device=runtime.device)
    for i in range(micro_steps):
        with timer.host("data"):
            x, y, *doc_ids = next_batch()  # (x, y) or (x, y, document ids)
        sync = grad_sync(i == micro_steps - 1) if grad_sync else contextlib.nullcontext()
        with sync:
            with timer.phase("forward"), runtime.autocast():
                loss = model(x, y, doc_ids=doc_ids[0] if doc_ids else None)[1]  # logits are not held: the largest activation
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



class NullLogger:
    """What ranks other than 0 log to: nothing."""

    def log(self, record: dict) -> None:
        pass

    def truncate(self, last_step: int) -> None:
        pass

    def close(self) -> None:
        pass


class Trainer:
    def __init__(self, cfg: Config, run_dir: str | os.PathLike, resume: bool = False, init_from: str | None = None,
                 echo: Callable = print):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        if not cfg.data.dir:
            raise UserError("no training data: pass --data DATA_DIR (a folder written by `gpt2lab prepare`)")
        candidates = ckpt.complete_checkpoints(self.run_dir)
        if candidates and not resume:
            raise UserError(f"{self.run_dir} already holds a run (latest {candidates[0].name}); pass --resume to continue it or choose a new --out")
        if resume and not candidates:
            raise UserError(f"--resume: {self.run_dir} holds no complete checkpoint to resume from")
        self.dist = init_distributed(cfg.run.parallel, cfg.run.device, cfg.run.dist_timeout_s)
        self.echo = echo if self.dist.is_main else (lambda *_: None)
        self.runtime = resolve_runtime(local_device(self.dist, cfg.run.device), cfg.run.precision)
        meta = read_meta(cfg.data.dir)
        check_data_fits(cfg, meta)
        self.eot = meta.get("tokenizer", {}).get("eot")
        windows = dict(seq_len=cfg.seq_len, align_documents=cfg.data.align_documents, eot=self.eot)
        self.train_windows = Windows(cfg.data.dir, "train", **windows)
        self.val_windows = Windows(cfg.data.dir, "val", **windows) if "val" in meta.get("splits", {}) else None
        self.doc_eot = self.eot if cfg.data.document_masking else None

        seed_everything(cfg.run.seed)  # the same initial weights on every rank
        self.model = GPT(cfg.model).to(self.runtime.device)
        self.model.activation_checkpointing = cfg.run.activation_checkpointing
        self.model.loss_chunk = cfg.run.loss_chunk
        if self.dist.world_size > 1:
            torch.manual_seed(cfg.run.seed + 1000 * self.dist.rank)  # but each rank its own dropout
        if cfg.run.auto_batch and not resume:
            self._auto_batch()
        self.accum = cfg.grad_accum_steps(self.dist.world_size)
        self.tokens_per_step = self.accum * cfg.run.micro_batch * cfg.seq_len * self.dist.world_size
        self.wrapped = wrap_model(self.model, self.dist, self.runtime.precision)
        self.optimizer = build_optimizer(self.model, cfg.optim, self.runtime.device)
        self.scaler = torch.amp.GradScaler(self.runtime.device.type) if self.runtime.precision == "fp16" else None
        self.stream = BatchStream(self.train_windows, cfg.run.micro_batch, cfg.run.seed, self.dist.rank,
                                  self.dist.world_size, prefetch=cfg.data.prefetch)
        self.loss_guard = LossGuard(cfg.run.spike_z)
        self.step, self.elapsed, self.lr_scale, self.rollbacks = 0, 0.0, 1.0, 0
        self._placement_checked = False
        if resume:
            self._resume(candidates)
        elif init_from:
            self._init_from(init_from)
        self.hellaswag = self._load_hellaswag()
        self.compiled = torch.compile(self.wrapped) if cfg.run.compile else self.wrapped

        self.flops = flops_per_token(cfg.model, cfg.seq_len)
        self.peak_flops, self.peak_source = (None, "no MFU on the CPU")
        if self.runtime.device.type == "cuda" or cfg.run.peak_tflops:
            name = self.runtime.describe()["name"]
            self.peak_flops, self.peak_source = device_peak_flops(name, self.runtime.precision, cfg.run.peak_tflops)
        self.timer = StepTimer(self.runtime.device)
        self.utilization = UtilizationGuard(self.runtime.device)
        self.saver = CheckpointSaver(self.run_dir, cfg, cfg.run.async_checkpoint, cfg.run.keep_last, cfg.run.keep_every)
        self.stop_signal: str | None = None
        if self.dist.is_main:  # only rank 0 writes
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.run_dir / "config.json", cfg.to_dict())
            write_json_atomic(self.run_dir / "device.json", self.device_report())
        self.dist.barrier()

    # --- set-up -----------------------------------------------------------------------------------------------

    def device_report(self) -> dict:
        return {
            **self.runtime.describe(),
            "compile": self.cfg.run.compile,
            "peak_tflops": self.peak_flops / 1e12 if self.peak_flops else None,
            "peak_source": self.peak_source,
            "parameters": self.model.num_params(),
            "flops_per_token": self.flops.as_dict(),
            "tokens_per_step": self.tokens_per_step,
            "world_size": self.dist.world_size,
            "parallel": self.dist.strategy,
        }

    def _auto_batch(self) -> None:
        run = self.cfg.run
        if self.runtime.device.type != "cuda":
            self.echo(f"note: --auto-batch searches GPU memory; on {self.runtime.device} the micro-batch stays {run.micro_batch}")
            return
        from ..plan import largest_micro_batch

        memory_gb = torch.cuda.get_device_properties(self.runtime.device).total_memory / 2**30
        estimate = largest_micro_batch(self.cfg.model, self.model.num_params(), self.cfg.seq_len, self.runtime.precision,
                                       memory_gb, run.activation_checkpointing)
        total = run.batch_tokens or run.micro_batch * self.cfg.seq_len
        sequences = total // self.cfg.seq_len
        best = find_micro_batch(trial_step(self.model, self.runtime, self.cfg.seq_len, self.cfg.model.vocab_size),
                                sequences, max(1, 2 * estimate))
        if best == 0:
            raise UserError(self._oom_message("even a micro-batch of 1 does not fit"))
        run.batch_tokens, run.micro_batch = total, best
        self.echo(f"auto-batch: micro-batch {best} fits (plan estimated {estimate}); {total // (best * self.cfg.seq_len)} accumulation steps")

    def _restore(self, checkpoint: Path) -> None:
        state = ckpt.load_state(checkpoint)
        try:
            if self.dist.strategy == "fsdp":
                load_sharded(checkpoint, self.model, self.optimizer)  # reshards to this world size
            else:
                ckpt.load_weights(self.model, checkpoint, self.runtime.device)
                if state.get("optimizer") is None:
                    raise UserError("its optimizer state is sharded (an FSDP run); resume with --set run.parallel=fsdp")
                self.optimizer.load_state_dict(state["optimizer"])
            self.stream.load_state_dict(state["loader"])
            if self.scaler is not None and state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
            ranks = state.get("rng_ranks") or [state["rng"]]
            set_rng_state(ranks[self.dist.rank] if self.dist.rank < len(ranks) else ranks[0])
            if self.dist.rank >= len(ranks):  # more ranks than when saved: fresh, distinct dropout streams
                torch.manual_seed(self.cfg.run.seed + 1000 * self.dist.rank + state["step"])
            self.loss_guard.load_state_dict(state.get("loss_guard", {}))
            self.step, self.elapsed = state["step"], state.get("elapsed", 0.0)
            self.lr_scale, self.rollbacks = state.get("lr_scale", 1.0), state.get("rollbacks", 0)
        except (KeyError, ValueError, RuntimeError) as exc:
            raise UserError(f"{checkpoint / ckpt.STATE} does not fit this run ({type(exc).__name__}: {exc})") from None

    def _resume(self, candidates: list[Path]) -> None:
        """The newest checkpoint that loads; an unreadable one is skipped with a warning."""
        for checkpoint in candidates:
            try:
                self._restore(checkpoint)
            except UserError as exc:
                self.echo(f"warning: skipping {checkpoint.name}: {exc}")
                continue
            if self.dist.is_main:
                truncate_metrics(self.run_dir, self.step)
            self.echo(f"resumed from {checkpoint} at step {self.step}")
            return
        raise UserError(f"--resume: none of the {len(candidates)} checkpoints in {self.run_dir} could be loaded")

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

    # --- one step ------------------------------------------------------------------------------------------------

    def _state(self) -> dict:
        rngs = self.dist.gather_objects(rng_state())
        return {
            "optimizer": None if self.dist.strategy == "fsdp" else self.optimizer.state_dict(),  # FSDP: sharded, in dcp/
            "loader": self.stream.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rngs[0],
            "rng_ranks": rngs,
            "loss_guard": self.loss_guard.state_dict(),
            "elapsed": self.elapsed,
            "lr_scale": self.lr_scale,
            "rollbacks": self.rollbacks,
        }

    def save(self) -> float:
        """Save a checkpoint of the current step; returns the seconds training was held up.

        One process (or DDP): rank 0 snapshots and writes in the background. FSDP: every rank writes its
        shards through torch.distributed.checkpoint, rank 0 adds the full weights and the rest, atomically."""
        state = self._state()  # a collective: every rank takes part
        if self.dist.strategy != "fsdp":
            return self.saver.save(self.step, self.model, state) if self.dist.is_main else 0.0
        start = time.perf_counter()
        folder = ckpt.checkpoint_folder(self.run_dir, self.step)
        tmp = ckpt.temporary_folder(folder)
        if self.dist.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.dist.barrier()
        save_sharded(tmp, self.model, self.optimizer)
        weights = full_weights(self.model)
        if self.dist.is_main:
            self.saver.last_saved = ckpt.save_checkpoint(self.run_dir, self.step, weights, self.cfg, state, tmp_prepared=True)
            ckpt.prune_checkpoints(self.run_dir, self.cfg.run.keep_last, self.cfg.run.keep_every)
        self.dist.barrier()
        return time.perf_counter() - start

    def evaluate(self) -> dict | None:
        if self.val_windows is None:
            return None
        return evaluate_loss(self.compiled, self.val_windows, self.cfg.run.micro_batch, self.runtime, self.cfg.run.eval_batches,
                             self.doc_eot, (self.dist.rank, self.dist.world_size), self._reduce)

    def _reduce(self, values: list[float]) -> list[float]:
        return self.dist.sum(values, self.runtime.device)

    def train_step(self) -> dict:
        """One optimizer step (or a skipped one, when the guards say the update is unsafe); its metrics."""
        cfg, timer, device = self.cfg, self.timer, self.runtime.device
        t0 = time.perf_counter()
        lr = lr_at(self.step, cfg.optim.lr, cfg.schedule) * self.lr_scale
        set_lr(self.optimizer, lr)

        def next_batch():
            x, y = self.stream.next_batch(device)
            if not self._placement_checked:
                check_placement(self.model, x, device)
                self._placement_checked = True
            return x, y, (document_ids(x, self.doc_eot) if self.doc_eot is not None else None)

        loss = forward_backward(self.compiled, next_batch, self.accum, self.runtime, self.scaler, timer,
                                lambda last: gradient_sync(self.wrapped, self.dist, last))
        with timer.phase("optimizer"):
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            clip = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else math.inf
            norm = local_value(torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip))  # global under FSDP
            loss_value = self.dist.mean(loss.item(), device)  # every rank decides on the same numbers
            skip = self.loss_guard.check(loss_value, norm)
            if skip is None:
                if self.scaler is not None:
                    self.scaler.step(self.optimizer)
                else:
                    self.optimizer.step()
                self.loss_guard.accept(loss_value)
            if self.scaler is not None:
                self.scaler.update()  # after an overflow this lowers the scale
            self.optimizer.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        self.step += 1
        record = {
            "step": self.step,
            "tokens": self.step * self.tokens_per_step,
            "loss": loss_value,
            "lr": lr,
            "grad_norm": norm,
            "step_time": dt,
            "tokens_per_sec": self.tokens_per_step / dt,
            "epoch": self.stream.epoch,
            **timer.collect(),
        }
        if skip is not None:
            record.update(skipped=True, skip_reason=skip)
            if self.scaler is not None and math.isfinite(loss_value) and not math.isfinite(norm):
                record["skip_reason"] = "fp16 overflow (the grad scaler lowered its scale)"
        if self.peak_flops:
            record["mfu"] = record["tokens_per_sec"] * self.flops.training / self.peak_flops
        return record

    def _oom_message(self, what: str) -> str:
        from ..plan import largest_micro_batch

        memory_gb = torch.cuda.get_device_properties(self.runtime.device).total_memory / 2**30 if torch.cuda.is_available() else 0
        fits = largest_micro_batch(self.cfg.model, self.model.num_params(), self.cfg.seq_len, self.runtime.precision, memory_gb)
        return (f"GPU out of memory at micro-batch {self.cfg.run.micro_batch} x {self.cfg.seq_len} ({what}); "
                f"`gpt2lab plan` estimates {fits} fits on this {memory_gb:.0f} GB GPU. Lower --micro-batch (batch_tokens "
                "keeps the global batch through accumulation), add --set run.activation_checkpointing=true, or pass "
                "--set run.auto_batch=true to find the largest micro-batch that fits")

    def _recover(self, logger: MetricsLogger, reason: str) -> None:
        """After max_bad_steps skipped updates in a row: roll back to the last checkpoint at a lower LR, or stop."""
        run = self.cfg.run
        self.saver.wait()
        target = ckpt.latest_checkpoint(self.run_dir)
        message = f"{run.max_bad_steps} updates in a row were unsafe at step {self.step} (last: {reason})"
        if not run.rollback or target is None or self.rollbacks >= MAX_ROLLBACKS:
            why = ("rollback is off" if not run.rollback else "there is no checkpoint to roll back to" if target is None
                   else f"{MAX_ROLLBACKS} rollbacks did not help")
            raise UserError(f"{message}; stopping because {why}. Lower optim.lr, check the data near this step, "
                            "or resume from an earlier checkpoint")
        rollbacks, lr_scale = self.rollbacks + 1, self.lr_scale * run.rollback_lr_factor
        self._restore(target)
        self.rollbacks, self.lr_scale = rollbacks, lr_scale
        logger.truncate(self.step)
        self.echo(f"warning: {message}; rolled back to {target.name}, LR now x{self.lr_scale:g}")

    # --- the loop --------------------------------------------------------------------------------------------------

    def _install_signal_handlers(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def request_stop(signum, _frame):
            if self.stop_signal is not None:  # a second signal: stop now
                raise KeyboardInterrupt
            self.stop_signal = signal.Signals(signum).name
            self.echo(f"{self.stop_signal}: finishing this step, saving a checkpoint, then stopping")

        return {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}

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
        logger = (MetricsLogger(self.run_dir, run.tensorboard, run.wandb_project, cfg.to_dict(), self.echo)
                  if self.dist.is_main else NullLogger())
        profiler = Profiler(self.run_dir, run.profile_steps, self.runtime.device)
        previous_handlers = self._install_signal_handlers()
        record, last_val, bad_in_a_row, stopping = {}, None, 0, False
        start, start_step, elapsed_before = time.perf_counter(), self.step, self.elapsed
        try:
            while self.step < max_steps:
                try:
                    with profiler:
                        record = self.train_step()
                except torch.cuda.OutOfMemoryError:
                    raise UserError(self._oom_message("during a training step")) from None
                bad_in_a_row = bad_in_a_row + 1 if record.get("skipped") and "overflow" not in record["skip_reason"] else 0
                final = self.step == max_steps
                if (run.eval_every and self.step % run.eval_every == 0) or final:
                    last_val = self.evaluate()
                    if last_val is not None:
                        record.update(val_loss=last_val["loss"], val_perplexity=last_val["perplexity"])
                if self.hellaswag and (self.step % run.hellaswag_every == 0 or final):
                    hs = evaluate_hellaswag(self.compiled, self.hellaswag, self.runtime, cfg.model.block_size,
                                            shard=(self.dist.rank, self.dist.world_size), reduce=self._reduce)
                    record.update(hellaswag_acc=hs["acc"], hellaswag_acc_norm=hs["acc_norm"])
                log_now = bool(run.log_every) and (self.step % run.log_every == 0 or self.step == 1)
                if log_now:
                    record.update(memory_stats(self.runtime.device))
                    util = self.utilization.sample(self.step)
                    if util is not None:
                        record["gpu_util"] = util
                self.elapsed = elapsed_before + time.perf_counter() - start
                record["elapsed"] = self.elapsed
                stopping = self.dist.any(self.stop_signal is not None, self.runtime.device)
                # a periodic save waits out a stretch of skipped updates, so that a rollback lands before it
                due = run.checkpoint_every and self.step % run.checkpoint_every == 0 and not bad_in_a_row
                if due or final or stopping:
                    record["checkpoint_time"] = self.save()
                logger.log(record)
                if log_now or "val_loss" in record or "hellaswag_acc" in record or record.get("skipped"):
                    eta = (time.perf_counter() - start) / max(1, self.step - start_step) * (max_steps - self.step)
                    self.echo(format_record(record, max_steps, eta))
                if stopping:
                    break
                if bad_in_a_row >= run.max_bad_steps:
                    self._recover(logger, record["skip_reason"])
                    bad_in_a_row = 0
            self.saver.wait()
        except BaseException:
            with contextlib.suppress(BaseException):  # let a save in flight finish; the first error wins
                self.saver.wait()
            raise
        finally:
            self.stream.close()
            shutdown(self.dist)
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)
            logger.close()
            profiler.close()
        if stopping:
            self.stop_signal = self.stop_signal or "SIGTERM"
            self.echo(f"stopped by {self.stop_signal} at step {self.step}; continue with --resume")
        saved = self.saver.last_saved
        return {"step": self.step, "loss": record.get("loss"), "val": last_val, "checkpoint": str(saved) if saved else None,
                "stopped_by": self.stop_signal}
