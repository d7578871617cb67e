"""Where documents come from.

Local inputs (paths, folders searched recursively, glob patterns):
  .txt                      one document per file, read byte for byte (\\r\\n stays \\r\\n)
  .jsonl / .json            one document per line, in its text field ("text", or --text-field)
  any of these .gz or .xz   decompressed on the fly
  .parquet                  rows with a text column, read through Hugging Face datasets' parquet builder
Hugging Face datasets: `hf:NAME` or `hf:NAME:CONFIG` (e.g. hf:HuggingFaceFW/fineweb-edu:sample-10BT,
hf:Salesforce/wikitext:wikitext-103-raw-v1, hf:Skylion007/openwebtext), streamed, so a 10B-token dataset is
never held in memory nor stored twice. A dataset's own validation split is used as validation; its test
split is never read. A dataset whose rows are not documents has a text processor in TEXT_PROCESSORS
(WikiText stores one line per row: its rows are regrouped into articles at their " = Title = " headings).

A source is an iterable of (split, text): split is "train" or "val" where the source decides, None where
gpt2lab's document split decides (see prepare.py). Inputs given as validation (prepare --val) are sources
whose every document is "val". Every source reports total_bytes and bytes_read for the progress bar, and a
fingerprint that identifies its content for resuming.
"""

from __future__ import annotations

import glob
import gzip
import io
import lzma
import os
import re
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ..errors import UserError
from ..files import input_file
from ..formats import BadFile, parse_json

COMPRESSIONS = {".gz": gzip.open, ".xz": lzma.open}
JSONL_SUFFIXES = (".jsonl", ".json")
TEXT_FIELD = "text"
HF_PREFIX = "hf:"
VALIDATION_SPLITS = ("validation", "valid", "val", "dev")
WIKITEXT_HEADING = re.compile(r"^ = [^=].* = $")

Document = tuple[str | None, str]


MAX_LINE = 16 << 20  # one document per line: a line longer than this is not one a tokenizer should see whole


def json_lines(f, path) -> Iterator[tuple[int, object]]:
    """(line number, parsed object) for each non-blank line of an open JSON-lines file; a line over 16 MB, nested
    over 32 levels or not JSON is one line naming it."""
    for line_no, line in enumerate(iter(lambda: f.readline(MAX_LINE + 1), ""), 1):
        if len(line) > MAX_LINE:
            raise UserError(f"{path}:{line_no} is longer than {MAX_LINE >> 20} MB; split that document or remove the line")
        if not line.strip():
            continue
        try:
            yield line_no, parse_json(line, f"{path}:{line_no}", max_depth=32)
        except BadFile as exc:
            raise UserError(f"{exc}; fix or remove that line") from None


def wikitext_articles(lines: Iterable[str]) -> Iterator[str]:
    """WikiText rows (one line each) regrouped into articles at their ' = Title = ' headings."""
    article: list[str] = []
    for line in lines:
        if WIKITEXT_HEADING.match(line.rstrip("\n")) and any(s.strip() for s in article):
            yield "".join(article)
            article = []
        article.append(line)
    if any(s.strip() for s in article):
        yield "".join(article)


# datasets (by hub name, lower case) whose rows are not whole documents, and how to make documents of them
TEXT_PROCESSORS: dict[str, Callable[[Iterable[str]], Iterator[str]]] = {
    "salesforce/wikitext": wikitext_articles,
    "wikitext": wikitext_articles,
}


class Source:
    """What prepare reads: documents, progress and a fingerprint."""

    name = ""
    total_bytes = 0  # 0: unknown (streamed from the hub)

    @property
    def bytes_read(self) -> int:
        return 0

    def __iter__(self) -> Iterator[Document]:
        raise NotImplementedError

    def fingerprint(self) -> list:
        return [self.name]


def _suffix(path: Path) -> str:
    """The format suffix, under any compression suffix."""
    stem = path.with_suffix("") if path.suffix in COMPRESSIONS else path
    return stem.suffix


def _text_of(record, path, line_no: int, text_field: str) -> str:
    if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
        raise UserError(f"{path}:{line_no} has no string field {text_field!r}; each line needs one "
                        "(name another field with --text-field)")
    return record[text_field]


class LocalFiles(Source):
    """Plain-text and JSON-lines files, read directly; reports compressed bytes read for an ETA."""

    def __init__(self, files: list[Path], text_field: str = TEXT_FIELD):
        self.files, self.text_field = files, text_field
        self.name = ", ".join(str(f) for f in files[:3]) + (" ..." if len(files) > 3 else "")
        self.total_bytes = sum(f.stat().st_size for f in files)
        self._done_bytes = 0
        self._raw = None

    @property
    def bytes_read(self) -> int:
        current = self._raw.tell() if self._raw is not None and not self._raw.closed else 0
        return self._done_bytes + current

    def fingerprint(self) -> list:
        return [[str(f), f.stat().st_size, int(f.stat().st_mtime)] for f in self.files]

    def _documents(self, path: Path, f) -> Iterator[str]:
        if _suffix(path) not in JSONL_SUFFIXES:
            text = f.read()
            if text.strip():
                yield text
            return
        for line_no, record in json_lines(f, path):
            text = _text_of(record, path, line_no, self.text_field)
            if text.strip():
                yield text

    def __iter__(self) -> Iterator[Document]:
        for path in self.files:
            try:
                with open(path, "rb") as raw:
                    self._raw = raw
                    opener = COMPRESSIONS.get(path.suffix)
                    # newline="": no newline translation, so every byte of the text reaches the tokenizer
                    stream = (opener(raw, "rt", encoding="utf-8", newline="") if opener
                              else io.TextIOWrapper(raw, encoding="utf-8", newline=""))
                    with stream as f:
                        for text in self._documents(path, f):
                            yield None, text
            except UnicodeDecodeError as exc:
                raise UserError(f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason}); convert it to UTF-8 first") from None
            except (OSError, EOFError, lzma.LZMAError) as exc:
                raise UserError(f"cannot read {path}: {exc}; check that the file is complete and not corrupt") from None
            finally:
                self._done_bytes += path.stat().st_size
                self._raw = None


class HFDataset(Source):
    """A Hugging Face dataset, streamed: a hub name, or a packaged builder (json, parquet, text) over local
    data_files, which is how the same code is tested without a network."""

    def __init__(self, path: str, config: str | None = None, data_files=None, text_field: str = TEXT_FIELD,
                 processor: Callable | None = None):
        self.path, self.config, self.data_files, self.text_field = path, config, data_files, text_field
        self.processor = processor if processor is not None else TEXT_PROCESSORS.get(path.lower())
        self.name = f"hf:{path}" + (f":{config}" if config else "")

    def fingerprint(self) -> list:
        return [self.name, self.text_field, sorted(str(f) for f in (self.data_files or {}).get("train", []))]

    def _splits(self):
        try:
            import datasets
        except ImportError:
            raise UserError(f"{self.name} needs Hugging Face datasets: pip install datasets") from None
        try:
            return datasets.load_dataset(self.path, self.config, data_files=self.data_files, streaming=True)
        except Exception as exc:
            raise UserError(f"cannot open {self.name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}; "
                            "check the name and config, and the network (or HF_HUB_OFFLINE with a local cache)") from None

    def __iter__(self) -> Iterator[Document]:
        splits = self._splits()
        if "train" not in splits:
            raise UserError(f"{self.name} has no 'train' split (it has {', '.join(splits)})")
        val_name = next((s for s in VALIDATION_SPLITS if s in splits), None)
        for split, name in (("val", val_name), ("train", "train")):
            if name is None:
                continue
            texts = self._texts(splits[name], name)
            for text in (self.processor(texts) if self.processor else texts):
                if text.strip():
                    yield (split if val_name else None), text

    def _texts(self, rows, split: str) -> Iterator[str]:
        for i, row in enumerate(rows):
            text = row.get(self.text_field)
            if not isinstance(text, str):
                raise UserError(f"{self.name} [{split}] row {i} has no string field {self.text_field!r} "
                                "(name another field with --text-field)")
            yield text


class ValidationOnly(Source):
    """Every document of another source is validation: nothing of it reaches training."""

    def __init__(self, inner: Source):
        self.inner, self.name, self.total_bytes = inner, f"val:{inner.name}", inner.total_bytes

    @property
    def bytes_read(self) -> int:
        return self.inner.bytes_read

    def fingerprint(self) -> list:
        return ["val", self.inner.fingerprint()]

    def __iter__(self) -> Iterator[Document]:
        for _, text in self.inner:
            yield "val", text


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files named by paths, folders (recursively) and glob patterns, in a stable order."""
    files: list[Path] = []
    for item in inputs:
        matches = sorted(glob.glob(item)) if any(c in item for c in "*?[") else [item]
        if not matches:
            raise UserError(f"input pattern {item!r} matches no file; check the path")
        for match in matches:
            path = Path(match)
            if path.is_dir():
                files.extend(sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")))
            elif path.is_file():
                files.append(path)
            else:
                input_file(path, "input", "check the path")  # missing, or a device / pipe: says which
    if not files:
        raise UserError(f"no input files found in {', '.join(inputs)}")
    return files


def open_source(item: str, text_field: str = TEXT_FIELD) -> list[Source]:
    """The one dispatch: the sources behind one command-line input (a hub dataset, or local files)."""
    if item.startswith(HF_PREFIX):
        name, _, config = item[len(HF_PREFIX):].partition(":")
        if not name:
            raise UserError(f"{item!r}: write Hugging Face datasets as hf:NAME or hf:NAME:CONFIG")
        return [HFDataset(name, config or None, text_field=text_field)]
    files = expand_inputs([item])
    parquet = [str(f) for f in files if _suffix(f) == ".parquet"]
    plain = [f for f in files if _suffix(f) != ".parquet"]
    sources: list[Source] = [LocalFiles(plain, text_field)] if plain else []
    if parquet:
        sources.append(HFDataset("parquet", data_files={"train": parquet}, text_field=text_field))
    return sources


def open_sources(inputs: list[str], val_inputs: list[str] = (), text_field: str = TEXT_FIELD) -> list[Source]:
    """The sources behind the command line's inputs, in order; --val inputs last, as validation only."""
    sources = [s for item in inputs for s in open_source(item, text_field)]
    val = [s for item in val_inputs for s in open_source(item, text_field)]
    _refuse_shared_files(sources, val)
    return sources + [ValidationOnly(s) for s in val]


def _refuse_shared_files(train: list[Source], val: list[Source]) -> None:
    """A file that is both a training input and a --val input would train on the validation text."""
    def files(sources):
        return {os.path.realpath(f): f for s in sources for f in getattr(s, "files", ())}

    shared = sorted(set(files(train)) & set(files(val)))
    if shared:
        raise UserError(f"{files(val)[shared[0]]} is both a training input and a --val input ({len(shared)} such "
                        "file(s)); its text would be trained on and validated on: list it in one place only")
