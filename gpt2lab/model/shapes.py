"""A GPT's parameters as shapes only: the model built on the meta device with its initialisation skipped. What
memory plans, parameter counts and export checks need, without memory for the weights, and in milliseconds: meta
random fills run through Python references that import torch._dynamo (about 2 s on every start-up)."""

import torch
from torch.overrides import TorchFunctionMode

from .gpt import GPT, GPTConfig

# the fills a GPT's construction calls (nn.init and the tensor methods behind it); on meta they would only be slow
_FILLS = {torch.nn.init.normal_, torch.nn.init.trunc_normal_, torch.nn.init.uniform_, torch.nn.init.kaiming_uniform_,
          torch.nn.init.xavier_uniform_, torch.nn.init.zeros_, torch.nn.init.ones_, torch.nn.init.constant_,
          torch.Tensor.normal_, torch.Tensor.uniform_, torch.Tensor.zero_, torch.Tensor.fill_}


class _SkipFills(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _FILLS:
            return args[0] if args else kwargs["tensor"]
        return func(*args, **kwargs)


def model_shapes(config: GPTConfig) -> GPT:
    """GPT(config) on the meta device: every parameter and buffer with its real name, shape and dtype, no values."""
    with torch.device("meta"), _SkipFills():
        return GPT(config)
