import math
import subprocess
import sys

import pytest
import torch

from gpt2lab.model import GPT, GPTConfig, model_shapes
from gpt2lab.model.generate import KVCache
from gpt2lab.recipes import PRESETS

from tests.switches import MODERN, SWITCHES

VARIANTS = {name: switches for name, (switches, _) in SWITCHES.items()}  # one table for model, plan and export


def small(**kw) -> GPTConfig:
    return GPTConfig(**{**dict(vocab_size=97, block_size=32, n_layer=2, n_head=4, n_embd=64), **kw})


@pytest.mark.slow
def test_gpt2_124m_parameter_count_matches_hf():
    transformers = pytest.importorskip("transformers")
    ours = GPT(GPTConfig(**PRESETS["gpt2-124m"])).num_params()
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=50304)).num_parameters()
    assert ours == hf == 124_475_904


@pytest.mark.parametrize(
    "name,low,high",
    [("tiny", 6e6, 8e6), ("gpt2-15m", 14e6, 18e6), ("gpt2-25m", 16e6, 20e6), ("gpt2-124m-modern", 120e6, 126e6)],
)
def test_preset_parameter_counts(name, low, high):
    n = GPT(GPTConfig(**PRESETS[name])).num_params()
    assert low < n < high


def test_large_presets_have_gpt2_shapes():
    # counted from shapes on the meta device: no memory is spent on 1.5B parameters
    expected = {"gpt2-350m": 354_823_168, "gpt2-774m": 774_030_080, "gpt2-1558m": 1_557_611_200}
    for name, n in expected.items():
        model = model_shapes(GPTConfig(**{**PRESETS[name], "vocab_size": 50257}))
        assert model.num_params() == n, name


@pytest.mark.parametrize("variant", VARIANTS)
def test_shapes_only_is_the_real_model_without_values(variant):
    config = small(**VARIANTS[variant])
    real, shapes = GPT(config), model_shapes(config)
    assert {k: (v.shape, v.dtype) for k, v in shapes.state_dict().items()} == \
           {k: (v.shape, v.dtype) for k, v in real.state_dict().items()}
    assert [(n, b.shape) for n, b in shapes.named_buffers()] == [(n, b.shape) for n, b in real.named_buffers()]
    assert shapes.num_params() == real.num_params() and {t.device.type for t in shapes.state_dict().values()} == {"meta"}
    with torch.device("meta"):  # a plain meta build (the default device honoured, RoPE tables included) agrees
        assert all(b.is_meta for b in GPT(config).buffers())


def test_shapes_only_costs_no_dynamo_import():
    # meta random fills and arithmetic import torch._dynamo (about 2 s on every `train` start-up); shapes skip them
    code = ("import sys; from gpt2lab.model import GPTConfig, model_shapes; from gpt2lab.recipes import PRESETS; "
            "model_shapes(GPTConfig(**PRESETS['gpt2-124m-modern'])); print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr[-2000:]


@pytest.mark.parametrize("variant", VARIANTS)
def test_causality(variant):
    torch.manual_seed(0)
    model = GPT(small(**VARIANTS[variant])).eval()
    x = torch.randint(0, 97, (2, 20))
    y = x.clone()
    y[:, 12:] = torch.randint(0, 97, (2, 8))
    a, _ = model(x)
    b, _ = model(y)
    assert torch.allclose(a[:, :12], b[:, :12], atol=1e-6)
    assert not torch.allclose(a[:, 12:], b[:, 12:])


@pytest.mark.parametrize("variant", VARIANTS)
def test_loss_at_init_is_log_vocab(variant):
    torch.manual_seed(0)
    model = GPT(small(vocab_size=1000, **VARIANTS[variant]))
    x = torch.randint(0, 1000, (4, 32))
    _, loss = model(x, torch.randint(0, 1000, (4, 32)))
    assert abs(loss.item() - math.log(1000)) < 0.1


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["classic", "modern+qknorm"])
def test_tiny_model_overfits_one_batch(variant):
    torch.manual_seed(0)
    model = GPT(small(**VARIANTS[variant]))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = torch.randint(0, 97, (4, 32))
    y = torch.roll(x, -1, dims=1)
    for _ in range(150):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05


def test_tied_embeddings_and_residual_init():
    model = GPT(small(n_layer=8))
    assert model.lm_head.weight is model.transformer.wte.weight
    std = model.transformer.h[0].attn.c_proj.weight.std().item()
    assert abs(std - 0.02 / math.sqrt(16)) < 0.001
    assert abs(model.transformer.h[0].attn.c_attn.weight.std().item() - 0.02) < 0.002


def test_modern_model_has_no_biases_and_no_position_table():
    model = GPT(small(**MODERN, qk_norm=True))
    names = [n for n, _ in model.named_parameters()]
    assert not any(n.endswith("bias") for n in names)
    assert "transformer.wpe.weight" not in names
    assert model.config.hidden_dim == 192  # 8/3 * 64 rounded up to 64


def test_rope_is_relative():
    """Attention scores under RoPE depend only on the distance between positions."""
    from gpt2lab.model.gpt import apply_rope, rope_tables

    cos, sin = rope_tables(8, 16, 10000.0)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    def score(i, j):
        return (apply_rope(q, cos[i:i + 1], sin[i:i + 1]) * apply_rope(k, cos[j:j + 1], sin[j:j + 1])).sum()
    assert torch.allclose(score(3, 1), score(10, 8), atol=1e-5)


def test_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        GPT(small(n_head=5))
    with pytest.raises(ValueError, match="pos"):
        GPT(small(pos="alibi"))


def test_sequence_longer_than_block_is_refused():
    model = GPT(small())
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 33, dtype=torch.long))


@pytest.mark.parametrize("n_layer", [4, 5])
def test_unet_skips_match_a_plain_reference(n_layer):
    """model.skips: before block i the stream is x_mix[i] * x + x0_mix[i] * embeddings, and a block of the second
    half also gets skip_weights[j] times the output of its mirror block n-1-i; written here from that definition,
    with the model's own blocks and weights, and compared with the model's forward and its KV-cache path."""
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=97, block_size=16, n_layer=n_layer, n_head=2, n_embd=32, skips=True, **MODERN)
    model = GPT(config).eval()
    with torch.no_grad():  # away from the initial values, so that every term counts
        for p in (model.x_mix, model.x0_mix, model.skip_weights):
            p.uniform_(0.3, 1.5)
    idx = torch.randint(0, 97, (2, 12))
    with torch.no_grad():
        x0 = model.transformer.wte(idx)
        rope = (model.rope_cos[:12], model.rope_sin[:12])
        x, outputs = x0, {}
        for i, block in enumerate(model.transformer.h):
            x = model.x_mix[i] * x + model.x0_mix[i] * x0
            mirror = n_layer - 1 - i
            if mirror < i and mirror < n_layer // 2:
                x = x + model.skip_weights[i - (n_layer - n_layer // 2)] * outputs[mirror]
            x = block(x, rope, None, None)
            outputs[i] = x
        expected = model.lm_head(model.transformer.ln_f(x))
        logits, _ = model(idx)
    assert torch.allclose(logits, expected, atol=1e-5)
    assert {n for n, p in model.named_parameters() if p.dim() == 1} >= {"x_mix", "x0_mix", "skip_weights"}
    from gpt2lab.training.optim import role_of

    assert {role_of(n, p) for n, p in model.named_parameters() if n.endswith("mix") or n == "skip_weights"} == {"gain"}


@pytest.mark.parametrize("n_layer,k", [(4, 2), (5, 1)])
def test_value_embeddings_match_a_plain_reference(n_layer, k):
    """model.value_embeds=K: table j's rows for the input tokens are mixed into the attention values of layers j
    and n_layer - K + j (v <- v_mix[i] * v + ve_mix[i] * table_j(tokens)); the rest of attention is as written
    here from its definition (plain softmax attention, RoPE by rotate-half), compared with the model's forward and
    with its KV-cache path."""
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=97, block_size=16, n_layer=n_layer, n_head=2, n_embd=32, value_embeds=k, **MODERN)
    model = GPT(config).eval()
    with torch.no_grad():
        model.v_mix.uniform_(0.3, 1.5), model.ve_mix.uniform_(0.3, 1.5)
        for table in model.value_embeds:
            table.weight.normal_(0, 1.0)  # large enough that a missed or misplaced mix shows
    served = {i: j for j in range(k) for i in (j, n_layer - k + j)}
    idx = torch.randint(0, 97, (2, 12))
    T, H, D = 12, 2, 16
    cos, sin = model.rope_cos[:T], model.rope_sin[:T]

    def rotate(t):
        t1, t2 = t[..., : D // 2], t[..., D // 2 :]
        return t * cos + torch.cat([-t2, t1], dim=-1) * sin

    with torch.no_grad():
        x = model.transformer.wte(idx)
        for i, block in enumerate(model.transformer.h):
            h = block.ln_1(x)
            q, kk, v = block.attn.c_attn(h).split(32, dim=2)
            if i in served:
                v = model.v_mix[i] * v + model.ve_mix[i] * model.value_embeds[served[i]].weight[idx]
            q, kk, v = (t.view(2, T, H, D).transpose(1, 2) for t in (q, kk, v))
            scores = rotate(q) @ rotate(kk).transpose(-1, -2) / D ** 0.5
            scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
            y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(2, T, 32)
            x = x + block.attn.c_proj(y)
            x = x + block.mlp(block.ln_2(x))
        expected = model.lm_head(model.transformer.ln_f(x))
        logits, _ = model(idx)
        cache = KVCache(model, batch_size=2)
        stepped = [model(idx[:, :8], cache=cache)[0]] + [model(idx[:, t : t + 1], cache=cache)[0] for t in range(8, 12)]
    assert torch.allclose(logits, expected, atol=1e-4)
    assert torch.allclose(torch.cat(stepped, dim=1), expected, atol=1e-4)
    from gpt2lab.training.optim import role_of

    roles = {n: role_of(n, p) for n, p in model.named_parameters()}
    assert {roles[f"value_embeds.{j}.weight"] for j in range(k)} == {"embedding"} and roles["ve_mix"] == "gain"
    assert model.num_params(exclude_embeddings=True) == GPT(GPTConfig(**{**config.__dict__, "value_embeds": 0})).num_params(
        exclude_embeddings=True) + 2 * n_layer


def test_value_embeddings_are_checked():
    with pytest.raises(ValueError, match="value_embeds must be between 0 .* n_layer // 2 = 2"):
        GPTConfig(n_layer=4, value_embeds=3).validate()
    plain = GPT(GPTConfig(vocab_size=97, block_size=16, n_layer=2, n_head=2, n_embd=32))
    assert not any("value" in n or "v_mix" in n for n, _ in plain.named_parameters())


def test_the_skips_switch_off_leaves_the_model_as_it_was():
    plain = GPT(GPTConfig(vocab_size=97, block_size=16, n_layer=2, n_head=2, n_embd=32))
    assert not any("mix" in n or "skip" in n for n, _ in plain.named_parameters()) and plain.config.is_classic


def _untraceable_like_torch_2_11(real):
    """torch.amp.is_autocast_available as torch 2.11's compiler sees it: a call it cannot trace (a graph break)."""
    def is_autocast_available(device_type):
        torch._dynamo.graph_break()
        return real(device_type)
    return is_autocast_available


@pytest.mark.parametrize("older_torch", [False, True], ids=["this-torch", "torch-2.11-autocast-check"])
def test_every_switch_compiles_to_one_graph(monkeypatch, older_torch):
    # A graph break inside a block recompiles once per layer; on the first H200 run the compiler hit its limit (8)
    # and ran the rest of a 12-layer model uncompiled. fullgraph=True turns any break into an error.
    import torch._dynamo

    if older_torch:
        monkeypatch.setattr(torch.amp, "is_autocast_available", _untraceable_like_torch_2_11(torch.amp.is_autocast_available))
    idx = torch.randint(0, 97, (2, 16))
    for name, switches in VARIANTS.items():
        model = GPT(small(**switches))
        torch._dynamo.reset()
        compiled = torch.compile(model, backend="eager", fullgraph=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits, loss = compiled(idx, idx)
        assert torch.isfinite(loss), name
    # activation checkpointing (run.activation_checkpointing) under compile: CUDA runs compile by default now
    model = GPT(small()).train()
    torch._dynamo.reset()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = torch.compile(model, backend="eager", fullgraph=True)(idx, idx, recompute=True)[1]
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
