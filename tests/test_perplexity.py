import math

import pytest
import torch
import torch.nn.functional as F

from gpt2lab.eval.perplexity import evaluate_text, evaluate_tokens, text_windows
from gpt2lab.model import GPT, GPTConfig
from gpt2lab.runtime import resolve_runtime

RT = resolve_runtime("cpu", "fp32")


@pytest.fixture
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=97, block_size=16, n_layer=2, n_head=2, n_embd=32)).eval()


def test_one_window_equals_the_models_own_loss(model):
    ids = torch.randint(0, 97, (17,))
    _, direct = model(ids[None, :-1], ids[None, 1:])
    assert evaluate_tokens(model, ids.tolist(), RT, context=16)["loss"] == pytest.approx(direct.item(), abs=1e-6)


def test_non_overlapping_windows_equal_separate_chunks(model):
    ids = torch.randint(0, 97, (50,))
    x, y = ids[:-1], ids[1:]  # 49 predictions: windows [0,16) [16,32) [32,48), and [33,49) scoring only 48
    expected = 0.0
    for s, e, first in [(0, 16, 0), (16, 32, 16), (32, 48, 32), (33, 49, 48)]:
        logits, _ = model(x[None, s:e])
        expected += F.cross_entropy(logits[0, first - s:], y[first:e], reduction="sum").item()
    assert evaluate_tokens(model, ids.tolist(), RT, 16)["loss"] == pytest.approx(expected / 49, abs=1e-6)


def test_stride_one_gives_every_token_a_full_window(model):
    ids = torch.randint(0, 97, (40,))
    x, y = ids[:-1], ids[1:]
    total = 0.0
    for k in range(len(y)):
        start = max(0, k + 1 - 16)
        logits, _ = model(x[None, start : k + 1])
        total += F.cross_entropy(logits[0, -1:], y[k : k + 1], reduction="sum").item()
    assert evaluate_tokens(model, ids.tolist(), RT, 16, stride=1)["loss"] == pytest.approx(total / len(y), abs=1e-6)


def test_windows_score_each_prediction_once():
    for n, ctx, stride in [(100, 16, 16), (100, 16, 5), (7, 16, 16), (33, 8, 1)]:
        scored = [k for _, e, first in text_windows(n, ctx, stride) for k in range(first, e)]
        assert scored == list(range(n))
        assert all(e - s <= ctx for s, e, _ in text_windows(n, ctx, stride))


def test_text_bits_per_byte(model, tokenizer_dir):
    from gpt2lab.tokenizer import load_tokenizer

    big = GPT(GPTConfig(vocab_size=50304, block_size=16, n_layer=1, n_head=2, n_embd=16)).eval()
    tok = load_tokenizer(tokenizer_dir)
    text = "The quick brown fox jumps over the lazy dog. Caf\u00e9 au lait."
    r = evaluate_text(big, text, tok, RT, 16)
    assert r["tokens"] == len(tok.encode(text)) and r["bytes"] == len(text.encode())
    assert r["bits_per_byte"] == pytest.approx(r["loss"] * r["tokens"] / math.log(2) / r["bytes"])
