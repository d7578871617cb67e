"""Evaluation: validation loss and perplexity (HellaSwag arrives with a later issue)."""

from .perplexity import evaluate_loss

__all__ = ["evaluate_loss"]
