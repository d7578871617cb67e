"""The checkpoint folder: what it holds, how it is written (atomically), read (without running code), verified,
set aside when corrupt, and thinned out by retention. Importable without the trainer: eval, sample and export
use it.

RUN_DIR/checkpoints/step_00001000/
  model.safetensors   the weights (tied embeddings stored once, under transformer.wte.weight)
  state.safetensors   every tensor of the training state (optimizer moments, RNG states)
  state.json          the rest of the training state (step, loader position, ...); tensors named, not pickled
  config.json         the resolved run config
  dcp/                FSDP runs only: the sharded state (torch.distributed.checkpoint)
  COMPLETE            written last: {"format": 1, "step", "files": {name: {"bytes", "sha256"}}, "health"}

A checkpoint thinned by `gpt2lab thin` keeps model.safetensors, config.json and COMPLETE (marked "weights_only"):
about a third of the bytes under Adam or Muon; eval, sample, export and --init-from read it, --resume does not.

Loading a checkpoint never unpickles code: weights and tensors come from safetensors, the rest from JSON.
Checkpoints of gpt2lab 0.1 (state.pt, a pickle) are read with torch.load(weights_only=True) and an allowlist
of the four NumPy names their RNG state needs, so a planted payload fails to load instead of running.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import load_file, load_model, save_file

from .config import Config, from_dict
from .errors import UserError
from .files import copy_mode_from_umask, file_digest, fsync_dir, utf8_path, write_error
from .formats import BadFile, check, read_json
from .formats.json_file import MB
from .formats.schemas import Manifest, TrainingState
from .model import GPT

CHECKPOINTS = "checkpoints"
WEIGHTS, TENSORS, STATE_JSON, CONFIG, MARKER = "model.safetensors", "state.safetensors", "state.json", "config.json", "COMPLETE"
LEGACY_STATE = "state.pt"
DCP_FOLDER = "dcp"
FORMAT = 1
STEP_NAME = re.compile(r"^step_(\d{8})$")


class CorruptCheckpoint(Exception):
    """A checkpoint folder whose files are missing, truncated, altered or unreadable: skip it, set it aside."""


# --- training state as JSON + tensors -------------------------------------------------------------------------

def pack(tree, tensors: dict[str, torch.Tensor], path: str = "s"):
    """A JSON-able copy of nested state; tensors and arrays move into `tensors` under their path."""
    if isinstance(tree, torch.Tensor):
        tensors[path] = tree.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": path}
    if isinstance(tree, np.ndarray):
        tensors[path] = torch.from_numpy(tree.astype(np.int64) if tree.dtype == np.uint32 else tree.copy())
        return {"__ndarray__": path, "dtype": str(tree.dtype)}
    if isinstance(tree, (dict, tuple, list)):
        return _pack_container(tree, tensors, path)
    if isinstance(tree, float) and not math.isfinite(tree):
        return {"__float__": repr(tree)}
    if tree is None or isinstance(tree, (bool, int, float, str)):
        return tree
    raise TypeError(f"cannot store {type(tree).__name__} in a checkpoint at {path}")


def _pack_container(tree, tensors: dict[str, torch.Tensor], path: str):
    if isinstance(tree, dict):
        if all(isinstance(k, str) for k in tree):
            return {k: pack(v, tensors, f"{path}.{k}") for k, v in tree.items()}
        return {"__items__": [[k, pack(v, tensors, f"{path}.{i}")] for i, (k, v) in enumerate(tree.items())]}
    packed = [pack(v, tensors, f"{path}.{i}") for i, v in enumerate(tree)]
    return {"__tuple__": packed} if isinstance(tree, tuple) else packed


def unpack(tree, tensors: dict[str, torch.Tensor]):
    """The inverse of pack()."""
    if isinstance(tree, list):
        return [unpack(v, tensors) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if "__tensor__" in tree:
        return tensors[tree["__tensor__"]]
    if "__ndarray__" in tree:
        return tensors[tree["__ndarray__"]].numpy().astype(tree["dtype"])
    if "__items__" in tree:
        return {k: unpack(v, tensors) for k, v in tree["__items__"]}
    if "__tuple__" in tree:
        return tuple(unpack(v, tensors) for v in tree["__tuple__"])
    if "__float__" in tree:
        return float(tree["__float__"])
    return {k: unpack(v, tensors) for k, v in tree.items()}


# --- writing ---------------------------------------------------------------------------------------------------

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


def _digest(path: Path) -> dict:
    return {"bytes": path.stat().st_size, "sha256": file_digest(path)}


def _manifest(folder: Path) -> dict[str, dict]:
    return {str(p.relative_to(folder)): _digest(p) for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MARKER}


def temporary_folder(folder: Path) -> Path:
    return folder.with_name(f".{folder.name}.tmp")


def _refuse_foreign(folder: Path, replace: bool) -> None:
    """Only a folder that is a checkpoint of ours is ever replaced (with replace), and an empty one filled."""
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise UserError(f"{folder} is a {'link' if folder.is_symlink() else 'file'} where gpt2lab saves a checkpoint "
                        "folder; gpt2lab replaces nothing it did not write: move it away and resume")
    if folder.exists() and any(folder.iterdir()) and not (replace and is_checkpoint(folder)):
        what = "is a checkpoint" if is_checkpoint(folder) else "is not empty and not a gpt2lab checkpoint"
        raise UserError(f"{folder} {what}; gpt2lab replaces nothing it did not write: choose another --out")


def _write_files(tmp: Path, weights: dict[str, torch.Tensor], config: Config, state: dict) -> None:
    """The weights, the training state (tensors + JSON) and the config, each file fsynced."""
    save_file(weights, str(tmp / WEIGHTS))
    tensors: dict[str, torch.Tensor] = {}
    packed = pack(state, tensors)
    save_file(tensors, str(tmp / TENSORS))
    (tmp / STATE_JSON).write_text(json.dumps(packed) + "\n")
    (tmp / CONFIG).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    for p in tmp.rglob("*"):
        if p.is_file():
            copy_mode_from_umask(p)
            with open(p, "rb") as f:
                os.fsync(f.fileno())


def _mark_complete(tmp: Path, weights: dict[str, torch.Tensor], state: dict) -> None:
    """COMPLETE, last, on disk before the folder takes its name: the manifest of every file, the weights' health,
    and the run that wrote it (retention deletes only its own run's)."""
    finite = all(bool(torch.isfinite(t).all()) for t in weights.values() if t.is_floating_point())
    marker = {"format": FORMAT, "step": state.get("step", 0), "files": _manifest(tmp), "health": {"weights_finite": finite},
              "run": state.get("run_id")}
    with open(tmp / MARKER, "w") as f:
        f.write(json.dumps(marker, indent=1) + "\n")
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(tmp)


def write_checkpoint(folder: Path, weights: dict[str, torch.Tensor] | torch.nn.Module, config: Config, state: dict,
                     tmp_prepared: bool = False, replace: bool = True) -> Path:
    """Write a checkpoint folder atomically: a temporary sibling, fsynced, marked COMPLETE, then renamed over.

    Any write failure (a full disk, a read-only folder) removes the temporary folder, leaves the previous
    checkpoints as they were and becomes a one-line error. With tmp_prepared, the temporary folder already
    holds FSDP's sharded state. Only a folder that is a checkpoint of ours is ever replaced (with replace), and
    an empty one filled."""
    if isinstance(weights, torch.nn.Module):
        weights = model_weights(weights)
    folder = Path(folder)
    _refuse_foreign(folder, replace)
    tmp = temporary_folder(folder)
    try:
        if not tmp_prepared:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        _write_files(tmp, weights, config, state)
        _mark_complete(tmp, weights, state)
        if folder.exists():
            shutil.rmtree(folder)  # our own checkpoint of the same step (a rollback saves it again), or empty
        os.replace(tmp, folder)
        fsync_dir(folder.parent)
    except (OSError, SafetensorError, RuntimeError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        previous = latest_checkpoint(folder.parent.parent) if folder.parent.name == CHECKPOINTS else None
        kept = f"; the last complete checkpoint is {previous}" if previous else ""
        raise write_error("checkpoint", folder, exc, f"free disk space or choose another --out{kept}") from None
    return folder


def checkpoint_folder(run_dir: str | os.PathLike, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"step_{step:08d}"


def save_checkpoint(run_dir: str | os.PathLike, step: int, weights, config: Config, state: dict,
                    tmp_prepared: bool = False) -> Path:
    """RUN_DIR/checkpoints/step_NNNNNNNN with the weights, the config and the training state."""
    return write_checkpoint(checkpoint_folder(run_dir, step), weights, config, {**state, "step": step}, tmp_prepared)


# --- finding and verifying ---------------------------------------------------------------------------------------

def is_checkpoint(path: Path) -> bool:
    return (path / MARKER).is_file() and (path / WEIGHTS).is_file()


def step_of(path: Path) -> int:
    return int(STEP_NAME.match(path.name).group(1))


def complete_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run (named step_NNNNNNNN, marked COMPLETE), newest first. Folders set aside
    as corrupt and temporary folders of a save in progress are not among them."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if STEP_NAME.match(p.name) and is_checkpoint(p)), reverse=True)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    done = complete_checkpoints(run_dir)
    return done[0] if done else None


def holds_training_state(path: Path) -> bool:
    """Whether a complete checkpoint can be resumed from: not thinned to its weights. A marker that cannot be read
    counts as holding it, so that resuming finds the damage and sets the checkpoint aside as before."""
    try:
        return not read_marker(path).get("weights_only")
    except CorruptCheckpoint:
        return True


def read_marker(folder: Path) -> dict:
    """The COMPLETE manifest, checked (schemas.Manifest); a 0.1 marker (just the step) reads as format 0 with no
    file list. Anything else makes the checkpoint corrupt."""
    path = folder / MARKER
    try:
        head = path.read_bytes()[:32] if path.is_file() and path.stat().st_size <= 32 else b""
        if head.strip().isdigit():
            return {"format": 0, "step": int(head.strip()), "files": None, "health": {}}
        marker = read_json(path, max_bytes=16 * MB, max_depth=8)
        marker = check(marker, Manifest, MARKER)
    except (BadFile, OSError) as exc:
        raise CorruptCheckpoint(str(exc).replace(str(folder) + "/", "")) from None
    if marker["files"] is None and marker["format"] != 0:
        raise CorruptCheckpoint(f"{MARKER} lists no files")
    return marker


def verify(folder: Path, deep: bool = False) -> dict:
    """The manifest, after checking that every file it lists is there with its size (and with deep, its SHA-256).
    Raises CorruptCheckpoint naming the first file that is not."""
    marker = read_marker(folder)
    for name, expected in (marker["files"] or {}).items():
        path = folder / name
        if ".." in Path(name).parts or Path(name).is_absolute():
            raise CorruptCheckpoint(f"{MARKER} names {name!r}, outside the checkpoint folder")
        if not path.is_file():
            raise CorruptCheckpoint(f"{name} is missing")
        if path.stat().st_size != expected["bytes"]:
            raise CorruptCheckpoint(f"{name} has {path.stat().st_size} bytes, the manifest says {expected['bytes']}")
        if deep and _digest(path)["sha256"] != expected.get("sha256"):
            raise CorruptCheckpoint(f"{name} does not match its SHA-256 in the manifest (altered or damaged)")
    if marker["files"] is None and not ((folder / LEGACY_STATE).is_file() or (folder / STATE_JSON).is_file()):
        raise CorruptCheckpoint("it has no training state")
    return marker


def hashed(marker: dict) -> bool:
    """Whether a verified manifest lists a SHA-256 for each file (then verify(deep=True) proved them intact)."""
    files = marker.get("files") or {}
    return bool(files) and all(isinstance(f, dict) and f.get("sha256") for f in files.values())


def set_aside(folder: Path, reason: str, kind: str = "corrupt") -> Path:
    """Rename a checkpoint to step_N.corrupt (damaged) or step_N.diverged (saved while training was going wrong),
    with KIND.txt saying why: never deleted (the user may want to look at it), never resumed from."""
    target = folder.with_name(f"{folder.name}.{kind}")
    n = 1
    while target.exists():
        n += 1
        target = folder.with_name(f"{folder.name}.{kind}{n}")
    os.replace(folder, target)
    (target / f"{kind.upper()}.txt").write_text(reason + "\n")
    return target


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint folder, or a run directory meaning its latest complete checkpoint."""
    p = Path(path)
    if is_checkpoint(p):
        return p
    latest = latest_checkpoint(p)
    if latest is None:
        if not p.exists():
            raise UserError(f"checkpoint {p} does not exist; pass a checkpoint folder or a run directory")
        if (p / WEIGHTS).is_file():  # a checkpoint's files without its manifest: copied in part, or still being written
            raise UserError(f"{p} has {WEIGHTS} but no {MARKER} manifest, so it is not a whole checkpoint (copied in part, "
                            f"or still being written); copy the whole step_N folder, or bring a transformers export in "
                            f"with gpt2lab import")
        raise UserError(f"{p} holds no complete checkpoint; pass a checkpoint folder or a run directory that has one")
    return latest


# --- reading ---------------------------------------------------------------------------------------------------

def load_config(checkpoint: Path) -> Config:
    """The checkpoint's config.json: size- and depth-limited, then checked as every config is (from_dict)."""
    values = read_json(checkpoint / CONFIG, max_bytes=MB, max_depth=8,
                       fix="the checkpoint is incomplete or corrupt; use another checkpoint")
    if not isinstance(values, dict):
        raise BadFile(f"{checkpoint / CONFIG} is not a config (a JSON object of sections); the checkpoint is corrupt")
    return from_dict(values)


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; through Python's own file reading where the path is not UTF-8 (which the
    safetensors library cannot open)."""
    return load_file(str(path)) if utf8_path(path) else load_bytes(path.read_bytes())


def load_weights(model: GPT, checkpoint: Path, device: torch.device | str = "cpu") -> None:
    try:
        if utf8_path(checkpoint):
            missing, unexpected = load_model(model, str(checkpoint / WEIGHTS), strict=False, device=str(device))
        else:
            missing, unexpected = model.load_state_dict(read_tensors(checkpoint / WEIGHTS), strict=False)
            missing = [k for k in missing if k != "lm_head.weight" or not model.config.tie_embeddings]
    except (torch.OutOfMemoryError, MemoryError):
        raise  # the machine's state, not the checkpoint's
    except (OSError, SafetensorError, RuntimeError, ValueError) as exc:
        if str(exc).startswith("CUDA error"):
            raise
        raise UserError(f"cannot load weights from {checkpoint} ({type(exc).__name__}: {exc}); "
                        "the checkpoint is corrupt or of another architecture") from None
    if missing or unexpected:
        raise UserError(
            f"{checkpoint} does not match the model: missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}; "
            "it was saved for another architecture"
        )


def verified(checkpoint: Path, hashes: bool = True) -> Path:
    """The checkpoint, after checking its files against its manifest: sizes always, SHA-256s unless `hashes` is
    off (huge checkpoints); a mismatch is one line. Swapped or altered weights are never used silently."""
    try:
        verify(checkpoint, deep=hashes)
    except CorruptCheckpoint as exc:
        raise UserError(f"checkpoint {checkpoint} is corrupt or was altered ({exc}); use another checkpoint") from None
    return checkpoint


def load_model_from_checkpoint(path: str | os.PathLike, device: torch.device,
                               hashes: bool = True) -> tuple[GPT, Config, Path]:
    """(model on device in eval mode, its config, the checkpoint folder) for eval, sampling and export; the
    files are checked against the manifest first (verified())."""
    checkpoint = verified(resolve_checkpoint(path), hashes)
    config = load_config(checkpoint)
    model = GPT(config.model)
    load_weights(model, checkpoint)
    return model.to(device).eval(), config, checkpoint


def _legacy_state(path: Path) -> dict:
    """A 0.1 state.pt, unpickled with torch's weights-only unpickler: tensors, containers, numbers and the NumPy
    array of the RNG state; anything else (code) is refused."""
    core = getattr(np, "_core", None) or np.core
    allowed = [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, map_location="cpu", weights_only=True)


def load_state(checkpoint: Path) -> dict:
    """The training state of a checkpoint, checked (schemas.TrainingState); CorruptCheckpoint if it cannot be read
    or has the wrong shape."""
    try:
        if (checkpoint / STATE_JSON).exists():
            packed = read_json(checkpoint / STATE_JSON, max_bytes=256 * MB, max_depth=64)
            tensors = read_tensors(checkpoint / TENSORS)
            state = unpack(packed, tensors)
        else:
            state = _legacy_state(checkpoint / LEGACY_STATE)
    except BadFile as exc:
        raise CorruptCheckpoint(str(exc).replace(str(checkpoint) + "/", "")) from None
    except Exception as exc:  # a damaged file fails in many ways; the message names the cause
        raise CorruptCheckpoint(f"cannot read its training state ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
    if not isinstance(state, dict) or "step" not in state:
        raise CorruptCheckpoint("its training state has no step")
    try:
        return check(state, TrainingState, STATE_JSON)
    except BadFile as exc:
        raise CorruptCheckpoint(str(exc)) from None


# --- thinning --------------------------------------------------------------------------------------------------

def drop_training_state(folder: Path) -> int:
    """Thin a checkpoint to its weights and config (eval, sample, export and --init-from still read it; --resume
    no longer can): the new manifest goes in first (temp + rename), then the training state's files go. A crash
    between the two leaves files the manifest does not name, nothing missing. Returns the bytes freed; 0 for a
    checkpoint thinned already. CorruptCheckpoint when its files do not match its manifest (it is left as it is)."""
    marker = verify(folder)
    if marker.get("weights_only"):
        return 0
    if marker["files"] is None:
        raise UserError(f"{folder} is a gpt2lab 0.1 checkpoint (no manifest); resume and save it with this gpt2lab "
                        "before thinning it")
    keep = {WEIGHTS, CONFIG, MARKER}
    thinned = {**marker, "files": {k: v for k, v in marker["files"].items() if k in keep}, "weights_only": True}
    tmp = folder / f".{MARKER}.tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(thinned, indent=1) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / MARKER)
    fsync_dir(folder)
    freed = 0
    for path in list(folder.iterdir()):
        if path.name in keep:
            continue
        if path.is_dir() and not path.is_symlink():
            freed += sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
            shutil.rmtree(path)
        else:
            freed += path.lstat().st_size
            path.unlink()
    fsync_dir(folder)
    return freed


# --- retention -------------------------------------------------------------------------------------------------

def retained(steps: list[int], keep_last: int | None, keep_every: int | None, protect: set[int] = frozenset()) -> set[int]:
    """Which of a run's verified checkpoint steps retention keeps: the newest keep_last (None: all), every
    multiple of keep_every, and the protected ones (the checkpoint a run resumed from, the newest healthy one)."""
    newest = sorted(steps, reverse=True)
    keep = set(newest if keep_last is None else newest[:keep_last])
    keep |= {s for s in steps if keep_every and s % keep_every == 0}
    return keep | (set(steps) & set(protect))


def prune_checkpoints(run_dir: str | os.PathLike, keep_last: int | None, keep_every: int | None = None,
                      protect: set[int] = frozenset(), run: str | None = None,
                      older: str = "delete") -> tuple[list[Path], list[Path]]:
    """Apply retention to a run's checkpoints: (removed or thinned, set aside). Only checkpoints that pass
    verify() count towards keep_last; one that fails is set aside as step_N.corrupt, never counted and never
    deleted. With `run`, a checkpoint whose manifest names another run (copied in by hand) is neither counted nor
    touched; checkpoints of gpt2lab before 0.3 name none and count as the run's own. `older="weights"` thins the
    checkpoints retention does not keep (drop_training_state) instead of deleting them."""
    good, aside = [], []
    for path in complete_checkpoints(run_dir):
        try:
            marker = verify(path)
        except CorruptCheckpoint as exc:
            aside.append(set_aside(path, str(exc)))
            continue
        if run is None or marker.get("run") in (None, run):
            good.append((path, marker))
    keep = retained([step_of(p) for p, _ in good], keep_last, keep_every, protect)
    removed = [(p, m) for p, m in good if step_of(p) not in keep]
    for path, marker in removed:
        if older != "weights":
            shutil.rmtree(path, ignore_errors=True)
        elif marker["files"] is not None and not marker.get("weights_only"):  # a 0.1 checkpoint stays whole
            drop_training_state(path)
    return [p for p, _ in removed], aside
