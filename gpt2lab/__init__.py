"""gpt2lab: pretrain GPT-2-class language models from scratch, on one GPU or many.

As a library (see gpt2lab/api.py): gpt2lab.prepare, train, load, sample, evaluate, export, builtin_corpus; the
results are gpt2lab.Data, TrainResult and Model; mistakes raise gpt2lab.UserError. They load on first use, so
`import gpt2lab` stays cheap.
"""

from .errors import UserError

__version__ = "0.2.0"
API = ("prepare", "train", "load", "sample", "evaluate", "export", "builtin_corpus", "Data", "Model", "TrainResult")
__all__ = ["UserError", "__version__", *API]


def __getattr__(name: str):
    if name in API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'gpt2lab' has no attribute {name!r}")
