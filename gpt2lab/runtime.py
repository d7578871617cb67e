"""Where and in what precision the model runs: device choice (never a silent CPU fallback), autocast, seeding."""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass

import numpy as np
import torch

from .errors import UserError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


@dataclass
class Runtime:
    device: torch.device
    precision: str  # "bf16" | "fp16" | "fp32" after resolution

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def autocast(self):
        """The forward-pass context: autocast to bf16/fp16 on CUDA, nothing in fp32."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def describe(self) -> dict:
        """Facts about the device for the console and the run directory."""
        info = {"device": str(self.device), "precision": self.precision, "torch": torch.__version__}
        if self.device.type == "cuda":
            props = torch.cuda.get_device_properties(self.device)
            info.update(
                name=props.name,
                capability=f"{props.major}.{props.minor}",
                memory_gb=round(props.total_memory / 2**30, 2),
                cuda=torch.version.cuda,
            )
        else:
            info.update(name="CPU", threads=torch.get_num_threads())
        return info

    def banner(self) -> str:
        d = self.describe()
        if self.device.type == "cuda":
            return (
                f"device: {d['device']} ({d['name']}, {d['memory_gb']} GB, capability {d['capability']}), "
                f"precision {d['precision']}, torch {d['torch']}, CUDA {d['cuda']}"
            )
        return f"device: cpu ({d['threads']} threads), precision {d['precision']}, torch {d['torch']}"


def resolve_runtime(device: str = "auto", precision: str = "auto") -> Runtime:
    """Turn the user's --device and precision choice into a Runtime, or explain why it cannot be had."""
    cuda_ok = torch.cuda.is_available()
    if device == "auto":
        dev = torch.device("cuda" if cuda_ok else "cpu")
    elif device.startswith("cuda"):
        if not cuda_ok:
            raise UserError(
                f"--device {device} was requested but CUDA is not usable here (torch {torch.__version__}, "
                f"built for CUDA {torch.version.cuda}); install a CUDA build of torch, check the driver with "
                "nvidia-smi, or pass --device cpu to train on the CPU on purpose"
            )
        dev = torch.device(device)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif device == "cpu":
        dev = torch.device("cpu")
    else:
        raise UserError(f"--device {device!r} is not one of auto, cpu, cuda, cuda:N")
    if precision not in PRECISIONS:
        raise UserError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if dev.type == "cpu":
        if precision == "fp16":
            raise UserError("fp16 training needs CUDA; use precision fp32 (or bf16) on the CPU")
        resolved = "fp32" if precision == "auto" else precision
    elif precision == "auto":
        resolved = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    else:
        resolved = precision
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Runtime(device=dev, precision=resolved)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
