"""prepare: documents in, token shards and meta.json out, in one pass over the inputs.

The split into train and validation is made by whole documents, before tokenization, so no validation text
can reach a training window. A source with its own validation split (WikiText, ...) keeps it. Otherwise:
  - a corpus small enough to look at whole (up to LOOKAHEAD_DOCS documents and LOOKAHEAD_CHARS characters)
    gets exactly round(n * val_fraction) validation documents, chosen with the seed;
  - if it has too few documents for that (one Shakespeare file), every document is cut once at a line
    boundary instead: its head trains, its tail validates;
  - a larger corpus sends each document to validation with probability val_fraction, decided by a hash of
    (seed, document index), so it is streamed once and never held in memory.
meta.json records which method was used.

Tokenization runs in worker processes over chunks of documents; only a bounded number of chunks is in flight,
so memory does not grow with the corpus. Shards are written atomically into OUT.partial/, and after each one
progress.json records how far each split has got; rerunning the same command resumes there, re-reading the
inputs but tokenizing only what is not yet on disk. The output takes its final name only when complete.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import shutil
import time
from collections import deque
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..errors import UserError
from ..files import write_json_atomic
from ..tokenizer import load_tokenizer
from .shards import META_FILE, SPLITS, TOKEN_DTYPE, ShardFile, shard_name
from .sources import open_sources, source_fingerprint

CHUNK_CHARS = 1 << 20  # text per tokenization task
LOOKAHEAD_DOCS = 10_000
LOOKAHEAD_CHARS = 16 << 20
PROGRESS_FILE = "progress.json"


@dataclass
class PrepareOptions:
    val_fraction: float = 0.1
    seed: int = 1337
    workers: int = 1
    shard_tokens: int = 100_000_000
    tokenizer: str | None = None  # a local folder with GPT-2's BPE files; None: tiktoken's cache
    overwrite: bool = False
    quiet: bool = False


# --- the split ----------------------------------------------------------------------------------------------

def split_at_line(text: str, fraction: float) -> tuple[str, str]:
    """Cut text into (head, tail) with the tail about `fraction` of it, at a paragraph or line boundary."""
    target = int(len(text) * (1.0 - fraction))
    for sep in ("\n\n", "\n"):
        cut = text.find(sep, target)
        if cut != -1 and cut + len(sep) < len(text):
            return text[: cut + len(sep)], text[cut + len(sep) :]
    return text[:target], text[target:]


def _hashed_fraction(seed: int, index: int) -> float:
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


class Splitter:
    """Assigns each document without a split of its own to train or val (see the module docstring)."""

    def __init__(self, fraction: float, seed: int):
        self.fraction, self.seed = fraction, seed
        self.method, self.unassigned, self.chosen = "none", 0, 0

    def __call__(self, docs: Iterable[tuple[str | None, str]]) -> Iterator[tuple[str, str]]:
        docs = iter(docs)
        buffer, chars, exhausted = [], 0, True
        for split, text in docs:
            if split is not None:
                self.method = "source"
                yield split, text
                continue
            buffer.append(text)
            chars += len(text)
            if len(buffer) >= LOOKAHEAD_DOCS or chars >= LOOKAHEAD_CHARS:
                exhausted = False
                break
        if exhausted:
            yield from self._small(buffer)
            return
        self.method = "hashed" if self.fraction else "none"
        for text in buffer:
            yield self._hashed(text)
        for split, text in docs:
            yield (split, text) if split is not None else self._hashed(text)

    def _hashed(self, text: str) -> tuple[str, str]:
        index = self.unassigned
        self.unassigned += 1
        val = self.fraction > 0 and _hashed_fraction(self.seed, index) < self.fraction
        self.chosen += val
        return ("val" if val else "train"), text

    def _small(self, texts: list[str]) -> Iterator[tuple[str, str]]:
        n = self.unassigned = len(texts)
        if n == 0 or self.fraction == 0:
            yield from (("train", t) for t in texts)
            return
        n_val = round(n * self.fraction)
        if n_val >= 1 and n - n_val >= 1:
            self.method = "documents"
            val = {int(i) for i in np.random.default_rng(self.seed).choice(n, size=n_val, replace=False)}
            self.chosen = n_val
            yield from ((("val" if i in val else "train"), t) for i, t in enumerate(texts))
            return
        self.method = "document-tail"
        for text in texts:
            head, tail = split_at_line(text, self.fraction)
            yield "train", head
            yield "val", tail

    def describe(self) -> str:
        f, n = self.fraction, self.unassigned
        return {
            "source": "the source's own train and validation splits",
            "documents": f"{self.chosen} of {n} whole documents, chosen at random, are validation; the rest train",
            "document-tail": (f"too few documents ({n}) to hold out whole ones at fraction {f}: each document's last "
                              f"~{f:.0%} (cut at a line boundary) is validation, the text before it trains"),
            "hashed": (f"{self.chosen} of {n} whole documents are validation, each chosen with probability {f} "
                       f"by a hash of (seed, index)"),
        }.get(self.method, "no validation split (val_fraction 0)")


# --- tokenization ---------------------------------------------------------------------------------------------

def _chunks(pairs: Iterator[tuple[str, str, int]]) -> Iterator[list[tuple[str, str, int]]]:
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


def _encode_chunk(chunk: list[tuple[str, str, int]]) -> list[tuple[str, np.ndarray]]:
    """Each document as [EOT] + its tokens in uint16, less the `skip` tokens already on disk."""
    tok = _worker_tokenizer
    out = []
    for split, text, skip in chunk:
        ids = tok.encode_array(text)
        arr = np.empty(len(ids) + 1, dtype=TOKEN_DTYPE)
        arr[0] = tok.eot
        arr[1:] = ids
        out.append((split, arr[skip:]))
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


# --- shards and progress -------------------------------------------------------------------------------------

class ShardWriter:
    """Streams one split's tokens into shards of shard_tokens each (see shards.ShardFile).

    After each shard it records exactly what is on disk: `documents` whole documents of the split, plus the
    first `carry` tokens of the next one. Resumed from such a record, the first document it is given is the
    remainder of that next one.
    """

    def __init__(self, out_dir: Path, split: str, shard_tokens: int, progress: dict | None = None, on_flush=None):
        self.out_dir, self.split, self.shard_tokens, self.on_flush = out_dir, split, shard_tokens, on_flush
        self.file: ShardFile | None = None
        progress = progress or {}
        self.shards: list[dict] = list(progress.get("shards", []))
        self.tokens = sum(s["tokens"] for s in self.shards)
        self.documents = progress.get("documents", 0)  # documents begun
        self.on_disk = {"documents": self.documents, "carry": progress.get("carry", 0)}
        self._pending = self.on_disk["carry"]  # tokens of the next document already on disk

    def add(self, tokens: np.ndarray) -> None:
        """Add one document's tokens (when resuming, the first call brings the remainder of a partial one)."""
        self.documents += 1
        self.tokens += tokens.size
        taken, self._pending = self._pending, 0
        total = taken + tokens.size
        while tokens.size:
            if self.file is None:
                self.file = ShardFile(self.out_dir / shard_name(self.split, len(self.shards)))
            take = min(tokens.size, self.shard_tokens - self.file.count)
            self.file.append(tokens[:take])
            taken += take
            tokens = tokens[take:]
            if self.file.count == self.shard_tokens:
                whole = taken == total
                self.flush({"documents": self.documents - (not whole), "carry": 0 if whole else taken})

    def flush(self, on_disk: dict | None = None) -> None:
        if self.file is None or not self.file.count:
            return
        count = self.file.finish()
        self.shards.append({"file": self.file.path.name, "tokens": int(count)})
        self.file = None
        self.on_disk = on_disk or {"documents": self.documents, "carry": 0}
        if self.on_flush:
            self.on_flush()

    def progress(self) -> dict:
        return {"shards": self.shards, **self.on_disk}

    def summary(self) -> dict:
        return {"tokens": self.tokens, "documents": self.documents, "shards": self.shards}


def _fingerprint(inputs: list[str], opts: PrepareOptions, tokenizer: dict) -> str:
    what = {"inputs": source_fingerprint(inputs), "val_fraction": opts.val_fraction, "seed": opts.seed,
            "shard_tokens": opts.shard_tokens, "tokenizer": [tokenizer["name"], tokenizer["n_vocab"]]}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()



def _skip_done(pairs: Iterator[tuple[str, str]], progress: dict) -> Iterator[tuple[str, str, int]]:
    """(split, text, tokens to drop) for the documents not yet on disk; whole documents on disk are skipped."""
    seen = {s: 0 for s in SPLITS}
    for split, text in pairs:
        index = seen[split]
        seen[split] += 1
        done = progress.get(split, {})
        if index < done.get("documents", 0):
            continue
        skip = done.get("carry", 0) if index == done.get("documents", 0) else 0
        yield split, text, skip


def prepare(inputs: list[str], out_dir: str, options: PrepareOptions | None = None) -> dict:
    """Tokenize inputs into out_dir; returns the metadata written to meta.json."""
    opts = options or PrepareOptions()
    if not 0.0 <= opts.val_fraction < 1.0:
        raise UserError(f"--val-fraction must be in [0, 1), got {opts.val_fraction}")
    if opts.workers < 1 or opts.shard_tokens < 1:
        raise UserError("--workers and --shard-tokens must be at least 1")
    tokenizer = load_tokenizer(opts.tokenizer)  # fail early, in this process, if the vocabulary is missing
    facts = {"name": tokenizer.name, "n_vocab": tokenizer.n_vocab, "eot": tokenizer.eot}
    del tokenizer  # the workers load their own
    sources = open_sources(inputs)
    fingerprint = _fingerprint(inputs, opts, facts)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        existing = out / META_FILE
        if existing.is_file() and json.loads(existing.read_text()).get("fingerprint") == fingerprint and not opts.overwrite:
            if not opts.quiet:
                print(f"{out} already holds these inputs prepared with these options; nothing to do")
            return json.loads(existing.read_text())
        if not opts.overwrite:
            raise UserError(f"{out} already exists and is not empty; choose another --out or pass --overwrite")
        if not existing.is_file():
            raise UserError(f"refusing to overwrite {out}: it is not a gpt2lab data directory (no {META_FILE})")

    tmp = out.with_name(f".{out.name}.partial")
    progress_path = tmp / PROGRESS_FILE
    progress = {}
    if progress_path.is_file() and not opts.overwrite:
        saved = json.loads(progress_path.read_text())
        if saved.get("fingerprint") == fingerprint:
            progress = saved["splits"]
    if not progress:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)

    writers: dict[str, ShardWriter] = {}

    def save_progress():
        write_json_atomic(progress_path, {"fingerprint": fingerprint, "splits": {s: w.progress() for s, w in writers.items()}})

    for split in SPLITS:
        writers[split] = ShardWriter(tmp, split, opts.shard_tokens, progress.get(split), save_progress)
    resumed_tokens = sum(w.tokens for w in writers.values())
    if resumed_tokens and not opts.quiet:
        print(f"resuming an interrupted prepare: {resumed_tokens:,} tokens are already on disk")

    splitter = Splitter(opts.val_fraction, opts.seed)
    docs = (pair for source in sources for pair in source)
    todo = _skip_done(splitter(docs), progress)
    start = time.perf_counter()
    local_bytes = sum(getattr(s, "total_bytes", 0) for s in sources)
    bar = _progress(local_bytes, opts.quiet)
    try:
        for encoded in _encode_all(_chunks(todo), opts.workers, opts.tokenizer):
            for split, tokens in encoded:
                writers[split].add(tokens)
            new_tokens = sum(w.tokens for w in writers.values()) - resumed_tokens
            bar.n = sum(getattr(s, "bytes_read", 0) for s in sources) if local_bytes else bar.n + len(encoded)
            bar.set_postfix_str(f"{new_tokens / (time.perf_counter() - start):,.0f} tok/s", refresh=False)
            bar.refresh()
    except UserError:
        shutil.rmtree(tmp, ignore_errors=True)  # bad input: once it is fixed the inputs differ, so nothing resumes
        raise
    finally:
        bar.close()
    for w in writers.values():
        w.flush()
    seconds = time.perf_counter() - start
    if not any(w.tokens for w in writers.values()):
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"no text found in {', '.join(inputs)}; the inputs are empty")

    meta = {
        "format": "gpt2lab token shards v1 (llm.c .bin layout: 1024-byte int32 header, then uint16 tokens)",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "inputs": inputs,
        "fingerprint": fingerprint,
        "tokenizer": facts,
        "document_separator": "<|endoftext|> before every document",
        "split": {"method": splitter.method, "val_fraction": opts.val_fraction, "seed": opts.seed,
                  "source_documents": splitter.unassigned, "description": splitter.describe()},
        "splits": {split: w.summary() for split, w in writers.items() if w.tokens},
        "prepare_seconds": round(seconds, 2),
        "options": {k: v for k, v in asdict(opts).items() if k in ("workers", "shard_tokens")},
    }
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    progress_path.unlink(missing_ok=True)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return meta


def _progress(total_bytes: int, quiet: bool):
    from tqdm.auto import tqdm

    if total_bytes:
        return tqdm(total=total_bytes, unit="B", unit_scale=True, desc="tokenizing", disable=True if quiet else None, mininterval=1.0)
    return tqdm(unit="chunk", desc="tokenizing", disable=True if quiet else None, mininterval=1.0)
