"""Presets (named models) and recipes (named whole runs), as plain data.

A preset is the model section of a config; fields it leaves out keep GPTConfig's defaults, which are
classic GPT-2 124M. A recipe is a partial config with every section it needs, and names its preset.
"""

from __future__ import annotations

from .errors import UserError

_MODERN = {"pos": "rope", "mlp": "swiglu", "norm": "rmsnorm", "bias": False}
# the speedrun line's architecture, as measured in the CPU lab (bench/speedrun_cpu.py)
_SPEEDRUN = {"pos": "rope", "norm": "rmsnorm", "bias": False, "mlp": "relu2", "qk_norm": True, "zero_init_proj": True,
             "tie_embeddings": False}
# Muon for hidden matrices, AdamW for embeddings, head and gains: the CPU lab's learning rates
_MUON = {"name": "muon", "matrix_lr": 0.02, "embedding_lr": 0.2, "head_lr": 0.008, "gain_lr": 0.02, "lr": 0.004,
         "weight_decay": 0.0, "beta1": 0.8, "beta2": 0.95, "muon": {"momentum": 0.95}, "grad_clip": 1.0}

PRESETS: dict[str, dict] = {
    # CPU tests and the demo: seconds per step on two cores.
    "tiny": {"n_layer": 2, "n_head": 4, "n_embd": 128, "block_size": 128},
    "gpt2-15m": {"n_layer": 4, "n_head": 4, "n_embd": 256, "block_size": 256},
    "gpt2-25m": {"n_layer": 6, "n_head": 8, "n_embd": 256, "block_size": 512},
    "gpt2-124m": {"n_layer": 12, "n_head": 12, "n_embd": 768, "block_size": 1024},
    "gpt2-124m-modern": {"n_layer": 12, "n_head": 12, "n_embd": 768, "block_size": 1024, **_MODERN},
    "gpt2-350m": {"n_layer": 24, "n_head": 16, "n_embd": 1024, "block_size": 1024},
    "gpt2-774m": {"n_layer": 36, "n_head": 20, "n_embd": 1280, "block_size": 1024},
    "gpt2-1558m": {"n_layer": 48, "n_head": 25, "n_embd": 1600, "block_size": 1024},
}

RECIPES: dict[str, dict] = {
    "gpt2-124m-modern-fineweb10b": {
        "description": (
            "GPT-2 124M with RoPE, SwiGLU, RMSNorm and tied embeddings on FineWeb-Edu sample-10BT: "
            "524,288-token steps (32 x 1024 per micro-batch), AdamW lr 1.8e-3 -> 1.8e-4 with 285 warmup steps "
            "and cosine decay over 38,146 steps (2 epochs), bf16, torch.compile, val and HellaSwag every 250 steps (set run.hellaswag_path); val loss 2.99 on one RTX 5090 "
            "in 22 h as reported"
        ),
        "preset": "gpt2-124m-modern",
        "config": {
            "optim": {"lr": 1.8e-3, "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "grad_clip": 1.0},
            "schedule": {"max_steps": 38146, "warmup_steps": 285, "min_lr": 1.8e-4, "decay": "cosine"},
            "run": {"micro_batch": 32, "batch_tokens": 524288, "seed": 1337, "precision": "bf16", "compile": "on"},
            "eval": {"every": 250, "hellaswag_every": 250},
            "checkpoint": {"every": 5000},
        },
    },
    "gpt2-25m-wikitext103": {
        "description": (
            "The 25M model of the WikiText-103 report: 6 layers, width 256, 8 heads, context 512, batch 16, "
            "fp16 with GradScaler, AdamW lr 3e-4 with cosine decay; the schedule spans the whole run "
            "(about 2 epochs of WikiText-103) instead of ending early"
        ),
        "preset": "gpt2-25m",
        "config": {
            "optim": {"lr": 3e-4},
            "schedule": {"max_steps": 30000, "warmup_steps": 500, "min_lr": 3e-5, "decay": "cosine"},
            "run": {"micro_batch": 16, "precision": "fp16"},
            "eval": {"every": 500},
            "checkpoint": {"every": 5000},
        },
    },
    "speedrun-cpu": {
        "description": (
            "the CPU lab's best recipe (bench/quality_lab.py, speedrun-cpu+ve2): the gpt2-15m shape with RoPE, "
            "RMSNorm, ReLU^2, QK-norm, zero-initialised projections, an untied head and two value-embedding tables; "
            "Muon 0.02 for matrices, AdamW for the rest; warmup-stable-decay with a 40% cooldown; 512 steps of "
            "8 x 256 tokens (the lab's 1M horizon; set schedule.max_steps for another)"
        ),
        "preset": "gpt2-15m",
        # value embeddings paid at the lab's 4M horizon on both seeds (README, Quality per compute)
        "model": {**_SPEEDRUN, "value_embeds": 2},
        "config": {
            "optim": _MUON,
            "schedule": {"max_steps": 512, "warmup_steps": 16, "decay": "wsd", "cooldown_fraction": 0.4, "min_lr_ratio": 0.0},
            "run": {"micro_batch": 8},
            "eval": {"every": 64, "batches": 16},
        },
    },
    "gpt2-124m-speedrun": {
        "description": (
            "GPT-2 124M with the CPU lab's recipe scaled up for one GPU: the speedrun architecture plus a logit "
            "soft-cap of 30, Muon + AdamW, WSD, 4,000 steps of 524,288 tokens (2.1B); the learning rates and the "
            "token count are carried over or guessed (README, Quality per compute), not yet measured on a GPU"
        ),
        "preset": "gpt2-124m",
        "model": {**_SPEEDRUN, "logit_softcap": 30.0},
        "config": {
            "optim": _MUON,
            "schedule": {"max_steps": 4000, "warmup_steps": 50, "decay": "wsd", "cooldown_fraction": 0.4, "min_lr_ratio": 0.0},
            "run": {"micro_batch": 32, "batch_tokens": 524288, "precision": "bf16", "compile": "on"},
            "eval": {"every": 250},
            "checkpoint": {"every": 1000},
        },
    },
}


def _lookup(kind: str, name: str, table: dict) -> dict:
    if name not in table:
        import difflib

        close = difflib.get_close_matches(name, list(table), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UserError(f"unknown {kind} {name!r}; {hint}choose one of: {', '.join(table)}")
    return table[name]


def preset(name: str) -> dict:
    """The model section of a named preset."""
    return dict(_lookup("preset", name, PRESETS))


def recipe(name: str) -> dict:
    """A named recipe as a config layer, its preset's model section (and the recipe's model switches) included."""
    entry = _lookup("recipe", name, RECIPES)
    layer = {section: dict(values) for section, values in entry["config"].items()}
    layer["model"] = {**preset(entry["preset"]), **entry.get("model", {})}
    return layer
