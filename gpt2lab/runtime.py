"""Where and how the model runs: device choice (never a silent CPU fallback), precision, compilation, seeding
and RNG state.

Precision "auto":
  CUDA   bf16 where the GPU has bf16 tensor cores (Ampere and newer; emulation does not count), else fp16
         with a GradScaler (T4, V100, RTX 20xx)
  CPU    bf16 autocast where the CPU multiplies bf16 natively (AVX512-BF16 or AMX, asked of the CPU itself),
         else fp32
  MPS    bf16 on macOS 14 or newer, else fp32
The loss, the weights and the optimizer stay fp32 in every case; autocast only lowers the matmuls.

Compile "auto", once the run is long enough to earn its compile time back: on for CUDA with Triton (capability
7.0+; measured on an H200: 1.38x per gpt2-124m step, compile 11-22 s), and for a CPU with native bf16 and a C++
compiler, where it was measured to pay (bench/NOTES.md); off on MPS and fp32/fp16 CPUs. Without Triton (or a C++
compiler on a CPU) even "on" runs uncompiled, with a note that says why.

Head loss: unless run.loss_chunk says otherwise, a CPU computes the output head's loss 512 tokens at a time
(measured 1.4x faster: each chunk's logits stay small); GPUs compute it whole, as before.
"""

from __future__ import annotations

import contextlib
import importlib.util
import random
import shutil
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import UserError

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
COMPILE_MODES = ("auto", "on", "off")
# compile costs 10-50 s and, with bf16, saves 55-60% of a CPU step (bf16 eager is no faster than fp32 here):
# it pays back after 40k (gpt2-15m) to 95k (tiny) tokens (bench/NOTES.md); the demo's 61k stay eager
COMPILE_MIN_TOKENS = 100_000
CPU_LOSS_CHUNK = 512  # tokens per chunk of the head's loss on CPUs (bench/NOTES.md)
# on CUDA compile took 11-22 s on an H200 and made gpt2-124m's step 1.38x faster (bench/results/gpu_*_20261204):
# 50M tokens are 145 s of eager gpt2-124m there, so it pays back with room; slower GPUs pay back in fewer tokens
COMPILE_MIN_TOKENS_CUDA = 50_000_000
COMPILE_MIN_BUDGET_S = 300  # compile takes 10-100 s on a CPU: a shorter time budget would spend itself compiling


def cpu_bf16_native() -> tuple[bool, str]:
    """(whether this CPU multiplies bf16 in hardware, the instruction set that says so)."""
    checks = (("amx_bf16", "_is_amx_tile_supported"), ("avx512_bf16", "_is_avx512_bf16_supported"))
    for name, probe in checks:
        with contextlib.suppress(Exception):
            if getattr(torch.cpu, probe)():
                return True, name
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        flags = set(f.read().split())
        for name, _ in checks:
            if name in flags:
                return True, name
    return False, "no AVX512-BF16 or AMX"


def keep_freed_memory() -> bool:
    """On glibc, keep large freed blocks mapped instead of returning them to the OS.

    A CPU training step allocates and frees the same large tensors (logits, their gradients) every step; glibc
    unmaps blocks above its mmap threshold when they are freed, so the next step page-faults every page of them
    in again (measured here: a fresh 412 MB tensor costs 2.6x the time of reusing one). Raising the mmap and trim
    thresholds makes those blocks come back from the heap, as a caching allocator would. CPU runs only."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (macOS, musl): nothing to tune
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 1 << 30)) and bool(mallopt(m_trim_threshold, 1 << 34))


def cxx_compiler() -> str | None:
    """The C++ compiler torch.compile's CPU backend would call, if there is one."""
    try:
        from torch._inductor import config as inductor_config

        names = inductor_config.cpp.cxx
        names = names if isinstance(names, (tuple, list)) else (names,)
    except Exception:
        names = ("g++",)
    for name in (*[n for n in names if n], "g++", "c++", "clang++"):
        if shutil.which(name):
            return name
    return None


@dataclass
class Runtime:
    device: torch.device
    precision: str  # "bf16" | "fp16" | "fp32" after resolution
    why: str = ""  # why this precision was chosen
    compile: bool = False
    compile_why: str = ""
    notes: list[str] = field(default_factory=list)
    loss_chunk: int | None = None  # tokens per chunk of the head's loss; None: the whole head at once

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def autocast(self):
        """The forward-pass context: autocast to bf16/fp16, nothing in fp32."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elif self.device.type == "mps":
            torch.mps.synchronize()

    def describe(self) -> dict:
        """Facts about the device for the console and the run directory."""
        info = {"device": str(self.device), "precision": self.precision, "precision_reason": self.why,
                "compile": self.compile, "compile_reason": self.compile_why, "torch": torch.__version__}
        if self.device.type == "cuda":
            props = torch.cuda.get_device_properties(self.device)
            info.update(name=props.name, capability=f"{props.major}.{props.minor}",
                        memory_gb=round(props.total_memory / 2**30, 2), cuda=torch.version.cuda)
        elif self.device.type == "mps":
            info.update(name="Apple MPS")
        else:
            info.update(name=cpu_name(), threads=torch.get_num_threads(), bf16=cpu_bf16_native()[1])
        return info

    def banner(self) -> str:
        d = self.describe()
        compiled = f"compile {'on' if self.compile else 'off'} ({self.compile_why})"
        if self.device.type == "cuda":
            return (f"device: {d['device']} ({d['name']}, {d['memory_gb']} GB, capability {d['capability']}), "
                    f"precision {d['precision']} ({self.why}), {compiled}, torch {d['torch']}, CUDA {d['cuda']}")
        if self.device.type == "mps":
            return f"device: mps (Apple GPU), precision {d['precision']} ({self.why}), {compiled}, torch {d['torch']}"
        return (f"device: cpu ({d['name']}, {d['threads']} threads), precision {d['precision']} ({self.why}), "
                f"{compiled}, torch {d['torch']}")


def cpu_name() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    import platform

    return platform.processor() or "CPU"


def _device(device: str) -> torch.device:
    cuda_ok = torch.cuda.is_available()
    if device == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if cuda_ok else torch.device("cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device == "mps":
        if not torch.backends.mps.is_available():
            raise UserError("--device mps was requested but MPS is not usable here (it needs Apple silicon, macOS 12.3+ "
                            "and a torch build with MPS); pass --device cpu to run on the CPU on purpose")
        return torch.device("mps")
    if device == "cuda" or device.startswith("cuda:"):
        if not cuda_ok:
            raise UserError(
                f"--device {device} was requested but CUDA is not usable here (torch {torch.__version__}, "
                f"built for CUDA {torch.version.cuda}); install a CUDA build of torch, check the driver with "
                "nvidia-smi, or pass --device cpu to train on the CPU on purpose"
            )
        try:
            dev = torch.device(device)
        except RuntimeError:
            raise UserError(f"--device {device!r} is not of the form cuda:N") from None
        if dev.index is None:  # "cuda": the current GPU, named, so that set_device and every reading get an index
            return torch.device("cuda", torch.cuda.current_device())
        if not 0 <= dev.index < torch.cuda.device_count():
            raise UserError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) are visible")
        return dev
    raise UserError(f"--device {device!r} is not one of auto, cpu, cuda, cuda:N, mps")


def _precision(dev: torch.device, precision: str) -> tuple[str, str]:
    if precision not in PRECISIONS:
        raise UserError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if dev.type == "cpu":
        if precision == "fp16":
            raise UserError("fp16 training needs a GPU; use precision fp32 (or bf16) on the CPU")
        native, how = cpu_bf16_native()
        if precision == "bf16" and not native:  # emulated: measured 90x slower than fp32 (AMD EPYC, AVX2 only)
            raise UserError(f"this CPU ({cpu_name()}) has {how}: its bf16 matmuls are emulated, about 100x slower "
                            "than fp32; use --set run.precision=fp32 (or auto)")
        if precision != "auto":
            return precision, "asked for"
        return ("bf16", f"auto: the CPU has {how}") if native else ("fp32", f"auto: {how} on this CPU")
    if dev.type == "mps":
        if precision != "auto":
            return precision, "asked for"
        newer = getattr(torch.backends.mps, "is_macos_or_newer", lambda *_: False)(14, 0)
        return ("bf16", "auto: macOS 14+") if newer else ("fp32", "auto: bf16 on MPS needs macOS 14")
    if precision != "auto":
        return precision, "asked for"
    if torch.cuda.is_bf16_supported(including_emulation=False):
        return "bf16", "auto: the GPU has bf16 tensor cores"
    return "fp16", "auto: no bf16 tensor cores on this GPU (emulated bf16 is slow): fp16 with a grad scaler"


def triton_installed() -> bool:
    """Whether Triton, which torch.compile writes its GPU kernels in, can be imported (CUDA builds on Linux ship it)."""
    return importlib.util.find_spec("triton") is not None


def _compile(mode: str, dev: torch.device, precision: str, run_tokens: int | None,
             budget_s: float | None = None) -> tuple[bool, str, str | None]:
    """(compile or not, why, a note for the user)."""
    if mode not in COMPILE_MODES:
        raise UserError(f"run.compile={mode!r} is not one of {', '.join(COMPILE_MODES)}")
    if mode == "off":
        return False, "asked for", None
    if dev.type == "cuda":
        why = ("Triton needs a GPU of capability 7.0 or newer" if torch.cuda.get_device_capability(dev) < (7, 0)
               else None if triton_installed() else "no Triton (pip install triton)")
        if why:
            return False, why, f"torch.compile writes GPU kernels in Triton: {why}; running uncompiled"
    elif mode == "auto" and (dev.type != "cpu" or precision != "bf16"):
        return False, "auto: off except on CUDA and on a bf16 CPU", None
    if mode == "auto":
        least = COMPILE_MIN_TOKENS_CUDA if dev.type == "cuda" else COMPILE_MIN_TOKENS
        if run_tokens is not None and run_tokens < least:
            return False, f"auto: a run of {run_tokens:,} tokens does not earn back the compile time", None
        if budget_s is not None and budget_s < COMPILE_MIN_BUDGET_S:
            return False, f"auto: a {budget_s:,.0f} s time budget does not earn back the compile time", None
    if dev.type == "cpu" and cxx_compiler() is None:
        return False, "no C++ compiler", "torch.compile needs a C++ compiler on the CPU (apt install g++); running uncompiled"
    if mode == "on":
        return True, "asked for", None
    return True, "auto: a GPU with Triton and a long run" if dev.type == "cuda" else "auto: a bf16 CPU with a C++ compiler", None


def resolve_runtime(device: str = "auto", precision: str = "auto", compile: str = "off",
                    run_tokens: int | None = None, loss_chunk: int | None = None,
                    budget_s: float | None = None) -> Runtime:
    """Turn the user's device, precision, compile and loss-chunk choices into a Runtime, or explain why it cannot
    be had.

    On CUDA the device always has an index ("cuda" and "auto" mean the current GPU); it is made current before
    anything asks about "the" GPU (precision, memory), so work, timers and readings are on it, not on GPU 0; TF32
    matmuls are turned on."""
    dev = _device(device)
    if dev.type == "cuda":  # first: precision "auto" asks the current GPU, which must be this one
        torch.cuda.set_device(dev)
    resolved, why = _precision(dev, precision)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        if resolved == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
            raise UserError(f"{torch.cuda.get_device_name(dev)} has no bf16 tensor cores; use --set run.precision=fp16 "
                            "(or auto)")
    compiled, compile_why, note = _compile(compile, dev, resolved, run_tokens, budget_s)
    if dev.type == "cpu":
        keep_freed_memory()
        loss_chunk = loss_chunk or CPU_LOSS_CHUNK
    return Runtime(device=dev, precision=resolved, why=why, compile=compiled, compile_why=compile_why,
                   notes=[note] if note else [], loss_chunk=loss_chunk)


def deterministic_algorithms() -> None:
    """run.deterministic: kernels that give the same bits every run (torch raises where an op has none), and the
    cuBLAS workspace setting CUDA needs for that. Together with the seed and compile off, two runs and a resume
    match bit for bit on the same machine."""
    import os

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=False)
    torch.backends.cudnn.benchmark = False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(device: torch.device) -> dict:
    """Python, NumPy and torch RNG states, and the CUDA state of the training device only (not every GPU)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda_device"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    """Restore rng_state(); checkpoints of 0.1 stored every visible GPU's state as "cuda": the training device's
    is used when it exists, and a machine with fewer GPUs resumes with a fresh CUDA stream instead of failing."""
    random.setstate(_python_state(state["python"]))
    np.random.set_state(tuple(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if device.type != "cuda":
        return
    if "cuda_device" in state:
        torch.cuda.set_rng_state(state["cuda_device"], device)
    elif state.get("cuda"):
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index < len(state["cuda"]):
            torch.cuda.set_rng_state(state["cuda"][index], device)


def _python_state(state):
    """random.setstate needs tuples where JSON gives lists."""
    version, internal, gauss = state
    return (version, tuple(internal), gauss)
