"""Everything that knows about process groups: torchrun's environment, DDP and FSDP2 wrapping, gradient
sync control, collectives, and FSDP's sharded checkpoints (torch.distributed.checkpoint). The rest of
gpt2lab asks this module for rank and world size and hands it tensors to reduce.

Launch with torchrun, e.g. `torchrun --nproc_per_node=8 -m gpt2lab train ...`. NCCL on CUDA, gloo on the
CPU. A process group timeout (run.dist_timeout_s) turns a hang into an error; torchrun ends the other ranks
when one dies.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..checkpoint import DCP_FOLDER, unique_tensors
from ..errors import UserError

STRATEGIES = ("ddp", "fsdp")


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    strategy: str = "none"  # "none" (one process), "ddp" or "fsdp"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.strategy != "none"

    def describe(self) -> str:
        """How the model is spread, for the run's start-up line: '' for one plain process."""
        if not self.active:
            return ""
        n = f"{self.world_size} process{'es' if self.world_size > 1 else ''}"
        return f"{self.strategy.upper()} over {n} ({dist.get_backend()})"

    # --- collectives (identity in a single process) ---

    def all_reduce_mean_(self, t: torch.Tensor) -> torch.Tensor:
        """Average a tensor across ranks in place, on the device: no host read."""
        if self.active:
            dist.all_reduce(t)
            t /= self.world_size
        return t

    def broadcast_int(self, value: int, device: torch.device) -> int:
        """Rank 0's value on every rank (a host read: for set-up decisions, not per step)."""
        if not self.active:
            return value
        t = torch.tensor([value], dtype=torch.long, device=device)
        dist.broadcast(t, src=0)
        return int(t.item())

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        if not self.active:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()

    def broadcast_object(self, obj):
        """Rank 0's object on every rank (a host round trip: for decisions, not per step)."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_objects(self, obj) -> list:
        if not self.active:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def stop_together(self, problem: str | None) -> None:
        """Raise UserError on every rank when any rank has a problem (its message, or the first other rank's), so
        that no rank stops alone while the others wait for it in a collective. A host round trip: for set-up and
        logging steps, not every step."""
        problems = self.gather_objects(problem)
        mine = problem or next((f"rank {r}: {p}" for r, p in enumerate(problems) if p), None)
        if mine:
            raise UserError(mine)

    def require_same(self, values: dict[str, str], fix: str) -> None:
        """Raise UserError on every rank when any rank's values differ from rank 0's, naming the rank and the first
        keys: ranks started with other settings or data must stop at start-up, not train apart (another LR on one
        rank is silent under DDP: the gradients are averaged, each rank's weights drift from the others')."""
        everyone = self.gather_objects(values)
        for r, theirs in enumerate(everyone[1:], start=1):
            keys = sorted(k for k in everyone[0].keys() | theirs.keys() if everyone[0].get(k) != theirs.get(k))
            if keys:
                shown = ", ".join(f"{k} ({str(everyone[0].get(k))[:40]} on rank 0, {str(theirs.get(k))[:40]} on rank {r})"
                                  for k in keys[:3])
                raise UserError(f"the ranks disagree at start-up: {shown}{' ...' if len(keys) > 3 else ''}; {fix}")

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def init_distributed(strategy: str, device: str, timeout_s: int) -> Dist:
    """Join torchrun's process group when WORLD_SIZE > 1 (or, for FSDP, a group of one)."""
    if strategy not in STRATEGIES:
        raise UserError(f"run.parallel={strategy!r} is not one of {', '.join(STRATEGIES)}")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1 and strategy == "ddp":
        return Dist()  # a single process needs no wrapper
    store = None
    if world == 1:  # FSDP in one process: a group of one (an in-memory store, no port), same sharded format
        store = dist.HashStore()
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1 and device.startswith("cuda:"):
        raise UserError(f"--device {device} names one GPU, but under torchrun each process trains on cuda:LOCAL_RANK; "
                        "pass --device cuda (or auto) and choose the GPUs with CUDA_VISIBLE_DEVICES")
    cuda = device in ("auto", "cuda") and torch.cuda.is_available() or device.startswith("cuda:")
    kwargs = {}
    if cuda:  # NCCL bound to this rank's GPU from the start (no guessing, no context on GPU 0)
        gpu = torch.device(device if device.startswith("cuda:") and world == 1 else f"cuda:{local_rank}")
        torch.cuda.set_device(gpu)
        kwargs["device_id"] = gpu
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world, store=store,
                                timeout=datetime.timedelta(seconds=timeout_s), **kwargs)
    return Dist(rank=rank, world_size=world, local_rank=local_rank, strategy=strategy)


def start_settings(config: dict, data_fingerprint: str, **choices) -> dict[str, str]:
    """What every rank must start with alike: every setting (the data folder's path excepted: nodes may mount the
    same data in other places), the data's fingerprint and the command's choices (resume, init_from)."""
    flat = {f"{section}.{key}": json.dumps(value, sort_keys=True, default=str)
            for section, fields in config.items() for key, value in fields.items() if f"{section}.{key}" != "data.dir"}
    return {**flat, "data (its fingerprint)": data_fingerprint, **{k: json.dumps(v) for k, v in choices.items()}}


def local_device(d: Dist, device: str) -> str:
    """The device this rank trains on: cuda:LOCAL_RANK under torchrun on GPUs."""
    if d.active and device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{d.local_rank}"
    return device


def wrap_model(model: torch.nn.Module, d: Dist, device: torch.device) -> torch.nn.Module:
    """DDP around the model, or FSDP2 (each block sharded, then the root) on a mesh of the run's device.

    FSDP keeps fp32 weights and, like DDP, lets autocast lower the matmuls, so the residual stream stays fp32
    and an FSDP run follows a DDP run's numerics (FSDP's bf16 parameter policy would halve the all-gather
    traffic but keep the residual stream in bf16: a different model). DDP does not re-broadcast buffers each
    forward: the only buffers (RoPE tables) are computed identically on every rank."""
    if d.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        # the only buffers (RoPE tables) are computed identically on every rank: no sync before each forward
        # (torch 2.13 renamed broadcast_buffers, with a FutureWarning, to forward_sync_buffers)
        import inspect

        sync = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DDP).parameters
                else "broadcast_buffers")
        return DDP(model, device_ids=[device.index] if device.type == "cuda" else None, **{sync: False})
    if d.strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(device.type, (d.world_size,))
        for block in model.transformer.h:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
    return model


def gradient_sync(model: torch.nn.Module, d: Dist, sync: bool):
    """A context in which backward does (sync=True) or does not (accumulation micro-steps) reduce gradients."""
    if d.strategy == "ddp" and not sync:
        return model.no_sync()
    if d.strategy == "fsdp":
        model.set_requires_gradient_sync(sync)
    return contextlib.nullcontext()


def full_value(t: torch.Tensor) -> torch.Tensor:
    """A tensor whole even when it is a DTensor (FSDP's gradient norm): a collective, not a host read."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


# --- FSDP checkpoints: sharded model and optimizer state through torch.distributed.checkpoint ---



def save_sharded(folder, model, optimizer) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(folder / DCP_FOLDER))


def load_sharded(folder, model, optimizer) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    if not (folder / DCP_FOLDER).is_dir():
        raise UserError(f"{folder} holds no sharded (FSDP) state; resume it with run.parallel=ddp")
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optim": optim_state}
    dcp.load(state, checkpoint_id=str(folder / DCP_FOLDER))
    settings = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    for group, own in zip(optimizer.param_groups, settings):  # the run's LR, decay, betas: not the checkpoint's
        group.update(own)


def full_weights(model) -> dict[str, torch.Tensor]:
    """The whole model's weights on rank 0's CPU (a collective: every rank calls it; others get {})."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return unique_tensors(get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)))


def shutdown(d: Dist) -> None:
    if d.active and dist.is_initialized():
        dist.destroy_process_group()
