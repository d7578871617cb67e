"""`gpt2lab data-info DATA_DIR`: what a prepared data directory holds, checked, with a few decoded windows."""

from __future__ import annotations

import numpy as np

from ..errors import UserError
from .shards import read_meta, split_shards


def data_info(data_dir: str, samples: int = 3, sample_tokens: int = 48, tokenizer: str | None = None, seed: int = 0) -> dict:
    """Splits, tokens, documents, shards, tokenizer and split method; every shard's header and size is
    checked against meta.json. `samples` random training windows are decoded with the data's tokenizer (the
    folder it was prepared with, or `tokenizer`), when it can be loaded."""
    if not 0 <= samples <= 1000 or not 1 <= sample_tokens <= 100_000:
        raise UserError("--samples must be between 0 and 1000 and --sample-tokens between 1 and 100,000")
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
    tok = _tokenizer(tokenizer or meta["tokenizer"].get("folder"), info) if samples else None
    if tok is not None:
        rng = np.random.default_rng(seed)
        shards = split_shards(data_dir, "train")
        for _ in range(samples):
            shard = shards[rng.integers(len(shards))]
            start = int(rng.integers(0, max(1, len(shard) - sample_tokens)))
            ids = np.asarray(shard[start : start + sample_tokens]).tolist()
            bad = [i for i in ids if i >= tok.n_vocab]
            if bad:
                raise UserError(f"{data_dir} holds token id {bad[0]}, outside its tokenizer's {tok.n_vocab} tokens; "
                                "a shard is damaged or was written with another tokenizer: prepare the data again")
            info["samples"].append({"offset": start, "text": tok.decode(ids)})
    return info


def _tokenizer(folder: str | None, info: dict):
    from ..tokenizer import load_tokenizer

    try:
        return load_tokenizer(folder)
    except UserError as exc:
        info["note"] = f"no decoded samples ({exc})"
        return None


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
    if info.get("note"):
        lines.append(f"note: {info['note']}")
    for sample in info["samples"]:
        lines.append(f"--- train window at token {sample['offset']:,} ---\n{sample['text']}")
    return "\n".join(lines)
