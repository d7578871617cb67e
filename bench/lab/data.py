"""The lab's text: Gutenberg train-00 to train on, the validation books split whole into a tuning and a scoring
half, and the word statistics (unigram, bigram) of the training text on the scoring half."""

from __future__ import annotations

import json
import lzma
from pathlib import Path

from bench.speedrun_cpu import tokenizer_dir
from gpt2lab.files import write_json_atomic

from .protocol import SHARED


def split_books(work: Path) -> tuple[Path, Path]:
    """tuning.jsonl (books 0, 2, ...) and scoring.jsonl (books 1, 3, ...) of the validation file, whole books."""
    tuning, scoring = work / "tuning.jsonl", work / "scoring.jsonl"
    if not (tuning.is_file() and scoring.is_file()):
        with lzma.open(SHARED / "gutenberg" / "val.jsonl.xz", "rt", encoding="utf-8") as f:
            books = [line for line in f if line.strip()]
        work.mkdir(parents=True, exist_ok=True)
        tuning.write_text("".join(books[0::2]))
        scoring.write_text("".join(books[1::2]))
    return tuning, scoring


def prepare_data(work: Path) -> tuple[Path, Path]:
    """(training data whose val split is the tuning books, a data folder whose train split is the scoring books)."""
    from gpt2lab.data.prepare import PrepareOptions, prepare

    tuning, scoring = split_books(work)
    train_dir, scoring_dir = work / "data", work / "scoring"
    if not (train_dir / "meta.json").is_file():
        prepare([str(SHARED / "gutenberg" / "train-00.jsonl.xz")], str(train_dir),
                PrepareOptions(val_inputs=[str(tuning)], workers=1, tokenizer=tokenizer_dir(), quiet=True))
    if not (scoring_dir / "meta.json").is_file():
        prepare([str(scoring)], str(scoring_dir), PrepareOptions(val_fraction=0.0, tokenizer=tokenizer_dir(), quiet=True))
    return train_dir, scoring_dir


def ngram_losses(work: Path) -> dict:
    """Unigram and bigram (interpolated with the unigram; weight chosen on the tuning split) losses, in nats per
    token, of counts over the whole training file, measured on the whole scoring split."""
    cache = work / "ngram.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    import numpy as np

    from gpt2lab.data.shards import split_shards

    data, scoring = prepare_data(work)
    train = np.concatenate([np.asarray(s, dtype=np.int64) for s in split_shards(str(data), "train")])
    vocab = 50304
    uni = np.bincount(train, minlength=vocab).astype(np.float64) + 0.5
    p_uni = uni / uni.sum()
    pairs, counts = np.unique(train[:-1] * vocab + train[1:], return_counts=True)
    prev_total = np.bincount(train[:-1], minlength=vocab).astype(np.float64)

    def loss(tokens: np.ndarray, weight: float | None) -> float:
        if weight is None:
            return float(-np.log(p_uni[tokens[1:]]).mean())
        keys = tokens[:-1] * vocab + tokens[1:]
        at = np.searchsorted(pairs, keys)
        at = np.minimum(at, len(pairs) - 1)
        c = np.where(pairs[at] == keys, counts[at], 0).astype(np.float64)
        total = prev_total[tokens[:-1]]
        p_bi = np.divide(c, total, out=np.zeros_like(c), where=total > 0)
        return float(-np.log(weight * p_bi + (1 - weight) * p_uni[tokens[1:]]).mean())

    tuning = np.concatenate([np.asarray(s, dtype=np.int64) for s in split_shards(str(data), "val")])
    weight = min((w / 20 for w in range(1, 20)), key=lambda w: loss(tuning, w))
    held_out = np.concatenate([np.asarray(s, dtype=np.int64) for s in split_shards(str(scoring), "train")])
    result = {"unigram": round(loss(held_out, None), 4), "bigram": round(loss(held_out, weight), 4),
              "bigram_weight": weight, "train_tokens": int(train.size), "scoring_tokens": int(held_out.size),
              "tuning_tokens": int(tuning.size)}
    write_json_atomic(cache, result, "the n-gram cache")
    return result
