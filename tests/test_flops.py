import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from gpt2lab.metrics.flops import flops_per_token, matmul_params
from gpt2lab.model import GPT, GPTConfig

VARIANTS = {
    "classic": {},
    "modern": dict(pos="rope", mlp="swiglu", norm="rmsnorm", bias=False),
    "modern+qknorm, odd width": dict(pos="rope", mlp="swiglu", norm="rmsnorm", bias=False, qk_norm=True, mlp_hidden=200),
    "gelu, short window": {},
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_training_flops_match_pytorchs_counter(variant):
    """Forward + backward through the real model, counted by PyTorch, against the closed form."""
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=512, block_size=64, n_layer=3, n_head=4, n_embd=64, **VARIANTS[variant])
    seq = 24 if "short" in variant else 64
    model = GPT(config)
    x = torch.randint(0, 512, (2, seq))
    # the math backend spells attention out as matmuls, which the counter sees (CPU flash kernels it does not)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        _, loss = model(x, x)
        loss.backward()
    measured = counter.get_total_flops() / x.numel()
    expected = flops_per_token(config, seq).training
    assert abs(measured - expected) / expected < 0.05, (measured, expected)


def test_six_n_is_forward_plus_backward():
    """The report's arithmetic: 6*N*T counts forward and backward; forward alone is 2*N (plus attention)."""
    config = GPTConfig(vocab_size=50304, block_size=256, n_layer=4, n_head=4, n_embd=256)
    f = flops_per_token(config, 256)
    n = matmul_params(config)
    assert f.forward - f.attention_scores == 2 * n
    assert f.training - 3 * f.attention_scores == 6 * n


def test_gpt2_124m_figure():
    f = flops_per_token(GPTConfig(), 1024)
    # N = 12 * (4 * 768^2 + 2 * 768 * 3072) + 768 * 50304 = 123,568,128 matmul weights
    # 6 * N + 12 * n_layer * T * d = 741,408,768 + 113,246,208
    assert f.training == 854_654_976
