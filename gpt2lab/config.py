"""The one typed configuration of a training run, and how it is assembled.

Layers, each overriding the one before:
  defaults  <  a resumed run's saved config  <  recipe (a named whole run)  <  --preset (a named model)
            <  --config FILE (TOML/YAML/JSON)  <  --set section.key=value  <  first-class flags (--max-steps, ...)
A preset replaces the whole model section. Unknown keys are errors, with the closest known key suggested.

An optional setting is None when it is off or left to gpt2lab (`--set eval.every=none`); no number stands
for "off". Keys that moved in the 0.2 layout (run.eval_every -> eval.every, ...) and the old spelling of
"off" (0 or "") still load, with one deprecation note per command.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from .errors import UserError
from .files import input_file
from .formats import parse_json
from .formats.json_file import depth_of
from .model.gpt import GPTConfig
from .runtime import COMPILE_MODES, PRECISIONS

LEGACY_OFF = {"legacy_off": True}  # field metadata: an old config may write 0 or "" for None


def optional(default=None):
    return field(default=default, metadata=LEGACY_OFF)


@dataclass
class DataConfig:
    dir: str | None = optional()  # a directory written by `gpt2lab prepare`
    seq_len: int | None = optional()  # tokens per training window; None: model.block_size
    tokenizer: str | None = optional()  # folder with GPT-2's BPE files; None: the data's, $GPT2LAB_TOKENIZER or tiktoken's cache
    align_documents: bool = False  # windows start at document starts (off: exact GPT-2 practice, fixed tiling)
    document_masking: bool = False  # attention does not cross <|endoftext|> (explicit mask: no flash kernel)
    prefetch: int = 2  # micro-batches gathered ahead in a background thread (0: synchronous)


@dataclass
class OptimConfig:
    name: str = "adamw"  # an optimizer of gpt2lab/training/optim/ ("adamw", "muon")
    lr: float = 6e-4  # peak learning rate of every group whose own LR is not set
    matrix_lr: float | None = None  # hidden matrices (attention, MLP); None: lr. Muon's LR
    embedding_lr: float | None = None  # token and position embeddings; None: lr
    head_lr: float | None = None  # an untied output head; None: lr
    gain_lr: float | None = None  # norm gains and biases; None: lr
    weight_decay: float = 0.1  # matrices, embeddings and head; never gains or biases
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    # each optimizer's own settings, by optimizer: optim.muon.momentum=0.9 (CLI), [optim.muon] (TOML); declared
    # and checked by the optimizer's module (its Settings), read only when that optimizer is chosen
    settings: dict = field(default_factory=dict)
    grad_clip: float | None = optional(1.0)  # max global gradient norm; None: no clipping
    fused: bool = True  # fused AdamW kernel where the device has one


@dataclass
class ScheduleConfig:
    max_steps: int = 1000  # optimizer steps in the whole run (a cap when time_budget_s is set)
    warmup_steps: int | None = None  # linear warmup; None: 10% of max_steps, at most 100 (resolved and saved)
    min_lr: float | None = None  # where optim.lr ends; every group ends at the same fraction; None: min_lr_ratio
    min_lr_ratio: float = 0.1  # the final LR as a fraction of the peak, when min_lr is not set
    decay: str = "cosine"  # "cosine" | "linear" | "constant" | "wsd" (warmup-stable-decay)
    cooldown_fraction: float = 0.2  # wsd: the last share of the run, in which the LR decays linearly
    time_budget_s: float | None = None  # plan the run to end (decay included) after this many seconds
    # a batch that grows: accumulate batch_ramp_start x the micro-batches of run.batch_tokens at step 0, all of
    # them from step batch_ramp_steps on, linearly between (training/batch_ramp.py); None: off
    batch_ramp_steps: int | None = optional()
    batch_ramp_start: float = 0.25


@dataclass
class RunConfig:
    micro_batch: int = 8  # sequences per forward/backward
    batch_tokens: int | None = optional()  # tokens per optimizer step (all ranks, all accumulation); None: one micro-batch
    seed: int = 1337
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N" | "mps"
    precision: str = "auto"  # "auto" (bf16 on Ampere+ or a bf16 CPU, fp16 on older GPUs, else fp32) | "bf16" | "fp16" | "fp32"
    compile: str = "auto"  # "auto" (on for CUDA and bf16 CPUs with a C++ compiler) | "on" | "off"
    parallel: str = "ddp"  # under torchrun: "ddp" (replicas) or "fsdp" (FSDP2, sharded weights and optimizer)
    dist_timeout_s: int = 600  # a collective that waits longer than this fails instead of hanging
    activation_checkpointing: bool = False  # recompute each block in backward: less memory, ~30% more compute
    loss_chunk: int | None = optional()  # head loss in chunks of this many tokens (never all logits); None: 512 on CPUs, whole on GPUs
    auto_batch: bool = False  # on CUDA, find the largest micro-batch that fits (keeping batch_tokens)
    peak_tflops: float | None = optional()  # the device's dense peak for MFU; None: table (GPU) or measured (CPU)
    threads: int | None = optional()  # CPU threads for torch; None: torch's default (one per core)
    deterministic: bool = False  # bit-exact runs and resumes: deterministic kernels, compile off (slower)
    stop_at_step: int | None = optional()  # pause after this step with a checkpoint; the schedule still ends at max_steps, --resume goes on


@dataclass
class EvalConfig:
    every: int | None = optional(250)  # steps between validation passes; None: only at the end
    batches: int | None = optional(20)  # micro-batches per validation pass; None: the whole validation split
    hellaswag_every: int | None = optional()  # steps between HellaSwag passes (needs hellaswag_path); None: never
    hellaswag_path: str | None = optional()  # the original hellaswag_val.jsonl
    hellaswag_limit: int | None = optional()  # examples per in-loop pass (the first N); None: all 10,042
    tasks: str | None = None  # more evaluations by name, comma-separated (see gpt2lab/eval/__init__.py), e.g. "token_accuracy"


@dataclass
class CheckpointConfig:
    every: int | None = optional(1000)  # steps between checkpoints; None: only at the end
    keep_last: int | None = optional(3)  # checkpoints kept (the newest verified ones); None: all
    keep_every: int | None = optional()  # also keep checkpoints at multiples of this step
    # what happens to a checkpoint retention does not keep: "delete" it, or keep its "weights" (a third of the
    # disk, as `gpt2lab thin` leaves it: eval, sample, export and --init-from read it, --resume does not)
    older: str = "delete"
    asynchronous: bool = True  # write in a background thread (training pays only a CPU copy)


@dataclass
class GuardConfig:
    spike_z: float | None = optional(6.0)  # skip an update whose loss is this many std devs above the recent mean
    max_bad_steps: int = 10  # after this many skipped updates in a row, roll back (or stop)
    rollback: bool = True  # roll back to the last healthy checkpoint; False: stop instead
    rollback_lr_factor: float = 0.5  # multiply the LR by this after each rollback


@dataclass
class LogConfig:
    every: int | None = optional(10)  # steps between console lines (metrics.jsonl gets every step); None: evals only
    tensorboard: bool = True  # also log to RUN_DIR/tensorboard when TensorBoard is installed
    wandb_project: str | None = optional()  # also log to Weights & Biases under this project
    profile_steps: int | None = optional()  # write a torch.profiler trace of this many steps (after 2 warm-up steps)


@dataclass
class Config:
    model: GPTConfig = field(default_factory=GPTConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    run: RunConfig = field(default_factory=RunConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    log: LogConfig = field(default_factory=LogConfig)
    notes: list[str] = field(default_factory=list, compare=False, repr=False)  # derived values and deprecations

    @property
    def seq_len(self) -> int:
        return self.data.seq_len or self.model.block_size

    @property
    def min_lr(self) -> float:
        return self.schedule.min_lr if self.schedule.min_lr is not None else self.optim.lr * self.schedule.min_lr_ratio

    def to_dict(self) -> dict:
        return {s: dataclasses.asdict(getattr(self, s)) for s in SECTIONS}

    def validate(self) -> None:
        try:
            self.model.validate()
        except ValueError as exc:
            raise UserError(f"{exc}; fix the model settings") from None
        for ok, message in _checks(self):
            if not ok:
                raise UserError(message)

    def grad_accum_steps(self, world_size: int = 1) -> int:
        """Micro-steps per optimizer step so that each step sees run.batch_tokens tokens."""
        per_micro = self.run.micro_batch * self.seq_len * world_size
        total = self.run.batch_tokens or per_micro
        if total % per_micro:
            raise UserError(
                f"run.batch_tokens={total} is not a multiple of micro_batch*seq_len*world_size "
                f"= {self.run.micro_batch}*{self.seq_len}*{world_size} = {per_micro}; "
                f"use a multiple such as {max(1, round(total / per_micro)) * per_micro}"
            )
        return total // per_micro


def _positive(value) -> bool:
    return value is None or value >= 1


def _checks(c: Config) -> list[tuple[bool, str]]:
    return [*_data_checks(c), *_optim_checks(c.optim), *_schedule_checks(c.schedule, c.optim), *_run_checks(c.run),
            *_loop_checks(c)]


def _data_checks(c: Config) -> list[tuple[bool, str]]:
    return [
        (c.seq_len <= c.model.block_size,
         f"data.seq_len={c.seq_len} is longer than model.block_size={c.model.block_size}; lower data.seq_len"),
        (_positive(c.data.seq_len), f"data.seq_len must be at least 1 (or none for the model's block_size), got {c.data.seq_len}"),
        (0 <= c.data.prefetch <= 64, f"data.prefetch must be between 0 and 64, got {c.data.prefetch}"),
    ]


def _optim_checks(o: OptimConfig) -> list[tuple[bool, str]]:
    lrs = {f"optim.{n}": getattr(o, n) for n in ("lr", "matrix_lr", "embedding_lr", "head_lr", "gain_lr")}
    return [
        *[(v is None or 0 < v <= 10, f"{n} must be in (0, 10], got {v}") for n, v in lrs.items()],
        (0 <= o.weight_decay <= 10, f"optim.weight_decay must be between 0 and 10, got {o.weight_decay}"),
        (0 <= o.beta1 < 1 and 0 <= o.beta2 < 1, "optim.beta1 and optim.beta2 must be in [0, 1)"),
        (0 < o.eps <= 1, f"optim.eps must be in (0, 1], got {o.eps}"),
        (o.grad_clip is None or o.grad_clip > 0, f"optim.grad_clip must be positive (or none for no clipping), got {o.grad_clip}"),
    ]


def _schedule_checks(s: ScheduleConfig, o: OptimConfig) -> list[tuple[bool, str]]:
    return [
        (1 <= s.max_steps <= 10**9, f"schedule.max_steps must be between 1 and 1e9, got {s.max_steps}"),
        (s.warmup_steps is None or 0 <= s.warmup_steps <= s.max_steps,
         f"schedule.warmup_steps={s.warmup_steps} must be between 0 and max_steps={s.max_steps}; "
         "lower it with --set schedule.warmup_steps=N or raise --max-steps"),
        (s.min_lr is None or 0 <= s.min_lr <= o.lr,
         f"schedule.min_lr={s.min_lr} must be between 0 and optim.lr={o.lr} (or none: min_lr_ratio x optim.lr)"),
        (0 <= s.min_lr_ratio <= 1, f"schedule.min_lr_ratio must be in [0, 1], got {s.min_lr_ratio}"),
        (s.decay in DECAYS, f"schedule.decay={s.decay!r} is not one of {', '.join(DECAYS)}"),
        (0 < s.cooldown_fraction <= 1, f"schedule.cooldown_fraction must be in (0, 1], got {s.cooldown_fraction}"),
        (s.time_budget_s is None or 1 <= s.time_budget_s <= 366 * 86400,
         f"schedule.time_budget_s must be between 1 s and a year, got {s.time_budget_s}"),
        (s.batch_ramp_steps is None or 1 <= s.batch_ramp_steps <= s.max_steps,
         f"schedule.batch_ramp_steps={s.batch_ramp_steps} must be between 1 and max_steps={s.max_steps} (or none: off)"),
        (0 < s.batch_ramp_start < 1, f"schedule.batch_ramp_start must be in (0, 1), got {s.batch_ramp_start}"),
    ]


def _run_checks(r: RunConfig) -> list[tuple[bool, str]]:
    return [
        (1 <= r.micro_batch <= 65536, f"run.micro_batch must be between 1 and 65536, got {r.micro_batch}"),
        (_positive(r.batch_tokens), f"run.batch_tokens must be positive (or none for one micro-batch), got {r.batch_tokens}"),
        (0 <= r.seed < 2**63, f"run.seed must be between 0 and 2**63 - 1, got {r.seed}"),
        (r.precision in PRECISIONS, f"run.precision={r.precision!r} is not one of {', '.join(PRECISIONS)}"),
        (r.compile in COMPILE_MODES, f"run.compile={r.compile!r} is not one of {', '.join(COMPILE_MODES)}"),
        (r.parallel in ("ddp", "fsdp"), f"run.parallel={r.parallel!r} is not one of ddp, fsdp"),
        (1 <= r.dist_timeout_s <= 86400, f"run.dist_timeout_s must be between 1 and 86400, got {r.dist_timeout_s}"),
        (_positive(r.loss_chunk), f"run.loss_chunk must be positive (or none: the whole head at once), got {r.loss_chunk}"),
        (r.peak_tflops is None or 0 < r.peak_tflops <= 1e6, f"run.peak_tflops must be positive, got {r.peak_tflops}"),
        (r.threads is None or 1 <= r.threads <= 1024, f"run.threads must be between 1 and 1,024, got {r.threads}"),
        (r.stop_at_step is None or r.stop_at_step >= 1,
         f"run.stop_at_step must be a step of at least 1 (or none: train to the end), got {r.stop_at_step}"),
    ]


def _loop_checks(c: Config) -> list[tuple[bool, str]]:
    e, k, g, lg = c.eval, c.checkpoint, c.guard, c.log
    return [
        (all(_positive(v) for v in (e.every, e.batches, e.hellaswag_every, e.hellaswag_limit)),
         "eval.every, eval.batches, eval.hellaswag_every and eval.hellaswag_limit must be at least 1 (or none)"),
        (all(_positive(v) for v in (k.every, k.keep_last, k.keep_every)),
         "checkpoint.every, checkpoint.keep_last and checkpoint.keep_every must be at least 1 (or none)"),
        (k.older in ("delete", "weights"),
         f"checkpoint.older={k.older!r} is not one of delete, weights (what retention does to an older checkpoint)"),
        (g.spike_z is None or g.spike_z > 0, f"guard.spike_z must be positive (or none: off), got {g.spike_z}"),
        (1 <= g.max_bad_steps <= 10**6, f"guard.max_bad_steps must be at least 1, got {g.max_bad_steps}"),
        (0 < g.rollback_lr_factor <= 1, f"guard.rollback_lr_factor must be in (0, 1], got {g.rollback_lr_factor}"),
        (_positive(lg.every) and _positive(lg.profile_steps), "log.every and log.profile_steps must be at least 1 (or none)"),
    ]


DECAYS = ("cosine", "linear", "constant", "wsd")
_SECTION_TYPES = {"model": GPTConfig, "data": DataConfig, "optim": OptimConfig, "schedule": ScheduleConfig,
                  "run": RunConfig, "eval": EvalConfig, "checkpoint": CheckpointConfig, "guard": GuardConfig,
                  "log": LogConfig}
SECTIONS = tuple(_SECTION_TYPES)

# keys of the 0.1 layout and where they live now
MOVED = {
    **{f"run.{old}": f"eval.{new}" for old, new in (("eval_every", "every"), ("eval_batches", "batches"),
                                                    ("hellaswag_every", "hellaswag_every"),
                                                    ("hellaswag_path", "hellaswag_path"),
                                                    ("hellaswag_limit", "hellaswag_limit"))},
    **{f"run.{old}": f"checkpoint.{new}" for old, new in (("checkpoint_every", "every"), ("keep_last", "keep_last"),
                                                          ("keep_every", "keep_every"),
                                                          ("async_checkpoint", "asynchronous"))},
    **{f"run.{old}": f"guard.{old}" for old in ("spike_z", "max_bad_steps", "rollback", "rollback_lr_factor")},
    **{f"run.{old}": f"log.{new}" for old, new in (("log_every", "every"), ("tensorboard", "tensorboard"),
                                                   ("wandb_project", "wandb_project"), ("profile_steps", "profile_steps"))},
}

# names other trainers (nanoGPT, HF Trainer, litgpt) use for gpt2lab's settings
ALIASES = {
    "learning_rate": "optim.lr", "max_lr": "optim.lr", "lr_min": "schedule.min_lr", "min_lr": "schedule.min_lr",
    "max_iters": "schedule.max_steps", "max_steps": "schedule.max_steps", "warmup_iters": "schedule.warmup_steps",
    "lr_decay_iters": "schedule.max_steps", "batch_size": "run.micro_batch", "per_device_train_batch_size": "run.micro_batch",
    "gradient_accumulation_steps": "run.batch_tokens", "total_batch_size": "run.batch_tokens",
    "n_ctx": "model.block_size", "context_length": "model.block_size", "max_seq_len": "data.seq_len",
    "max_grad_norm": "optim.grad_clip", "clip_grad": "optim.grad_clip", "eval_interval": "eval.every",
    "log_interval": "log.every", "dtype": "run.precision", "d_model": "model.n_embd", "n_heads": "model.n_head",
    "n_layers": "model.n_layer", "data_dir": "data.dir", "dataset": "data.dir", "optimizer": "optim.name",
    "time_budget": "schedule.time_budget_s",
}
NONE_WORDS = ("none", "off", "null", "default")


def _unknown(kind: str, name: str, known) -> UserError:
    close = difflib.get_close_matches(str(name), list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(sorted(known))}"
    return UserError(f"unknown {kind} {name!r}{hint}")


def _fields(section: str) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(_SECTION_TYPES[section]) if f.name != "notes"}


@functools.cache
def _hints(kind: type) -> dict[str, Any]:
    """A settings dataclass's field types, resolved once: typing.get_type_hints evaluates every string
    annotation again on each call (it was most of the time of building a config)."""
    return typing.get_type_hints(kind)


def _declared(section: str, key: str) -> tuple[type, bool]:
    """(the value type, whether None is allowed) of section.key."""
    hint = _hints(_SECTION_TYPES[section])[key]
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return hint, False


def suggest_key(section: str, key: str) -> str | None:
    """The setting a mistyped or foreign key most likely means."""
    if key in ALIASES:
        return ALIASES[key]
    for other in SECTIONS:  # the right key in the wrong section
        if key in _fields(other):
            return f"{other}.{key}"
    everything = [f"{s}.{k}" for s in SECTIONS for k in _fields(s)]
    close = difflib.get_close_matches(f"{section}.{key}", everything, n=1, cutoff=0.75)
    close = close or [f"{section}.{k}" for k in difflib.get_close_matches(key, list(_fields(section)), n=1)]
    return close[0] if close else None


def _number(text, target: type):
    value = float(text.replace("_", "")) if isinstance(text, str) else text
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError
    if not math.isfinite(value):
        raise ValueError
    if target is int:
        if isinstance(value, float) and value != int(value):
            raise ValueError
        return int(value)
    return float(value)


def _unknown_key(section: str, key: str, fields: dict) -> UserError:
    guess = suggest_key(section, key)
    hint = f"did you mean {guess!r}?" if guess else f"known: {', '.join(f'{section}.{k}' for k in fields)}"
    return UserError(f"unknown config key '{section}.{key}'; {hint}")


NONE = object()  # what _as_none returns for a value that is not a way of saying none


def _as_none(section: str, key: str, value: Any, field_, notes: list[str] | None):
    """None for a nullable key's none (none, null, off... and a 0.1 layout's 0 where 0 meant off), else NONE."""
    if value is None or (isinstance(value, str) and value.strip().lower() in NONE_WORDS):
        return None
    if field_.metadata.get("legacy_off") and not isinstance(value, bool) and value in (0, "", "0"):
        if notes is not None:
            notes.append(f"{section}.{key}={value!r} means none")
        return None
    return NONE


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError


def _convert(section: str, key: str, target: type, value: Any) -> Any:
    if target is bool:
        return _bool(value)
    if target in (int, float):
        return _number(value, target)
    if section == "run" and key == "compile":  # 0.1 configs: compile = true/false
        text = str(value).strip().lower()
        return {"true": "on", "yes": "on", "1": "on", "false": "off", "no": "off", "0": "off"}.get(text, text)
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ValueError
    return str(value)


def typed_settings(kind: type, values: dict, where: str):
    """A component's own settings dataclass from raw values (CLI strings, TOML, JSON), each converted to its
    field's type as config keys are; an unknown key is one line that suggests the closest."""
    fields = {f.name: f for f in dataclasses.fields(kind)}
    for key in values:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            raise UserError(f"unknown setting {where}.{key}; {f'did you mean {close[0]!r}? ' if close else ''}"
                            f"{where} has {', '.join(fields) or 'none'}")
    hints = _hints(kind)
    converted = {}
    for key, value in values.items():
        target = hints[key]
        try:
            converted[key] = _convert(where, key, target, value)
        except (TypeError, ValueError, OverflowError):
            raise UserError(f"{where}.{key}={value!r} is not a valid {target.__name__}") from None
    return kind(**converted)


def coerce(section: str, key: str, value: Any, notes: list[str] | None = None) -> Any:
    """A value converted to the declared type of section.key, or a UserError that says what was expected."""
    fields = _fields(section)
    if key not in fields:
        raise _unknown_key(section, key, fields)
    target, nullable = _declared(section, key)
    if nullable and (none := _as_none(section, key, value, fields[key], notes)) is not NONE:
        return none
    try:
        return _convert(section, key, target, value)
    except (TypeError, ValueError, OverflowError):
        kind = {int: "whole number", float: "finite number", bool: "true/false", str: "text"}.get(target, target.__name__)
        none = " (or none)" if nullable else ""
        raise UserError(f"{section}.{key}={value!r} is not a valid {target.__name__}: expected a {kind}{none}") from None


def merge(base: dict, layer: dict, where: str = "", notes: list[str] | None = None) -> dict:
    """Overlay a nested {section: {key: value}} layer onto base, checking and converting every key."""
    out = {s: dict(base.get(s, {})) for s in SECTIONS}
    out["optim"]["settings"] = {k: dict(v) for k, v in out["optim"].get("settings", {}).items()}  # not base's
    for section, values in layer.items():
        if not isinstance(section, str) or section not in SECTIONS:
            raise _unknown(f"config section{where}", section, SECTIONS)
        if not isinstance(values, dict):
            raise UserError(f"config section {section!r}{where} must be a table of key = value")
        for key, value in values.items():
            if not isinstance(key, str):
                raise UserError(f"config key {key!r} in section {section!r}{where} must be text")
            if section == "optim" and _optimizer_setting(out["optim"], key, value, where, notes):
                continue
            target_section, target_key = section, key
            if f"{section}.{key}" in MOVED:
                target_section, target_key = MOVED[f"{section}.{key}"].split(".")
                if notes is not None:
                    notes.append(f"{section}.{key} is now {target_section}.{target_key}")
            out[target_section][target_key] = coerce(target_section, target_key, value, notes)
    return out


# Muon's settings of the 0.2 layout, now its own (optim.muon.*)
OPTIMIZER_MOVED = {"momentum": "muon", "nesterov": "muon", "ns_steps": "muon"}


def _optimizer_setting(optim: dict, key: str, value: Any, where: str, notes: list[str] | None) -> bool:
    """Route an optimizer's own setting into optim.settings[name] (raw: its module types and checks it when the
    optimizer is built): optim.NAME.KEY, a [optim.NAME] table, a saved `settings` table, or a 0.2 key of Muon's.
    False when the key is an ordinary optim key."""
    settings = optim.setdefault("settings", {})
    if key == "settings" and not isinstance(value, dict):
        raise UserError(f"optim.settings{where} must be a table of tables: optimizer name -> its settings")
    if key == "settings":
        for name, values in value.items():
            if not isinstance(values, dict):
                raise UserError(f"optim.settings.{name}{where} must be a table of an optimizer's settings")
            settings.setdefault(str(name), {}).update(values)
        return True
    if key in OPTIMIZER_MOVED:
        if notes is not None:  # one line however many of them a 0.2 config holds
            notes.append("optim.momentum, optim.nesterov and optim.ns_steps are now optim.muon.* (Muon's own settings)")
        key = f"{OPTIMIZER_MOVED[key]}.{key}"
    if "." in key:
        name, sub = key.split(".", 1)
        settings.setdefault(name, {})[sub] = value
        return True
    if isinstance(value, dict) and key not in _fields("optim"):
        settings.setdefault(key, {}).update(value)
        return True
    return False


def parse_sets(items: list[str]) -> dict:
    """--set section.key=value items as a nested dict (values still strings)."""
    layer: dict = {}
    for item in items:
        name, sep, value = item.partition("=")
        section, dot, key = name.strip().partition(".")
        if not sep or not dot or not key:
            raise UserError(f"--set {item!r} is not of the form section.key=value (e.g. optim.lr=3e-4)")
        layer.setdefault(section, {})[key] = value.strip()
    return layer


def _yaml_without_aliases(text: str):
    """YAML with anchors and aliases refused: a config needs neither, and aliases are how a small file
    expands into gigabytes (the billion-laughs attack). Parsed by libyaml where PyYAML has it: PyYAML's Python
    scanner is quadratic on some damaged files (a mangled 1 MB config took seconds)."""
    import yaml

    refusal = "anchors and aliases (&, *) are not allowed in a gpt2lab config"
    if getattr(yaml, "__with_libyaml__", False):
        for event in yaml.parse(text, Loader=yaml.CSafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise yaml.YAMLError(refusal)
        return yaml.load(text, Loader=yaml.CSafeLoader)

    class Loader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent) or getattr(self.peek_event(), "anchor", None):
                raise yaml.YAMLError(refusal)
            return super().compose_node(parent, index)

    return yaml.load(text, Loader=Loader)


def load_file(path: str) -> dict:
    """A config layer from a TOML, YAML or JSON file."""
    p = input_file(path, "config file", "pass a .toml, .yaml or .json file")
    if p.suffix not in (".toml", ".yaml", ".yml", ".json"):
        raise UserError(f"config file {path} must end in .toml, .yaml, .yml or .json")
    if p.stat().st_size > 1 << 20:
        raise UserError(f"config file {path} is larger than 1 MB; a config holds a few dozen settings")
    try:
        text = p.read_text(encoding="utf-8")
        if p.suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            data = tomllib.loads(text)
        elif p.suffix == ".json":
            data = parse_json(text, str(p), max_depth=8)
        else:
            data = _yaml_without_aliases(text) or {}
        if depth_of(data, 8) > 8:
            raise ValueError("it is nested deeper than 8 levels; a config is sections of key = value")
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"cannot parse config file {path}: {first}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold sections such as [model] and [optim]")
    return data


def from_dict(values: dict) -> Config:
    """A config from one nested dict (a saved config.json), checked."""
    notes: list[str] = []
    layer = merge({}, values, notes=notes)
    cfg = Config(**{s: _SECTION_TYPES[s](**layer[s]) for s in SECTIONS})
    cfg.notes = _dedupe(notes)
    _derive(cfg)
    cfg.validate()
    return cfg


EVAL_POINTS = 20  # validation passes a run gets when eval.every is left to gpt2lab


def _derive(cfg: Config, layer: dict | None = None) -> None:
    """Fill in what the user left to gpt2lab, and say so. `layer`: the merged settings, to tell what was set."""
    s = cfg.schedule
    if layer is not None and "every" not in (layer.get("eval") or {}):  # about EVAL_POINTS validation points
        every = max(1, min(250, round(s.max_steps / EVAL_POINTS)))
        if every != cfg.eval.every:
            cfg.eval.every = every
            cfg.notes.append(f"eval.every={every} (not set: about {EVAL_POINTS} validation points over "
                             f"{s.max_steps:,} steps, at most every 250)")
    if s.warmup_steps is None and s.time_budget_s:  # the run's length is planned as it goes: so is the warmup
        cfg.notes.append("schedule.warmup_steps not set: 10% of the planned steps, at most 100, re-planned with the "
                         "time budget's plan")
    elif s.warmup_steps is None:
        s.warmup_steps = min(100, round(0.1 * s.max_steps))
        cfg.notes.append(f"schedule.warmup_steps={s.warmup_steps} (not set: 10% of max_steps, at most 100)")


def build_config(
    base: dict | None = None,
    recipe: str | None = None,
    preset: str | None = None,
    model: dict | None = None,
    file: str | None = None,
    sets: list[str] | None = None,
    flags: dict | None = None,
) -> Config:
    """Assemble and validate a Config from the layers described at the top of this module.

    `model` is a whole model section (e.g. a checkpoint's) that takes the preset's place. Notes about derived
    values and deprecated keys are in the result's `notes`.
    """
    from . import recipes

    notes: list[str] = []
    layer: dict = merge({}, base, " (saved config)", notes) if base else {}
    if recipe:
        layer = merge(layer, recipes.recipe(recipe), " (recipe)", notes)
    if preset and model:
        raise UserError("a preset and a given model (e.g. --init-from) both name the model; drop --preset")
    if preset or model:
        layer["model"] = {}
        layer = merge(layer, {"model": recipes.preset(preset) if preset else model}, notes=notes)
    if file:
        layer = merge(layer, load_file(file), f" (in {file})", notes)
    if sets:
        layer = merge(layer, parse_sets(sets), notes=notes)
    if flags:
        layer = merge(layer, flags, notes=notes)
    cfg = Config(**{s: _SECTION_TYPES[s](**layer.get(s, {})) for s in SECTIONS})
    cfg.notes = _dedupe(notes)
    _derive(cfg, layer)
    cfg.validate()
    return cfg


def _dedupe(notes: list[str]) -> list[str]:
    """Deprecations in one line each (moved keys; 0 or "" for none), then the other notes once each."""
    moved = sorted({n for n in notes if " is now " in n})
    legacy = sorted({n.split("=")[0] for n in notes if n.endswith(" means none")})
    other = [n for n in dict.fromkeys(notes) if " is now " not in n and not n.endswith(" means none")]
    if legacy:
        other.insert(0, f"deprecated: 0 or \"\" for 'off' in {', '.join(legacy)}; write none (it still works)")
    if moved:
        other.insert(0, "deprecated keys: " + "; ".join(moved) + " (they still work)")
    return other
