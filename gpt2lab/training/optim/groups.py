"""Parameter groups by role, learning rates as multipliers, and optimizer state keyed by parameter name.

Every parameter has one role:
  matrix     2-D weights inside the blocks (attention and MLP projections)
  embedding  the token, position and value-embedding tables
  head       the output head, when it is not tied to the token table
  gain       norm gains and biases (anything 1-D): never weight-decayed
Each role gets its own LR (optim.matrix_lr, embedding_lr, head_lr, gain_lr; each defaults to optim.lr) and
weight decay. The schedule yields one multiplier; a group's LR is its base LR times that multiplier.

Optimizer state is saved by parameter name, not by position, so a checkpoint survives a change in how
parameters are grouped (and 0.1's two groups load into today's roles).
"""

from __future__ import annotations

import re

import torch

from ...config import OptimConfig
from ...errors import UserError

ROLES = ("matrix", "embedding", "head", "gain")


# The model's parameters by name: every trainable tensor must match one of these, so that a new weight (a value
# embedding, a skip gain) gets its role on purpose instead of falling into "matrix" (where Muon would
# orthogonalise an embedding table). Add the new name here when adding the weight.
_MATRIX = re.compile(r"transformer\.h\.\d+\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight")
_EMBEDDING = re.compile(r"transformer\.wte\.weight|transformer\.wpe\.weight|value_embeds\.\d+\.weight")


def role_of(name: str, param: torch.Tensor) -> str:
    """The role of a parameter of gpt2lab's GPT; a UserError for one this table does not know."""
    if param.dim() < 2:
        return "gain"
    if _EMBEDDING.fullmatch(name):
        return "embedding"
    if name == "lm_head.weight":
        return "head"
    if _MATRIX.fullmatch(name) and param.dim() == 2:
        return "matrix"
    raise UserError(f"parameter {name} {tuple(param.shape)} has no optimizer role; give it one in "
                    "gpt2lab/training/optim/groups.py (matrix, embedding, head or gain) before training it")


def check_groups(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> None:
    """Every trainable parameter is in exactly one of the optimizer's groups (none forgotten, none twice)."""
    seen: dict[int, int] = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            seen[id(p)] = seen.get(id(p), 0) + 1
    for name, p in named_parameters(model):
        if seen.get(id(p), 0) != 1:
            where = "no optimizer group" if id(p) not in seen else f"{seen[id(p)]} optimizer groups"
            raise UserError(f"parameter {name} is in {where}; an optimizer must place each trainable parameter once")


def role_settings(cfg: OptimConfig) -> dict[str, dict]:
    """The base LR and weight decay of each role."""
    lrs = {"matrix": cfg.matrix_lr, "embedding": cfg.embedding_lr, "head": cfg.head_lr, "gain": cfg.gain_lr}
    return {role: {"lr": lr if lr is not None else cfg.lr, "weight_decay": 0.0 if role == "gain" else cfg.weight_decay}
            for role, lr in lrs.items()}


def named_parameters(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """Trainable parameters with their names, each once (a tied head is the token table)."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def param_groups(model: torch.nn.Module, cfg: OptimConfig, roles: tuple[str, ...] = ROLES, **extra) -> list[dict]:
    """One group per role present, in ROLES order: {"params", "names", "role", "lr", "base_lr", "weight_decay"}.
    `extra` entries are added to every group (e.g. the algorithm a mixed optimizer uses for it)."""
    settings = role_settings(cfg)
    by_role: dict[str, list] = {r: [] for r in roles}
    for name, p in named_parameters(model):
        role = role_of(name, p)
        if role in by_role:
            by_role[role].append((name, p))
    groups = []
    for role, members in by_role.items():
        if members:
            lr = settings[role]["lr"]
            groups.append({"params": [p for _, p in members], "names": [n for n, _ in members], "role": role,
                           "lr": lr, "base_lr": lr, "weight_decay": settings[role]["weight_decay"], **extra})
    return groups


def set_lr_multiplier(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Every group's LR becomes its base LR times factor (the schedule's value, times any rollback scale)."""
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor


def named_state_dict(optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's per-parameter state keyed by parameter name, and each group's settings."""
    raw = optimizer.state_dict()
    state, groups = {}, []
    for group, saved in zip(optimizer.param_groups, raw["param_groups"]):
        for name, index in zip(group["names"], saved["params"]):
            if index in raw["state"]:
                state[name] = raw["state"][index]
        groups.append({k: v for k, v in saved.items() if k != "params"})
    return {"format": "named", "state": state, "groups": groups}


def legacy_names(model: torch.nn.Module) -> list[str]:
    """Parameter names in the order of 0.1's optimizer state: its decay group (2-D and up), then the rest."""
    params = named_parameters(model)
    return [n for n, p in params if p.dim() >= 2] + [n for n, p in params if p.dim() < 2]


def load_named_state_dict(optimizer: torch.optim.Optimizer, saved: dict, model: torch.nn.Module) -> None:
    """Load per-parameter state saved by named_state_dict (or 0.1's positional state) into this optimizer's
    groups, whatever their grouping; the groups keep today's settings."""
    if saved.get("format") == "named":
        by_name = saved["state"]
    else:  # 0.1: {"state": {index: ...}, "param_groups": [...]} over legacy_names order
        names = legacy_names(model)
        by_name = {names[i]: s for i, s in saved["state"].items() if i < len(names)}
    current = optimizer.state_dict()
    state, index = {}, 0
    for group in optimizer.param_groups:
        for name in group["names"]:
            if name in by_name:
                state[index] = by_name[name]
            index += 1
    missing = [n for g in optimizer.param_groups for n in g["names"] if n not in by_name]
    if missing and by_name:
        raise UserError(f"the checkpoint's optimizer state has no entry for {missing[0]} (and {len(missing) - 1} more); "
                        "it was saved for another model or optimizer")
    optimizer.load_state_dict({"state": state, "param_groups": current["param_groups"]})
