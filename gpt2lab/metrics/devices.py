"""GPU facts for MFU and planning: dense peak TFLOPS per precision and memory, by device name.

Peaks are NVIDIA's dense (no 2:4 sparsity) tensor-core figures. GeForce cards are listed with FP32
accumulation, which is what PyTorch's bf16/fp16 matmuls use (NVIDIA's headline GeForce figures assume FP16
accumulation, twice as high). "tf32" is the peak for fp32 training with TF32 matmuls on (gpt2lab turns them
on); cards without TF32 list their plain FP32 rate there. Laptop GPUs vary with their power limit; the figure
is at the top boost clock. An unknown device has no peak: MFU is then not reported unless
run.peak_tflops gives one. Nothing falls back to a default peak silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import UserError


@dataclass(frozen=True)
class GPU:
    key: str
    name: str
    pattern: str  # regex matched against torch.cuda.get_device_name()
    memory_gb: float
    bf16: float | None  # dense TFLOPS; None where the card has no bf16 tensor cores
    fp16: float
    tf32: float


# Most specific patterns first: "H100 PCIe" must match before "H100".
GPUS: list[GPU] = [
    GPU("h100-pcie", "NVIDIA H100 PCIe", r"H100.*PCIe", 80, 756.0, 756.0, 378.0),
    GPU("h100-nvl", "NVIDIA H100 NVL", r"H100.*NVL", 94, 835.0, 835.0, 417.5),
    GPU("h100-sxm", "NVIDIA H100 SXM", r"H100", 80, 989.4, 989.4, 494.7),
    GPU("h200-nvl", "NVIDIA H200 NVL", r"H200.*NVL", 141, 835.0, 835.0, 417.5),
    GPU("h200", "NVIDIA H200 SXM", r"H200", 141, 989.4, 989.4, 494.7),
    GPU("a100-40gb", "NVIDIA A100 40GB", r"A100.*40", 40, 312.0, 312.0, 156.0),
    GPU("a100", "NVIDIA A100 80GB", r"A100", 80, 312.0, 312.0, 156.0),
    GPU("a10", "NVIDIA A10", r"\bA10\b", 24, 125.0, 125.0, 62.5),
    GPU("l40s", "NVIDIA L40S", r"L40S", 48, 362.05, 362.05, 183.0),
    GPU("l40", "NVIDIA L40", r"\bL40\b", 48, 181.0, 181.0, 90.5),
    GPU("l4", "NVIDIA L4", r"\bL4\b", 24, 121.0, 121.0, 60.0),
    GPU("t4", "NVIDIA T4", r"\bT4\b", 16, None, 65.0, 8.1),
    GPU("v100-pcie", "NVIDIA V100 PCIe", r"V100.*PCIE", 16, None, 112.0, 14.0),
    GPU("v100", "NVIDIA V100 SXM2", r"V100", 16, None, 125.0, 15.7),
    GPU("rtx5090", "NVIDIA GeForce RTX 5090", r"RTX 5090(?!.*Laptop)", 32, 209.5, 209.5, 104.8),
    GPU("rtx5080", "NVIDIA GeForce RTX 5080", r"RTX 5080(?!.*Laptop)", 16, 112.6, 112.6, 56.3),
    GPU("rtx4090", "NVIDIA GeForce RTX 4090", r"RTX 4090(?!.*Laptop)", 24, 165.2, 165.2, 82.6),
    GPU("rtx4080", "NVIDIA GeForce RTX 4080", r"RTX 4080(?!.*Laptop)", 16, 97.5, 97.5, 48.7),
    GPU("rtx4070", "NVIDIA GeForce RTX 4070", r"RTX 4070(?! Ti)(?!.*Laptop)", 12, 58.3, 58.3, 29.1),
    GPU("rtx4060", "NVIDIA GeForce RTX 4060", r"RTX 4060(?! Ti)(?!.*Laptop)", 8, 30.2, 30.2, 15.1),
    GPU("rtx4050-laptop", "NVIDIA GeForce RTX 4050 Laptop GPU", r"RTX 4050", 6, 24.3, 24.3, 12.1),
    GPU("rtx3090", "NVIDIA GeForce RTX 3090", r"RTX 3090(?!.*Laptop)", 24, 71.0, 71.0, 35.6),
    GPU("rtx3080", "NVIDIA GeForce RTX 3080", r"RTX 3080(?! Ti)(?!.*Laptop)", 10, 59.5, 59.5, 29.8),
    GPU("rtx3060", "NVIDIA GeForce RTX 3060", r"RTX 3060(?! Ti)(?!.*Laptop)", 12, 25.5, 25.5, 12.7),
]


def _normal(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def find_gpu(name: str) -> GPU | None:
    """The table entry for a key ("h100-sxm", "rtx4090") or a device name as CUDA reports it."""
    for gpu in GPUS:
        if _normal(name) == _normal(gpu.key):
            return gpu
    for gpu in GPUS:
        if re.search(gpu.pattern, name, flags=re.IGNORECASE):
            return gpu
    return None


def require_gpu(name: str) -> GPU:
    gpu = find_gpu(name)
    if gpu is None:
        raise UserError(f"unknown GPU {name!r}; known: {', '.join(g.key for g in GPUS)}")
    return gpu


def peak_tflops(gpu: GPU, precision: str) -> float:
    """Dense peak for the precision training runs in (fp32 means TF32 matmuls)."""
    if precision == "bf16":
        if gpu.bf16 is None:
            raise UserError(f"{gpu.name} has no bf16 tensor cores; use precision fp16")
        return gpu.bf16
    return gpu.fp16 if precision == "fp16" else gpu.tf32


def device_peak_flops(device_name: str, precision: str, override_tflops: float = 0.0) -> tuple[float | None, str]:
    """(peak FLOP/s or None, where it came from) for a running device."""
    if override_tflops > 0:
        return override_tflops * 1e12, "run.peak_tflops"
    gpu = find_gpu(device_name)
    if gpu is None:
        return None, f"unknown device {device_name!r}: set run.peak_tflops to report MFU"
    return peak_tflops(gpu, precision) * 1e12, f"{gpu.name}, dense {precision}"
