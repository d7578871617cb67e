"""Evaluation: validation loss and perplexity, text perplexity and bits per byte, HellaSwag."""

from .hellaswag import encode_examples, evaluate_hellaswag, read_examples
from .perplexity import evaluate_loss, evaluate_text, evaluate_tokens

__all__ = ["encode_examples", "evaluate_hellaswag", "evaluate_loss", "evaluate_text", "evaluate_tokens", "read_examples"]
