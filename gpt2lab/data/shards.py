"""The on-disk token format: the single source of truth for reading and writing shards.

A data directory holds
  meta.json                   tokenizer, token and document counts per split, how the split was made
  train_000000.bin, ...       token shards
  val_000000.bin, ...

Each .bin shard uses llm.c's layout, so llm.c and other tools read it as is:
  a header of 256 little-endian int32: [MAGIC=20240520, VERSION=1, n_tokens, 0, ...]  (1024 bytes)
  then n_tokens little-endian uint16 token ids.
Documents are concatenated, each preceded by <|endoftext|>, so every shard starts with one.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..files import input_folder
from ..formats import BadFile, check, read_json
from ..formats.json_file import MB
from ..formats.schemas import DataMeta

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
TOKEN_DTYPE = np.dtype("<u2")
META_FILE = "meta.json"
SPLITS = ("train", "val")


def shard_name(split: str, index: int) -> str:
    return f"{split}_{index:06d}.bin"


def write_shard(path: Path, tokens: np.ndarray) -> None:
    """Write tokens atomically: a temporary file, fsync, then rename."""
    if tokens.size and int(tokens.max()) >= 2**16:
        raise ValueError("token ids must fit in uint16")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = (MAGIC, VERSION, tokens.size)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(header.tobytes())
        f.write(tokens.astype(TOKEN_DTYPE, copy=False).tobytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ShardFile:
    """A shard written as its tokens arrive, so no shard is ever held in memory: a placeholder header, the
    tokens appended, then the real header, fsync and rename. Until finish() only a .tmp file exists."""

    def __init__(self, path: Path):
        self.path, self.tmp = path, path.with_name(path.name + ".tmp")
        self.file = open(self.tmp, "wb")
        self.file.write(np.zeros(HEADER_INTS, dtype="<i4").tobytes())
        self.count = 0

    def append(self, tokens: np.ndarray) -> None:
        self.file.write(tokens.astype(TOKEN_DTYPE, copy=False).tobytes())
        self.count += tokens.size

    def finish(self) -> int:
        header = np.zeros(HEADER_INTS, dtype="<i4")
        header[:3] = (MAGIC, VERSION, self.count)
        self.file.seek(0)
        self.file.write(header.tobytes())
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.path)
        return self.count


def read_shard(path: Path) -> np.memmap:
    """Memory-map a shard's tokens after checking its header and size."""
    size = path.stat().st_size if path.exists() else -1
    if size < HEADER_BYTES:
        raise UserError(f"shard {path} is missing or shorter than its header; run `gpt2lab prepare` again")
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    if header[0] != MAGIC or header[1] != VERSION:
        raise UserError(
            f"{path} is not a gpt2lab/llm.c token shard (magic {header[0]}, version {header[1]}); "
            "prepare the data with `gpt2lab prepare`"
        )
    n = int(header[2])
    expected = HEADER_BYTES + n * TOKEN_DTYPE.itemsize
    if size != expected:
        raise UserError(
            f"shard {path} is truncated or padded: its header says {n} tokens ({expected} bytes) but the "
            f"file has {size} bytes; run `gpt2lab prepare` again"
        )
    return np.memmap(path, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES, shape=(n,))


def read_meta(data_dir: str | os.PathLike) -> dict:
    """meta.json, checked for the fields gpt2lab reads (so a damaged one is one clear line, not a KeyError later)."""
    path = Path(data_dir) / META_FILE
    input_folder(data_dir, "data directory", "create one with `gpt2lab prepare INPUT --out DATA_DIR` and pass that")
    if not path.is_file():
        raise UserError(f"{data_dir} has no {META_FILE}: it is not a prepared data directory; run `gpt2lab prepare`")
    meta = read_json(path, max_bytes=64 * MB, max_depth=8, fix="run `gpt2lab prepare` again")
    problem = meta_problem(meta)
    if problem:
        raise UserError(f"{path} is damaged: {problem}; run `gpt2lab prepare` again")
    return meta


def meta_problem(meta) -> str | None:
    """What is wrong with a meta.json's content (formats.schemas.DataMeta), or None."""
    try:
        check(meta, DataMeta, META_FILE)
    except BadFile as exc:
        return str(exc).removeprefix(f"{META_FILE}: ")
    return None


def split_shards(data_dir: str | os.PathLike, split: str) -> list[np.memmap]:
    """All shards of one split, checked against meta.json's token counts."""
    meta = read_meta(data_dir)
    info = meta.get("splits", {}).get(split)
    if not info or not info.get("shards"):
        raise UserError(f"{data_dir} has no {split!r} split; run `gpt2lab prepare` with a validation fraction")
    shards = []
    for entry in info["shards"]:
        shard = read_shard(Path(data_dir) / entry["file"])
        if len(shard) != entry["tokens"]:
            raise UserError(
                f"shard {entry['file']} holds {len(shard)} tokens but {META_FILE} says {entry['tokens']}; "
                "the data directory is inconsistent, run `gpt2lab prepare` again"
            )
        shards.append(shard)
    return shards


def check_vocab(meta: dict, vocab_size: int) -> None:
    """The data's tokenizer must fit in the model's vocabulary."""
    n_vocab = meta["tokenizer"]["n_vocab"]
    if n_vocab > vocab_size:
        raise UserError(f"the data's tokenizer has {n_vocab} tokens but model.vocab_size is {vocab_size}; "
                        f"set model.vocab_size to at least {n_vocab} (50304 for GPT-2)")


def data_fingerprint(data_dir: str | os.PathLike, meta: dict) -> str:
    """What a run was trained on: the SHA-256 of meta.json and, for each shard it lists, its size and its first and
    last 64 KiB (a few reads, whatever the data's size). Saved in every checkpoint and compared on resume, so
    other data of the same shape is not continued on silently."""
    import hashlib

    folder, sample = Path(data_dir), 1 << 16
    h = hashlib.sha256((folder / META_FILE).read_bytes())
    for split in sorted(meta.get("splits", {})):
        for entry in meta["splits"][split].get("shards", []):
            path = folder / entry["file"]
            size = path.stat().st_size if path.exists() else -1
            h.update(f"{entry['file']}:{size};".encode())
            if size > 0:
                with open(path, "rb") as f:
                    h.update(f.read(sample))
                    f.seek(max(0, size - sample))
                    h.update(f.read(sample))
    return h.hexdigest()
