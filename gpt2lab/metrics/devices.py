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


# Patterns are anchored so that a suffix names another card: "RTX 4070" is not "RTX 4070 SUPER", "V100" not "V100S",
# "H200" not "GH200". find_gpu tries exact names and keys first, then the patterns in this order.
# Estimated rows (scaled from a sibling by SM count and boost clock, or from NVIDIA's sparse headline / 2) say so.
GPUS: list[GPU] = [
    GPU("b200", "NVIDIA B200", r"(?<!G)B200", 180, 2250.0, 2250.0, 1125.0),
    GPU("gb200", "NVIDIA GB200", r"GB200", 186, 2500.0, 2500.0, 1250.0),
    GPU("h100-pcie", "NVIDIA H100 PCIe", r"H100.*PCIe", 80, 756.0, 756.0, 378.0),
    GPU("h100-nvl", "NVIDIA H100 NVL", r"H100.*NVL", 94, 835.0, 835.0, 417.5),
    GPU("h100-sxm", "NVIDIA H100 SXM", r"H100", 80, 989.4, 989.4, 494.7),
    GPU("h800", "NVIDIA H800", r"H800", 80, 989.4, 989.4, 494.7),
    GPU("gh200", "NVIDIA GH200", r"GH200", 96, 989.4, 989.4, 494.7),
    GPU("h200-nvl", "NVIDIA H200 NVL", r"(?<!G)H200.*NVL", 141, 835.0, 835.0, 417.5),
    GPU("h200", "NVIDIA H200 SXM", r"(?<!G)H200", 141, 989.4, 989.4, 494.7),
    GPU("a100-40gb", "NVIDIA A100 40GB", r"A100.*40", 40, 312.0, 312.0, 156.0),
    GPU("a100", "NVIDIA A100 80GB", r"A100", 80, 312.0, 312.0, 156.0),
    GPU("a800", "NVIDIA A800", r"A800", 80, 312.0, 312.0, 156.0),
    GPU("a10g", "NVIDIA A10G", r"\bA10G\b", 24, 70.0, 70.0, 35.0),  # AWS's A10 variant (estimated)
    GPU("a10", "NVIDIA A10", r"\bA10\b", 24, 125.0, 125.0, 62.5),
    GPU("l40s", "NVIDIA L40S", r"L40S", 48, 362.05, 362.05, 183.0),
    GPU("l40", "NVIDIA L40", r"\bL40\b", 48, 181.0, 181.0, 90.5),
    GPU("l4", "NVIDIA L4", r"\bL4\b", 24, 121.0, 121.0, 60.0),
    GPU("t4", "NVIDIA T4", r"\bT4\b", 16, None, 65.0, 8.1),
    GPU("v100s", "NVIDIA V100S PCIe", r"V100S", 32, None, 130.0, 16.4),
    GPU("v100-pcie", "NVIDIA V100 PCIe", r"V100-?PCIE", 16, None, 112.0, 14.0),
    GPU("v100", "NVIDIA V100 SXM2", r"V100(?!S)", 16, None, 125.0, 15.7),
    # full-rate FP32 accumulation on this professional card: NVIDIA's 4,000 sparse FP4 TOPS / 8 (estimated)
    GPU("rtx-pro-6000", "NVIDIA RTX PRO 6000 Blackwell", r"RTX PRO 6000", 96, 503.8, 503.8, 126.0),
    GPU("rtx5090", "NVIDIA GeForce RTX 5090", r"RTX 5090\s*$", 32, 209.5, 209.5, 104.8),
    GPU("rtx5080", "NVIDIA GeForce RTX 5080", r"RTX 5080\s*$", 16, 112.6, 112.6, 56.3),
    GPU("rtx4090d", "NVIDIA GeForce RTX 4090 D", r"RTX 4090 ?D\s*$", 24, 147.1, 147.1, 73.6),  # 114 of 128 SMs
    GPU("rtx4090", "NVIDIA GeForce RTX 4090", r"RTX 4090\s*$", 24, 165.2, 165.2, 82.6),
    GPU("rtx4080super", "NVIDIA GeForce RTX 4080 SUPER", r"RTX 4080 SUPER\s*$", 16, 104.5, 104.5, 52.2),  # estimated
    GPU("rtx4080", "NVIDIA GeForce RTX 4080", r"RTX 4080\s*$", 16, 97.5, 97.5, 48.7),
    GPU("rtx4070super", "NVIDIA GeForce RTX 4070 SUPER", r"RTX 4070 SUPER\s*$", 12, 71.0, 71.0, 35.5),  # estimated
    GPU("rtx4070", "NVIDIA GeForce RTX 4070", r"RTX 4070\s*$", 12, 58.3, 58.3, 29.1),
    GPU("rtx4060", "NVIDIA GeForce RTX 4060", r"RTX 4060\s*$", 8, 30.2, 30.2, 15.1),
    GPU("rtx4050-laptop", "NVIDIA GeForce RTX 4050 Laptop GPU", r"RTX 4050", 6, 24.3, 24.3, 12.1),
    GPU("rtx3090ti", "NVIDIA GeForce RTX 3090 Ti", r"RTX 3090 Ti\s*$", 24, 80.0, 80.0, 40.0),
    GPU("rtx3090", "NVIDIA GeForce RTX 3090", r"RTX 3090\s*$", 24, 71.0, 71.0, 35.6),
    GPU("rtx3080", "NVIDIA GeForce RTX 3080", r"RTX 3080\s*$", 10, 59.5, 59.5, 29.8),
    GPU("rtx3060", "NVIDIA GeForce RTX 3060", r"RTX 3060\s*$", 12, 25.5, 25.5, 12.7),
]


def _normal(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def find_gpu(name: str) -> GPU | None:
    """The table entry for a key ("h100-sxm", "rtx4090") or a device name as CUDA reports it."""
    for gpu in GPUS:
        if _normal(name) in (_normal(gpu.key), _normal(gpu.name)):
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
