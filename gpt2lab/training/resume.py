"""Resuming a run: a checkpoint checked (once, by rank 0, for the job) and loaded into the trainer, the newest
loadable one found on --resume (a corrupt one set aside), and the rollback after too many unsafe updates (to the
newest healthy checkpoint, at a lower LR), with the checkpoints saved while training went wrong set aside.

A mixin of training.trainer.Trainer: it reads the trainer's model, optimizer, data stream, guard, plan and
RunState."""

from __future__ import annotations

from pathlib import Path

import torch

from .. import checkpoint as ckpt
from ..config import Config
from ..errors import UserError
from ..formats import BadFile
from ..metrics.logger import truncate_metrics
from ..runtime import set_rng_state
from .distributed import load_sharded
from .optim import load_named_state_dict
from .schedule import lr_multiplier

MAX_ROLLBACKS = 3


class Resuming:
    def _model_mismatch(self, saved: Config) -> str | None:
        a, b = self.cfg.model, saved.model
        if a == b:
            return None

        def shape(m):
            return f"{m.n_layer} layers x {m.n_embd} wide, {m.n_head} heads, context {m.block_size}, vocab {m.vocab_size}"

        diffs = [f"{k}={getattr(b, k)!r} there, {getattr(a, k)!r} here" for k in vars(a) if getattr(a, k) != getattr(b, k)]
        return f"this run's model ({shape(a)}) is not the checkpoint's ({shape(b)}): {'; '.join(diffs[:4])}"

    def _restore(self, checkpoint: Path) -> None:
        """Load a checkpoint into this run. CorruptCheckpoint: its files are damaged (skip it); UserError: it
        does not fit this run (stop); anything else (a CUDA error) propagates and stops the run."""
        marker = self._verify(checkpoint)
        if marker.get("weights_only"):  # a setting of the folder, not damage: nothing is set aside
            raise UserError(f"{checkpoint.name} holds weights only (thinned by gpt2lab thin) and cannot be resumed; start "
                            f"a new run from its weights with --init-from {checkpoint}")
        try:
            saved = ckpt.load_config(checkpoint)
        except BadFile as exc:  # damaged: not JSON, too deep, too large
            raise ckpt.CorruptCheckpoint(str(exc)) from None
        except UserError as exc:  # well-formed, but not a config this gpt2lab knows
            if ckpt.hashed(marker):  # its files match their SHA-256s: intact, from another (newer) gpt2lab
                raise UserError(f"{checkpoint.name}'s config.json is intact but this gpt2lab cannot read it ({exc}); it "
                                "was probably written by a newer gpt2lab: upgrade, or resume with the version that "
                                "wrote it (nothing was set aside)") from None
            raise ckpt.CorruptCheckpoint(str(exc)) from None
        if saved.optim.name != self.cfg.optim.name:  # a setting, not damage: nothing on disk changes
            raise UserError(f"{checkpoint.name} was trained with optim.name={saved.optim.name}, this run asks for "
                            f"{self.cfg.optim.name}; resume with the same optimizer, or start a new run from its weights "
                            f"with --init-from {checkpoint}")
        mismatch = self._model_mismatch(saved)
        if mismatch:
            raise UserError(f"{checkpoint.name}: {mismatch}; a resumed run keeps its model: drop --preset and model.* overrides")
        state = ckpt.load_state(checkpoint)
        if state.get("data_fingerprint") not in (None, self.data_fingerprint):  # None: gpt2lab before 0.3
            raise UserError(f"{checkpoint.name} was trained on other data than {self.cfg.data.dir} holds now (its "
                            "meta.json or shard sizes differ); pass --data with the folder the run was trained on")
        self._load_weights(checkpoint, marker, state)
        self._load_training_state(state)
        self.trusted = self.step if marker.get("health", {}).get("weights_finite", True) else None
        self._placement_checked = False
        self._schedule_note = self._schedule_change(saved)

    def _load_weights(self, checkpoint: Path, marker: dict, state: dict) -> None:
        """The model's weights (FSDP: the model's and the optimizer's shards, resharded to this world size)."""
        if self.dist.strategy == "fsdp":
            load_sharded(checkpoint, self.model, self.optimizer)  # reshards to this world size
        else:
            try:
                ckpt.load_weights(self.model, checkpoint, self.runtime.device)
            except (torch.OutOfMemoryError, MemoryError):
                raise UserError(f"out of memory while loading {checkpoint.name} (nothing was set aside); free "
                                "memory on the device, or lower --micro-batch, and resume again") from None
            except UserError as exc:
                if ckpt.hashed(marker):  # its files match their SHA-256: intact, so it does not fit this run
                    raise
                raise ckpt.CorruptCheckpoint(str(exc)) from None
            if state.get("optimizer") is None:
                raise UserError(f"{checkpoint.name}: its optimizer state is sharded (an FSDP run); resume with --set run.parallel=fsdp")

    def _load_training_state(self, state: dict) -> None:
        """The optimizer (one process or DDP), the data position, the scaler, the RNGs, the guard, the time plan and
        the run's counters; a state that does not fit is damage: CorruptCheckpoint."""
        try:
            if self.dist.strategy != "fsdp":
                load_named_state_dict(self.optimizer, state["optimizer"], self.model)
            self.stream.load_state_dict(state["loader"])
            if self.scaler is not None and state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
            self._restore_rng(state)
            self.guard.load_state_dict(state.get("loss_guard") or {})
            if self.plan and state.get("plan"):
                self.plan.load_state_dict(state["plan"])
            self.state.restore(state)
        except (KeyError, TypeError, IndexError, ValueError, AttributeError, OverflowError, RuntimeError) as exc:
            if isinstance(exc, RuntimeError) and str(exc).startswith("CUDA error"):
                raise  # the device's state, not the checkpoint's
            raise ckpt.CorruptCheckpoint(f"its training state is incomplete ({type(exc).__name__}: "
                                         f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from None

    def _verify(self, checkpoint: Path) -> dict:
        """Rank 0 checks the checkpoint's files against their manifest (SHA-256 included) and every rank takes its
        verdict: the checkpoint is read whole once, and "corrupt" is one decision for the job."""
        verdict = None
        if self.dist.is_main:
            try:
                verdict = ("ok", ckpt.verify(checkpoint, deep=True))
            except ckpt.CorruptCheckpoint as exc:
                verdict = ("corrupt", str(exc))
        kind, value = self.dist.broadcast_object(verdict)
        if kind == "corrupt":
            raise ckpt.CorruptCheckpoint(value)
        return value

    def _restore_rng(self, state: dict) -> None:
        ranks = state.get("rng_ranks") or [state["rng"]]
        set_rng_state(ranks[self.dist.rank] if self.dist.rank < len(ranks) else ranks[0], self.runtime.device)
        if self.dist.rank >= len(ranks):  # more ranks than when saved: fresh, distinct dropout streams
            torch.manual_seed(self.cfg.run.seed + 1000 * self.dist.rank + state["step"])

    def _schedule_change(self, saved: Config) -> str | None:
        """One line when this run's LR schedule differs from the one the checkpoint was trained with."""
        keys = [("schedule", k) for k in ("max_steps", "warmup_steps", "decay", "min_lr", "min_lr_ratio",
                                          "cooldown_fraction", "time_budget_s")] + [("optim", "lr")]
        changes = [f"{s}.{k} {getattr(getattr(saved, s), k)} -> {getattr(getattr(self.cfg, s), k)}" for s, k in keys
                   if getattr(getattr(saved, s), k) != getattr(getattr(self.cfg, s), k)]
        return ", ".join(changes) or None

    def _resume(self, candidates: list[Path]) -> None:
        """The newest checkpoint that loads; a corrupt one is set aside (renamed step_N.corrupt) and reported."""
        for checkpoint in candidates:
            try:
                self._restore(checkpoint)
            except ckpt.CorruptCheckpoint as exc:
                if self.dist.is_main:
                    aside = ckpt.set_aside(checkpoint, str(exc))
                    self.echo(f"warning: {checkpoint.name} is corrupt ({exc}); set aside as {aside.name}")
                self.dist.barrier()
                continue
            if self.dist.is_main:
                truncate_metrics(self.run_dir, self.step)
            self.echo(f"resumed from {checkpoint} at step {self.step}")
            if self.rollbacks:  # a resume is a person's decision to go on: the guard gets its rollbacks back
                self.echo(f"note: the run had used {self.rollbacks} of its {MAX_ROLLBACKS} rollbacks; a resume starts "
                          f"with {MAX_ROLLBACKS} again (the LR scale x{self.lr_scale:g} is kept)")
                self.rollbacks = 0
            if self._schedule_note:
                lr_now = self.cfg.optim.lr * lr_multiplier(self.step, self.cfg.schedule, self.total_steps(), self.floor)
                self.echo(f"note: the LR schedule differs from the checkpoint's ({self._schedule_note}): from step "
                          f"{self.step + 1} the LR follows the new one (now {lr_now:.3g}); metrics.jsonl marks the change")
            return
        raise UserError(f"--resume: none of the {len(candidates)} checkpoints in {self.run_dir} could be loaded; "
                        "they were set aside as corrupt (step_N.corrupt)")

    def recover(self, logger, reason: str, last_bad: int) -> None:
        """After max_bad_steps skipped updates in a row: roll back to the newest healthy checkpoint at a lower LR,
        or stop. A checkpoint is healthy when its weights are finite and the step after it was not skipped."""
        g = self.cfg.guard
        target = self.rollback_target()
        first_bad = last_bad - g.max_bad_steps + 1
        message = (f"{g.max_bad_steps} updates in a row were unsafe at step {last_bad} "
                   f"(steps {first_bad}-{last_bad}; last: {reason})")
        if not g.rollback or target is None or self.rollbacks >= MAX_ROLLBACKS:
            why = ("rollback is off" if not g.rollback else "there is no healthy checkpoint to roll back to" if target is None
                   else f"{MAX_ROLLBACKS} rollbacks did not help")
            aside = self._set_aside_diverged(target, message) if target is not None else ""
            raise UserError(f"{message}; stopping because {why}{aside}. Lower optim.lr, check the data near this step, "
                            "or resume from an earlier checkpoint")
        rollbacks, lr_scale = self.rollbacks + 1, self.lr_scale * g.rollback_lr_factor
        try:
            self._restore(target)
        except ckpt.CorruptCheckpoint as exc:
            raise UserError(f"{message}; the checkpoint to roll back to, {target.name}, is corrupt ({exc})") from None
        self.rollbacks, self.lr_scale = rollbacks, lr_scale
        logger.truncate(self.step)
        self.echo(f"warning: {message}; rolled back to {target.name}, LR now x{self.lr_scale:g}")

    def _set_aside_diverged(self, healthy: Path, why: str) -> str:
        """On giving up: the checkpoints saved after the healthy one were saved while training went wrong; set them
        aside (renamed step_N.diverged, never deleted) so that --resume continues from the healthy one."""
        newer = [p for p in ckpt.complete_checkpoints(self.run_dir) if ckpt.step_of(p) > ckpt.step_of(healthy)]
        if self.dist.is_main:
            for path in newer:
                ckpt.set_aside(path, f"saved while training was going wrong: {why}", "diverged")
        self.dist.barrier()
        return (f"; {len(newer)} later checkpoint(s) were set aside as step_N.diverged, so --resume continues from "
                f"{healthy.name}" if newer else f"; --resume continues from {healthy.name}")

    def rollback_target(self) -> Path | None:
        """The checkpoint every rank rolls back to: rank 0 finishes its save in flight, then decides (its write is
        what the others would otherwise look for too early) and tells the others."""
        self.saver.wait()
        self.dist.barrier()
        step = -1
        if self.dist.is_main and self.trusted is not None:
            if ckpt.is_checkpoint(ckpt.checkpoint_folder(self.run_dir, self.trusted)):
                step = self.trusted
        step = self.dist.broadcast_int(step, self.runtime.device)
        return ckpt.checkpoint_folder(self.run_dir, step) if step >= 0 else None
