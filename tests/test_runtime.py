import pytest
import torch

from gpt2lab.errors import UserError
from gpt2lab.runtime import resolve_runtime


def test_auto_picks_what_exists():
    rt = resolve_runtime("auto")
    assert rt.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert "device:" in rt.banner() and rt.describe()["torch"] == torch.__version__


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path")
def test_no_silent_cpu_fallback():
    with pytest.raises(UserError, match="CUDA is not usable") as err:
        resolve_runtime("cuda")
    assert "--device cpu" in str(err.value)


def test_cpu_precisions(monkeypatch):
    import gpt2lab.runtime as runtime

    monkeypatch.setattr(runtime, "cpu_bf16_native", lambda: (False, "no AVX512-BF16 or AMX"))
    assert resolve_runtime("cpu").precision == "fp32"
    # asked for on such a CPU: refused (emulated bf16 ran a lab step in 226 s against about 2 s natively)
    with pytest.raises(UserError, match="bf16 matmuls are emulated.*run.precision=fp32"):
        resolve_runtime("cpu", "bf16")
    monkeypatch.setattr(runtime, "cpu_bf16_native", lambda: (True, "avx512_bf16"))
    rt = resolve_runtime("cpu")
    assert rt.precision == "bf16" and "avx512_bf16" in rt.why
    assert resolve_runtime("cpu", "bf16").autocast_dtype == torch.bfloat16
    with pytest.raises(UserError, match="fp16 training needs a GPU"):
        resolve_runtime("cpu", "fp16")
    with pytest.raises(UserError, match="not one of"):
        resolve_runtime("tpu")


def test_apple_mps_by_simulation(monkeypatch):
    """Run here only by simulating torch.backends.mps: availability, precision by macOS version, no silent fallback."""
    from gpt2lab.training.guards import check_placement

    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(UserError, match="MPS is not usable here"):
        resolve_runtime("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.mps, "is_macos_or_newer", lambda major, minor: major <= 13, raising=False)
    rt = resolve_runtime("mps")
    assert rt.device.type == "mps" and rt.precision == "fp32" and "macOS 14" in rt.why and not rt.compile
    assert rt.loss_chunk is None  # CPU-only defaults stay off
    monkeypatch.setattr(torch.backends.mps, "is_macos_or_newer", lambda major, minor: True, raising=False)
    assert resolve_runtime("mps").precision == "bf16"
    assert "mps (Apple GPU)" in resolve_runtime("mps").banner()
    with pytest.raises(UserError, match="MPS was requested but 1 parameters are on the CPU"):
        check_placement(torch.nn.Linear(1, 1, bias=False), torch.zeros(1), torch.device("mps"))


def test_cpu_compile_auto_needs_a_long_enough_run_and_a_compiler(monkeypatch):
    import gpt2lab.runtime as runtime

    monkeypatch.setattr(runtime, "cpu_bf16_native", lambda: (True, "amx_bf16"))
    assert not resolve_runtime("cpu", "auto", "auto", run_tokens=10_000).compile  # the demo: not worth it
    assert resolve_runtime("cpu", "auto", "auto", run_tokens=10**8).compile
    assert resolve_runtime("cpu", "auto", "auto", run_tokens=163_840).compile  # 80 gpt2-15m steps: 2x faster compiled
    assert not resolve_runtime("cpu", "fp32", "auto", run_tokens=10**8).compile  # fp32 eager was as fast
    short = resolve_runtime("cpu", "auto", "auto", run_tokens=10**8, budget_s=120)  # a 2-minute time budget
    assert not short.compile and "time budget" in short.compile_why
    assert resolve_runtime("cpu", "auto", "auto", run_tokens=10**8, budget_s=3600).compile
    monkeypatch.setattr(runtime, "cxx_compiler", lambda: None)
    rt = resolve_runtime("cpu", "auto", "on")
    assert not rt.compile and "C++ compiler" in rt.notes[0]


def test_the_cpu_loss_chunk_default_never_reaches_a_gpu(monkeypatch):
    from tests.cuda_double import install

    install(monkeypatch)
    assert resolve_runtime("cuda", "auto").loss_chunk is None and resolve_runtime("cpu", "fp32").loss_chunk == 512


def test_cuda_compile_auto_needs_triton_a_capable_gpu_and_a_long_run(monkeypatch):
    """A GPU compiles by default once a run earns the compile back; without Triton (or on a pre-Volta GPU, which
    Triton cannot target) even "on" runs uncompiled and says why, instead of failing at the first step."""
    import gpt2lab.runtime as runtime
    from tests.cuda_double import install

    install(monkeypatch)
    monkeypatch.setattr(runtime, "triton_installed", lambda: True)  # the CUDA wheel's Triton, absent from a CPU wheel
    long_run = resolve_runtime("cuda", "auto", "auto", run_tokens=245_760_000)  # the WikiText-103 recipe's 30,000 steps
    assert long_run.compile and "Triton" in long_run.compile_why
    assert resolve_runtime("cuda", "auto", "auto").compile  # a run of unknown length (a time budget or none)
    short = resolve_runtime("cuda", "auto", "auto", run_tokens=327_680)  # 40 steps of it
    assert not short.compile and "does not earn back" in short.compile_why
    assert not resolve_runtime("cuda", "auto", "auto", run_tokens=10**9, budget_s=120).compile
    assert resolve_runtime("cuda", "auto", "on", run_tokens=327_680).compile  # asked for: always
    monkeypatch.setattr(runtime, "triton_installed", lambda: False)
    for mode in ("auto", "on"):
        rt = resolve_runtime("cuda", "auto", mode)
        assert not rt.compile and "pip install triton" in rt.notes[0] and "running uncompiled" in rt.notes[0]


def test_cuda_compile_is_off_on_a_gpu_triton_cannot_target(monkeypatch):
    import gpt2lab.runtime as runtime
    from tests.cuda_double import install

    install(monkeypatch, dict(name="Tesla P100-PCIE-16GB", major=6, minor=0, total_memory=16 * 2**30,
                              multi_processor_count=56))
    monkeypatch.setattr(runtime, "triton_installed", lambda: True)
    rt = resolve_runtime("cuda", "fp32", "on")
    assert not rt.compile and "capability 7.0" in rt.notes[0]
