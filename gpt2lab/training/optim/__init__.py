"""Optimizers, one file each, chosen by optim.name.

An optimizer module provides `build(model, cfg, device)` (groups from groups.param_groups, one per role) and
`STATE_BYTES` (its state per parameter, by role, for memory planning). To add one: its file here and one line
in OPTIMIZERS. An optimizer whose step honours a `found_inf` tensor (1: skip) sets `skips_on_device`, so the
trainer decides to skip a bad update on the device, without waiting for it. An optimizer with settings that
change per step has `at_step(step)`, called before every step (set_step).
"""

from __future__ import annotations

import dataclasses
import difflib

import torch

from ...config import OptimConfig, typed_settings
from ...errors import UserError
from . import adamw, lion, muon
from .groups import ROLES, check_groups, load_named_state_dict, named_state_dict, role_of, set_lr_multiplier

OPTIMIZERS = {
    "adamw": adamw,
    "muon": muon,
    "lion": lion,
}


def _module(name: str):
    if name not in OPTIMIZERS:
        close = difflib.get_close_matches(name, list(OPTIMIZERS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UserError(f"optim.name={name!r} is not an optimizer of gpt2lab; {hint}choose one of {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name]


def settings_of(cfg: OptimConfig):
    """The chosen optimizer's own settings (its module's Settings dataclass), typed and checked; the config
    keeps the typed values, so the run's config.json shows every one. Settings of an optimizer gpt2lab does not
    have are a typo: one line."""
    for name in cfg.settings:
        _module(name)
    kind = getattr(_module(cfg.name), "Settings", None)
    if kind is None:
        if cfg.settings.get(cfg.name):
            raise UserError(f"optim.{cfg.name} has no settings of its own; remove optim.{cfg.name}.*")
        return None
    settings = typed_settings(kind, cfg.settings.get(cfg.name, {}), f"optim.{cfg.name}")
    if hasattr(settings, "check"):
        settings.check()
    cfg.settings[cfg.name] = dataclasses.asdict(settings)
    return settings


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig, device: torch.device) -> torch.optim.Optimizer:
    settings_of(cfg)  # before anything is built: a bad setting is one line
    optimizer = _module(cfg.name).build(model, cfg, device)
    check_groups(optimizer, model)
    if not hasattr(optimizer, "skips_on_device"):
        optimizer.skips_on_device = bool(getattr(optimizer, "defaults", {}).get("fused"))
    return optimizer


def set_step(optimizer: torch.optim.Optimizer, step: int) -> None:
    """Tell an optimizer with per-step settings of its own (Muon's momentum warmup) which step comes next."""
    at_step = getattr(optimizer, "at_step", None)
    if at_step is not None:
        at_step(step)


def state_bytes_per_param(name: str, role: str) -> int:
    """Bytes of optimizer state one parameter of this role costs under optimizer `name`."""
    return _module(name).STATE_BYTES[role]


def state_bytes(model: torch.nn.Module, name: str) -> int:
    """The whole optimizer state of `model` under optimizer `name`, from each parameter's role (a meta-device
    model is enough: only shapes are read)."""
    return sum(p.numel() * state_bytes_per_param(name, role_of(n, p)) for n, p in model.named_parameters())


__all__ = ["OPTIMIZERS", "ROLES", "build_optimizer", "load_named_state_dict", "named_state_dict", "role_of",
           "set_lr_multiplier", "set_step", "settings_of", "state_bytes", "state_bytes_per_param"]
