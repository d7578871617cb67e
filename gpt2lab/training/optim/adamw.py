"""AdamW for every role (the classic GPT-2 recipe): decoupled weight decay on matrices, embeddings and head,
none on gains and biases. The fused kernel where the device has one (CUDA, CPU); it honours a found_inf flag,
so a skipped update is decided on the device without a host sync."""

from __future__ import annotations

import torch

from ...config import OptimConfig
from .groups import param_groups

STATE_BYTES = {"matrix": 8, "embedding": 8, "head": 8, "gain": 8}  # two fp32 moments per parameter


def fused_available(device: torch.device) -> bool:
    return device.type in ("cuda", "cpu")


def build(model: torch.nn.Module, cfg: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    fused = cfg.fused and fused_available(device)
    return torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                             fused=fused or None)
