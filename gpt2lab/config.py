"""The one typed configuration of a training run, and how it is assembled.

Layers, each overriding the one before:
  defaults  <  a resumed run's saved config  <  recipe (a named whole run)  <  --preset (a named model)
            <  --config FILE (TOML/YAML/JSON)  <  --set section.key=value  <  first-class flags (--max-steps, ...)
A preset replaces the whole model section. Unknown keys are errors, with the closest known key suggested.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError
from .model.gpt import GPTConfig
from .runtime import PRECISIONS


@dataclass
class DataConfig:
    dir: str = ""  # a directory written by `gpt2lab prepare`
    seq_len: int = 0  # tokens per training window; 0 means the model's block_size
    tokenizer: str = ""  # folder with GPT-2's BPE files for in-loop HellaSwag; "" means $GPT2LAB_TOKENIZER or tiktoken's cache
    align_documents: bool = False  # windows start at document starts (off: exact GPT-2 practice, fixed tiling)
    document_masking: bool = False  # attention does not cross <|endoftext|> (explicit mask: no flash kernel)
    prefetch: int = 2  # micro-batches gathered ahead in a background thread; 0: synchronous


@dataclass
class OptimConfig:
    lr: float = 6e-4  # peak learning rate
    weight_decay: float = 0.1  # applied to weights with 2 or more dimensions only
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    fused: bool = True  # use the fused AdamW kernel where the device has one


@dataclass
class ScheduleConfig:
    max_steps: int = 1000  # optimizer steps in the whole run
    warmup_steps: int = 100  # linear warmup from 0 to optim.lr
    min_lr: float = 6e-5  # the LR at the end of the decay
    decay: str = "cosine"  # "cosine" | "linear" | "constant"


@dataclass
class RunConfig:
    micro_batch: int = 8  # sequences per forward/backward
    batch_tokens: int = 0  # tokens per optimizer step (all ranks, all accumulation steps); 0: one micro-batch
    seed: int = 1337
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    precision: str = "auto"  # "auto" (bf16 on CUDA if supported, else fp16; fp32 on CPU) | "bf16" | "fp16" | "fp32"
    compile: bool = False  # torch.compile the model
    log_every: int = 10  # steps between console lines (metrics.jsonl gets every step)
    eval_every: int = 250  # steps between validation passes; 0: only at the end
    eval_batches: int = 20  # micro-batches per validation pass; 0: the whole validation split
    checkpoint_every: int = 1000  # steps between checkpoints; 0: only at the end
    keep_last: int = 3  # checkpoints kept (the newest); 0 keeps all
    keep_every: int = 0  # also keep checkpoints at multiples of this step; 0: none extra
    async_checkpoint: bool = True  # write checkpoints in a background thread (training pays only a CPU copy)
    spike_z: float = 6.0  # skip an update whose loss is this many std devs above the recent mean; 0: off
    max_bad_steps: int = 10  # after this many skipped updates in a row, roll back (or stop)
    rollback: bool = True  # roll back to the last checkpoint after max_bad_steps; False: stop instead
    rollback_lr_factor: float = 0.5  # multiply the LR by this after each rollback
    activation_checkpointing: bool = False  # recompute each block in backward: less memory, ~30% more compute
    loss_chunk: int = 0  # >0: training loss and head gradients in chunks of this many tokens, never all logits
    auto_batch: bool = False  # on CUDA, find the largest micro-batch that fits (keeping batch_tokens)
    parallel: str = "ddp"  # under torchrun: "ddp" (replicas) or "fsdp" (FSDP2, sharded weights and optimizer)
    dist_timeout_s: int = 600  # a collective that waits longer than this fails instead of hanging
    hellaswag_every: int = 0  # steps between HellaSwag passes (needs hellaswag_path); 0: never
    hellaswag_path: str = ""  # the original hellaswag_val.jsonl
    hellaswag_limit: int = 0  # examples per in-loop pass (the first N); 0: all 10,042
    peak_tflops: float = 0.0  # the device's dense peak for MFU; 0: look it up in gpt2lab/metrics/devices.py
    tensorboard: bool = True  # also log to RUN_DIR/tensorboard when TensorBoard is installed
    wandb_project: str = ""  # also log to Weights & Biases under this project
    profile_steps: int = 0  # write a torch.profiler trace of this many steps (after 2 warm-up steps)


@dataclass
class Config:
    model: GPTConfig = field(default_factory=GPTConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    run: RunConfig = field(default_factory=RunConfig)

    @property
    def seq_len(self) -> int:
        return self.data.seq_len or self.model.block_size

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        try:
            self.model.validate()
        except ValueError as exc:
            raise UserError(f"{exc}; fix the model settings") from None
        checks = [
            (self.seq_len <= self.model.block_size,
             f"data.seq_len={self.seq_len} is longer than model.block_size={self.model.block_size}; lower data.seq_len"),
            (self.seq_len > 0, "data.seq_len must be positive (or 0 for the model's block_size)"),
            (self.optim.lr > 0, f"optim.lr must be positive, got {self.optim.lr}"),
            (0 <= self.schedule.min_lr <= self.optim.lr,
             f"schedule.min_lr={self.schedule.min_lr} must be between 0 and optim.lr={self.optim.lr}"),
            (self.schedule.max_steps > 0, f"schedule.max_steps must be positive, got {self.schedule.max_steps}"),
            (0 <= self.schedule.warmup_steps <= self.schedule.max_steps,
             f"schedule.warmup_steps={self.schedule.warmup_steps} must be between 0 and max_steps={self.schedule.max_steps}; "
             "lower it with --set schedule.warmup_steps=N or raise --max-steps"),
            (self.schedule.decay in ("cosine", "linear", "constant"),
             f"schedule.decay={self.schedule.decay!r} is not one of cosine, linear, constant"),
            (self.run.micro_batch > 0, f"run.micro_batch must be positive, got {self.run.micro_batch}"),
            (self.data.prefetch >= 0, f"data.prefetch must be 0 or positive, got {self.data.prefetch}"),
            (self.run.loss_chunk >= 0, f"run.loss_chunk must be 0 (off) or positive, got {self.run.loss_chunk}"),
            (self.run.parallel in ("ddp", "fsdp"), f"run.parallel={self.run.parallel!r} is not one of ddp, fsdp"),
            (self.run.batch_tokens >= 0, f"run.batch_tokens must be 0 or positive, got {self.run.batch_tokens}"),
            (self.run.precision in PRECISIONS, f"run.precision={self.run.precision!r} is not one of {', '.join(PRECISIONS)}"),
            (self.optim.grad_clip >= 0, f"optim.grad_clip must be 0 (off) or positive, got {self.optim.grad_clip}"),
            (0 <= self.optim.beta1 < 1 and 0 <= self.optim.beta2 < 1, "optim.beta1 and optim.beta2 must be in [0, 1)"),
            (0 < self.run.rollback_lr_factor <= 1, "run.rollback_lr_factor must be in (0, 1]"),
            (self.run.max_bad_steps >= 1, "run.max_bad_steps must be at least 1"),
            (self.run.keep_last >= 0 and self.run.keep_every >= 0 and self.run.spike_z >= 0,
             "run.keep_last, run.keep_every and run.spike_z must not be negative"),
            (min(self.run.log_every, self.run.eval_every, self.run.checkpoint_every, self.run.eval_batches,
                 self.run.hellaswag_every, self.run.hellaswag_limit, self.run.peak_tflops, self.run.profile_steps) >= 0,
             "run.log_every, eval_every, checkpoint_every, eval_batches, hellaswag_*, peak_tflops and profile_steps "
             "must not be negative"),
        ]
        for ok, message in checks:
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


_SECTION_TYPES = {"model": GPTConfig, "data": DataConfig, "optim": OptimConfig, "schedule": ScheduleConfig, "run": RunConfig}
SECTIONS = tuple(_SECTION_TYPES)


def _unknown(kind: str, name: str, known) -> UserError:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(sorted(known))}"
    return UserError(f"unknown {kind} {name!r}{hint}")


def _field_types(section: str) -> dict[str, type]:
    return {f.name: type(f.default) if f.default is not dataclasses.MISSING else str
            for f in dataclasses.fields(_SECTION_TYPES[section])}


# names other trainers (nanoGPT, HF Trainer, litgpt) use for gpt2lab's settings
ALIASES = {
    "learning_rate": "optim.lr", "max_lr": "optim.lr", "lr_min": "schedule.min_lr", "min_lr": "schedule.min_lr",
    "max_iters": "schedule.max_steps", "max_steps": "schedule.max_steps", "warmup_iters": "schedule.warmup_steps",
    "lr_decay_iters": "schedule.max_steps", "batch_size": "run.micro_batch", "per_device_train_batch_size": "run.micro_batch",
    "gradient_accumulation_steps": "run.batch_tokens", "total_batch_size": "run.batch_tokens",
    "n_ctx": "model.block_size", "context_length": "model.block_size", "max_seq_len": "data.seq_len",
    "max_grad_norm": "optim.grad_clip", "clip_grad": "optim.grad_clip", "eval_interval": "run.eval_every",
    "log_interval": "run.log_every", "dtype": "run.precision", "d_model": "model.n_embd", "n_heads": "model.n_head",
    "n_layers": "model.n_layer", "data_dir": "data.dir", "dataset": "data.dir",
}


def suggest_key(section: str, key: str) -> str | None:
    """The setting a mistyped or foreign key most likely means."""
    if key in ALIASES:
        return ALIASES[key]
    for other in SECTIONS:  # the right key in the wrong section
        if key in _field_types(other):
            return f"{other}.{key}"
    everything = [f"{s}.{k}" for s in SECTIONS for k in _field_types(s)]
    close = difflib.get_close_matches(f"{section}.{key}", everything, n=1, cutoff=0.75)
    close = close or [f"{section}.{k}" for k in difflib.get_close_matches(key, list(_field_types(section)), n=1)]
    return close[0] if close else None


def coerce(section: str, key: str, value: Any) -> Any:
    """A value converted to the declared type of section.key, or a UserError that says what was expected."""
    types = _field_types(section)
    if key not in types:
        guess = suggest_key(section, key)
        hint = f"did you mean {guess!r}?" if guess else f"known: {', '.join(f'{section}.{k}' for k in types)}"
        raise UserError(f"unknown config key '{section}.{key}'; {hint}")
    target = types[key]
    try:
        if target is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "1", "yes", "on"):
                return True
            if text in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if target is int:
            if isinstance(value, bool):
                raise ValueError
            number = float(str(value).replace("_", "")) if isinstance(value, str) else value
            if float(number) != int(number):
                raise ValueError
            return int(number)
        if target is float:
            if isinstance(value, bool):
                raise ValueError
            return float(str(value).replace("_", "")) if isinstance(value, str) else float(value)
        return str(value)
    except (TypeError, ValueError):
        raise UserError(f"{section}.{key}={value!r} is not a valid {target.__name__}") from None


def merge(base: dict, layer: dict, where: str = "") -> dict:
    """Overlay a nested {section: {key: value}} layer onto base, checking and converting every key."""
    out = {s: dict(base.get(s, {})) for s in SECTIONS}
    for section, values in layer.items():
        if section not in SECTIONS:
            raise _unknown(f"config section{where}", section, SECTIONS)
        if not isinstance(values, dict):
            raise UserError(f"config section {section!r}{where} must be a table of key = value")
        for key, value in values.items():
            out[section][key] = coerce(section, key, value)
    return out


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


def load_file(path: str) -> dict:
    """A config layer from a TOML, YAML or JSON file."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file {path} does not exist")
    text = p.read_text()
    try:
        if p.suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            data = tomllib.loads(text)
        elif p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        elif p.suffix == ".json":
            data = json.loads(text)
        else:
            raise UserError(f"config file {path} must end in .toml, .yaml, .yml or .json")
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"cannot parse config file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold sections such as [model] and [optim]")
    return data


def from_dict(values: dict) -> Config:
    layer = merge({}, values)
    cfg = Config(**{s: _SECTION_TYPES[s](**layer[s]) for s in SECTIONS})
    cfg.validate()
    return cfg


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

    `model` is a whole model section (e.g. a checkpoint's) that takes the preset's place.
    """
    from . import recipes

    layer: dict = merge({}, base, " (saved config)") if base else {}
    if recipe:
        layer = merge(layer, recipes.recipe(recipe), " (recipe)")
    if preset and model:
        raise UserError("a preset and a given model (e.g. --init-from) both name the model; drop --preset")
    if preset or model:
        layer["model"] = {}
        layer = merge(layer, {"model": recipes.preset(preset) if preset else model})
    if file:
        layer = merge(layer, load_file(file), f" (in {file})")
    if sets:
        layer = merge(layer, parse_sets(sets))
    if flags:
        layer = merge(layer, flags)
    return from_dict(layer)
