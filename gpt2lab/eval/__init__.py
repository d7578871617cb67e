"""Evaluation: validation loss and perplexity, text perplexity and bits per byte, HellaSwag; and the
evaluators the training loop runs (eval/evaluator.py says what one is).

To add an evaluation: a file with an Evaluator subclass, and one line in EVALUATORS.
"""

from __future__ import annotations

from .hellaswag import HellaSwag
from .perplexity import ValLoss
from .token_accuracy import TokenAccuracy

EVALUATORS = [
    ValLoss,
    HellaSwag,
    TokenAccuracy,
]


def build_evaluators(cfg, data_meta: dict, echo=print) -> list:
    """The evaluators this run's config asks for, in EVALUATORS order."""
    import difflib

    from ..errors import UserError

    names = [e.name for e in EVALUATORS]
    for task in [t.strip() for t in (cfg.eval.tasks or "").split(",") if t.strip()]:
        if task not in names:
            close = difflib.get_close_matches(task, names, n=1)
            raise UserError(f"eval.tasks names {task!r}, which is not an evaluation of gpt2lab; "
                            f"{f'did you mean {close[0]!r}? ' if close else ''}choose from {', '.join(names)}")
    built = (cls.from_config(cfg, data_meta, echo) for cls in EVALUATORS)
    return [e for e in built if e is not None]
