"""prepare: documents in, token shards and meta.json out.

The split into train and validation is made by whole documents, before tokenization, so no validation text
can reach a training window. A corpus with too few documents for that (fewer than 1/val_fraction, e.g. one
Shakespeare file) has every document cut once at a line boundary instead: its head trains, its tail validates.
meta.json records which method was used.

Tokenization runs in worker processes over chunks of documents; only a bounded number of chunks is in flight,
so memory does not grow with the corpus. The output appears under its final name only when complete.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..errors import UserError
from ..tokenizer import load_tokenizer
from .shards import META_FILE, SPLITS, TOKEN_DTYPE, shard_name, write_shard
from .sources import count_documents, expand_inputs, iter_documents

CHUNK_CHARS = 1 << 20  # text per tokenization task


@dataclass
class PrepareOptions:
    val_fraction: float = 0.1
    seed: int = 1337
    workers: int = 1
    shard_tokens: int = 100_000_000
    tokenizer: str | None = None  # a local folder with GPT-2's BPE files; None: tiktoken's cache
    overwrite: bool = False
    quiet: bool = False


def split_at_line(text: str, fraction: float) -> tuple[str, str]:
    """Cut text into (head, tail) with the tail about `fraction` of it, at a paragraph or line boundary."""
    target = int(len(text) * (1.0 - fraction))
    for sep in ("\n\n", "\n"):
        cut = text.find(sep, target)
        if cut != -1 and cut + len(sep) < len(text):
            return text[: cut + len(sep)], text[cut + len(sep) :]
    return text[:target], text[target:]


def plan_split(n_docs: int, val_fraction: float, seed: int) -> tuple[str, set[int]]:
    """('documents', indices of validation documents) or ('document-tail', empty set)."""
    if val_fraction == 0:
        return "none", set()
    n_val = round(n_docs * val_fraction)
    if n_val >= 1 and n_docs - n_val >= 1:
        chosen = np.random.default_rng(seed).choice(n_docs, size=n_val, replace=False)
        return "documents", {int(i) for i in chosen}
    return "document-tail", set()


def split_documents(docs: Iterable[str], method: str, val_docs: set[int], fraction: float) -> Iterator[tuple[str, str]]:
    """(split, text) pairs according to the plan."""
    for i, text in enumerate(docs):
        if method == "document-tail":
            head, tail = split_at_line(text, fraction)
            yield "train", head
            yield "val", tail
        else:
            yield ("val" if i in val_docs else "train"), text


def _chunks(pairs: Iterator[tuple[str, str]]) -> Iterator[list[tuple[str, str]]]:
    chunk, size = [], 0
    for pair in pairs:
        chunk.append(pair)
        size += len(pair[1])
        if size >= CHUNK_CHARS:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


_worker_tokenizer = None


def _init_worker(tokenizer_folder: str | None) -> None:
    global _worker_tokenizer
    _worker_tokenizer = load_tokenizer(tokenizer_folder)


def _encode_chunk(chunk: list[tuple[str, str]]) -> list[tuple[str, np.ndarray]]:
    """Each document as [EOT] + its tokens, in uint16."""
    tok = _worker_tokenizer
    out = []
    for (split, _), ids in zip(chunk, tok.encode_batch([text for _, text in chunk])):
        arr = np.empty(len(ids) + 1, dtype=TOKEN_DTYPE)
        arr[0] = tok.eot
        arr[1:] = ids
        out.append((split, arr))
    return out


def _encode_all(chunks: Iterator[list], workers: int, tokenizer_folder: str | None) -> Iterator[list]:
    """Encoded chunks in input order, with at most 2*workers chunks in flight."""
    if workers <= 1:
        _init_worker(tokenizer_folder)
        yield from map(_encode_chunk, chunks)
        return
    ctx = mp.get_context("spawn")  # fork would copy the parent's threads and tokenizer state
    with ctx.Pool(workers, initializer=_init_worker, initargs=(tokenizer_folder,)) as pool:
        pending: deque = deque()
        for chunk in chunks:
            pending.append(pool.apply_async(_encode_chunk, (chunk,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


class ShardWriter:
    """Accumulates one split's tokens and writes a shard each time shard_tokens are ready."""

    def __init__(self, out_dir: Path, split: str, shard_tokens: int):
        self.out_dir, self.split, self.shard_tokens = out_dir, split, shard_tokens
        self.buffer = np.empty(shard_tokens, dtype=TOKEN_DTYPE)
        self.filled = 0
        self.shards: list[dict] = []
        self.tokens = 0
        self.documents = 0

    def add(self, tokens: np.ndarray) -> None:
        self.documents += 1
        self.tokens += tokens.size
        while tokens.size:
            take = min(tokens.size, self.shard_tokens - self.filled)
            self.buffer[self.filled : self.filled + take] = tokens[:take]
            self.filled += take
            tokens = tokens[take:]
            if self.filled == self.shard_tokens:
                self.flush()

    def flush(self) -> None:
        if self.filled:
            name = shard_name(self.split, len(self.shards))
            write_shard(self.out_dir / name, self.buffer[: self.filled])
            self.shards.append({"file": name, "tokens": int(self.filled)})
            self.filled = 0

    def summary(self) -> dict:
        return {"tokens": self.tokens, "documents": self.documents, "shards": self.shards}


def prepare(inputs: list[str], out_dir: str, options: PrepareOptions | None = None) -> dict:
    """Tokenize inputs into out_dir; returns the metadata written to meta.json."""
    opts = options or PrepareOptions()
    if not 0.0 <= opts.val_fraction < 1.0:
        raise UserError(f"--val-fraction must be in [0, 1), got {opts.val_fraction}")
    if opts.workers < 1 or opts.shard_tokens < 1:
        raise UserError("--workers and --shard-tokens must be at least 1")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not opts.overwrite:
            raise UserError(f"{out} already exists and is not empty; choose another --out or pass --overwrite")
        if not (out / META_FILE).is_file():
            raise UserError(f"refusing to overwrite {out}: it is not a gpt2lab data directory (no {META_FILE})")
    tokenizer = load_tokenizer(opts.tokenizer)  # fail early, in this process, if the vocabulary is missing
    files = expand_inputs(inputs)
    n_docs = count_documents(files)
    if n_docs == 0:
        raise UserError(f"no text found in {', '.join(map(str, files))}; the inputs are empty")
    method, val_docs = plan_split(n_docs, opts.val_fraction, opts.seed)

    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    writers = {split: ShardWriter(tmp, split, opts.shard_tokens) for split in SPLITS}
    pairs = split_documents(iter_documents(files), method, val_docs, opts.val_fraction)
    start = time.perf_counter()
    progress = _progress(n_docs if method != "document-tail" else 2 * n_docs, opts.quiet)
    for encoded in _encode_all(_chunks(pairs), opts.workers, opts.tokenizer):
        for split, tokens in encoded:
            writers[split].add(tokens)
        progress.update(len(encoded))
        progress.set_postfix_str(f"{sum(w.tokens for w in writers.values()) / (time.perf_counter() - start):,.0f} tok/s")
    progress.close()
    for w in writers.values():
        w.flush()
    seconds = time.perf_counter() - start

    meta = {
        "format": "gpt2lab token shards v1 (llm.c .bin layout: 1024-byte int32 header, then uint16 tokens)",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "inputs": [str(f) for f in files],
        "tokenizer": {"name": tokenizer.name, "n_vocab": tokenizer.n_vocab, "eot": tokenizer.eot},
        "document_separator": "<|endoftext|> before every document",
        "split": {
            "method": method,
            "val_fraction": opts.val_fraction,
            "seed": opts.seed,
            "source_documents": n_docs,
            "description": _describe_split(method, n_docs, len(val_docs), opts.val_fraction),
        },
        "splits": {split: w.summary() for split, w in writers.items() if w.tokens},
        "prepare_seconds": round(seconds, 2),
        "workers": opts.workers,
    }
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return meta


def _describe_split(method: str, n_docs: int, n_val: int, fraction: float) -> str:
    if method == "documents":
        return f"{n_val} of {n_docs} whole documents, chosen at random, are validation; the rest train"
    if method == "document-tail":
        return (
            f"too few documents ({n_docs}) to hold out whole ones at fraction {fraction}: each document's last "
            f"~{fraction:.0%} (cut at a line boundary) is validation, the text before it trains"
        )
    return "no validation split (val_fraction 0)"


def _progress(total: int, quiet: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="doc", desc="tokenizing", disable=quiet, mininterval=1.0)
