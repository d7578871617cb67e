"""JSON read with limits: a size cap before reading, UTF-8 strictly, and a nesting-depth cap after parsing (a
deeply nested file would otherwise end in RecursionError somewhere far from the read)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import UserError

MB = 1 << 20


class BadFile(UserError):
    """A file gpt2lab reads that is missing, too large, not UTF-8, not JSON, too deep or of the wrong shape."""


def depth_of(value, limit: int) -> int:
    """Nesting depth of parsed JSON (a scalar is 0), counted without recursion; stops counting past limit."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if depth > limit:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def parse_json(text: str, where: str, max_depth: int = 8):
    """Parsed JSON, or BadFile naming `where` (a file, or a file and line)."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise BadFile(f"{where} is nested deeper than {max_depth} levels; gpt2lab never writes that") from None
    except ValueError as exc:  # JSONDecodeError, and int() of a 5000-digit number
        raise BadFile(f"{where} is not valid JSON ({str(exc).splitlines()[0][:120]})") from None
    if depth_of(value, max_depth) > max_depth:
        raise BadFile(f"{where} is nested deeper than {max_depth} levels; gpt2lab never writes that")
    return value


def read_json(path: str | os.PathLike, max_bytes: int = MB, max_depth: int = 8, fix: str = ""):
    """A JSON file's value, read with a size limit and a depth limit; anything else is one BadFile line (`fix`,
    when given, is appended: what to do about it)."""
    path = Path(path)
    tail = f"; {fix}" if fix else ""
    try:
        if path.is_dir():
            raise BadFile(f"{path} is a folder where a JSON file belongs{tail}")
        size = path.stat().st_size
        if size > max_bytes:
            raise BadFile(f"{path} has {size:,} bytes, more than the {max_bytes:,} a file of its kind may have{tail}")
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise BadFile(f"{path} is missing{tail}") from None
    except OSError as exc:
        raise BadFile(f"cannot read {path} ({exc.strerror or exc}){tail}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadFile(f"{path} is not UTF-8 text (byte {exc.start}){tail}") from None
    try:
        return parse_json(text, str(path), max_depth)
    except BadFile as exc:
        raise BadFile(f"{exc}{tail}") from None
