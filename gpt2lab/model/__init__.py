"""The model: a GPT (classic GPT-2 or modern variants) and KV-cache sampling. Depends on torch only."""

from .generate import KVCache, generate, sample_next
from .gpt import GPT, GPTConfig
from .shapes import model_shapes

__all__ = ["GPT", "GPTConfig", "KVCache", "generate", "model_shapes", "sample_next"]
