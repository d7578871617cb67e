"""Checkpoints: one folder per save, written under a temporary name and renamed when complete.

RUN_DIR/checkpoints/step_00001000/
  model.safetensors   the weights (tied embeddings stored once, under transformer.wte.weight)
  state.pt            optimizer, loader position, RNG states, grad scaler, step
  config.json         the resolved run config
  COMPLETE            written last; a folder without it is ignored
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_model, save_file

from ..config import Config, from_dict
from ..errors import UserError
from ..model import GPT

CHECKPOINTS = "checkpoints"
WEIGHTS, STATE, CONFIG, MARKER = "model.safetensors", "state.pt", "config.json", "COMPLETE"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unique_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU copies of a state dict's tensors, each shared tensor once (tied embeddings keep the first name)."""
    out, seen = {}, set()
    for name, tensor in state.items():
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        out[name] = tensor.detach().to("cpu", copy=True).contiguous()
    return out


def model_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return unique_tensors(model.state_dict())


def to_cpu(obj):
    """A deep copy of nested state (optimizer, scaler) with every tensor on the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def temporary_folder(folder: Path) -> Path:
    return folder.with_name(f".{folder.name}.tmp")


def write_checkpoint(folder: Path, weights: dict[str, torch.Tensor] | torch.nn.Module, config: Config, state: dict,
                     tmp_prepared: bool = False) -> Path:
    """Write a checkpoint folder atomically: a temporary sibling, fsynced, marked COMPLETE, then renamed.
    A full disk leaves no partial folder behind and becomes a one-line error. With tmp_prepared, the
    temporary folder already holds other files of the checkpoint (FSDP's sharded state)."""
    if isinstance(weights, torch.nn.Module):
        weights = model_weights(weights)
    tmp = temporary_folder(folder)
    try:
        if not tmp_prepared:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        save_file(weights, str(tmp / WEIGHTS))
        torch.save(state, tmp / STATE)
        (tmp / CONFIG).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        for name in (WEIGHTS, STATE, CONFIG):
            with open(tmp / name, "rb") as f:
                os.fsync(f.fileno())
        (tmp / MARKER).write_text(f"{state.get('step', 0)}\n")
        _fsync_dir(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
        _fsync_dir(folder.parent)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        previous = latest_checkpoint(folder.parent.parent) if folder.parent.name == CHECKPOINTS else None
        kept = f"; the last complete checkpoint is {previous}" if previous else ""
        raise UserError(f"could not write checkpoint {folder} ({exc.strerror or exc}); free disk space or choose "
                        f"another --out{kept}") from None
    return folder


def checkpoint_folder(run_dir: str | os.PathLike, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"step_{step:08d}"


def save_checkpoint(run_dir: str | os.PathLike, step: int, weights, config: Config, state: dict,
                    tmp_prepared: bool = False) -> Path:
    """RUN_DIR/checkpoints/step_NNNNNNNN with the weights, the config and the training state."""
    return write_checkpoint(checkpoint_folder(run_dir, step), weights, config, {"step": step, **state}, tmp_prepared)


def prune_checkpoints(run_dir: str | os.PathLike, keep_last: int, keep_every: int = 0) -> list[Path]:
    """Delete complete checkpoints beyond the newest keep_last, except steps that are multiples of keep_every."""
    removed = []
    if keep_last <= 0:
        return removed
    for path in complete_checkpoints(run_dir)[keep_last:]:
        step = int(path.name.split("_")[1])
        if keep_every and step % keep_every == 0:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def is_checkpoint(path: Path) -> bool:
    return (path / MARKER).is_file() and (path / WEIGHTS).is_file()


def complete_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run, newest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted((p for p in root.glob("step_*") if is_checkpoint(p)), reverse=True)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    done = complete_checkpoints(run_dir)
    return done[0] if done else None


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint folder, or a run directory meaning its latest complete checkpoint."""
    p = Path(path)
    if is_checkpoint(p):
        return p
    latest = latest_checkpoint(p)
    if latest is None:
        if not p.exists():
            raise UserError(f"checkpoint {p} does not exist; pass a checkpoint folder or a run directory")
        raise UserError(f"{p} holds no complete checkpoint; pass a checkpoint folder or a run directory that has one")
    return latest


def load_config(checkpoint: Path) -> Config:
    try:
        return from_dict(json.loads((checkpoint / CONFIG).read_text()))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {checkpoint / CONFIG} ({exc}); the checkpoint is incomplete or corrupt") from None


def load_weights(model: GPT, checkpoint: Path, device: torch.device | str = "cpu") -> None:
    try:
        missing, unexpected = load_model(model, str(checkpoint / WEIGHTS), strict=False, device=str(device))
    except Exception as exc:
        raise UserError(f"cannot load weights from {checkpoint} ({type(exc).__name__}: {exc}); "
                        "the checkpoint is corrupt or of another architecture") from None
    if missing or unexpected:
        raise UserError(
            f"{checkpoint} does not match the model: missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}; "
            "it was saved for another architecture"
        )


def load_model_from_checkpoint(path: str | os.PathLike, device: torch.device) -> tuple[GPT, Config, Path]:
    """(model on device in eval mode, its config, the checkpoint folder) for eval and sampling."""
    checkpoint = resolve_checkpoint(path)
    config = load_config(checkpoint)
    model = GPT(config.model)
    load_weights(model, checkpoint)
    return model.to(device).eval(), config, checkpoint


def load_state(checkpoint: Path) -> dict:
    try:
        return torch.load(checkpoint / STATE, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise UserError(f"cannot read {checkpoint / STATE} ({type(exc).__name__}); the checkpoint is corrupt") from None
