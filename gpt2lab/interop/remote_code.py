"""Export a model that transformers has no architecture for (ReLU^2, QK-norm, a soft-capped head, RoPE with
learned... any gpt2lab switch) as a custom architecture: the standard way for architectures transformers lacks.

The folder holds the weights (model.safetensors), a config.json whose `auto_map` names the classes, and the code:
configuration_gpt2lab.py and modeling_gpt2lab.py (written from the templates below) plus gpt2lab's own model
(gpt2lab_model.py and gpt2lab_loss.py, copied from this package, so the logits are gpt2lab's by construction).
`AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)` loads it; nothing of gpt2lab needs to be
installed there.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..errors import UserError
from ..model import GPT, model_shapes

ARCHITECTURE = "Gpt2labForCausalLM"

CONFIGURATION = '''"""gpt2lab's model settings as a transformers config (written by `gpt2lab export`)."""

from transformers import PretrainedConfig


class Gpt2labConfig(PretrainedConfig):
    model_type = "gpt2lab"

    def __init__(self, gpt2lab=None, **kwargs):
        self.gpt2lab = dict(gpt2lab or {})
        kwargs.setdefault("tie_word_embeddings", False)  # a tied head is the token table inside the model itself
        super().__init__(**kwargs)
        self.vocab_size = self.gpt2lab.get("vocab_size")
        self.max_position_embeddings = self.gpt2lab.get("block_size")
'''

MODELING = '''"""gpt2lab's GPT as a transformers model (written by `gpt2lab export`): the same module, the same logits."""

import torch
from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from .configuration_gpt2lab import Gpt2labConfig
from .gpt2lab_model import GPT, GPTConfig, rope_tables


class Gpt2labForCausalLM(PreTrainedModel):
    config_class = Gpt2labConfig
    base_model_prefix = "model"
    _no_split_modules = ["Block"]

    def __init__(self, config):
        super().__init__(config)
        self.model = GPT(GPTConfig(**config.gpt2lab))
        self.post_init()

    def _init_weights(self, module):
        pass  # every weight comes from the checkpoint

    def _rope(self):
        """RoPE's tables are computed, not stored: transformers builds the model without memory and then loads
        only what the checkpoint holds, so they are computed again, once, on the weights' device."""
        cfg = self.model.config
        if cfg.pos == "rope" and getattr(self, "_rope_ready", None) != self.model.transformer.wte.weight.device:
            device = self.model.transformer.wte.weight.device
            cos, sin = rope_tables(cfg.head_dim, cfg.block_size, cfg.rope_theta)
            self.model.rope_cos, self.model.rope_sin = cos.to(device), sin.to(device)
            self._rope_ready = device

    def forward(self, input_ids=None, labels=None, attention_mask=None, **kwargs):
        self._rope()
        logits, _ = self.model(input_ids)
        loss = None
        if labels is not None:  # transformers' convention: labels are the inputs, shifted here
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)).float(),
                                                     labels[:, 1:].reshape(-1), ignore_index=-100)
        return CausalLMOutput(loss=loss, logits=logits)
'''


def write_custom_architecture(model: GPT, folder: Path) -> str:
    """Write model as a trust_remote_code architecture into folder; returns the architecture's name. The copied
    model file must hold every tensor of this model: one it does not know is a one-line error."""
    known = set(model_shapes(model.config).state_dict())
    unknown = sorted(set(model.state_dict()) - known)
    if unknown:
        raise UserError(f"the model has {len(unknown)} tensor(s) gpt2lab's model file does not define (e.g. "
                        f"{unknown[0]}); it cannot be exported")
    source = Path(__file__).resolve().parents[1] / "model"
    (folder / "gpt2lab_loss.py").write_text((source / "loss.py").read_text())
    (folder / "gpt2lab_model.py").write_text((source / "gpt.py").read_text().replace("from .loss import",
                                                                                     "from .gpt2lab_loss import"))
    (folder / "configuration_gpt2lab.py").write_text(CONFIGURATION)
    (folder / "modeling_gpt2lab.py").write_text(MODELING)
    config = {"model_type": "gpt2lab", "architectures": [ARCHITECTURE], "torch_dtype": "float32",
              "auto_map": {"AutoConfig": "configuration_gpt2lab.Gpt2labConfig",
                           "AutoModelForCausalLM": f"modeling_gpt2lab.{ARCHITECTURE}"},
              "tie_word_embeddings": False, "bos_token_id": 50256, "eos_token_id": 50256,
              "gpt2lab": dataclasses.asdict(model.config)}
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    # every tensor under its own name (a tied head saved as its own copy: safetensors stores no shared tensors)
    state = {f"model.{k}": v.detach().to(torch.float32).contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return f"{ARCHITECTURE} (custom code: load with trust_remote_code=True)"
