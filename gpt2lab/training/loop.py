"""One fit() of the trainer, step by step: run a step, read the step before (its record, the guards' verdict, the
stop flag), then evaluate and save when due. Records are published one step late; the decisions that need a
step's numbers (stop, roll back, trust a checkpoint) are taken when they are read."""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Protocol

import torch

from ..errors import UserError
from ..metrics.console import format_record
from .state import RunState
from .step import Pending

OVERSUBSCRIPTION_STEPS = 10  # steps watched before judging whether the CPU was shared


class CpuWatch:
    """Other processes' and the hypervisor's share of the CPUs this process may run on (its affinity: a run pinned
    with taskset is watched on its own cores, not on a neighbour's) since it was started (Linux /proc/stat)."""

    def __init__(self):
        from ..metrics.steal import cpu_ticks, idle_ticks

        self.cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        self.ticks, self.idle, self.own = cpu_ticks(), idle_ticks(cpus=self.cpus), time.process_time()

    def verdict(self, threads: int) -> str | None:
        from ..metrics.steal import cpu_ticks, idle_ticks, others_share, steal_share

        others = others_share(self.idle, idle_ticks(cpus=self.cpus), time.process_time() - self.own)
        return contention(steal_share(self.ticks, cpu_ticks()), others, len(self.cpus or ()) or os.cpu_count() or 1,
                          threads)


def contention(steal: float | None, others: float | None, cores: int, threads: int) -> str | None:
    """Why this run's threads waited, or None: the hypervisor took more than BUSY_STEAL of the CPU, or other
    processes took more than BUSY_OTHERS of what this run's threads needed, beyond the cores it left them
    (`others`: their share of the `cores` this process may run on)."""
    from ..metrics.cpu_peak import BUSY_OTHERS, BUSY_STEAL

    if steal is not None and steal > BUSY_STEAL:
        return f"the hypervisor took {steal:.0%} of the CPU"
    used = min(threads, cores)
    taken = 0.0 if others is None else (others * cores - (cores - used)) / used  # of the cores this run's threads need
    if taken > BUSY_OTHERS:
        return f"other processes used {others:.0%} of the {cores} CPU{'s' if cores > 1 else ''} this run may use"
    return None


class LoopHost(Protocol):
    """What the loop needs of the trainer it drives (trainer.Trainer is one): the run's state and config, its
    clock and device, and the step, evaluation, record, save and recovery it delegates."""
    cfg: Any
    state: RunState
    step: int
    elapsed: float
    cpu_seconds: float
    agreed_clock: tuple[float, float] | None
    plan: Any
    dist: Any
    runtime: Any
    saver: Any
    evaluators: list
    stop_signal: str | None
    clock: Callable[[], float]
    echo: Callable[[str], None]

    def total_steps(self) -> int: ...
    def last_step(self) -> int: ...
    def clock_view(self) -> tuple[float, float]: ...
    def train_step(self) -> Pending: ...
    def evaluate(self, final: bool) -> dict: ...
    def complete(self, pending: Pending, step_seconds: float) -> dict: ...
    def log_now(self, step: int) -> bool: ...
    def save(self, final: bool = False) -> float: ...
    def recover(self, logger, reason: str, last_bad: int) -> None: ...
    def oom_message(self, what: str) -> str: ...


class Loop:
    """The state of one fit(): the step waiting to be read, counters, and what to do after each step."""

    def __init__(self, trainer: LoopHost, logger):
        self.t, self.logger = trainer, logger
        self.pending: Pending | None = None
        self.bad_in_a_row, self.stopping = 0, False
        self.last_record: dict = {}
        self.last_eval: dict = {}
        self.carry: dict = {}  # for the next record: the seconds the previous step's checkpoint held training up
        self.start, self.start_step, self.elapsed_before = trainer.clock(), trainer.step, trainer.elapsed
        self.cpu_start, self.cpu_before = time.process_time(), trainer.cpu_seconds
        self.first_step_time: float | None = None
        self.eta_from: tuple[float, int] | None = None
        self.cpu_watch = CpuWatch() if trainer.runtime.device.type == "cpu" else None

    def run(self, profiler) -> None:
        t = self.t
        if t.runtime.compile and t.step < t.total_steps():
            t.echo("compiling the model (the first step; this takes a while, once)...")
        while t.step < t.last_step():
            try:
                with profiler.step():
                    pending = t.train_step()
            except torch.cuda.OutOfMemoryError:
                raise UserError(t.oom_message("during a training step")) from None
            t.elapsed = self.elapsed_before + t.clock() - self.start
            pending.record["elapsed"] = t.elapsed
            # the CPU this process had over the same span: beside `elapsed`, what a shared or stolen CPU took away
            t.cpu_seconds = self.cpu_before + time.process_time() - self.cpu_start
            pending.record["cpu_seconds"] = t.cpu_seconds
            rollback = self._read_previous(pending)
            if rollback is None:
                rollback = self._after_step(pending)
            if rollback is not None:
                t.recover(self.logger, *rollback)
                self.pending, self.bad_in_a_row = None, 0
                continue
            if self.stopping:
                break
        if self.pending is not None:
            self._publish(self.pending, t.clock() - self.pending.started - self.pending.overhead)
            self.pending = None

    def _read_previous(self, pending: Pending) -> tuple[str, int] | None:
        """Publish the previous step's record; (the reason to roll back, the last bad step) when the guards have
        had enough."""
        previous, self.pending = self.pending, pending
        if previous is None:
            return None
        record = self._publish(previous, pending.started - previous.started - previous.overhead)
        if self.bad_in_a_row >= self.t.cfg.guard.max_bad_steps:
            return record["skip_reason"], record["step"]
        return None

    def _evaluate(self, pending: Pending, final: bool) -> None:
        """The evaluations due at this step, into its record."""
        try:
            results = self.t.evaluate(final)
        except torch.cuda.OutOfMemoryError:
            raise UserError(self.t.oom_message("during an evaluation, which runs at the training micro-batch")) from None
        if results:
            pending.extra.update(results)
            self.last_eval = {"loss": results.get("val_loss"), "perplexity": results.get("val_perplexity"), **results}

    def _after_step(self, pending: Pending) -> tuple[str, int] | None:
        """Evaluate and save when due. A checkpointed step's record is published at once, before the save: a kill
        right after a checkpoint must not lose the record of the step it holds (the resume continues after it).
        Returns a rollback, as _read_previous does, when that record completes a run of bad steps."""
        t, k = self.t, self.t.cfg.checkpoint
        begin = t.clock()
        t.saver.check()  # a save that failed in the background (a full disk) stops the run now, not at the next save
        if t.stop_signal and not t.dist.active:  # one process: no need to wait for the flag to come round
            self.stopping = True
        if t.cfg.run.stop_at_step is not None and t.step >= t.cfg.run.stop_at_step:  # every rank knows the step
            self.stopping = True
        if t.plan:
            t.plan.update(t.step, *t.clock_view())
        final = t.step >= t.total_steps()
        self._evaluate(pending, final)
        due = k.every is not None and t.step % k.every == 0 and not self.bad_in_a_row
        if due or final or self.stopping:
            # the record first: a kill once the checkpoint is on disk must not lose the step it holds
            pending.overhead = t.clock() - begin
            self.pending = None
            record = self._publish(pending, t.clock() - pending.started - pending.overhead)
            if self.bad_in_a_row >= t.cfg.guard.max_bad_steps:
                return record["skip_reason"], record["step"]
            if final or self.stopping or not record.get("skipped"):
                self.carry["checkpoint_time"] = t.save(final=final or self.stopping)  # in the next step's record
        pending.overhead = t.clock() - begin
        return None

    def _publish(self, pending: Pending, step_seconds: float) -> dict:
        t = self.t
        r = t.complete(pending, step_seconds)
        r.update(self.carry)
        self.carry = {}
        t.agreed_clock = r.pop("agreed_clock")
        self._note_compile(r)
        self.bad_in_a_row = self.bad_in_a_row + 1 if r.get("skipped") and "overflow" not in r["skip_reason"] else 0
        t.state.publish(r["step"], bool(r.get("skipped")))
        self.stopping = self.stopping or r.pop("stop_requested")
        self.logger.log(r)
        self.last_record = r
        self._note_oversubscription(r["step"])
        evaluations = tuple(m for e in t.evaluators for m in e.metrics)
        if self.eta_from is None:  # the rate is measured from the end of the first step (compilation excluded)
            self.eta_from = (t.clock(), r["step"])
        if t.log_now(r["step"]) or any(m.key in r for m in evaluations) or r.get("skipped") or "schedule_change" in r:
            since, step0 = self.eta_from
            eta = (t.clock() - since) / (r["step"] - step0) * (t.total_steps() - r["step"]) if r["step"] > step0 else None
            t.echo(format_record(r, t.total_steps(), eta, evaluations, t.dist.world_size))
        return r

    def _note_oversubscription(self, step: int) -> None:
        """On a CPU, once: say so when other processes (or the hypervisor) took a large share of the cores this
        run's threads needed: its step time is then mostly waiting. Watched from the end of the first step when
        it compiles (the compiler's worker processes are this run's, not a neighbour's)."""
        if self.cpu_watch is None:
            return
        if self.t.runtime.compile and step == self.start_step + 1:
            self.cpu_watch = CpuWatch()
        if step - self.start_step < OVERSUBSCRIPTION_STEPS:
            return
        threads = torch.get_num_threads()
        note, self.cpu_watch = self.cpu_watch.verdict(threads), None
        if note:
            advice = (f"try fewer threads (--threads {threads - 1}) or a quieter machine" if threads > 1 else
                      "try a quieter machine, or a core of its own (taskset -c N)")
            self.t.echo(f"warning: {note} while training with {threads} thread{'s' if threads > 1 else ''}: "
                        f"steps are slowed by waiting; {advice}")

    def _note_compile(self, r: dict) -> None:
        """With torch.compile the first step includes compilation: say how long it took, apart from step time."""
        if not self.t.runtime.compile or r["step"] > self.start_step + 2:
            return
        if self.first_step_time is None:
            self.first_step_time = r["step_time"]
        else:
            r["compile_time"] = max(0.0, self.first_step_time - r["step_time"])
            self.t.echo(f"compile: about {r['compile_time']:.1f} s (first step {self.first_step_time:.1f} s, "
                        f"then {r['step_time']:.2f} s per step)")
