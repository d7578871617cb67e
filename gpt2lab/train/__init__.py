"""Training: the loop, optimizer, LR schedule and checkpoints."""

from .checkpoint import latest_checkpoint, load_model_from_checkpoint, resolve_checkpoint, save_checkpoint
from .schedule import lr_at
from .trainer import Trainer, forward_backward

__all__ = [
    "Trainer", "forward_backward", "latest_checkpoint", "load_model_from_checkpoint", "lr_at",
    "resolve_checkpoint", "save_checkpoint",
]
