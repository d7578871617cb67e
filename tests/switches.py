"""Every combination of model switches worth testing, in one table: the model, memory-plan and transformers
export tests all read it, so a new switch is tested everywhere by adding one row here.

Each row: the GPTConfig switches, and the transformers class export gives it (custom code when transformers has
no architecture for it).
"""

MODERN = dict(pos="rope", mlp="swiglu", norm="rmsnorm", bias=False)
# the speedrun recipes' architecture (their zero-initialised projections are an initialisation, tested on its own)
SPEEDRUN = dict(pos="rope", norm="rmsnorm", bias=False, mlp="relu2", qk_norm=True, tie_embeddings=False,
                logit_softcap=30.0)
CUSTOM = "Gpt2labForCausalLM"

SWITCHES = {
    "classic": ({}, "GPT2LMHeadModel"),
    "classic-untied": ({"tie_embeddings": False}, "GPT2LMHeadModel"),
    "modern": (MODERN, "LlamaForCausalLM"),
    "modern+qknorm": ({**MODERN, "qk_norm": True}, "Qwen3ForCausalLM"),
    "rope-only": ({"pos": "rope"}, CUSTOM),
    "swiglu-only": ({"mlp": "swiglu"}, CUSTOM),
    "relu2": ({**MODERN, "mlp": "relu2"}, CUSTOM),
    "softcap": ({**MODERN, "logit_softcap": 15.0}, CUSTOM),
    "speedrun": (SPEEDRUN, CUSTOM),
    "speedrun+skips": ({**SPEEDRUN, "skips": True}, CUSTOM),
    "classic+skips": ({"skips": True}, CUSTOM),
    "speedrun+value_embeds": ({**SPEEDRUN, "value_embeds": 1}, CUSTOM),
    "classic+value_embeds": ({"value_embeds": 1}, CUSTOM),
}
