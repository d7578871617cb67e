"""Progress bars for work that can take more than a few seconds: tqdm on a terminal, silent otherwise
(a pipe, a log file, CI) or with --quiet."""

from __future__ import annotations

import contextlib
import sys


@contextlib.contextmanager
def progress_bar(total: int | None, what: str, unit: str, quiet: bool = False, unit_scale: bool = False):
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=what, unit=unit, disable=quiet or not sys.stderr.isatty(), mininterval=0.5,
               leave=False, unit_scale=unit_scale)
    try:
        yield bar
    finally:
        bar.close()
