"""Data: text sources, prepare (tokenize into shards), the shard format, and the batch loader."""

from .loader import BatchStream, Windows, eval_batches, to_device
from .prepare import PrepareOptions, prepare
from .shards import read_meta, read_shard, split_shards, write_shard

__all__ = [
    "BatchStream", "PrepareOptions", "Windows", "eval_batches", "prepare", "read_meta", "read_shard",
    "split_shards", "to_device", "write_shard",
]
