import pytest

from gpt2lab.errors import UserError
from gpt2lab.metrics.devices import GPUS, device_peak_flops, find_gpu, peak_tflops


@pytest.mark.parametrize(
    "reported,key",
    [
        ("NVIDIA H100 80GB HBM3", "h100-sxm"),
        ("NVIDIA H100 PCIe", "h100-pcie"),
        ("NVIDIA H100 NVL", "h100-nvl"),
        ("NVIDIA H200", "h200"),
        ("NVIDIA A100-SXM4-80GB", "a100"),
        ("NVIDIA A100-PCIE-40GB", "a100-40gb"),
        ("NVIDIA A10", "a10"),
        ("NVIDIA L4", "l4"),
        ("NVIDIA L40S", "l40s"),
        ("Tesla T4", "t4"),
        ("Tesla V100-SXM2-16GB", "v100"),
        ("NVIDIA GeForce RTX 4090", "rtx4090"),
        ("NVIDIA GeForce RTX 4050 Laptop GPU", "rtx4050-laptop"),
        ("NVIDIA GeForce RTX 5090", "rtx5090"),
        ("NVIDIA GeForce RTX 5080", "rtx5080"),
        ("NVIDIA GeForce RTX 3090", "rtx3090"),
        ("rtx4090", "rtx4090"),
        ("H100-SXM", "h100-sxm"),
        # W3: names that matched the wrong row (MFU off by 7-22%) or none
        ("NVIDIA GeForce RTX 4070 SUPER", "rtx4070super"),
        ("NVIDIA GeForce RTX 4080 SUPER", "rtx4080super"),
        ("NVIDIA GeForce RTX 3090 Ti", "rtx3090ti"),
        ("NVIDIA GeForce RTX 4090 D", "rtx4090d"),
        ("Tesla V100S-PCIE-32GB", "v100s"),
        ("Tesla V100-PCIE-16GB", "v100-pcie"),
        ("NVIDIA GH200 480GB", "gh200"),
        ("NVIDIA B200", "b200"),
        ("NVIDIA GB200", "gb200"),
        ("NVIDIA H800", "h800"),
        ("NVIDIA A800-SXM4-80GB", "a800"),
        ("NVIDIA A10G", "a10g"),
        ("NVIDIA RTX PRO 6000 Blackwell Workstation Edition", "rtx-pro-6000"),
        ("NVIDIA RTX PRO 6000 Blackwell Server Edition", "rtx-pro-6000"),
        ("NVIDIA H200 NVL", "h200-nvl"),
    ],
)
def test_device_names_resolve(reported, key):
    assert find_gpu(reported).key == key


def test_unknown_devices_get_no_silent_peak():
    for name in ("NVIDIA GeForce RTX 4090 Laptop GPU", "NVIDIA GeForce RTX 4070 Ti", "NVIDIA GeForce RTX 4060 Ti",
                 "NVIDIA GeForce RTX 3080 Ti", "NVIDIA GeForce RTX 5090 Laptop GPU"):
        assert find_gpu(name) is None, name
    peak, why = device_peak_flops("Some Future GPU", "bf16")
    assert peak is None and "run.peak_tflops" in why
    peak, why = device_peak_flops("Some Future GPU", "bf16", override_tflops=100)
    assert peak == 100e12 and why == "run.peak_tflops"


def test_precisions():
    h100 = find_gpu("h100-sxm")
    assert peak_tflops(h100, "bf16") == 989.4 and peak_tflops(h100, "fp32") == 494.7
    with pytest.raises(UserError, match="no bf16"):
        peak_tflops(find_gpu("t4"), "bf16")


def test_table_is_sane():
    keys = [g.key for g in GPUS]
    assert len(keys) == len(set(keys))
    for g in GPUS:
        assert g.fp16 >= g.tf32 > 0 and g.memory_gb > 0
        assert g.bf16 is None or g.bf16 == g.fp16


def test_every_row_resolves_to_itself():
    """By key and by the name CUDA reports: a broader pattern listed first would shadow a more specific row
    (H200 before H200 NVL, RTX 4070 before RTX 4070 Ti)."""
    for gpu in GPUS:
        assert find_gpu(gpu.key) is gpu, gpu.key
        assert find_gpu(gpu.name) is gpu, gpu.name
