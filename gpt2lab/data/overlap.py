"""Does validation text appear in training? A check on the tokens themselves, not on how they were split.

Sampled validation n-grams (32 tokens by default) are hashed and looked up among every n-gram of the
training shards. Windows cut from overlapping text (the WikiText-103 report's 50%-overlapping windows) or a
document present in both splits show up as a high fraction; independent text shares almost no 32-token run.
N-grams with few distinct tokens (runs of spaces or separators) are not sampled.
"""

from __future__ import annotations

import numpy as np

from .shards import split_shards

_P = np.uint64(0x100000001B3)  # the multiplier of a polynomial hash mod 2**64
_CHUNK = 8_000_000


def ngram_hashes(tokens: np.ndarray, n: int) -> np.ndarray:
    """Hash of every n-token run: tokens[i:i+n] -> out[i]."""
    t = tokens.astype(np.uint64)
    count = len(t) - n + 1
    if count <= 0:
        return np.empty(0, dtype=np.uint64)
    h = np.zeros(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            h = h * _P + t[j : j + count]
    return h


def val_train_overlap(data_dir: str, n: int = 32, samples: int = 20_000, max_train_tokens: int = 500_000_000,
                      seed: int = 0, progress=None) -> dict:
    """Fraction of sampled validation n-grams found verbatim in the training split; progress(tokens) after each
    chunk scanned."""
    val = np.concatenate([np.asarray(s) for s in split_shards(data_dir, "val")])
    if len(val) < n:
        return {"fraction": 0.0, "sampled": 0, "train_tokens_scanned": 0, "ngram": n}
    rng = np.random.default_rng(seed)
    starts = rng.choice(len(val) - n + 1, size=min(samples, len(val) - n + 1), replace=False)
    windows = val[starts[:, None] + np.arange(n)]
    varied = np.array([len(np.unique(w)) >= n // 4 for w in windows])
    wanted = np.unique(np.concatenate([ngram_hashes(w, n) for w in windows[varied]])) if varied.any() else np.empty(0, np.uint64)
    found = np.zeros(len(wanted), dtype=bool)
    scanned = 0
    for shard in split_shards(data_dir, "train"):
        for begin in range(0, len(shard), _CHUNK):
            if scanned >= max_train_tokens:
                break
            piece = np.asarray(shard[begin : begin + _CHUNK + n - 1])
            found |= np.isin(wanted, ngram_hashes(piece, n))
            scanned += min(_CHUNK, len(shard) - begin)
            if progress is not None:
                progress(min(_CHUNK, len(shard) - begin))
    return {
        "fraction": float(found.mean()) if len(found) else 0.0,
        "sampled": int(len(wanted)),
        "train_tokens_scanned": int(scanned),
        "ngram": n,
    }
