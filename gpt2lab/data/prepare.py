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

Inputs given with --val are validation only: none of their text reaches training, and (unless
--val-fraction is given too) the other inputs all train. meta.json says which inputs fed which split.

Tokenization runs in worker processes over chunks of documents; only a bounded number of chunks is in flight,
so memory does not grow with the corpus. Shards are written atomically into .OUT.partial/, and after each one
progress.json records how far each split has got; rerunning the same command resumes there, re-reading the
inputs but tokenizing only what is not yet on disk (each shard's size is checked first). The output takes its
final name only when complete. A second prepare on the same --out is refused while the first runs.

OUT is ours only if it holds our meta.json: --overwrite then removes exactly the files that meta.json lists
(and meta.json), never anything else; a non-empty folder that is not ours is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import multiprocessing as mp
import os
import re
import time
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..errors import UserError
from ..formats import BadFile, check, read_json
from ..formats.json_file import MB
from ..formats.schemas import PrepareProgress
from ..files import (
    FolderLock,
    absolute,
    clear_folder,
    foreign_entries,
    publish_folder,
    remove_owned,
    write_error,
    write_json_atomic,
)
from ..progress import progress_bar
from ..tokenizer import load_tokenizer
from .shards import META_FILE, SPLITS, TOKEN_DTYPE, ShardFile, read_meta, read_shard, shard_name
from .sources import TEXT_FIELD, open_sources

CHUNK_CHARS = 1 << 20  # text per tokenization task
SHARD_FILE = re.compile(r"(train|val)_\d{6}\.bin")  # shard_name()'s form
LOOKAHEAD_DOCS = 10_000
LOOKAHEAD_CHARS = 16 << 20
PROGRESS_FILE = "progress.json"


MAX_SHARD_TOKENS = 2**31 - 1  # the shard header stores the count as an int32
MAX_SHARDS = 50_000  # per split: 5T tokens at the default shard size; a dropped digit in --shard-tokens is not a day of tiny files


@dataclass
class PrepareOptions:
    val_fraction: float | None = None  # None: 0.1, or 0 when val_inputs are given
    seed: int = 1337
    workers: int = 1
    shard_tokens: int = 100_000_000
    tokenizer: str | None = None  # a local folder with GPT-2's BPE files; None: tiktoken's cache
    overwrite: bool = False
    quiet: bool = False
    val_inputs: list[str] = field(default_factory=list)  # inputs that are validation only
    text_field: str = TEXT_FIELD  # the field of JSON lines and Parquet rows that holds the text


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

    def __init__(self, fraction: float, seed: int, val_inputs: bool = False):
        self.fraction, self.seed, self.val_inputs = fraction, seed, val_inputs
        self.method, self.unassigned, self.chosen, self.given = "none", 0, 0, 0

    def __call__(self, docs: Iterable[tuple[str | None, str]]) -> Iterator[tuple[str, str]]:
        docs = iter(docs)
        buffer, chars, exhausted = [], 0, True
        for split, text in docs:
            if split is not None:
                self.given += 1
                if not self.val_inputs:
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
            if split is None:
                yield self._hashed(text)
                continue
            self.given += 1
            yield split, text

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
        if self.val_inputs:
            extra = f"; {self.chosen} of the other {n} documents too, at fraction {f}" if self.chosen else ""
            return f"validation: the {self.given} documents of the --val inputs{extra}; training: the rest"
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
                if len(self.shards) >= MAX_SHARDS:
                    raise UserError(f"--shard-tokens {self.shard_tokens:,} makes more than {MAX_SHARDS:,} shards of the "
                                    f"{self.split} split ({self.tokens:,} tokens so far); give a larger --shard-tokens "
                                    f"(the default is 100,000,000)")
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

    def abandon(self) -> None:
        """Drop the shard being written (after a failure): its .tmp file goes, finished shards stay."""
        if self.file is not None:
            with contextlib.suppress(OSError):  # closing flushes the buffer: on a full disk that fails too
                self.file.file.close()
            self.file.tmp.unlink(missing_ok=True)
            self.file = None

    def progress(self) -> dict:
        return {"shards": self.shards, **self.on_disk}

    def summary(self) -> dict:
        return {"tokens": self.tokens, "documents": self.documents, "shards": self.shards}


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


# --- the steps of prepare -----------------------------------------------------------------------------------

def _checked(opts: PrepareOptions) -> PrepareOptions:
    """Options with their defaults filled in, every number in range (else one line)."""
    fraction = opts.val_fraction if opts.val_fraction is not None else (0.0 if opts.val_inputs else 0.1)
    if not (isinstance(fraction, (int, float)) and math.isfinite(fraction) and 0.0 <= fraction < 1.0):
        raise UserError(f"--val-fraction must be in [0, 1), got {opts.val_fraction}")
    most = 4 * (os.cpu_count() or 1)
    if not 1 <= opts.workers <= most:
        raise UserError(f"--workers must be between 1 and {most} (4 x this machine's {os.cpu_count()} CPUs), got {opts.workers}")
    if not 1 <= opts.shard_tokens <= MAX_SHARD_TOKENS:
        raise UserError(f"--shard-tokens must be between 1 and {MAX_SHARD_TOKENS:,} (the shard header's limit), got {opts.shard_tokens}")
    if not 0 <= opts.seed < 2**63:
        raise UserError(f"--seed must be between 0 and 2**63 - 1, got {opts.seed}")
    tokenizer = str(absolute(opts.tokenizer)) if opts.tokenizer else None
    return replace(opts, val_fraction=float(fraction), tokenizer=tokenizer)


def _fingerprint(sources: list, opts: PrepareOptions, tokenizer: dict) -> str:
    what = {"inputs": [s.fingerprint() for s in sources], "val_fraction": opts.val_fraction, "seed": opts.seed,
            "shard_tokens": opts.shard_tokens, "tokenizer": [tokenizer["name"], tokenizer["n_vocab"]]}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def _owned_files(meta: dict, folder: Path) -> set[str]:
    """What gpt2lab can prove it wrote in a data directory: meta.json, and each shard meta.json lists whose name
    has a shard's form and whose file is a valid shard with the listed token count (a meta.json naming the
    user's files, or a file that is not that shard, proves nothing)."""
    owned = {META_FILE, PROGRESS_FILE}
    for split in meta.get("splits", {}).values():
        for entry in split.get("shards", []):
            name = entry.get("file") if isinstance(entry, dict) else None
            if not isinstance(name, str) or not SHARD_FILE.fullmatch(name):
                continue
            try:
                if len(read_shard(folder / name)) == entry.get("tokens"):
                    owned.add(name)
            except (UserError, OSError, ValueError):
                pass
    return owned


def _shards_intact(folder: Path, shards: list[dict]) -> str | None:
    """None if every listed shard is on disk with its header's size and the listed count, else what is wrong."""
    for entry in shards:
        try:
            if len(read_shard(folder / entry["file"])) != entry["tokens"]:
                return f"{entry['file']} holds a different number of tokens than recorded"
        except UserError as exc:
            return str(exc)
    return None


def _unlisted_shards(folder: Path, listed: set[str]) -> str | None:
    """A shard file the progress record does not list (the record was cut or edited): resuming would lose it."""
    extra = sorted(p.name for p in folder.glob("*.bin") if p.name not in listed)
    return f"{extra[0]} is on disk but not in {PROGRESS_FILE}" if extra else None


def _already_done(out: Path, fingerprint: str, opts: PrepareOptions, echo) -> dict | None:
    """meta.json of an earlier prepare of these inputs with these options, if its shards are intact."""
    if opts.overwrite or not (out / META_FILE).is_file():
        return None
    try:
        meta = read_meta(out)
    except UserError:
        return None
    if meta.get("fingerprint") != fingerprint:
        return None
    problem = _shards_intact(out, [e for split in meta["splits"].values() for e in split["shards"]])
    if problem:
        echo(f"note: {out} was prepared from these inputs but is damaged ({problem}); preparing it again")
        return None
    echo(f"{out} already holds these inputs prepared with these options; nothing to do")
    return meta


def _check_output(out: Path, opts: PrepareOptions, fingerprint: str) -> set[str]:
    """The files of ours that publishing will replace; refuses a folder that is not ours or not to be replaced."""
    if not out.exists():
        return set()
    if not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder; choose another --out")
    entries = foreign_entries(out, set())
    if not entries:
        return set()
    if not (out / META_FILE).is_file():
        shown = ", ".join(entries[:3]) + (" ..." if len(entries) > 3 else "")
        raise UserError(f"refusing to write into {out}: it is not empty ({shown}) and not a gpt2lab data directory; "
                        "choose another --out")
    try:
        meta = read_meta(out)
    except UserError as exc:  # damaged: nothing proves which files gpt2lab wrote, so nothing is replaced
        raise UserError(f"{out}'s meta.json is damaged ({exc}), so gpt2lab cannot prove which files there are its "
                        "own; move the folder aside or choose another --out") from None
    if not opts.overwrite and meta.get("fingerprint") != fingerprint:
        raise UserError(f"{out} already holds prepared data of other inputs or options; choose another --out or "
                        "pass --overwrite (it replaces only the files gpt2lab wrote there)")
    return _owned_files(meta, out) & ({META_FILE} | {p.name for p in out.iterdir()})


def _resume_point(work: Path, fingerprint: str, opts: PrepareOptions, echo) -> dict:
    """The progress of an interrupted prepare of the same inputs whose shards are intact, or {} (work cleared)."""
    path = work / PROGRESS_FILE
    progress = {}
    if path.is_file() and not opts.overwrite:
        try:
            saved = check(read_json(path, max_bytes=64 * MB, max_depth=8), PrepareProgress, PROGRESS_FILE)
            if saved["fingerprint"] == fingerprint:
                progress = saved["splits"]
        except BadFile:
            progress = {}
        listed = [e for split in progress.values() for e in split.get("shards", [])]
        problem = _shards_intact(work, listed) or _unlisted_shards(work, {e["file"] for e in listed})
        if problem:
            echo(f"note: the interrupted prepare in {work} cannot be resumed ({problem}); starting over")
            progress = {}
    if not progress:
        clear_folder(work)
    return progress


def _write_tokens(todo, sources: list, writers: dict, opts: PrepareOptions, resumed: int) -> None:
    """Tokenize the documents to do (in opts.workers processes) into the writers, with a progress bar."""
    start = time.perf_counter()
    local_bytes = sum(s.total_bytes for s in sources)
    unit = "B" if local_bytes else "chunk"
    with progress_bar(local_bytes or None, "tokenizing", unit, opts.quiet, unit_scale=True) as bar:
        for encoded in _encode_all(_chunks(todo), opts.workers, opts.tokenizer):
            for split, tokens in encoded:
                writers[split].add(tokens)
            new_tokens = sum(w.tokens for w in writers.values()) - resumed
            bar.n = sum(s.bytes_read for s in sources) if local_bytes else bar.n + len(encoded)
            bar.set_postfix_str(f"{new_tokens / max(1e-9, time.perf_counter() - start):,.0f} tok/s", refresh=False)
            bar.refresh()
    for w in writers.values():
        w.flush()


def _tokenize(sources: list, work: Path, progress: dict, opts: PrepareOptions, fingerprint: str, echo):
    """Split, tokenize and write every document not yet on disk; returns (writers, splitter, seconds)."""
    writers: dict[str, ShardWriter] = {}

    def save_progress():
        write_json_atomic(work / PROGRESS_FILE, {"fingerprint": fingerprint,
                                                 "splits": {s: w.progress() for s, w in writers.items()}})

    for split in SPLITS:
        writers[split] = ShardWriter(work, split, opts.shard_tokens, progress.get(split), save_progress)
    resumed = sum(w.tokens for w in writers.values())
    if resumed:
        echo(f"resuming an interrupted prepare: {resumed:,} tokens are already on disk")
    splitter = Splitter(opts.val_fraction, opts.seed, val_inputs=bool(opts.val_inputs))
    todo = _skip_done(splitter(pair for source in sources for pair in source), progress)
    start = time.perf_counter()
    try:
        _write_tokens(todo, sources, writers, opts, resumed)
    except UserError:
        clear_folder(work)  # bad input: once fixed, the inputs differ, so nothing would resume
        raise
    except OSError as exc:
        for w in writers.values():
            w.abandon()
        kept = sum(len(w.shards) for w in writers.values())
        raise write_error("token shards in", work, exc, f"free disk space and run the same command again (it resumes "
                                                          f"after the {kept} finished shard(s))") from None
    return writers, splitter, time.perf_counter() - start


def _publish(work: Path, out: Path, meta: dict, replaced: set[str]) -> None:
    """Write meta.json and give the shards their final place: the working folder becomes OUT, or, when OUT
    exists (ours, --overwrite), our old files there are replaced file by file, meta.json last."""
    write_json_atomic(work / META_FILE, meta)
    (work / PROGRESS_FILE).unlink(missing_ok=True)
    if not out.exists():
        publish_folder(work, out)
        return
    remove_owned(out, [META_FILE] + sorted(replaced - {META_FILE}))
    names = [p.name for p in work.iterdir() if p.name not in (META_FILE, ".gpt2lab.lock")]
    for name in names + [META_FILE]:
        os.replace(work / name, out / name)


def prepare(inputs: list[str], out_dir: str, options: PrepareOptions | None = None, echo=None) -> dict:
    """Tokenize inputs into out_dir; returns the metadata written to meta.json."""
    opts = _checked(options or PrepareOptions())
    echo = echo or ((lambda *_: None) if opts.quiet else print)
    tokenizer = load_tokenizer(opts.tokenizer)  # fail early, in this process, if the vocabulary is missing
    facts = {"name": tokenizer.name, "n_vocab": tokenizer.n_vocab, "eot": tokenizer.eot, "folder": opts.tokenizer}
    del tokenizer  # the workers load their own
    sources = open_sources(inputs, opts.val_inputs, opts.text_field)
    fingerprint = _fingerprint(sources, opts, facts)
    out = absolute(out_dir)
    work = out.with_name(f".{out.name}.partial")
    lock = FolderLock(work, "prepare's working folder", private=True).acquire()
    try:
        done = _already_done(out, fingerprint, opts, echo)
        if done:
            return done
        replaced = _check_output(out, opts, fingerprint)
        progress = _resume_point(work, fingerprint, opts, echo)
        writers, splitter, seconds = _tokenize(sources, work, progress, opts, fingerprint, echo)
        if not any(w.tokens for w in writers.values()):
            raise UserError(f"no text found in {', '.join(inputs)}; the inputs are empty")
        meta = _meta(inputs, opts, fingerprint, facts, splitter, writers, seconds)
        try:
            _publish(work, out, meta, replaced)
        except OSError as exc:
            raise write_error("the data directory", out, exc) from None
        return meta
    finally:
        lock.release(cleanup=True)  # the working folder goes once it holds nothing but the lock


def _meta(inputs, opts, fingerprint, facts, splitter, writers, seconds) -> dict:
    return {
        "format": "gpt2lab token shards v1 (llm.c .bin layout: 1024-byte int32 header, then uint16 tokens)",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "inputs": list(inputs),
        "sources": [{"input": i, "split": "val"} for i in opts.val_inputs] + [{"input": i, "split": _fed(splitter)}
                                                                               for i in inputs],
        "fingerprint": fingerprint,
        "tokenizer": facts,
        "document_separator": "<|endoftext|> before every document",
        "split": {"method": "validation inputs" if opts.val_inputs else splitter.method, "val_fraction": opts.val_fraction,
                  "seed": opts.seed, "source_documents": splitter.unassigned, "description": splitter.describe()},
        "splits": {split: w.summary() for split, w in writers.items() if w.tokens},
        "prepare_seconds": round(seconds, 2),
        "options": {"workers": opts.workers, "shard_tokens": opts.shard_tokens, "text_field": opts.text_field},
    }


def _fed(splitter: Splitter) -> str:
    """Which split(s) the ordinary inputs fed."""
    if splitter.method == "source":
        return "the source's own train and validation splits"
    return "train and val (whole documents held out)" if splitter.chosen or splitter.method == "document-tail" else "train"


