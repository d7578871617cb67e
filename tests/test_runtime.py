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


def test_cpu_precisions():
    assert resolve_runtime("cpu").precision == "fp32"
    assert resolve_runtime("cpu", "bf16").autocast_dtype == torch.bfloat16
    with pytest.raises(UserError, match="fp16 training needs CUDA"):
        resolve_runtime("cpu", "fp16")
    with pytest.raises(UserError, match="not one of"):
        resolve_runtime("tpu")
