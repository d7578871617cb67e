"""The training loop: schedule, accumulation, clipping, mixed precision, evaluations, checkpoints, and the
guards that keep a long run from going silently wrong (skipped bad updates, rollback to a healthy checkpoint,
clean stops on signals, one writer per run directory).

The loop reads the device once per step, for the step before (see step.py): records are logged one step late,
and every decision that needs a step's numbers (stopping, rolling back, trusting a checkpoint) is taken then.
Evaluations come from a factory passed in (gpt2lab.eval.build_evaluators, called once the run's own checks have
passed); the trainer asks each evaluator whether it is due.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path
from typing import Callable

import torch

from .. import checkpoint as ckpt
from ..config import Config
from ..data.loader import BatchStream, Windows, document_ids
from ..data.shards import check_vocab, data_fingerprint, read_meta
from ..errors import UserError
from ..files import FolderLock, absolute
from ..metrics.cpu_peak import cpu_peak_flops
from ..metrics.devices import device_peak_flops
from ..metrics.flops import flops_per_token
from ..metrics.logger import MetricsLogger
from ..metrics.memory import GB, largest_micro_batch, memory_plan
from ..metrics.profiler import Profiler
from ..metrics.timing import StepTimer, memory_stats
from ..model import GPT, model_shapes
from ..runtime import deterministic_algorithms, resolve_runtime, rng_state, seed_everything
from .autobatch import tune_micro_batch
from .batch_ramp import BatchRamp
from .disk import disk_note
from .distributed import (full_value, gradient_sync, init_distributed, local_device,
                          shutdown, start_settings, wrap_model)
from .guards import LossGuard, UtilizationGuard, check_placement, check_step_placement
from .optim import build_optimizer, named_state_dict, set_lr_multiplier, set_step, state_bytes
from .resume import MAX_ROLLBACKS, Resuming  # noqa: F401 (MAX_ROLLBACKS: re-exported)
from .run_folder import RECORDED, RUN_FILES, RUN_RECORD, RunFolder  # noqa: F401 (re-exported)
from .saver import CheckpointSaver
from .state import RunState, Shared
from .schedule import TimePlan, floor_of, lr_multiplier, warmup_of
from .loop import Loop
from .step import Clock, Pending, StepParts, train_step



class NullLogger:
    """What ranks other than 0 log to: nothing."""

    def log(self, record: dict) -> None:
        pass

    def truncate(self, last_step: int) -> None:
        pass

    def close(self) -> None:
        pass


def run_tokens(cfg: Config) -> int:
    return cfg.schedule.max_steps * (cfg.run.batch_tokens or cfg.run.micro_batch * cfg.seq_len)


class Trainer(RunFolder, Resuming):
    """A training run: set up from its config (a new run, or a resumed one), then fit(); the run folder's checks
    live in RunFolder, checkpoint restore, resume and rollback in Resuming."""

    # the run's counters live in one RunState (what the loop advances and a checkpoint saves)
    step, elapsed, cpu_seconds, lr_scale, rollbacks, run_id = Shared(), Shared(), Shared(), Shared(), Shared(), Shared()
    trusted, awaiting_trust, eval_seconds, agreed_clock = Shared(), Shared(), Shared(), Shared()

    def __init__(self, cfg: Config, run_dir: str | os.PathLike, resume: bool = False, init_from: str | None = None,
                 evaluators: Callable | None = None, echo: Callable = print, clock: Callable[[], float] | None = None):
        """evaluators(cfg, data_meta, echo) -> the evaluators of this run (none when not given)."""
        self.cfg, self.run_dir, self.clock = cfg, absolute(run_dir), clock or Clock()
        if resume and not self.run_dir.is_dir():
            raise UserError(f"--resume: the run folder {self.run_dir} does not exist; check --out")
        self.dist = init_distributed(cfg.run.parallel, cfg.run.device, cfg.run.dist_timeout_s)
        self.echo = echo if self.dist.is_main else (lambda *_: None)
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        compile_mode = cfg.run.compile
        if cfg.run.deterministic:  # compiled kernels may reduce in another order from run to run
            deterministic_algorithms()
            compile_mode = "off"
        self.runtime = resolve_runtime(local_device(self.dist, cfg.run.device), cfg.run.precision, compile_mode,
                                       run_tokens(cfg), cfg.run.loss_chunk, cfg.schedule.time_budget_s)
        if cfg.run.deterministic:
            self.runtime.compile_why = "off: run.deterministic"
        self.lock = FolderLock(self.run_dir, "the run directory").acquire() if self.dist.is_main else None
        self._resuming = resume
        try:
            candidates, problem = [], None
            try:
                candidates = self._check_run_dir(resume)
                self._open_data()
            except UserError as exc:  # under torchrun every rank stops with it, none waits for the others alone
                if not self.dist.active:
                    raise
                problem = str(exc)
            self.dist.stop_together(problem)
            self.dist.require_same(start_settings(cfg.to_dict(), self.data_fingerprint, resume=resume, init_from=init_from),
                                   "start every rank with the same command, config files and prepared data")
            self.evaluators = list(evaluators(cfg, self.data_meta, self.echo)) if evaluators else []
            self._build(init_from, resume)
            if resume:
                self._resume(candidates)
            self._measure()
            if self.dist.is_main:
                self._write_run_files()
            self.dist.barrier()
        except BaseException:
            if self.lock is not None:
                self.lock.release(cleanup=True)
            raise

    @property
    def compiled(self) -> torch.nn.Module:
        """The forward every training step runs (torch.compile'd when run.compile is on)."""
        return self.parts.model

    @compiled.setter
    def compiled(self, forward: torch.nn.Module) -> None:
        self.parts.model = forward

    @property
    def scaler(self) -> torch.amp.GradScaler | None:
        """fp16's gradient scaler (None otherwise): the one every step uses."""
        return self.parts.scaler

    @scaler.setter
    def scaler(self, scaler: torch.amp.GradScaler | None) -> None:
        self.parts.scaler = scaler

    def _open_data(self) -> None:
        cfg = self.cfg
        if not cfg.data.dir:
            raise UserError("no training data: pass --data DATA_DIR (a folder written by `gpt2lab prepare`)")
        cfg.data.dir = str(absolute(cfg.data.dir))  # saved absolute: a resume from another folder finds it
        if not Path(cfg.data.dir).is_dir() and self._resuming:
            raise UserError(f"the run was trained on {cfg.data.dir}, which is not there now; pass --data with the "
                            "folder of its prepared data")
        meta = read_meta(cfg.data.dir)
        check_vocab(meta, cfg.model.vocab_size)
        self.data_fingerprint = data_fingerprint(cfg.data.dir, meta)
        self.data_meta, self.eot = meta, meta["tokenizer"].get("eot")
        self.train_windows = Windows(cfg.data.dir, "train", cfg.seq_len, cfg.data.align_documents, self.eot,
                                     max_token=cfg.model.vocab_size)
        self.doc_eot = self.eot if cfg.data.document_masking else None

    def _check_memory(self) -> None:
        """Refuse a model or micro-batch this machine cannot hold, before trying to allocate it. With --auto-batch
        on a GPU the micro-batch is about to be searched, so only the smallest (1) must fit. Every rank checks its
        own device and the job refuses when any rank would: one rank stopping alone leaves the others waiting."""
        cfg, device = self.cfg, self.runtime.device
        shapes = model_shapes(cfg.model)
        n_params, self.state_bytes = shapes.num_params(), state_bytes(shapes, cfg.optim.name)  # the chosen optimizer's
        searched = cfg.run.auto_batch and device.type == "cuda"
        micro = 1 if searched else cfg.run.micro_batch
        need = memory_plan(cfg.model, n_params, micro, cfg.seq_len, self.runtime.precision, self.state_bytes).total
        if device.type == "cuda":
            have, where = torch.cuda.get_device_properties(device).total_memory, "this GPU"
        else:
            have, where = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine"
        problem = None
        if need > 2 * have:
            problem = (f"this run needs about {need / GB:,.1f} GB ({n_params:,} parameters, micro-batch {micro} x "
                       f"{cfg.seq_len}) but {where} has {have / GB:,.1f} GB; lower --micro-batch (run.batch_tokens "
                       "keeps the global batch) or choose a smaller model")
        self.dist.stop_together(problem)

    def _build(self, init_from: str | None, resume: bool) -> None:
        cfg, device = self.cfg, self.runtime.device
        seed_everything(cfg.run.seed)  # the same initial weights on every rank
        self._check_memory()
        self.model = GPT(cfg.model).to(device)
        if init_from:
            self._init_from(init_from)  # before wrapping: FSDP shards what is loaded
        if self.dist.world_size > 1:
            torch.manual_seed(cfg.run.seed + 1000 * self.dist.rank)  # but each rank its own dropout
        self.wrapped = wrap_model(self.model, self.dist, device)
        self.optimizer = build_optimizer(self.model, cfg.optim, device)
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        scaler = torch.amp.GradScaler(device.type) if self.runtime.precision == "fp16" else None
        if cfg.run.auto_batch and not resume:
            self._auto_batch()
        self.accum = cfg.grad_accum_steps(self.dist.world_size)
        self.tokens_per_micro = cfg.run.micro_batch * cfg.seq_len * self.dist.world_size  # all ranks together
        self.tokens_per_step = self.accum * self.tokens_per_micro  # at the full batch
        self.ramp = BatchRamp(self.accum, cfg.schedule.batch_ramp_steps, cfg.schedule.batch_ramp_start)
        self.ramp.check()
        self.stream = BatchStream(self.train_windows, cfg.run.micro_batch, cfg.run.seed, self.dist.rank,
                                  self.dist.world_size, prefetch=cfg.data.prefetch)
        self.guard = LossGuard(cfg.guard.spike_z, device)
        self.plan = TimePlan(cfg.schedule.time_budget_s, cfg.schedule.max_steps) if cfg.schedule.time_budget_s else None
        self.floor = floor_of(cfg.schedule, cfg.optim.lr)
        self.state = RunState()
        self._schedule_note: str | None = None
        self._placement_checked = False
        self.timer = StepTimer(device)
        forward = torch.compile(self.wrapped) if self.runtime.compile else self.wrapped
        self.parts = StepParts(
            forward, self.optimizer, self.guard, self.runtime, self.accum, cfg.optim.grad_clip, scaler,
            self.dist.all_reduce_mean_, full_value, lambda last: gradient_sync(self.wrapped, self.dist, last),
            self.params, {"loss_chunk": self.runtime.loss_chunk, "recompute": cfg.run.activation_checkpointing})
        self.saver = CheckpointSaver(self.run_dir, cfg, self.echo)
        self.stop_signal: str | None = None

    def _measure(self) -> None:
        cfg, rt = self.cfg, self.runtime
        self.flops = flops_per_token(cfg.model, cfg.seq_len)
        if rt.device.type == "cpu" and cfg.run.peak_tflops is None:
            self.peak_flops, self.peak_source = cpu_peak_flops(rt.precision, rt.describe()["name"])
        else:
            self.peak_flops, self.peak_source = device_peak_flops(rt.describe()["name"], rt.precision, cfg.run.peak_tflops or 0)
        self.utilization = UtilizationGuard(rt.device)

    def device_report(self) -> dict:
        return {
            **self.runtime.describe(),
            "peak_tflops": self.peak_flops / 1e12 if self.peak_flops else None,
            "peak_source": self.peak_source,
            "parameters": self.model.num_params(),
            "flops_per_token": self.flops.as_dict(),
            "tokens_per_step": self.tokens_per_step,
            "world_size": self.dist.world_size,
            "parallel": self.dist.strategy,
        }

    def _auto_batch(self) -> None:
        run, device = self.cfg.run, self.runtime.device
        if device.type != "cuda":
            self.echo(f"note: --auto-batch searches GPU memory; on {device} the micro-batch stays {run.micro_batch}")
            return
        if self.dist.strategy == "fsdp":
            raise UserError("run.auto_batch does not work with run.parallel=fsdp (a trial step needs every rank); set "
                            "--micro-batch yourself (`gpt2lab plan` estimates what fits)")
        memory_gb = torch.cuda.get_device_properties(device).total_memory / 2**30
        estimate = largest_micro_batch(self.cfg.model, self.model.num_params(), self.cfg.seq_len, self.runtime.precision,
                                       memory_gb, run.activation_checkpointing, self.state_bytes)
        total = run.batch_tokens or run.micro_batch * self.cfg.seq_len
        best = tune_micro_batch(self.wrapped, self.optimizer, self.runtime, self.cfg, self.dist,
                                total // self.cfg.seq_len, max(1, 2 * estimate))
        if best == 0:
            raise UserError(self.oom_message("even a micro-batch of 1 does not fit"))
        run.batch_tokens, run.micro_batch = total, best
        self.echo(f"auto-batch: micro-batch {best} fits with the optimizer state allocated (plan estimated {estimate}); "
                  f"{total // (best * self.cfg.seq_len * self.dist.world_size)} accumulation steps")

    # --- checkpoints: state, saving, restoring --------------------------------------------------------------------

    def _init_from(self, path: str) -> None:
        source = ckpt.verified(ckpt.resolve_checkpoint(path))
        source_model = ckpt.load_config(source).model
        if source_model != self.cfg.model:
            raise UserError(f"--init-from {source}: its model settings differ from this run's; drop --preset and model.* overrides")
        ckpt.load_weights(self.model, source, self.runtime.device)
        self.echo(f"initialised from {source}")

    def _state(self) -> dict:
        rngs = self.dist.gather_objects(rng_state(self.runtime.device))
        return {
            "optimizer": None if self.dist.strategy == "fsdp" else named_state_dict(self.optimizer),  # FSDP: in dcp/
            "loader": self.stream.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rngs[0],
            "rng_ranks": rngs,
            "loss_guard": self.guard.state_dict(),
            **self.state.saved(),
            "plan": self.plan.state_dict() if self.plan else None,
            "data_fingerprint": self.data_fingerprint,
        }

    def save(self, final: bool = False) -> float:
        """Save a checkpoint of the current step; returns the seconds training was held up.

        One process (or DDP): rank 0 snapshots and writes in the background. FSDP: every rank writes its
        shards through torch.distributed.checkpoint, rank 0 adds the full weights and the rest, atomically.
        While the run goes on, retention keeps the newest healthy checkpoint for a rollback; the final save
        does not need it."""
        start = self.clock()
        state = self._state()  # a collective: every rank takes part
        protect = {self.trusted} if self.trusted is not None and not final else set()
        self.awaiting_trust = self.step
        if self.dist.strategy != "fsdp":
            return self.saver.save(self.step, self.model, state, protect) if self.dist.is_main else 0.0
        self.saver.save_sharded(self.step, self.model, self.optimizer, state, self.dist, protect)
        return self.clock() - start

    # --- one step, and its record ------------------------------------------------------------------------------

    def total_steps(self) -> int:
        return self.plan.planned if self.plan else self.cfg.schedule.max_steps

    def last_step(self) -> int:
        """Where this invocation stops: the schedule's end, or the pause (run.stop_at_step) before it."""
        pause = self.cfg.run.stop_at_step
        return self.total_steps() if pause is None else min(pause, self.total_steps())

    def _next_batch(self):
        x, y = self.stream.next_batch(self.runtime.device)
        if not self._placement_checked:  # the first step, and the first after a resume or rollback
            check_placement(self.model, x, self.runtime.device)
            check_step_placement(self.model, self.optimizer, x)
            self._placement_checked = True
        return x, y, (document_ids(x, self.doc_eot) if self.doc_eot is not None else None)

    def _schedule_position(self) -> tuple[float, int]:
        """(where the run is on its schedule in steps, the warmup in force). With a time budget, past warmup, it
        advances with the share of the usable time spent (TimePlan.position: never backwards), so the decay
        reaches its floor at the deadline however the step time drifts; the plan's step count decides when to stop."""
        warmup = warmup_of(self.cfg.schedule, self.total_steps())
        if not self.plan:
            return self.step, warmup
        return self.plan.position(self.step, warmup, *self.clock_view())

    def clock_view(self) -> tuple[float, float]:
        """(seconds trained, seconds of the last evaluation) as the time budget sees them: this process's own
        clock alone, or under torchrun the job's clock agreed on the device (every rank's mean, one step late),
        so that every rank sets the same LR and plans the same number of steps."""
        if self.dist.active and self.agreed_clock is not None:
            return self.agreed_clock
        return self.elapsed, self.eval_seconds

    def train_step(self) -> Pending:
        """One optimizer step (or a skipped one, when the guards say the update is unsafe), not yet read."""
        cfg = self.cfg
        position, warmup = self._schedule_position()
        multiplier = lr_multiplier(position, cfg.schedule, self.total_steps(), self.floor, warmup) * self.lr_scale
        set_lr_multiplier(self.optimizer, multiplier)
        set_step(self.optimizer, self.step)
        started = self.clock()
        self.parts.micro_steps = self.ramp.micro_steps(self.step)  # the full count, unless the batch is ramping
        stats, timing = train_step(self.parts, self._next_batch, float(self.stop_signal is not None),
                                   (self.elapsed, self.eval_seconds), self.timer)
        self.step += 1
        record = {"step": self.step, "tokens": self.ramp.micro_steps_before(self.step) * self.tokens_per_micro,
                  "lr": cfg.optim.lr * multiplier, "epoch": self.stream.epoch}
        if self.parts.micro_steps != self.accum:
            record["batch_tokens"] = self.parts.micro_steps * self.tokens_per_micro
        if self.plan:  # the plan's revisions, step by step
            record["planned_steps"] = self.plan.planned
        for role, lr in self._role_lrs().items():  # groups on their own LRs (Muon's roles): each one's rate
            record[f"lr_{role}"] = lr
        if self._schedule_note:
            record["schedule_change"], self._schedule_note = self._schedule_note, None
        return Pending(record, stats, timing, started=started)

    def _role_lrs(self) -> dict[str, float]:
        """Each role's LR this step, when some role's base LR differs from optim.lr (else `lr` says it all)."""
        groups = [g for g in self.optimizer.param_groups if "role" in g]
        if all(g["base_lr"] == self.cfg.optim.lr for g in groups):
            return {}
        return {g["role"]: g["lr"] for g in groups}

    def complete(self, pending: Pending, step_seconds: float) -> dict:
        """The record of a finished step: its device values read, rates and memory added."""
        r = pending.read(self.scaler is not None, step_seconds)
        r["tokens_per_sec"] = r.get("batch_tokens", self.tokens_per_step) / max(step_seconds, 1e-9)
        if self.peak_flops:
            r["mfu"] = r["tokens_per_sec"] / self.dist.world_size * self.flops.training / self.peak_flops  # per GPU
        if self.log_now(r["step"]):
            r.update(memory_stats(self.runtime.device))
            util = self._sample_utilization(r["step"])
            if util is not None:
                r["gpu_util"] = util
        return r

    def _sample_utilization(self, step: int) -> float | None:
        """The GPU-idle guard's reading; its stop is one decision for the job (any rank idle stops every rank)."""
        problem, util = None, None
        try:
            util = self.utilization.sample(step)
        except UserError as exc:
            problem = str(exc)
        if self.runtime.device.type == "cuda":
            self.dist.stop_together(problem)
        elif problem:
            raise UserError(problem)
        return util

    def log_now(self, step: int) -> bool:
        every = self.cfg.log.every
        return every is not None and (step % every == 0 or step == 1)

    def evaluate(self, final: bool) -> dict:
        """Every evaluator that is due, on the eager model (no recompilation for eval shapes)."""
        out = {}
        for evaluator in self.evaluators:
            if evaluator.due(self.step, final):
                start = self.clock()
                out.update(evaluator(self.model, self.runtime, (self.dist.rank, self.dist.world_size), self._reduce))
                self.eval_seconds = self.clock() - start
        return out

    def _reduce(self, values: list[float]) -> list[float]:
        return self.dist.sum(values, self.runtime.device)

    def oom_message(self, what: str) -> str:
        memory_gb = torch.cuda.get_device_properties(self.runtime.device).total_memory / 2**30 if torch.cuda.is_available() else 0
        fits = largest_micro_batch(self.cfg.model, self.model.num_params(), self.cfg.seq_len, self.runtime.precision,
                                   memory_gb, self.cfg.run.activation_checkpointing, self.state_bytes)
        return (f"GPU out of memory at micro-batch {self.cfg.run.micro_batch} x {self.cfg.seq_len} ({what}); "
                f"`gpt2lab plan` estimates {fits} fits on this {memory_gb:.0f} GB GPU. Lower --micro-batch (batch_tokens "
                "keeps the global batch through accumulation), add --set run.activation_checkpointing=true, or pass "
                "--set run.auto_batch=true to find the largest micro-batch that fits")

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

    def _announce(self) -> None:
        cfg, run = self.cfg, self.cfg.run
        self.echo(self.runtime.banner())
        self.echo(f"model: {self.model.num_params():,} parameters, {self.flops.training / 1e9:.3f} GFLOP/token (fwd+bwd) | "
                  f"{self.tokens_per_step:,} tokens/step ({run.micro_batch} x {cfg.seq_len} x {self.accum} accumulation"
                  f"{f' x {self.dist.world_size} processes' if self.dist.world_size > 1 else ''}) | "
                  f"{len(self.train_windows):,} train windows | optimizer {cfg.optim.name} | MFU peak: {self.peak_source}"
                  f"{f' | {self.dist.describe()}' if self.dist.active else ''}")
        for note in [*cfg.notes, *self.runtime.notes, self.utilization.note, self.lock and self.lock.note]:
            if note:
                self.echo(f"note: {note}")
        unread = self.train_windows.reach_note()
        if unread:
            self.echo(f"warning: {unread}")
        ck = cfg.checkpoint
        short = self.dist.is_main and disk_note(self.run_dir, ck.every, ck.keep_last, ck.keep_every, ck.older,
                                                self.last_step(), 4 * self.model.num_params(), self.state_bytes)
        if short:
            self.echo(f"warning: {short}")
        if self.plan:
            self.echo(f"time budget: {cfg.schedule.time_budget_s:,.0f} s; the run is planned from the measured step "
                      f"time so that the {cfg.schedule.decay} decay ends at the deadline (at most {cfg.schedule.max_steps:,} steps)")
        if self.step >= self.total_steps():
            self.echo(f"nothing to do: the run is at step {self.step} of {self.total_steps()}; raise --max-steps to go on")
        elif self.step >= self.last_step():
            self.echo(f"nothing to do: the run is at step {self.step}, at or past run.stop_at_step={self.last_step()}; "
                      "drop --stop-at (or raise it) to go on")

    def fit(self) -> dict:
        run = self.cfg
        self._announce()
        logger = (MetricsLogger(self.run_dir, run.to_dict(), self.echo)
                  if self.dist.is_main else NullLogger())
        loop = Loop(self, logger)
        profiler = Profiler(self.run_dir, run.log.profile_steps or 0, self.runtime.device, self.dist.rank,
                            self.dist.world_size)
        previous_handlers = self._install_signal_handlers()
        try:
            with profiler.session():
                loop.run(profiler)
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
            if self.lock is not None:
                self.lock.release()
        if loop.stopping and self.stop_signal is None and self.step >= self.last_step():
            self.echo(f"paused at step {self.step} of {self.total_steps()} (run.stop_at_step), with a checkpoint; "
                      "continue with --resume")
            self.stop_signal = "stop_at_step"
        elif loop.stopping:
            self.stop_signal = self.stop_signal or "SIGTERM"
            self.echo(f"stopped by {self.stop_signal} at step {self.step}; continue with --resume")
        saved = self.saver.last_saved
        last = loop.last_record
        return {"step": self.step, "loss": last.get("loss"), "val": loop.last_eval or None,
                "checkpoint": str(saved) if saved else None, "stopped_by": self.stop_signal}
