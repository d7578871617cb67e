import json

import pytest

from gpt2lab.cli import main

pytest.importorskip("transformers")


@pytest.mark.parametrize("preset", ["tiny"])
def test_bench_writes_both_implementations(tmp_path, preset, capsys):
    assert main(["bench", "--preset", preset, "--micro-batch", "2", "--steps", "2", "--warmup", "0", "--device", "cpu",
                 "--seq-len", "32", "--out", str(tmp_path)]) == 0
    assert "gpt2lab / hf-transformers" in capsys.readouterr().out
    report = json.loads(next(tmp_path.glob("bench_*.json")).read_text())
    assert {"device", "torch", "date", "commit", "results"} <= report.keys()
    assert [r["impl"] for r in report["results"]] == ["gpt2lab", "hf-transformers"]
    for r in report["results"]:
        assert {"impl", "preset", "micro_batch", "seq_len", "tokens_per_sec", "mfu", "peak_mem_gb"} <= r.keys()
        assert r["tokens_per_sec"] > 0 and r["seq_len"] == 32 and r["preset"] == preset


def test_bench_modern_uses_the_matching_transformers_architecture(tmp_path):
    from gpt2lab.config import build_config
    from gpt2lab.metrics.benchmark import _hf_model

    model = _hf_model(build_config(preset="gpt2-124m-modern", sets=["model.n_layer=1"]).model)
    assert type(model).__name__ == "LlamaForCausalLM"


def test_chunked_head_loss_equals_the_plain_head():
    import torch

    from gpt2lab.model import GPT, GPTConfig

    for switches in ({}, dict(pos="rope", mlp="swiglu", norm="rmsnorm", bias=False, tie_embeddings=False)):
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=300, block_size=32, n_layer=2, n_head=2, n_embd=32, **switches))
        x = torch.randint(0, 300, (4, 32))
        y = x.clone()
        y[0, :5] = -1  # ignored targets
        results = []
        for chunk in (0, 37):
            model.zero_grad()
            model.loss_chunk = chunk
            logits, loss = model(x, y)
            loss.backward()
            results.append((loss.item(), [p.grad.clone() for p in model.parameters()], logits))
        (plain, plain_grads, _), (chunked, chunked_grads, no_logits) = results
        assert abs(plain - chunked) < 1e-5 and no_logits is None
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain_grads, chunked_grads))
