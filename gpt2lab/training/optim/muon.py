"""Muon: momentum orthogonalised by Newton-Schulz for the hidden matrices, AdamW for everything else.

For each hidden matrix, the (Nesterov) momentum of its gradient is replaced by the nearest semi-orthogonal
matrix, approximately U V^T of its SVD, computed by a few Newton-Schulz iterations of an odd quintic that pushes
every singular value towards 1 (a handful of matmuls, in bf16 where its matmuls are native, else fp32). The update is scaled by sqrt(max(1, rows/cols))
so tall and wide matrices move alike. Fused projections are orthogonalised per logical matrix: attention's
q|k|v in thirds, SwiGLU's gate|up in halves. Embeddings, the head and gains use AdamW at their own role LRs
(optim.embedding_lr, head_lr, gain_lr); the matrices use optim.matrix_lr.

Works under DDP (every rank holds whole, averaged gradients): each rank orthogonalises its share of the matrices
(round robin) and broadcasts the new weights, so the Newton-Schulz work is divided by the number of ranks.
FSDP shards each matrix across ranks and Newton-Schulz needs it whole, so run.parallel=fsdp is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.optim.adam import adam

from ...config import OptimConfig
from ...errors import UserError
from .groups import param_groups
from .polar import polar_coefficients

STATE_BYTES = {"matrix": 4, "embedding": 8, "head": 8, "gain": 8}  # one momentum buffer; AdamW's two moments
QUINTIC = (3.4445, -4.7750, 2.0315)  # chosen so that the iteration maps (0, 1] close to 1 in a few steps


def coefficients_of(kind: str, steps: int) -> tuple[tuple[float, float, float], ...]:
    """Each Newton-Schulz iteration's (a, b, c): one fixed quintic ("quintic"), or one per iteration ("polar")."""
    return polar_coefficients(steps) if kind == "polar" else (QUINTIC,) * steps


def newton_schulz_dtype(device: torch.device) -> torch.dtype:
    """bf16 where its matmuls run in hardware: every GPU (as the public recipe runs it) and a CPU with AVX512-BF16
    or AMX. A CPU without them emulates bf16, and Newton-Schulz took 8.9 s of a 12 s lab step there (gpt2-15m +
    two value tables, AMD EPYC with AVX2, one core; 0.33 s with AMX): in fp32 it runs at the CPU's fp32 speed, and
    no less accurately."""
    if device.type != "cpu":
        return torch.bfloat16
    from gpt2lab.runtime import cpu_bf16_native

    return torch.bfloat16 if cpu_bf16_native()[0] else torch.float32


def orthogonalize(g: torch.Tensor, steps: int = 5, eps: float = 1e-7, kind: str = "quintic",
                  dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """Approximately U V^T for g = U S V^T, in `dtype`: singular values within about [0.7, 1.2] with the quintic,
    [0.87, 1.13] with per-iteration coefficients (from 1e-3 up; see polar.py)."""
    x = g.to(dtype)
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.mT
    x = x / (x.norm() + eps)  # every singular value now at most 1
    for a, b, c in coefficients_of(kind, steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.mT if tall else x).to(g.dtype)


def _blocks(name: str, shape: torch.Size, mlp: str) -> int:
    """How many logical matrices a fused weight holds, stacked along its rows."""
    if name.endswith("attn.c_attn.weight"):
        return 3
    if name.endswith("mlp.c_fc.weight") and mlp == "swiglu":
        return 2
    return 1


def _ranks() -> tuple[int, int]:
    """(this rank, world size) of the process group Muon's work is shared over: DDP's, or (0, 1) alone."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Muon(torch.optim.Optimizer):
    """One optimizer, two algorithms: groups with use_muon (hidden matrices) and AdamW groups (the rest)."""

    skips_on_device = True  # step() honours found_inf without reading it on the host (fused AdamW part)

    def __init__(self, groups: list[dict], momentum: float, nesterov: bool, ns_steps: int, betas, eps: float,
                 fused_adamw: bool, mlp: str, coefficients: str = "quintic", momentum_warmup: tuple[float, int] = (0.0, 0)):
        defaults = dict(momentum=momentum, nesterov=nesterov, ns_steps=ns_steps, betas=betas, eps=eps, fused=fused_adamw,
                        coefficients=coefficients)
        super().__init__(groups, defaults)
        self.mlp = mlp
        self.momentum, self.momentum_warmup = momentum, momentum_warmup
        self.orthogonalized = 0  # matrices this rank has orthogonalised (under DDP: its share)
        self.found_inf: torch.Tensor | None = None  # set by the trainer: 1 skips this step's update, on the device
        self.ns_dtypes: dict[torch.device, torch.dtype] = {}  # Newton-Schulz's dtype per device, decided once

    def momentum_at(self, step: int) -> float:
        """The matrices' momentum at an optimizer step (0 first): with optim.muon.momentum_warmup_steps=N it rises
        linearly from momentum_start to momentum over the first N steps (a lower momentum early, as the speedrun
        records do), else it is momentum throughout."""
        start, steps = self.momentum_warmup
        if step >= steps:
            return self.momentum
        return start + (self.momentum - start) * step / steps

    def at_step(self, step: int) -> None:
        """Set the matrices' momentum for this step (the trainer calls it before every step, from the run's step
        count, so a resumed run continues the ramp where it stopped). Without a warmup it changes nothing."""
        if not self.momentum_warmup[1]:
            return
        for group in self.param_groups:
            if group["use_muon"]:
                group["momentum"] = self.momentum_at(step)

    @torch.no_grad()
    def step(self, closure=None):
        skip = self.found_inf
        for group in self.param_groups:
            if group["use_muon"]:
                self._muon(group, skip)
            else:
                self._adamw(group, skip)

    def _muon(self, group: dict, skip: torch.Tensor | None) -> None:
        """Every rank updates every momentum buffer (elementwise, identical everywhere); under DDP each rank
        orthogonalises only the matrices it owns (round robin) and sends the new weights to the others, instead of
        every rank orthogonalising every matrix."""
        mu, lr, wd = group["momentum"], group["lr"], group["weight_decay"]
        rank, world = _ranks()
        sent = []
        owned = [(name, p) for name, p in zip(group["names"], group["params"]) if p.grad is not None]
        for i, (name, p) in enumerate(owned):
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p)
            buf = state["momentum_buffer"]
            new_buf = buf * mu + p.grad
            keep = skip.to(torch.bool) if skip is not None else None
            owner = i % world
            if owner == rank:
                update = p.grad + mu * new_buf if group["nesterov"] else new_buf
                parts = update.chunk(_blocks(name, p.shape, self.mlp), dim=0)
                dtype = self.ns_dtypes.setdefault(p.device, newton_schulz_dtype(p.device))
                ortho = torch.cat([orthogonalize(u, group["ns_steps"], kind=group["coefficients"], dtype=dtype)
                                   * max(1.0, u.size(0) / u.size(1)) ** 0.5 for u in parts])
                self.orthogonalized += 1
                new_p = p * (1.0 - lr * wd) - lr * ortho
                # decided on the device: a non-finite gradient must not reach the weights or the momentum
                p.copy_(new_p if keep is None else torch.where(keep, p, new_p))
            buf.copy_(new_buf if keep is None else torch.where(keep, buf, new_buf))
            if world > 1:
                sent.append(torch.distributed.broadcast(p.data, src=owner, async_op=True))
        for work in sent:
            work.wait()

    def _adamw(self, group: dict, skip: torch.Tensor | None) -> None:
        params, grads, m1, m2, steps = [], [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32, device=p.device if group["fused"] else "cpu")
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            params.append(p), grads.append(p.grad), m1.append(state["exp_avg"])
            m2.append(state["exp_avg_sq"]), steps.append(state["step"])
        if not params:
            return
        beta1, beta2 = group["betas"]
        fused = group["fused"]
        if skip is not None and not fused:  # the unfused kernel cannot skip on the device: one host read
            if bool(skip):
                return
            skip = None
        adam(params, grads, m1, m2, [], steps, fused=fused or None, found_inf=skip, decoupled_weight_decay=True,
             amsgrad=False, beta1=beta1, beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"],
             eps=group["eps"], maximize=False)


@dataclass
class Settings:
    """Muon's own settings: optim.muon.KEY=VALUE (CLI) or [optim.muon] (TOML)."""
    momentum: float = 0.95  # of the matrices' update (Nesterov-style when nesterov)
    nesterov: bool = True
    ns_steps: int = 5  # Newton-Schulz iterations that orthogonalise each matrix's update
    coefficients: str = "quintic"  # "quintic": one polynomial every iteration; "polar": one per iteration (polar.py)
    momentum_warmup_steps: int = 0  # >0: the momentum rises linearly from momentum_start over this many steps
    momentum_start: float = 0.85

    def check(self) -> None:
        if self.momentum_warmup_steps < 0 or not 0 <= self.momentum_start < 1:
            raise UserError(f"optim.muon.momentum_warmup_steps must be 0 or more and optim.muon.momentum_start in "
                            f"[0, 1), got {self.momentum_warmup_steps} and {self.momentum_start}")
        if not (0 <= self.momentum < 1 and 1 <= self.ns_steps <= 20):
            raise UserError(f"optim.muon.momentum must be in [0, 1) and optim.muon.ns_steps between 1 and 20, got "
                            f"{self.momentum} and {self.ns_steps}")
        if self.coefficients not in ("quintic", "polar"):
            raise UserError(f"optim.muon.coefficients must be quintic or polar, got {self.coefficients!r}")


def build(model: torch.nn.Module, cfg: OptimConfig, device: torch.device) -> Muon:
    if any(hasattr(p, "full_tensor") for p in model.parameters()):
        raise UserError("optim.name=muon does not work with run.parallel=fsdp: Newton-Schulz needs whole matrices and "
                        "FSDP shards them; use run.parallel=ddp")
    fused = cfg.fused and device.type in ("cuda", "cpu")
    # `fused` in the groups (Muon's defaults) tells torch's load_state_dict to put their `step` on the parameter's device, as
    # the fused kernel needs it (otherwise a resumed `step` stays on the CPU and the CUDA kernel refuses it)
    groups = (param_groups(model, cfg, ("matrix",), use_muon=True)
              + param_groups(model, cfg, ("embedding", "head", "gain"), use_muon=False))
    s = Settings(**cfg.settings.get("muon", {}))  # typed and checked by build_optimizer (settings_of)
    return Muon(groups, s.momentum, s.nesterov, s.ns_steps, (cfg.beta1, cfg.beta2), cfg.eps, fused, model.config.mlp,
                s.coefficients, (s.momentum_start, s.momentum_warmup_steps))
