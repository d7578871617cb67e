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
    monkeypatch.setattr(runtime, "cpu_bf16_native", lambda: (True, "avx512_bf16"))
    rt = resolve_runtime("cpu")
    assert rt.precision == "bf16" and "avx512_bf16" in rt.why
    assert resolve_runtime("cpu", "bf16").autocast_dtype == torch.bfloat16
    with pytest.raises(UserError, match="fp16 training needs a GPU"):
        resolve_runtime("cpu", "fp16")
    with pytest.raises(UserError, match="not one of"):
        resolve_runtime("tpu")
