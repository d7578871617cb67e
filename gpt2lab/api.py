"""gpt2lab as a library, for notebooks and scripts: the same checks and one-line errors as the command line (the
CLI is a thin layer over these functions), with results as objects.

    import gpt2lab
    corpus = gpt2lab.builtin_corpus("work/corpus.jsonl")
    data = gpt2lab.prepare(corpus, out="work/data")
    result = gpt2lab.train("tiny", data=data, out="work/run", max_steps=30, optim={"lr": 3e-3})
    scores = gpt2lab.evaluate(result.checkpoint, data=data)
    model = gpt2lab.load(result.checkpoint)
    print(model.generate("The", max_new_tokens=20))
    gpt2lab.export(result.checkpoint, out="work/hf")

Every argument after the first is keyword-only. A mistake raises gpt2lab.UserError with a message that names
the problem and the fix (the CLI prints that message on one line and exits 2).
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

from .config import SECTIONS, Config
from .errors import UserError

PathLike = str | os.PathLike


# --- data -------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Data:
    """A prepared data folder: where it is, and its meta.json."""
    path: Path
    meta: dict

    @property
    def tokens(self) -> dict[str, int]:
        return {split: info["tokens"] for split, info in self.meta["splits"].items()}

    def __fspath__(self) -> str:
        return str(self.path)


def builtin_corpus(out: PathLike) -> Path:
    """Python's own help texts (about 80 documents, 110k GPT-2 tokens) as a JSON-lines file: a corpus that needs no
    download, the one `gpt2lab demo` trains on."""
    from .commands.demo import write_corpus
    from .files import absolute

    path = absolute(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_corpus(path)
    return path


def prepare(inputs: PathLike | list[PathLike], *, out: PathLike, val: list[PathLike] | None = None,
            val_fraction: float | None = None, seed: int = 1337, workers: int = 1, shard_tokens: int = 100_000_000,
            tokenizer: PathLike | None = None, text_field: str = "text", overwrite: bool = False,
            quiet: bool = True) -> Data:
    """Tokenize text files, folders, globs or `hf:NAME` datasets into a data folder (see `gpt2lab prepare --help`)."""
    from .data.prepare import PrepareOptions
    from .data.prepare import prepare as prepare_data
    from .files import absolute

    inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    opts = PrepareOptions(val_fraction=val_fraction, seed=seed, workers=workers, shard_tokens=shard_tokens,
                          tokenizer=None if tokenizer is None else os.fspath(tokenizer), overwrite=overwrite,
                          quiet=quiet, val_inputs=[os.fspath(v) for v in val or []], text_field=text_field)
    meta = prepare_data([os.fspath(i) for i in inputs], os.fspath(out), opts)
    return Data(absolute(out), meta)


# --- training ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainResult:
    """What a training run left: its folder, its last checkpoint, and its last numbers."""
    run_dir: Path
    checkpoint: Path | None
    steps: int
    loss: float | None  # the last logged training loss
    val_loss: float | None  # the last validation loss
    tokens: int | None
    tokens_per_sec: float | None
    elapsed_s: float | None
    stopped_by: str | None  # "SIGINT"/"SIGTERM" when stopped early, "stop_at_step" when paused (resume=True goes on)
    config: Config

    def metrics(self) -> list[dict]:
        """Every record of the run's metrics.jsonl, oldest first."""
        from .metrics.logger import read_metrics

        return read_metrics(self.run_dir)


def _sections(preset_or_config, data, overrides: dict[str, Any]) -> tuple[dict, str | None, dict | None]:
    """(a flags layer of sections, a preset name, a base config dict) from train()'s arguments."""
    unknown = [k for k in overrides if k not in SECTIONS]
    if unknown:
        near = difflib.get_close_matches(unknown[0], SECTIONS, n=1)
        raise UserError(f"train() got an unknown argument {unknown[0]!r}"
                        f"{f'; did you mean {near[0]!r}' if near else ''}; config sections are {', '.join(SECTIONS)}")
    layer = {}
    for name, values in overrides.items():
        if not isinstance(values, dict):
            raise UserError(f"train({name}=...) takes a dict of {name} settings, e.g. {name}={{'key': value}}; "
                            f"got {type(values).__name__}")
        layer[name] = dict(values)
    if data is not None:
        layer.setdefault("data", {})["dir"] = os.fspath(data)
    if isinstance(preset_or_config, Config):
        return layer, None, preset_or_config.to_dict()
    if preset_or_config is not None and not isinstance(preset_or_config, str):
        raise UserError(f"train()'s first argument is a preset name or a gpt2lab Config, got {type(preset_or_config).__name__}")
    return layer, preset_or_config, None


def train(preset_or_config: str | Config | None = None, *, out: PathLike, data: PathLike | Data | None = None,
          recipe: str | None = None, config_file: PathLike | None = None, sets: list[str] | None = None,
          max_steps: int | None = None, time_budget: str | float | None = None, device: str | None = None,
          seed: int | None = None, resume: bool = False, init_from: PathLike | None = None,
          echo: Callable[[str], None] | None = print, **sections: dict) -> TrainResult:
    """Train a model into `out`. `preset_or_config`: a preset name ("tiny", "gpt2-124m", ...) or a Config;
    `sections`: settings by config section, e.g. optim={"lr": 3e-4}, schedule={"warmup_steps": 100};
    `sets`: the CLI's "section.key=value" strings. echo=None trains quietly."""
    from .commands.train import make_trainer, parse_duration, train_config
    from .metrics.logger import read_metrics

    layer, preset, base = _sections(preset_or_config, data, sections)
    if time_budget is not None:
        time_budget = parse_duration(time_budget) if isinstance(time_budget, str) else float(time_budget)
    for section, key, value in (("schedule", "max_steps", max_steps), ("schedule", "time_budget_s", time_budget),
                                ("run", "device", device), ("run", "seed", seed)):
        if value is not None:
            layer.setdefault(section, {})[key] = value
    say = echo or (lambda *_: None)
    start_from = None if init_from is None else os.fspath(init_from)
    cfg = train_config(os.fspath(out), resume=resume, init_from=start_from, recipe=recipe, preset=preset,
                       config_file=None if config_file is None else os.fspath(config_file), sets=sets, flags=layer,
                       echo=say, base=base)
    if not cfg.data.dir:
        raise UserError("no training data: pass data=DATA_DIR (a folder written by gpt2lab.prepare)")
    trainer = make_trainer(cfg, os.fspath(out), resume=resume, init_from=start_from, echo=say)
    done = trainer.fit()
    records = read_metrics(trainer.run_dir)
    last = records[-1] if records else {}
    val = next((r["val_loss"] for r in reversed(records) if "val_loss" in r), None)
    speed = next((r["tokens_per_sec"] for r in reversed(records) if "tokens_per_sec" in r), None)
    return TrainResult(trainer.run_dir, Path(done["checkpoint"]) if done["checkpoint"] else None, done["step"],
                       done["loss"], val, last.get("tokens"), speed, last.get("elapsed"), done["stopped_by"], cfg)


# --- using a trained model --------------------------------------------------------------------------------------

@dataclass
class Model:
    """A trained model, loaded for use: the torch module (eval mode), its config, and its tokenizer (loaded on
    first use: the data's tokenizer folder, `tokenizer=`, or tiktoken's cache)."""
    module: Any
    config: Config
    checkpoint: Path
    tokenizer_folder: str | None = None

    @cached_property
    def tokenizer(self):
        from .commands.sample import _data_tokenizer
        from .tokenizer import check_fits, load_tokenizer

        tok = load_tokenizer(self.tokenizer_folder or _data_tokenizer(self.config))
        check_fits(tok, self.module.config.vocab_size, f"the checkpoint {self.checkpoint}")
        return tok

    def generate(self, prompt: str = "", *, max_new_tokens: int = 100, temperature: float = 0.8, top_k: int = 50,
                 top_p: float = 1.0, seed: int | None = None, num_samples: int = 1) -> str | list[str]:
        """A continuation of the prompt (a list of num_samples of them when num_samples > 1)."""
        from .commands.sample import SampleOptions, continuations

        o = SampleOptions(prompt=prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                          top_p=top_p, seed=seed, num_samples=num_samples)
        texts = continuations(self.module, self.tokenizer, o)
        return texts if num_samples > 1 else texts[0]


def load(path: PathLike, *, device: str = "auto", tokenizer: PathLike | None = None, skip_hash: bool = False) -> Model:
    """A checkpoint folder, or a run folder's latest checkpoint, checked against its manifest and loaded."""
    from .checkpoint import load_model_from_checkpoint
    from .runtime import resolve_runtime

    runtime = resolve_runtime(device, "fp32")
    module, config, checkpoint = load_model_from_checkpoint(os.fspath(path), runtime.device, hashes=not skip_hash)
    return Model(module, config, checkpoint, None if tokenizer is None else os.fspath(tokenizer))


def sample(path: PathLike, prompt: str = "", *, device: str = "auto", tokenizer: PathLike | None = None,
           skip_hash: bool = False, max_new_tokens: int = 100, temperature: float = 0.8, top_k: int = 50,
           top_p: float = 1.0, seed: int | None = None, num_samples: int = 1) -> str | list[str]:
    """load(path).generate(prompt, ...) in one call; the options are checked before the checkpoint is read."""
    from .commands.sample import SampleOptions, check

    options = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                   num_samples=num_samples)
    check(SampleOptions(prompt=prompt, **options))
    return load(path, device=device, tokenizer=tokenizer, skip_hash=skip_hash).generate(prompt, **options)


def evaluate(path: PathLike, *, data: PathLike | Data | None = None, split: str = "val",
             hellaswag: PathLike | None = None, limit: int | None = None, text: PathLike | None = None,
             stride: int | None = None, device: str = "auto", batch_size: int = 8, max_batches: int | None = None,
             tokenizer: PathLike | None = None, skip_hash: bool = False, quiet: bool = True,
             tasks: list[str] | str | None = None) -> dict:
    """Loss and perplexity on a data split, HellaSwag accuracy, and/or a text file's perplexity and bits per byte;
    the dict `gpt2lab eval --json` prints."""
    from .commands.eval import EvalOptions
    from .commands.eval import evaluate as run_eval

    def fs(p):
        return None if p is None else os.fspath(p)

    if split not in ("val", "train"):
        raise UserError(f"split must be 'val' or 'train', got {split!r}")
    options = EvalOptions(data=fs(data), split=split, hellaswag=fs(hellaswag), limit=limit, text=fs(text),
                          stride=stride, device=device, batch_size=batch_size, max_batches=max_batches,
                          tokenizer=fs(tokenizer), quiet=quiet, skip_hash=skip_hash,
                          tasks=",".join(tasks) if isinstance(tasks, (list, tuple)) else tasks)
    return run_eval(os.fspath(path), options)


def export(path: PathLike, *, out: PathLike, tokenizer: PathLike | None = None, skip_hash: bool = False) -> dict:
    """A checkpoint as a Hugging Face transformers folder (see `gpt2lab export --help`)."""
    from .interop.hf import export_hf

    return export_hf(os.fspath(path), os.fspath(out), None if tokenizer is None else os.fspath(tokenizer),
                     hashes=not skip_hash)


__all__ = ["Data", "Model", "TrainResult", "builtin_corpus", "evaluate", "export", "load", "prepare", "sample",
           "train"]
