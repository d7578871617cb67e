"""The model against a reference written here from the equations, in plain PyTorch (nothing imported from
gpt2lab's model code), so the maths is checked without transformers: attention scaling, causal masking, each
norm, RoPE's direction (as a complex rotation), SwiGLU / ReLU^2 / tanh-GELU, QK-norm, soft-capping, weight
tying and the residual projections' initialisation."""

import math

import pytest
import torch

from gpt2lab.model import GPT, GPTConfig, generate

VARIANTS = {
    "classic": {},
    "modern": dict(pos="rope", mlp="swiglu", norm="rmsnorm", bias=False),
    "modern+qknorm": dict(pos="rope", mlp="swiglu", norm="rmsnorm", bias=False, qk_norm=True),
    "speedrun": dict(pos="rope", mlp="relu2", norm="rmsnorm", bias=False, qk_norm=True, logit_softcap=15.0,
                     tie_embeddings=False),
    "rope-only": dict(pos="rope"),
}


def config(**kw) -> GPTConfig:
    return GPTConfig(**{**dict(vocab_size=97, block_size=24, n_layer=2, n_head=4, n_embd=32, rope_theta=100.0), **kw})


def norm(x, weight, bias, kind, eps=1e-5):
    if kind == "rmsnorm":
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * weight
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    out = (x - mean) / torch.sqrt(var + eps) * weight
    return out + bias if bias is not None else out


def rotate(x, theta):
    """RoPE as a complex rotation of the pairs (x[i], x[i + D/2]) by angle position / theta^(2i/D)."""
    T, D = x.shape[-2], x.shape[-1]
    freqs = 1.0 / theta ** (torch.arange(0, D, 2, dtype=torch.float64) / D)
    angle = torch.arange(T, dtype=torch.float64)[:, None] * freqs[None, :]
    pairs = torch.complex(x[..., : D // 2].double(), x[..., D // 2 :].double()) * torch.polar(torch.ones_like(angle), angle)
    return torch.cat([pairs.real, pairs.imag], dim=-1).to(x.dtype)


def reference_logits(sd: dict, c: GPTConfig, idx: torch.Tensor) -> torch.Tensor:
    g = lambda name: sd.get(name)  # noqa: E731
    B, T = idx.shape
    d, H = c.n_embd, c.n_head
    hd = d // H
    x = g("transformer.wte.weight")[idx]
    if c.pos == "learned":
        x = x + g("transformer.wpe.weight")[:T]
    causal = torch.ones(T, T).tril().bool()
    for i in range(c.n_layer):
        p = f"transformer.h.{i}."
        h = norm(x, g(p + "ln_1.weight"), g(p + "ln_1.bias"), c.norm)
        qkv = h @ g(p + "attn.c_attn.weight").T + (g(p + "attn.c_attn.bias") if c.bias else 0)
        q, k, v = (t.reshape(B, T, H, hd).transpose(1, 2) for t in qkv.split(d, dim=-1))
        if c.qk_norm:
            q = norm(q, g(p + "attn.q_norm.weight"), None, "rmsnorm")
            k = norm(k, g(p + "attn.k_norm.weight"), None, "rmsnorm")
        if c.pos == "rope":
            q, k = rotate(q, c.rope_theta), rotate(k, c.rope_theta)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        weights = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
        y = (weights @ v).transpose(1, 2).reshape(B, T, d)
        x = x + y @ g(p + "attn.c_proj.weight").T + (g(p + "attn.c_proj.bias") if c.bias else 0)
        h = norm(x, g(p + "ln_2.weight"), g(p + "ln_2.bias"), c.norm)
        up = h @ g(p + "mlp.c_fc.weight").T + (g(p + "mlp.c_fc.bias") if c.bias else 0)
        if c.mlp == "swiglu":
            gate, value = up.chunk(2, dim=-1)
            act = gate * torch.sigmoid(gate) * value
        elif c.mlp == "relu2":
            act = torch.clamp(up, min=0) ** 2
        else:
            act = 0.5 * up * (1 + torch.tanh(math.sqrt(2 / math.pi) * (up + 0.044715 * up**3)))
        x = x + act @ g(p + "mlp.c_proj.weight").T + (g(p + "mlp.c_proj.bias") if c.bias else 0)
    x = norm(x, g("transformer.ln_f.weight"), g("transformer.ln_f.bias"), c.norm)
    head = g("lm_head.weight") if not c.tie_embeddings else g("transformer.wte.weight")
    logits = x @ head.T
    if c.logit_softcap:
        logits = c.logit_softcap * torch.tanh(logits / c.logit_softcap)
    return logits


def randomised(c: GPTConfig) -> GPT:
    """A model whose every weight is random (gains and biases too), so no term hides behind a 1 or a 0."""
    torch.manual_seed(0)
    model = GPT(c)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2 + (1.0 if p.dim() == 1 else 0.0))
    return model.eval()


@pytest.mark.parametrize("variant", VARIANTS)
def test_logits_equal_the_reference(variant):
    c = config(**VARIANTS[variant])
    model = randomised(c)
    idx = torch.randint(0, c.vocab_size, (2, 20))
    with torch.no_grad():
        ours = model(idx)[0]
    sd = dict(model.state_dict())
    assert torch.allclose(ours, reference_logits(sd, c, idx), atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("variant", ["classic", "speedrun"])
def test_greedy_generation_with_the_cache_equals_the_reference(variant):
    c = config(**VARIANTS[variant])
    model = randomised(c)
    prompt = torch.randint(0, c.vocab_size, (1, 5))
    ours = generate(model, prompt, 12, temperature=0)
    seq = prompt
    for _ in range(12):
        nxt = reference_logits(dict(model.state_dict()), c, seq[:, -c.block_size:])[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], dim=1)
    assert torch.equal(ours, seq)


def test_switches_off_leave_classic_gpt2_exactly_as_it_was():
    """Every switch at its default gives the classic model: the same parameters and the same logits as one built
    with the switches named explicitly off."""
    plain = config()
    explicit = config(mlp="gelu", zero_init_proj=False, logit_softcap=None, tie_embeddings=True, qk_norm=False)
    assert plain == explicit and plain.is_classic
    a, b = randomised(plain), randomised(explicit)
    idx = torch.randint(0, 97, (2, 16))
    assert torch.equal(a(idx)[0], b(idx)[0])
    assert not config(mlp="relu2").is_classic and not config(logit_softcap=30.0).is_classic


def test_residual_projections_start_scaled_or_at_zero():
    torch.manual_seed(0)
    c = config(n_layer=8, n_embd=128)
    model = GPT(c)
    expected = 0.02 / math.sqrt(2 * c.n_layer)
    for block in model.transformer.h:
        for proj in (block.attn.c_proj.weight, block.mlp.c_proj.weight):
            assert abs(proj.std().item() - expected) < 0.15 * expected
        assert abs(block.attn.c_attn.weight.std().item() - 0.02) < 0.002
    zero = GPT(config(zero_init_proj=True, tie_embeddings=False))
    for block in zero.transformer.h:
        assert not block.attn.c_proj.weight.any() and not block.mlp.c_proj.weight.any()
    assert not zero.lm_head.weight.any() and abs(zero.transformer.wte.weight.std().item() - 0.02) < 0.003
    untied = GPT(config(tie_embeddings=False))
    assert untied.lm_head.weight is not untied.transformer.wte.weight
    assert abs(untied.lm_head.weight.std().item() - 0.02) < 0.003


def test_soft_cap_bounds_the_logits():
    model = randomised(config(logit_softcap=2.0))
    logits = model(torch.randint(0, 97, (2, 16)))[0]
    assert logits.abs().max() < 2.0 and logits.abs().max() > 1.0
