"""Where documents come from: local text and JSON-lines files, plain or compressed (.gz, .xz).

A plain-text file is one document. A JSON-lines file (.jsonl or .json, one object per line) holds one document
per line, in its `text` field. Folders are searched recursively; glob patterns are expanded.
"""

from __future__ import annotations

import glob
import gzip
import json
import lzma
from pathlib import Path
from typing import Iterator

from ..errors import UserError

COMPRESSIONS = {".gz": gzip.open, ".xz": lzma.open}
JSONL_SUFFIXES = (".jsonl", ".json")
TEXT_FIELD = "text"


def _open_text(path: Path):
    opener = COMPRESSIONS.get(path.suffix, open)
    return opener(path, "rt", encoding="utf-8", errors="strict")


def _is_jsonl(path: Path) -> bool:
    stem = path.with_suffix("") if path.suffix in COMPRESSIONS else path
    return stem.suffix in JSONL_SUFFIXES


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


def json_lines(f, path) -> Iterator[tuple[int, object]]:
    """(line number, parsed object) for each non-blank line of an open JSON-lines file."""
    for line_no, line in enumerate(f, 1):
        if not line.strip():
            continue
        try:
            yield line_no, json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{line_no} is not valid JSON ({exc.msg}); fix or remove that line") from None


def iter_documents(files: list[Path]) -> Iterator[str]:
    """Every non-empty document of every file, in order."""
    for path in files:
        try:
            with _open_text(path) as f:
                if not _is_jsonl(path):
                    text = f.read()
                    if text.strip():
                        yield text
                    continue
                for line_no, record in json_lines(f, path):
                    if not isinstance(record, dict) or not isinstance(record.get(TEXT_FIELD), str):
                        raise UserError(f"{path}:{line_no} has no string field {TEXT_FIELD!r}; each line needs one")
                    if record[TEXT_FIELD].strip():
                        yield record[TEXT_FIELD]
        except UnicodeDecodeError as exc:
            raise UserError(f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason}); convert it to UTF-8 first") from None
        except (OSError, EOFError, lzma.LZMAError) as exc:
            raise UserError(f"cannot read {path}: {exc}; check that the file is complete and not corrupt") from None


def count_documents(files: list[Path]) -> int:
    return sum(1 for _ in iter_documents(files))
