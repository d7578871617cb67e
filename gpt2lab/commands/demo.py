"""The demo: the whole pipeline in about a minute on a CPU, with a corpus that ships with Python.

Python's own help texts (pydoc_data.topics, ~80 documents, ~110k GPT-2 tokens) are written as JSON lines,
prepared into shards, and the `tiny` preset trains on them; then val loss, perplexity and a sample.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

from ..config import build_config
from ..data.prepare import PrepareOptions, prepare
from ..errors import UserError
from ..files import absolute
from .sample import SampleOptions, sample_text
from .train import make_trainer

DEMO_SETTINGS = [
    "schedule.min_lr=3e-4",
    "optim.lr=3e-3",
    "run.micro_batch=16",
    "eval.every=10",
    "eval.batches=none",
    "log.every=5",
    "checkpoint.every=none",
]
DEMO_FILES = ("pydoc_topics.jsonl", "data", "run", ".gpt2lab.lock")


def write_corpus(path: Path) -> int:
    """Python's pydoc topic texts as JSON lines; returns the number of documents.

    Several topics repeat whole sections of others (the `if` grammar appears under more than one), which
    would put validation text into training; each paragraph is kept only where it first appears.
    """
    from pydoc_data.topics import topics

    seen: set[str] = set()
    count = 0
    with open(path, "w", encoding="utf-8") as f:
        for name in sorted(topics):
            kept = []
            for paragraph in topics[name].split("\n\n"):
                key = " ".join(paragraph.split())
                if key and key not in seen:
                    seen.add(key)
                    kept.append(paragraph)
            if kept:
                f.write(json.dumps({"id": name, "text": "\n\n".join(kept)}) + "\n")
                count += 1
    return count


def run_demo(out: str, max_steps: int = 30, device: str = "auto", tokenizer: str | None = None,
             echo: Callable = print) -> dict:
    out_dir = absolute(out)
    if not 1 <= max_steps <= 100_000:
        raise UserError(f"--max-steps must be between 1 and 100,000, got {max_steps}")
    foreign = ([p.name for p in out_dir.iterdir() if p.name not in DEMO_FILES and not re.fullmatch(r"run-\d+", p.name)]
               if out_dir.is_dir() else [])
    if foreign:
        raise UserError(f"{out_dir} holds {', '.join(sorted(foreign)[:3])}, which the demo did not write; choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = out_dir / "pydoc_topics.jsonl"
    n_docs = write_corpus(corpus)
    echo(f"corpus: {n_docs} documents of Python's built-in help (pydoc_data) -> {corpus}")
    data_dir = out_dir / "data"
    meta = prepare([str(corpus)], str(data_dir), PrepareOptions(tokenizer=tokenizer, overwrite=True, quiet=True))
    counts = {s: v["tokens"] for s, v in meta["splits"].items()}
    echo(f"prepared: {counts['train']:,} train / {counts['val']:,} val tokens ({meta['split']['description']})")
    cfg = build_config(
        preset="tiny",
        sets=DEMO_SETTINGS + [f"data.dir={data_dir}", f"schedule.max_steps={max_steps}",
                                 f"schedule.warmup_steps={min(5, max_steps)}", f"run.device={device}"],
    )
    run_dir = next(out_dir / name for name in ("run", *(f"run-{i}" for i in range(2, 10_000)))
                   if not (out_dir / name).exists())  # a previous demo's run stays as it was
    result = make_trainer(cfg, str(run_dir), echo=echo).fit()
    val = result["val"]
    echo(f"val loss {val['loss']:.4f} | perplexity {val['perplexity']:.1f} (a uniform guess scores loss 10.83, perplexity 50,257)")
    text = sample_text(str(run_dir), SampleOptions(prompt="The", max_new_tokens=60, seed=0, device=device,
                                                   tokenizer=tokenizer))[0]
    echo(f"sample: The{text}")
    echo(f"metrics: {run_dir / 'metrics.jsonl'} | checkpoint: {result['checkpoint']}")
    return {**result, "sample": text, "run_dir": str(run_dir)}
