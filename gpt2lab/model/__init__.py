"""The model: a GPT (classic GPT-2 or modern variants) and KV-cache sampling. Depends on torch only."""

from .generate import KVCache, generate, sample_next
from .gpt import GPT, GPTConfig

__all__ = ["GPT", "GPTConfig", "KVCache", "generate", "sample_next"]
