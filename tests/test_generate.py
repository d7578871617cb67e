import pytest
import torch

from gpt2lab.model import GPT, GPTConfig, generate, sample_next

CONFIGS = {
    "classic": GPTConfig(vocab_size=101, block_size=24, n_layer=2, n_head=2, n_embd=32),
    "modern": GPTConfig(vocab_size=101, block_size=24, n_layer=2, n_head=2, n_embd=32, pos="rope",
                        mlp="swiglu", norm="rmsnorm", bias=False, qk_norm=True),
    "skips": GPTConfig(vocab_size=101, block_size=24, n_layer=3, n_head=2, n_embd=32, pos="rope", skips=True),
}


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("new_tokens", [10, 40])  # 40 runs past block_size, where the window slides
def test_kv_cache_matches_no_cache(name, new_tokens):
    torch.manual_seed(0)
    model = GPT(CONFIGS[name])
    prompt = torch.randint(0, 101, (3, 6))
    kw = dict(temperature=1.0, top_k=20, top_p=0.9, seed=123)
    with_cache = generate(model, prompt, new_tokens, use_cache=True, **kw)
    without = generate(model, prompt, new_tokens, use_cache=False, **kw)
    assert torch.equal(with_cache, without)
    assert with_cache.shape == (3, 6 + new_tokens)


def test_cached_logits_equal_full_forward():
    torch.manual_seed(0)
    model = GPT(CONFIGS["modern"]).eval()
    from gpt2lab.model import KVCache

    x = torch.randint(0, 101, (2, 12))
    full, _ = model(x)
    cache = KVCache(model, 2)
    model(x[:, :8], cache=cache)
    for t in range(8, 12):
        step, _ = model(x[:, t : t + 1], cache=cache)
        assert torch.allclose(step[:, 0], full[:, t], atol=1e-5)


def test_greedy_and_seeded_sampling_are_deterministic():
    torch.manual_seed(0)
    model = GPT(CONFIGS["classic"])
    prompt = torch.randint(0, 101, (1, 4))
    assert torch.equal(generate(model, prompt, 8, temperature=0), generate(model, prompt, 8, temperature=0))
    assert torch.equal(generate(model, prompt, 8, seed=7), generate(model, prompt, 8, seed=7))


def test_stop_token_and_padded_vocab():
    torch.manual_seed(0)
    model = GPT(CONFIGS["classic"])
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.transformer.wte.weight[0].zero_()
    # all logits equal: with valid_vocab=1 only token 0 can be drawn; it is the stop token
    out = generate(model, torch.zeros(2, 3, dtype=torch.long), 10, stop_token=0, valid_vocab=1, seed=0)
    assert out.shape == (2, 4)


def test_top_k_and_top_p_restrict_choices():
    logits = torch.tensor([[5.0, 4.0, 1.0, 0.0, -1.0]])
    g = torch.Generator().manual_seed(0)
    picks = {sample_next(logits, top_k=2, generator=g).item() for _ in range(200)}
    assert picks <= {0, 1}
    picks = {sample_next(logits, top_p=0.5, generator=g).item() for _ in range(200)}
    assert picks == {0}


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.7, 0, 1.0), (1.3, 3, 1.0), (0.9, 0, 0.8),
                                                     (1.0, 1, 1.0), (2.0, 30, 0.95)])
def test_sampling_equals_multinomial_of_the_filtered_softmax(temperature, top_k, top_p):
    """The same draws as torch.multinomial over softmax(logits / T), restricted to exactly the top-k tokens and
    the smallest set whose probability reaches top-p, with the same generator."""
    torch.manual_seed(0)
    logits = torch.randn(3, 40) * 3
    scaled = logits / temperature
    probs = scaled.softmax(-1)
    allowed = torch.ones_like(probs, dtype=torch.bool)
    if top_k:
        allowed &= scaled >= scaled.topk(top_k, dim=-1).values[:, -1:]
    if top_p < 1.0:  # over the top-k tokens, renormalised (transformers' order: top-k, then top-p)
        kept = torch.where(allowed, probs, 0.0)
        sorted_p, order = (kept / kept.sum(-1, keepdim=True)).sort(descending=True, dim=-1)
        keep_sorted = sorted_p.cumsum(-1) - sorted_p < top_p  # a token stays while the ones above it fall short
        allowed &= torch.zeros_like(allowed).scatter(-1, order, keep_sorted)
    expected_probs = torch.where(allowed, probs, 0.0)
    expected_probs /= expected_probs.sum(-1, keepdim=True)
    if top_k:
        assert (allowed.sum(-1) == top_k).all() or top_p < 1.0  # exactly k tokens, not k-1
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    ours = [sample_next(logits, temperature, top_k, top_p, g1) for _ in range(50)]
    reference = [torch.multinomial(expected_probs, 1, generator=g2) for _ in range(50)]
    assert all(torch.equal(a, b) for a, b in zip(ours, reference))


def test_greedy_is_the_argmax():
    logits = torch.tensor([[0.1, 2.0, -1.0, 1.9]])
    assert sample_next(logits, temperature=0).item() == 1
