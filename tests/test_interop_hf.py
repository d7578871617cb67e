import pytest
import torch

from gpt2lab.interop.hf import from_hf_gpt2_state_dict, hf_gpt2_config, to_hf_gpt2_state_dict
from gpt2lab.model import GPT, GPTConfig

transformers = pytest.importorskip("transformers")


def test_logits_equal_hf_gpt2():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=320, block_size=64, n_layer=3, n_head=4, n_embd=64)).eval()
    hf = transformers.GPT2LMHeadModel(hf_gpt2_config(model.config)).eval()
    missing, unexpected = hf.load_state_dict(to_hf_gpt2_state_dict(model), strict=False)
    assert not unexpected and all(k.endswith("attn.bias") or k == "lm_head.weight" for k in missing)
    x = torch.randint(0, 320, (2, 64))
    with torch.no_grad():
        ours, _ = model(x)
        theirs = hf(x).logits
    assert (ours - theirs).abs().max().item() <= 1e-5


def test_hf_weights_load_into_gpt2lab():
    torch.manual_seed(1)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=128, n_positions=32, n_embd=32,
                                                             n_layer=2, n_head=2)).eval()
    model = GPT(GPTConfig(vocab_size=128, block_size=32, n_layer=2, n_head=2, n_embd=32)).eval()
    model.load_state_dict(from_hf_gpt2_state_dict(hf.state_dict()))
    x = torch.randint(0, 128, (1, 32))
    with torch.no_grad():
        assert (model(x)[0] - hf(x).logits).abs().max().item() <= 1e-5
