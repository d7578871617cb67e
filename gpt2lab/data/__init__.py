"""Data: text sources, prepare (tokenize into shards), the shard format, and the batch loader.

Nothing here imports torch except loader.py, so `prepare` and its worker processes stay light.
"""

from .prepare import PrepareOptions, prepare
from .shards import read_meta, read_shard, split_shards, write_shard

__all__ = ["PrepareOptions", "prepare", "read_meta", "read_shard", "split_shards", "write_shard"]
