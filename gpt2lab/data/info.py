"""`gpt2lab data-info DATA_DIR`: what a prepared data directory holds, checked, with a few decoded windows."""

from __future__ import annotations

import numpy as np

from ..errors import UserError
from .shards import read_meta, split_shards


def data_info(data_dir: str, samples: int = 3, sample_tokens: int = 48, tokenizer=None, seed: int = 0) -> dict:
    """Splits, tokens, documents, shards, tokenizer and split method; every shard's header and size is
    checked against meta.json. With a tokenizer, `samples` random training windows are decoded."""
    meta = read_meta(data_dir)
    info = {
        "data_dir": str(data_dir),
        "format": meta.get("format"),
        "tokenizer": meta.get("tokenizer"),
        "split": meta.get("split"),
        "splits": {},
        "samples": [],
    }
    for split, entry in meta.get("splits", {}).items():
        shards = split_shards(data_dir, split)  # raises a clear error on any inconsistency
        sizes = [len(s) for s in shards]
        info["splits"][split] = {"tokens": int(sum(sizes)), "documents": entry.get("documents"), "shards": len(shards),
                                 "largest_shard_tokens": max(sizes), "bytes_on_disk": int(sum(sizes) * 2)}
    if "train" not in info["splits"]:
        raise UserError(f"{data_dir} has no train split; run `gpt2lab prepare` again")
    if tokenizer is not None and samples:
        rng = np.random.default_rng(seed)
        shards = split_shards(data_dir, "train")
        for _ in range(samples):
            shard = shards[rng.integers(len(shards))]
            start = int(rng.integers(0, max(1, len(shard) - sample_tokens)))
            ids = np.asarray(shard[start : start + sample_tokens]).tolist()
            info["samples"].append({"offset": start, "text": tokenizer.decode(ids)})
    return info


def format_info(info: dict) -> str:
    tok = info["tokenizer"] or {}
    lines = [f"{info['data_dir']}: {info['format']}",
             f"tokenizer: {tok.get('name')} ({tok.get('n_vocab'):,} tokens, <|endoftext|> = {tok.get('eot')})"]
    for split, s in info["splits"].items():
        lines.append(f"{split}: {s['tokens']:,} tokens, {s['documents']:,} documents, {s['shards']} shard(s), "
                     f"{s['bytes_on_disk'] / 2**20:,.1f} MiB")
    split = info.get("split") or {}
    lines.append(f"split ({split.get('method')}): {split.get('description')}")
    lines.append("shards: headers and sizes match meta.json")
    for sample in info["samples"]:
        lines.append(f"--- train window at token {sample['offset']:,} ---\n{sample['text']}")
    return "\n".join(lines)
