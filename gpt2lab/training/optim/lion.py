"""Lion (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms"): the update is the sign of an
interpolation between the momentum and the gradient, so every parameter moves by exactly the LR; the momentum is
then updated with a second coefficient. One state tensor per parameter (half of AdamW's), decoupled weight
decay. It uses optim.lr (typically 3-10x smaller than AdamW's), optim.beta1, optim.beta2 and optim.weight_decay,
and skips on the device when the trainer says so."""

from __future__ import annotations

import torch

from ...config import OptimConfig
from .groups import param_groups

STATE_BYTES = {"matrix": 4, "embedding": 4, "head": 4, "gain": 4}  # one momentum buffer


class Lion(torch.optim.Optimizer):
    skips_on_device = True

    def __init__(self, groups: list[dict], betas: tuple[float, float]):
        super().__init__(groups, dict(betas=betas))
        self.found_inf: torch.Tensor | None = None

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                m = self.state[p].setdefault("exp_avg", torch.zeros_like(p))
                direction = (beta1 * m + (1 - beta1) * p.grad).sign()
                new_p = p * (1 - group["lr"] * group["weight_decay"]) - group["lr"] * direction
                new_m = beta2 * m + (1 - beta2) * p.grad
                if self.found_inf is None:
                    p.copy_(new_p)
                    m.copy_(new_m)
                else:
                    skip = self.found_inf.to(torch.bool)
                    p.copy_(torch.where(skip, p, new_p))
                    m.copy_(torch.where(skip, m, new_m))


def build(model: torch.nn.Module, cfg: OptimConfig, device: torch.device) -> Lion:
    return Lion(param_groups(model, cfg), (cfg.beta1, cfg.beta2))
