"""Evaluation: validation loss and perplexity, text perplexity and bits per byte, HellaSwag; and the
evaluators the training loop runs (eval/evaluator.py says what one is).

To add an evaluation: a file with an Evaluator subclass, and one line in EVALUATORS.
"""

from __future__ import annotations

from .hellaswag import HellaSwag
from .perplexity import ValLoss

EVALUATORS = [
    ValLoss,
    HellaSwag,
]


def build_evaluators(cfg, data_meta: dict, echo=print) -> list:
    """The evaluators this run's config asks for, in EVALUATORS order."""
    built = (cls.from_config(cfg, data_meta, echo) for cls in EVALUATORS)
    return [e for e in built if e is not None]
