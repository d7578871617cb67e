"""gpt2lab: pretrain GPT-2-class language models from scratch, on one GPU or many."""

__version__ = "0.2.0"
