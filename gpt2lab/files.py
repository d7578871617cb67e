"""Small file helpers shared by the parts that write run and data directories."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_json_atomic(path: Path, obj: dict) -> None:
    """Write JSON so that a reader sees the old file or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)
