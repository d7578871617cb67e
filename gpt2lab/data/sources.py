"""Where documents come from.

Local inputs (paths, folders searched recursively, glob patterns):
  .txt                      one document per file
  .jsonl / .json            one document per line, in its `text` field
  any of these .gz or .xz   decompressed on the fly
  .parquet                  rows with a `text` column, read through Hugging Face datasets' parquet builder
Hugging Face datasets: `hf:NAME` or `hf:NAME:CONFIG` (e.g. hf:HuggingFaceFW/fineweb-edu:sample-10BT,
hf:Salesforce/wikitext:wikitext-103-raw-v1, hf:Skylion007/openwebtext), streamed, so a 10B-token dataset is
never held in memory nor stored twice. A dataset's own validation split is used as validation; its test
split is never read. WikiText stores one line per row; its rows are regrouped into whole articles (an article
starts at a " = Title = " heading) so that splitting and windows see articles, not lines.

Every source yields (split, text): split is "train" or "val" where the source decides, None where gpt2lab's
document split decides (see prepare.py).
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import lzma
import re
from pathlib import Path
from typing import Iterator

from ..errors import UserError

COMPRESSIONS = {".gz": gzip.open, ".xz": lzma.open}
JSONL_SUFFIXES = (".jsonl", ".json")
TEXT_FIELD = "text"
HF_PREFIX = "hf:"
VALIDATION_SPLITS = ("validation", "valid", "val", "dev")
WIKITEXT_HEADING = re.compile(r"^ = [^=].* = $")

Document = tuple[str | None, str]


def json_lines(f, path) -> Iterator[tuple[int, object]]:
    """(line number, parsed object) for each non-blank line of an open JSON-lines file."""
    for line_no, line in enumerate(f, 1):
        if not line.strip():
            continue
        try:
            yield line_no, json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{line_no} is not valid JSON ({exc.msg}); fix or remove that line") from None


def _suffix(path: Path) -> str:
    """The format suffix, under any compression suffix."""
    stem = path.with_suffix("") if path.suffix in COMPRESSIONS else path
    return stem.suffix


class LocalFiles:
    """Plain-text and JSON-lines files, read directly; reports compressed bytes read for an ETA."""

    def __init__(self, files: list[Path]):
        self.files = files
        self.total_bytes = sum(f.stat().st_size for f in files)
        self._done_bytes = 0
        self._raw = None

    @property
    def bytes_read(self) -> int:
        current = self._raw.tell() if self._raw is not None and not self._raw.closed else 0
        return self._done_bytes + current

    def _documents(self, path: Path, f) -> Iterator[str]:
        if _suffix(path) not in JSONL_SUFFIXES:
            text = f.read()
            if text.strip():
                yield text
            return
        for line_no, record in json_lines(f, path):
            if not isinstance(record, dict) or not isinstance(record.get(TEXT_FIELD), str):
                raise UserError(f"{path}:{line_no} has no string field {TEXT_FIELD!r}; each line needs one")
            if record[TEXT_FIELD].strip():
                yield record[TEXT_FIELD]

    def __iter__(self) -> Iterator[Document]:
        for path in self.files:
            try:
                with open(path, "rb") as raw:
                    self._raw = raw
                    opener = COMPRESSIONS.get(path.suffix)
                    stream = opener(raw, "rt", encoding="utf-8") if opener else io.TextIOWrapper(raw, encoding="utf-8")
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


def _articles(lines: Iterator[str]) -> Iterator[str]:
    """WikiText rows (one line each) regrouped into articles at their ' = Title = ' headings."""
    article: list[str] = []
    for line in lines:
        if WIKITEXT_HEADING.match(line.rstrip("\n")) and any(s.strip() for s in article):
            yield "".join(article)
            article = []
        article.append(line)
    if any(s.strip() for s in article):
        yield "".join(article)


class HFDataset:
    """A Hugging Face dataset, streamed: a hub name, or a packaged builder (json, parquet, text) over local
    data_files, which is how the same code is tested without a network."""

    def __init__(self, path: str, config: str | None = None, data_files=None, articles: bool | None = None):
        self.path, self.config, self.data_files = path, config, data_files
        self.articles = "wikitext" in path.lower() or "wikitext" in (config or "").lower() if articles is None else articles
        self.total_bytes = self.bytes_read = 0
        self.name = f"hf:{path}" + (f":{config}" if config else "")

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
            rows = (row.get(TEXT_FIELD) for row in splits[name])
            texts = _checked(rows, self.name, name)
            for text in (_articles(texts) if self.articles else texts):
                if text.strip():
                    yield (split if val_name else None), text


def _checked(rows, name: str, split: str) -> Iterator[str]:
    for i, text in enumerate(rows):
        if not isinstance(text, str):
            raise UserError(f"{name} [{split}] row {i} has no string field {TEXT_FIELD!r}")
        yield text


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
                raise UserError(f"input {match} does not exist; check the path")
    if not files:
        raise UserError(f"no input files found in {', '.join(inputs)}")
    return files


def open_sources(inputs: list[str]) -> list:
    """The sources behind the command line's inputs, in order."""
    sources, local = [], [i for i in inputs if not i.startswith(HF_PREFIX)]
    for item in inputs:
        if item.startswith(HF_PREFIX):
            name, _, config = item[len(HF_PREFIX):].partition(":")
            if not name:
                raise UserError(f"{item!r}: write Hugging Face datasets as hf:NAME or hf:NAME:CONFIG")
            sources.append(HFDataset(name, config or None))
    if local:
        files = expand_inputs(local)
        parquet = [str(f) for f in files if _suffix(f) == ".parquet"]
        plain = [f for f in files if _suffix(f) != ".parquet"]
        if plain:
            sources.append(LocalFiles(plain))
        if parquet:
            sources.append(HFDataset("parquet", data_files={"train": parquet}))
    return sources


def source_fingerprint(inputs: list[str]) -> list:
    """What identifies the inputs for resuming: local files by name, size and modification time."""
    out = []
    for item in inputs:
        if item.startswith(HF_PREFIX):
            out.append(item)
        else:
            out.extend([str(f), f.stat().st_size, int(f.stat().st_mtime)] for f in expand_inputs([item]))
    return out

