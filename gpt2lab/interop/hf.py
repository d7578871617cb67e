"""Models between gpt2lab and Hugging Face transformers.

Which transformers architecture a gpt2lab model becomes:
  classic GPT-2                                   -> GPT2LMHeadModel (same parameter names; Conv1D = Linear.T)
  rope + swiglu + rmsnorm + no biases             -> LlamaForCausalLM (same rotate-half RoPE)
  the same with qk_norm                           -> Qwen3ForCausalLM (RMSNorm on q and k before RoPE)
Any other mix of switches has no exact equivalent, and export says which features are in the way.
transformers is imported only here, and only when a function needs it.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError

from ..checkpoint import load_model_from_checkpoint, write_checkpoint
from .remote_code import write_custom_architecture
from ..config import Config
from ..errors import UserError
from ..formats import read_json
from ..formats.json_file import MB
from ..files import FolderLock, absolute, clear_folder, copy_mode_from_umask, foreign_entries, publish_folder, write_error
from ..model import GPT, GPTConfig

_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
_MODERN = {"pos": "rope", "mlp": "swiglu", "norm": "rmsnorm", "bias": False}


def _transformers():
    try:
        import transformers
    except ImportError:
        raise UserError("this needs Hugging Face transformers: pip install 'gpt2lab[hf]'") from None
    transformers.utils.logging.set_verbosity_error()  # its progress bars and advice would interleave with ours
    transformers.utils.logging.disable_progress_bar()
    return transformers


def hf_architecture(config: GPTConfig) -> str:
    """'gpt2', 'llama' or 'qwen3'; a UserError naming the features that have no equivalent otherwise."""
    if config.is_classic:
        return "gpt2"
    differing = [f"{k}={getattr(config, k)!r} (needs {v!r})" for k, v in _MODERN.items() if getattr(config, k) != v]
    if config.logit_softcap is not None:
        differing.append(f"logit_softcap={config.logit_softcap} (needs none)")
    if config.skips:
        differing.append("skips=True (needs False)")
    if config.value_embeds:
        differing.append(f"value_embeds={config.value_embeds} (needs 0)")
    if not differing:
        return "qwen3" if config.qk_norm else "llama"
    raise UserError(
        "this model has no exact transformers equivalent: classic GPT-2 needs learned positions, LayerNorm, GELU "
        f"and biases; Llama/Qwen3 need RoPE, SwiGLU, RMSNorm and no biases, and this model has {', '.join(differing)}"
    )


# --- GPT-2 -------------------------------------------------------------------------------------------------

def hf_gpt2_config(config: GPTConfig):
    return _transformers().GPT2Config(
        vocab_size=config.vocab_size, n_positions=config.block_size, n_embd=config.n_embd,
        n_layer=config.n_layer, n_head=config.n_head, n_inner=config.hidden_dim,
        activation_function="gelu_new", layer_norm_epsilon=config.norm_eps,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=config.tie_embeddings,
        bos_token_id=50256, eos_token_id=50256,
    )


def to_hf_gpt2_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    return {k: (v.t() if k.endswith(_CONV1D) else v).contiguous() for k, v in model.state_dict().items()}


def from_hf_gpt2_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        if k.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # causal-mask buffers of older transformers versions
        out[k] = v.t() if k.endswith(_CONV1D) else v
    if "lm_head.weight" not in out:
        out["lm_head.weight"] = out["transformer.wte.weight"]
    return out


def gpt2_config_from_hf(hf) -> GPTConfig:
    if hf.activation_function not in ("gelu_new", "gelu_pytorch_tanh"):
        raise UserError(f"GPT-2 with activation {hf.activation_function!r} is not supported; gpt2lab uses tanh-GELU")
    # options that change what the model computes, which gpt2lab's GPT-2 does not have: importing the weights
    # without them would give another model's logits, silently
    problems = [what for what, present in (
        ("attention scores not scaled by 1/sqrt(head size) (scale_attn_weights=false)", not getattr(hf, "scale_attn_weights", True)),
        ("attention scaled by 1/layer (scale_attn_by_inverse_layer_idx)", getattr(hf, "scale_attn_by_inverse_layer_idx", False)),
        ("cross-attention layers (add_cross_attention)", getattr(hf, "add_cross_attention", False)),
    ) if present]
    if problems:
        raise UserError(f"cannot import this gpt2 model into gpt2lab: {', '.join(problems)} not supported")
    return _implicit_width(GPTConfig(
        vocab_size=hf.vocab_size, block_size=hf.n_positions, n_layer=hf.n_layer, n_head=hf.n_head,
        n_embd=hf.n_embd, mlp_hidden=hf.n_inner or 4 * hf.n_embd, norm_eps=hf.layer_norm_epsilon,
        tie_embeddings=hf.tie_word_embeddings,
    ))


def _implicit_width(config: GPTConfig) -> GPTConfig:
    """mlp_hidden back to None when it is the default width, so imported configs read like gpt2lab's own."""
    if config.mlp_hidden == dataclasses.replace(config, mlp_hidden=None).hidden_dim:
        config.mlp_hidden = None
    return config


# --- Llama / Qwen3 -------------------------------------------------------------------------------------------

def hf_llama_config(config: GPTConfig, arch: str):
    t = _transformers()
    cls = t.Qwen3Config if arch == "qwen3" else t.LlamaConfig
    return cls(
        vocab_size=config.vocab_size, hidden_size=config.n_embd, intermediate_size=config.hidden_dim,
        num_hidden_layers=config.n_layer, num_attention_heads=config.n_head, num_key_value_heads=config.n_head,
        head_dim=config.head_dim, max_position_embeddings=config.block_size, rms_norm_eps=config.norm_eps,
        rope_theta=config.rope_theta, tie_word_embeddings=config.tie_embeddings, hidden_act="silu",
        attention_bias=False, attention_dropout=0.0, bos_token_id=50256, eos_token_id=50256,
    )


def _llama_names(i: int) -> dict[str, str]:
    """gpt2lab name -> transformers name for block i (the fused c_attn and c_fc are split separately)."""
    h, m = f"transformer.h.{i}.", f"model.layers.{i}."
    return {
        h + "ln_1.weight": m + "input_layernorm.weight",
        h + "ln_2.weight": m + "post_attention_layernorm.weight",
        h + "attn.c_proj.weight": m + "self_attn.o_proj.weight",
        h + "mlp.c_proj.weight": m + "mlp.down_proj.weight",
        h + "attn.q_norm.weight": m + "self_attn.q_norm.weight",
        h + "attn.k_norm.weight": m + "self_attn.k_norm.weight",
    }


_LLAMA_GLOBAL = {"transformer.wte.weight": "model.embed_tokens.weight", "transformer.ln_f.weight": "model.norm.weight",
                 "lm_head.weight": "lm_head.weight"}


def to_hf_llama_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    sd, out = model.state_dict(), {}
    used = {f"transformer.h.{i}.{n}" for i in range(model.config.n_layer) for n in ("attn.c_attn.weight", "mlp.c_fc.weight")}
    used |= {*_LLAMA_GLOBAL} | {ours for i in range(model.config.n_layer) for ours in _llama_names(i)}
    unused = [k for k in sd if k not in used]
    if unused:  # a weight the format has no place for: dropping it would export another model
        raise UserError(f"the model has {len(unused)} tensor(s) Llama/Qwen3 has no place for (e.g. {unused[0]}); it "
                        "cannot be exported to transformers")
    for i in range(model.config.n_layer):
        names = _llama_names(i)
        for ours, theirs in names.items():
            if ours in sd:
                out[theirs] = sd[ours]
        m = f"model.layers.{i}."
        q, k, v = sd[f"transformer.h.{i}.attn.c_attn.weight"].chunk(3, dim=0)
        out.update({m + "self_attn.q_proj.weight": q, m + "self_attn.k_proj.weight": k, m + "self_attn.v_proj.weight": v})
        gate, up = sd[f"transformer.h.{i}.mlp.c_fc.weight"].chunk(2, dim=0)
        out.update({m + "mlp.gate_proj.weight": gate, m + "mlp.up_proj.weight": up})
    for ours, theirs in _LLAMA_GLOBAL.items():
        out[theirs] = sd[ours]
    return {k: v.contiguous() for k, v in out.items()}


def from_hf_llama_state_dict(state: dict[str, torch.Tensor], config: GPTConfig) -> dict[str, torch.Tensor]:
    out = {ours: state[theirs] for ours, theirs in _LLAMA_GLOBAL.items() if theirs in state}
    if "lm_head.weight" not in out:
        out["lm_head.weight"] = out["transformer.wte.weight"]
    for i in range(config.n_layer):
        for ours, theirs in _llama_names(i).items():
            if theirs in state:
                out[ours] = state[theirs]
        m = f"model.layers.{i}.self_attn."
        out[f"transformer.h.{i}.attn.c_attn.weight"] = torch.cat([state[m + p + "_proj.weight"] for p in "qkv"])
        m = f"model.layers.{i}.mlp."
        out[f"transformer.h.{i}.mlp.c_fc.weight"] = torch.cat([state[m + "gate_proj.weight"], state[m + "up_proj.weight"]])
    return out


def llama_config_from_hf(hf, qk_norm: bool) -> GPTConfig:
    head_dim = getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads
    problems = []
    if hf.num_key_value_heads != hf.num_attention_heads:
        problems.append("grouped-query attention (num_key_value_heads != num_attention_heads)")
    if head_dim * hf.num_attention_heads != hf.hidden_size:
        problems.append("head_dim * heads != hidden_size")
    if getattr(hf, "attention_bias", False) or getattr(hf, "mlp_bias", False):
        problems.append("attention or MLP biases")
    # transformers 5 keeps RoPE settings in rope_parameters (rope_scaling is an alias); 4.x in rope_scaling + rope_theta
    rope = getattr(hf, "rope_parameters", None) or getattr(hf, "rope_scaling", None) or {}
    if (rope.get("rope_type") or rope.get("type") or "default") != "default":
        problems.append("RoPE scaling")
    if hf.hidden_act != "silu":
        problems.append(f"activation {hf.hidden_act!r}")
    layer_types = getattr(hf, "layer_types", None) or []
    if getattr(hf, "use_sliding_window", False) or any(t != "full_attention" for t in layer_types):
        problems.append("sliding-window attention")
    if problems:
        raise UserError(f"cannot import this {hf.model_type} model into gpt2lab: {', '.join(problems)} not supported")
    theta = rope.get("rope_theta") or getattr(hf, "rope_theta", 10000.0)
    return _implicit_width(GPTConfig(
        vocab_size=hf.vocab_size, block_size=hf.max_position_embeddings, n_layer=hf.num_hidden_layers,
        n_head=hf.num_attention_heads, n_embd=hf.hidden_size, mlp_hidden=hf.intermediate_size,
        norm_eps=hf.rms_norm_eps, rope_theta=float(theta), tie_embeddings=hf.tie_word_embeddings,
        qk_norm=qk_norm, **_MODERN,
    ))


# --- whole models --------------------------------------------------------------------------------------------

def to_hf_model(model: GPT):
    """A transformers model with the same weights (float32, eval mode)."""
    t = _transformers()
    arch = hf_architecture(model.config)
    if arch == "gpt2":
        hf = t.GPT2LMHeadModel(hf_gpt2_config(model.config))
        state = to_hf_gpt2_state_dict(model)
    else:
        cls = t.Qwen3ForCausalLM if arch == "qwen3" else t.LlamaForCausalLM
        hf = cls(hf_llama_config(model.config, arch))
        state = to_hf_llama_state_dict(model)
    missing, unexpected = hf.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("attn.bias") and not (k == "lm_head.weight" and model.config.tie_embeddings)]
    if missing or unexpected:
        raise UserError(f"the model does not map onto {type(hf).__name__} tensor for tensor: transformers would miss "
                        f"{missing[:3]} and not use {unexpected[:3]}; it cannot be exported")
    return hf.eval()


def from_hf_model(hf) -> GPT:
    """A gpt2lab GPT with the weights of a transformers GPT-2, Llama or Qwen3 model."""
    kind = hf.config.model_type
    state = {k: v.detach().float() for k, v in hf.state_dict().items()}
    if kind == "gpt2":
        config = gpt2_config_from_hf(hf.config)
        state = from_hf_gpt2_state_dict(state)
    elif kind in ("llama", "qwen3"):
        config = llama_config_from_hf(hf.config, qk_norm=kind == "qwen3")
        state = from_hf_llama_state_dict(state, config)
    else:
        raise UserError(f"cannot import a {kind!r} model: gpt2lab imports gpt2, llama and qwen3 models")
    model = GPT(config)
    model.load_state_dict(state)
    return model.eval()


def _write_tokenizer(out: Path, tokenizer_folder: str | None, block_size: int) -> bool:
    from ..tokenizer import bpe_files

    files = bpe_files(tokenizer_folder)
    if files is None:
        return False
    encoder, merges = files
    shutil.copy(encoder, out / "vocab.json")
    shutil.copy(merges, out / "merges.txt")
    eot = "<|endoftext|>"
    config = {"tokenizer_class": "GPT2Tokenizer", "model_max_length": block_size, "bos_token": eot,
              "eos_token": eot, "unk_token": eot, "add_prefix_space": False, "add_bos_token": False}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps({"bos_token": eot, "eos_token": eot, "unk_token": eot}) + "\n")
    return True


def export_hf(checkpoint: str, out_dir: str, tokenizer: str | None = None, hashes: bool = True) -> dict:
    """Write a transformers model folder (safetensors + config, tokenizer files when available) into a new or
    empty folder; built in a working sibling and renamed, so a failure leaves nothing behind. A model transformers
    has an architecture for becomes that architecture (GPT-2, Llama, Qwen3); any other (the speedrun recipes'
    ReLU^2, QK-norm with learned positions, a soft-capped head...) a custom one, loaded with trust_remote_code."""
    model, config, path = load_model_from_checkpoint(checkpoint, torch.device("cpu"), hashes)
    try:
        hf_architecture(model.config)
    except UserError:
        hf = None  # no transformers architecture for these switches: gpt2lab's own, as custom code
    else:
        hf = to_hf_model(model)  # a tensor that does not map is a one-line error, never a fallback
    out = absolute(out_dir)
    if out.exists() and (not out.is_dir() or foreign_entries(out, set())):
        raise UserError(f"{out} already exists and is not empty; choose another --out (export replaces nothing)")
    work = out.with_name(f".{out.name}.partial")
    with FolderLock(work, "export's working folder", private=True):
        clear_folder(work)
        try:
            if hf is not None:
                hf.save_pretrained(str(work), safe_serialization=True)
                architecture = type(hf).__name__
            else:
                architecture = write_custom_architecture(model, work)
            has_tokenizer = _write_tokenizer(work, tokenizer, config.model.block_size)
            for p in work.iterdir():
                copy_mode_from_umask(p)
            publish_folder(work, out)
        except (OSError, RuntimeError, SafetensorError) as exc:
            clear_folder(work)
            raise write_error("the exported model", out, exc) from None
    return {"checkpoint": str(path), "out": str(out), "architecture": architecture, "tokenizer": has_tokenizer}


def import_hf(hf_dir: str, out: str) -> dict:
    """Turn a transformers GPT-2 (or Llama/Qwen3 of gpt2lab's shape) folder into a gpt2lab checkpoint, in a new
    or empty folder (never one that holds anything, the source folder or a run directory included)."""
    t = _transformers()
    source, target = absolute(hf_dir), absolute(out)
    if not (source / "config.json").is_file():
        raise UserError(f"{hf_dir} is not a transformers model folder (no config.json)")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UserError(f"{target} is not empty; import writes a new checkpoint folder and replaces nothing: choose another --out")
    kind = _model_type(source / "config.json")
    if kind not in ("gpt2", "llama", "qwen3"):  # before transformers reads it: a custom-code folder runs nothing
        raise UserError(f"cannot import a {kind!r} model: gpt2lab imports gpt2, llama and qwen3 models"
                        + (" (this folder is a gpt2lab export: import the checkpoint it came from)" if kind == "gpt2lab" else ""))
    _config_of(_load(hf_dir, lambda: t.AutoConfig.from_pretrained(str(source))))  # sizes first: nothing is built yet
    # one import at a time into one --out: the second is refused, not interleaved with the first
    with FolderLock(target.with_name(f".{target.name}.import"), "import's working folder", private=True):
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise UserError(f"{target} is not empty; import writes a new checkpoint folder and replaces nothing: "
                            "choose another --out")
        hf, info = _load(hf_dir, lambda: t.AutoModelForCausalLM.from_pretrained(str(source), output_loading_info=True))
        _check_loading(hf_dir, hf, info)
        model = from_hf_model(hf.float())
        config = Config(model=model.config)
        path = write_checkpoint(target, model, config, {"step": 0, "imported_from": str(source)}, replace=False)
    return {"out": str(path), "architecture": hf.config.model_type, "parameters": model.num_params()}


def _model_type(path: Path) -> str | None:
    config = read_json(path, max_bytes=MB, max_depth=16, fix="pass a folder saved by transformers' save_pretrained")
    return config.get("model_type") if isinstance(config, dict) else None


def _load(hf_dir: str, load):
    try:
        return load()
    except Exception as exc:  # transformers fails in many ways on a damaged or foreign folder
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise UserError(f"transformers cannot load {hf_dir}: {type(exc).__name__}: {first}") from None


def _config_of(hf_config) -> GPTConfig:
    """The gpt2lab model a transformers config describes, validated (sizes included) before any weight exists."""
    kind = getattr(hf_config, "model_type", None)
    try:
        if kind == "gpt2":
            config = gpt2_config_from_hf(hf_config)
        elif kind in ("llama", "qwen3"):
            config = llama_config_from_hf(hf_config, qk_norm=kind == "qwen3")
        else:
            raise UserError(f"cannot import a {kind!r} model: gpt2lab imports gpt2, llama and qwen3 models")
        config.validate()
    except (ValueError, TypeError, AttributeError) as exc:
        raise UserError(f"cannot import this {kind} model: {exc}") from None
    return config


def _check_loading(hf_dir: str, hf, info: dict) -> None:
    """transformers fills tensors the folder lacks with random values (and only warns): refuse that, naming them."""
    tied = {"lm_head.weight"} if getattr(hf.config, "tie_word_embeddings", False) else set()
    missing = sorted(k for k in info.get("missing_keys", []) if k not in tied and not k.endswith(("attn.bias",
                                                                                                 "attn.masked_bias")))
    unexpected = sorted(k for k in info.get("unexpected_keys", []) if not k.endswith(("attn.bias", "attn.masked_bias")))
    mismatched = [k for k, *_ in info.get("mismatched_keys", [])]
    for what, names in (("lacks", missing), ("has tensors it does not use:", unexpected),
                        ("has tensors of the wrong shape:", mismatched)):
        if names:
            raise UserError(f"{hf_dir} {what} {', '.join(names[:3])}{' ...' if len(names) > 3 else ''} "
                            f"({len(names)} in all); import refuses a model that transformers would complete with "
                            "random values or load partly")
