"""`gpt2lab train`: the config from its layers (a resumed run starts from its own saved config), the evaluations
it asks for, and the trainer."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Callable

from .. import checkpoint as ckpt
from ..config import Config, build_config
from ..errors import UserError
from ..eval import build_evaluators
from ..files import absolute
from ..formats import BadFile, read_json
from ..formats.json_file import MB
from ..training.trainer import Trainer

DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*d)?\s*(?:(\d+(?:\.\d+)?)\s*h)?\s*(?:(\d+(?:\.\d+)?)\s*m(?:in)?)?\s*"
                      r"(?:(\d+(?:\.\d+)?)\s*s?)?\s*$")


def parse_duration(text: str) -> float:
    """Seconds in '2h', '90m', '1h30m', '45s', '3600' (seconds)."""
    match = DURATION.match(text or "")
    if not match or not any(match.groups()):
        raise UserError(f"--time-budget {text!r} is not a duration; write e.g. 2h, 90m, 1h30m or 3600")
    d, h, m, s = (float(g) if g else 0.0 for g in match.groups())
    return d * 86400 + h * 3600 + m * 60 + s


def saved_config(run_dir: Path, echo: Callable) -> dict | None:
    """A resumed run's own config: its config.json, or, when that is damaged, its latest checkpoint's copy."""
    path = run_dir / "config.json"
    if not path.exists() and not path.is_symlink():
        return None
    try:
        values = read_json(path, max_bytes=MB, max_depth=8)
        if isinstance(values, dict):
            return values
    except BadFile:
        pass
    latest = ckpt.latest_checkpoint(run_dir)
    if latest is None:
        raise UserError(f"{path} is damaged and {run_dir} has no checkpoint to take the config from; "
                        "start the run again or repair config.json")
    echo(f"note: {path} is damaged; using the config saved with {latest.name}")
    values = read_json(latest / ckpt.CONFIG, max_bytes=MB, max_depth=8, fix="repair the run's config.json")
    if not isinstance(values, dict):
        raise UserError(f"{latest / ckpt.CONFIG} is not a config either; repair the run's config.json")
    return values


def train_config(out: str, *, resume: bool = False, init_from: str | None = None, recipe: str | None = None,
                 preset: str | None = None, config_file: str | None = None, sets: list[str] | None = None,
                 flags: dict | None = None, echo: Callable = print, base: dict | None = None) -> Config:
    """The run's config from its layers; `base` (a Config's dict) is the bottom layer of a new run; a resumed run
    starts from its own saved config instead."""
    run_dir = absolute(out)
    if resume and not run_dir.is_dir():
        raise UserError(f"--resume: the run folder {run_dir} does not exist; check --out")
    base = saved_config(run_dir, echo) if resume else base
    if resume and base and isinstance(base.get("run"), dict):  # a pause (--stop-at) is for the run that took it
        base = {**base, "run": {k: v for k, v in base["run"].items() if k != "stop_at_step"}}
    model = None
    if init_from:
        model = dataclasses.asdict(ckpt.load_config(ckpt.resolve_checkpoint(init_from)).model)
    return build_config(base=base, recipe=recipe, preset=preset, model=model, file=config_file, sets=sets, flags=flags)


def make_trainer(cfg: Config, out: str, resume: bool = False, init_from: str | None = None, echo: Callable = print,
                 clock=None) -> Trainer:
    """A Trainer with the evaluations the config asks for."""
    return Trainer(cfg, out, resume=resume, init_from=init_from, evaluators=build_evaluators, echo=echo, clock=clock)


def train(out: str, *, resume: bool = False, init_from: str | None = None, echo: Callable = print, **layers) -> dict:
    cfg = train_config(out, resume=resume, init_from=init_from, echo=echo, **layers)
    if not cfg.data.dir:
        raise UserError("no training data: pass --data DATA_DIR (a folder written by `gpt2lab prepare`)")
    return make_trainer(cfg, out, resume=resume, init_from=init_from, echo=echo).fit()
