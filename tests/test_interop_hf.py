import pytest
import torch

from gpt2lab.config import Config
from gpt2lab.errors import UserError
from gpt2lab.interop.hf import (
    export_hf, from_hf_gpt2_state_dict, hf_architecture, hf_gpt2_config, import_hf, to_hf_gpt2_state_dict,
)
from gpt2lab.checkpoint import load_model_from_checkpoint, write_checkpoint
from gpt2lab.model import GPT, GPTConfig
from tests.switches import CUSTOM, MODERN, SWITCHES

transformers = pytest.importorskip("transformers")

BASE = dict(vocab_size=320, block_size=64, n_layer=3, n_head=4, n_embd=64)
EXPORTABLE = {**SWITCHES,  # tests/switches.py: every switch combination the project tests
              "modern untied, theta 500": ({**MODERN, "tie_embeddings": False, "rope_theta": 500.0}, "LlamaForCausalLM")}


def random_model(seed=0, **kw):
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**{**BASE, **kw})).eval()
    with torch.no_grad():  # norms away from 1 and biases away from 0, so that a mix-up would show
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def logits(model, x):
    with torch.no_grad():
        out = model(x)
    return out[0] if isinstance(out, tuple) else out.logits


def test_logits_equal_hf_gpt2():
    model = random_model()
    hf = transformers.GPT2LMHeadModel(hf_gpt2_config(model.config)).eval()
    hf.load_state_dict(to_hf_gpt2_state_dict(model), strict=False)
    x = torch.randint(0, 320, (2, 64))
    assert (logits(model, x) - logits(hf, x)).abs().max().item() <= 1e-5


def test_hf_gpt2_weights_load_into_gpt2lab():
    torch.manual_seed(1)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=128, n_positions=32, n_embd=32,
                                                             n_layer=2, n_head=2)).eval()
    model = GPT(GPTConfig(vocab_size=128, block_size=32, n_layer=2, n_head=2, n_embd=32)).eval()
    model.load_state_dict(from_hf_gpt2_state_dict(hf.state_dict()))
    x = torch.randint(0, 128, (1, 32))
    assert (logits(model, x) - logits(hf, x)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("name", EXPORTABLE)
def test_export_loads_in_transformers_with_equal_logits_and_imports_back(name, tmp_path):
    switches, architecture = EXPORTABLE[name]
    model = random_model(**switches)
    write_checkpoint(tmp_path / "ckpt", model, Config(model=model.config), {"step": 0})
    info = export_hf(str(tmp_path / "ckpt"), str(tmp_path / "hf"))
    assert info["architecture"].split(" ")[0] == architecture
    custom = architecture == CUSTOM  # no transformers architecture: gpt2lab's own code beside the weights
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", trust_remote_code=custom).float().eval()
    assert type(hf).__name__ == architecture
    x = torch.randint(0, 320, (2, 64))
    assert (logits(model, x) - logits(hf, x)).abs().max().item() <= 1e-5
    if custom:  # import reads transformers' own architectures only, and says so
        with pytest.raises(UserError, match="gpt2lab imports gpt2, llama and qwen3"):
            import_hf(str(tmp_path / "hf"), str(tmp_path / "back"))
        return
    # and back: import gives the same logits again
    import_hf(str(tmp_path / "hf"), str(tmp_path / "back"))
    again, cfg, _ = load_model_from_checkpoint(tmp_path / "back", torch.device("cpu"))
    assert cfg.model == model.config
    assert (logits(model, x) - logits(again, x)).abs().max().item() <= 1e-5


def test_import_a_transformers_gpt2_folder(tmp_path):
    """As OpenAI's gpt2 is saved by transformers: vocab 50257, tied head, gelu_new (random weights here)."""
    torch.manual_seed(2)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=128)).eval()
    hf.save_pretrained(tmp_path / "gpt2")
    info = import_hf(str(tmp_path / "gpt2"), str(tmp_path / "ckpt"))
    assert info["architecture"] == "gpt2"
    model, cfg, _ = load_model_from_checkpoint(tmp_path / "ckpt", torch.device("cpu"))
    assert cfg.model.vocab_size == 50257 and cfg.model.is_classic
    x = torch.randint(0, 50257, (2, 100))
    assert (logits(model, x) - logits(hf, x)).abs().max().item() <= 1e-5


def test_features_without_an_equivalent_are_refused(tmp_path):
    with pytest.raises(UserError, match="pos='learned'"):
        hf_architecture(GPTConfig(**BASE, mlp="swiglu", norm="rmsnorm", bias=False))
    with pytest.raises(UserError, match="no exact transformers equivalent"):
        hf_architecture(GPTConfig(**BASE, pos="rope"))
    with pytest.raises(UserError, match="not a transformers model folder"):
        import_hf(str(tmp_path), str(tmp_path / "out"))


def test_exported_tokenizer_works_with_autotokenizer(tmp_path, tokenizer_dir):
    model = random_model()
    write_checkpoint(tmp_path / "ckpt", model, Config(model=model.config), {"step": 0})
    assert export_hf(str(tmp_path / "ckpt"), str(tmp_path / "hf"), tokenizer=tokenizer_dir)["tokenizer"]
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert tok("Hello world")["input_ids"] == [15496, 995]
    assert tok.eos_token_id == 50256


def test_tokenizer_found_in_tiktoken_cache(offline_tokenizer):
    from gpt2lab.tokenizer import bpe_files

    encoder, merges = bpe_files()
    assert encoder.stat().st_size > 1_000_000 and merges.read_text().startswith("#version")


@pytest.mark.parametrize("modern", [False, True])
def test_a_model_with_an_extra_weight_is_not_exported(modern):
    """Sketching value embeddings, the model exported to Llama with no error and logits off by up to 1.08."""
    pytest.importorskip("transformers")
    from gpt2lab.errors import UserError
    from gpt2lab.interop.hf import to_hf_model
    from gpt2lab.model import GPT, GPTConfig

    switches = dict(pos="rope", mlp="swiglu", norm="rmsnorm", bias=False) if modern else {}
    model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32, **switches))
    model.transformer.h[1].attn.value_embed = torch.nn.Embedding(64, 32)
    with pytest.raises(UserError, match="value_embed"):
        to_hf_model(model)


def _hf_gpt2_folder(path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=2)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(path)
    return path


def test_import_refuses_a_folder_that_lacks_a_tensor(tmp_path, capsys):
    """transformers filled the missing tensor with random values (its warning muted) and import reported success."""
    from safetensors.torch import load_file, save_file

    from gpt2lab.cli import main

    folder = _hf_gpt2_folder(tmp_path / "hf")
    weights = load_file(str(folder / "model.safetensors"))
    del weights["transformer.h.1.mlp.c_fc.weight"]
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    assert main(["import", str(folder), "--out", str(tmp_path / "ckpt")]) == 2
    err = capsys.readouterr().err
    assert "lacks transformer.h.1.mlp.c_fc.weight" in err and not (tmp_path / "ckpt").exists()


def _gpt2_folder_with(path, **options):
    torch.manual_seed(3)
    cfg = transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=2, **options)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    hf.save_pretrained(path)
    return hf


@pytest.mark.parametrize("option, value", [("scale_attn_weights", False), ("scale_attn_by_inverse_layer_idx", True),
                                           ("add_cross_attention", True), ("use_sliding_window", True)])
def test_options_gpt2lab_does_not_compute_are_refused_by_name(option, value, tmp_path, capsys):
    """They were imported silently (the weights fit) as a model with other logits; cross-attention ended in a traceback."""
    from gpt2lab.cli import main

    if option == "use_sliding_window":  # Qwen3's
        cfg = transformers.Qwen3Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=2, num_key_value_heads=2, head_dim=16,
                                       max_position_embeddings=64, use_sliding_window=True, sliding_window=8,
                                       max_window_layers=0)
        transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path / "hf")
    else:
        _gpt2_folder_with(tmp_path / "hf", **{option: value})
    capsys.readouterr()
    assert main(["import", str(tmp_path / "hf"), "--out", str(tmp_path / "ckpt")]) == 2
    err = capsys.readouterr().err
    named = "sliding-window" if option == "use_sliding_window" else option
    assert err.startswith("gpt2lab: error: cannot import") and named in err and err.count("\n") == 1, err
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.parametrize("option, value", [("layer_norm_epsilon", 1e-3), ("n_inner", 48), ("tie_word_embeddings", False),
                                           ("reorder_and_upcast_attn", True)])
def test_options_gpt2lab_computes_import_with_equal_logits(option, value, tmp_path):
    hf = _gpt2_folder_with(tmp_path / "hf", **{option: value})
    import_hf(str(tmp_path / "hf"), str(tmp_path / "ckpt"))
    model, _, _ = load_model_from_checkpoint(tmp_path / "ckpt", torch.device("cpu"))
    x = torch.randint(0, 64, (2, 16))
    assert (logits(model, x) - logits(hf, x)).abs().max().item() <= 1e-5


def test_a_huge_model_config_is_refused_before_anything_is_built(tmp_path, capsys):
    import json
    import time

    from gpt2lab.cli import main

    folder = _hf_gpt2_folder(tmp_path / "hf")
    config = json.loads((folder / "config.json").read_text())
    config["n_layer"] = 200_000
    (folder / "config.json").write_text(json.dumps(config))
    start = time.perf_counter()
    assert main(["import", str(folder), "--out", str(tmp_path / "ckpt")]) == 2
    assert "n_layer must be between 1 and 1,024" in capsys.readouterr().err and time.perf_counter() - start < 30


def test_a_second_import_into_the_same_out_is_refused(tmp_path, capsys):
    from gpt2lab.cli import main
    from gpt2lab.files import FolderLock

    folder = _hf_gpt2_folder(tmp_path / "hf")
    with FolderLock(tmp_path / ".ckpt.import", "import's working folder", private=True):  # the first import
        assert main(["import", str(folder), "--out", str(tmp_path / "ckpt")]) == 2
    assert "in use by" in capsys.readouterr().err
    assert main(["import", str(folder), "--out", str(tmp_path / "ckpt")]) == 0


@pytest.mark.parametrize("switches", [
    dict(pos="rope", norm="rmsnorm", bias=False, mlp="relu2", qk_norm=True, zero_init_proj=True, tie_embeddings=False,
         logit_softcap=30.0),  # the speedrun recipes' shape
    dict(pos="rope"),  # classic GPT-2 with RoPE, tied head: no transformers architecture either
])
def test_a_model_without_a_transformers_architecture_exports_as_custom_code(tmp_path, switches):
    """Issue 27 item 3: the recipe users are told to prefer could not leave gpt2lab (export refused relu2)."""
    transformers = pytest.importorskip("transformers")
    from gpt2lab.checkpoint import load_model_from_checkpoint
    from gpt2lab.config import Config
    from gpt2lab.interop.hf import export_hf

    torch.manual_seed(0)
    model = GPT(GPTConfig(**BASE, **switches))
    with torch.no_grad():  # weights away from their initial values, so a wrong mapping shows
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    from gpt2lab.checkpoint import write_checkpoint

    write_checkpoint(tmp_path / "ckpt", model, Config(model=model.config), {"step": 1})
    info = export_hf(str(tmp_path / "ckpt"), str(tmp_path / "hf"))
    assert "trust_remote_code" in info["architecture"]
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"), trust_remote_code=True).eval()
    ours, _, _ = load_model_from_checkpoint(tmp_path / "ckpt", torch.device("cpu"))
    x = torch.randint(0, BASE["vocab_size"], (2, 24))
    with torch.no_grad():
        assert (ours(x)[0] - hf(input_ids=x).logits).abs().max().item() <= 1e-4
        out = hf(input_ids=x, labels=x)
    assert torch.isfinite(out.loss)


@pytest.mark.parametrize("row", ["classic", "modern", "speedrun"])
def test_export_of_a_checkpoint_with_an_extra_weight_is_one_line(tmp_path, row, capsys):
    """A weight gpt2lab's model does not define must not be dropped by export, whichever format it would take."""
    from gpt2lab.cli import main

    model = random_model(**SWITCHES[row][0])
    from gpt2lab.checkpoint import unique_tensors

    state = unique_tensors(model.state_dict())
    state["transformer.h.0.attn.value_embed.weight"] = torch.zeros(BASE["vocab_size"], BASE["n_embd"])
    write_checkpoint(tmp_path / "ckpt", state, Config(model=model.config), {"step": 0})
    assert main(["export", str(tmp_path / "ckpt"), "--out", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert "value_embed" in err or "does not match the model" in err
    assert not (tmp_path / "hf").exists()
