"""Shared fixtures: paths into ../shared (skipped cleanly when absent) and small synthetic data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from gpt2lab.config import build_config
from gpt2lab.data.shards import META_FILE, shard_name, write_shard

SHARED = Path(os.environ.get("GPT2LAB_SHARED") or Path(__file__).resolve().parents[2] / "shared")
TOKENIZER_DIR = SHARED / "data" / "gpt2_tokenizer"


GPT2_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"


def _from_tiktoken_cache(folder: Path) -> bool:
    """GPT-2's encoder.json and vocab.bpe from a tiktoken cache (TIKTOKEN_CACHE_DIR: README's offline route), where
    tiktoken keeps each download under the SHA-1 of its address; False when the cache does not hold them."""
    import hashlib
    import shutil

    cache = os.environ.get("TIKTOKEN_CACHE_DIR")
    if not cache:
        return False
    files = {name: Path(cache) / hashlib.sha1((GPT2_URL + name).encode()).hexdigest() for name in ("encoder.json", "vocab.bpe")}
    if not all(p.is_file() for p in files.values()):
        return False
    folder.mkdir(parents=True, exist_ok=True)
    for name, path in files.items():
        shutil.copy(path, folder / name)
    return True


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> str:
    """GPT-2's BPE files: from ../shared, or, without it, from a tiktoken cache named by TIKTOKEN_CACHE_DIR."""
    if (TOKENIZER_DIR / "encoder.json").is_file():
        return str(TOKENIZER_DIR)
    folder = tmp_path_factory.mktemp("gpt2_tokenizer")
    if _from_tiktoken_cache(folder):
        return str(folder)
    pytest.skip(f"GPT-2 tokenizer files not found at {TOKENIZER_DIR} (../shared is absent) nor in a tiktoken cache "
                "(set TIKTOKEN_CACHE_DIR)")


@pytest.fixture
def offline_tokenizer(tokenizer_dir, monkeypatch):
    """Points tiktoken's cache at the shared copy (or keeps the user's TIKTOKEN_CACHE_DIR) so that the default (no
    folder) path works offline."""
    if (TOKENIZER_DIR / "tiktoken_cache").is_dir():
        monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(TOKENIZER_DIR / "tiktoken_cache"))
    monkeypatch.delenv("GPT2LAB_TOKENIZER", raising=False)
    return tokenizer_dir


@pytest.fixture(scope="session")
def shared_file():
    def get(*parts: str) -> Path:
        path = SHARED.joinpath(*parts)
        if not path.exists():
            pytest.skip(f"{path} not found (../shared is absent)")
        return path

    return get


def make_data_dir(path: Path, vocab: int = 64, train_tokens: int = 20_000, val_tokens: int = 2_000,
                  shard_tokens: int = 7_000, seed: int = 0) -> Path:
    """A prepared data directory of random tokens (a repeating pattern plus noise, so it is learnable)."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split, n in (("train", train_tokens), ("val", val_tokens)):
        tokens = (np.arange(n) * 7 + rng.integers(0, 2, n)) % vocab
        shards = []
        for i, start in enumerate(range(0, n, shard_tokens)):
            chunk = tokens[start : start + shard_tokens]
            write_shard(path / shard_name(split, i), chunk)
            shards.append({"file": shard_name(split, i), "tokens": int(chunk.size)})
        splits[split] = {"tokens": n, "documents": 1, "shards": shards}
    meta = {"tokenizer": {"name": "synthetic", "n_vocab": vocab, "eot": vocab - 1}, "splits": splits}
    (path / META_FILE).write_text(json.dumps(meta))
    return path


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return make_data_dir(tmp_path / "data")


MICRO_MODEL = ["model.n_layer=2", "model.n_head=2", "model.n_embd=32", "model.block_size=32", "model.vocab_size=64"]


def micro_config(data: Path, *sets: str, **kw):
    """A config for a model small enough that a training step takes milliseconds."""
    defaults = ["schedule.max_steps=8", "schedule.warmup_steps=2", "run.micro_batch=4", "log.every=none",
                "eval.every=none", "eval.batches=2", "checkpoint.every=none", "run.device=cpu", "optim.lr=1e-2",
                "run.precision=fp32"]
    return build_config(sets=MICRO_MODEL + defaults + [f"data.dir={data}", *sets], **kw)


def trainer(cfg, run_dir, **kw):
    """A Trainer with the evaluations its config asks for, as `gpt2lab train` builds it."""
    from gpt2lab.commands.train import make_trainer

    return make_trainer(cfg, str(run_dir), **kw)
