"""Benchmark: `gpt2lab prepare` end to end against tiktoken's raw encode_ordinary, in one run.

  python bench/prepare_speed.py [--input ../shared/data/gutenberg/train-00.jsonl.xz] [--workers N]

1. raw: every text of the input, decoded in this process, encoded with encode_ordinary on one core
   (reading and decompressing are not timed): the single-core ceiling.
2. prepare: `gpt2lab prepare INPUT --workers N` in a fresh process, timed from start to exit, reading,
   decompressing, splitting, tokenizing and writing included; it reports its own peak RSS and its workers'.
Goal: prepare tokens/s >= 0.8 x raw x workers, and peak memory far below the corpus. Writes
bench/results/prepare_speed_<date>.json.
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

CHILD = """
import json, resource, sys, time
from gpt2lab.data.prepare import PrepareOptions, prepare
start = time.perf_counter()
meta = prepare([sys.argv[1]], sys.argv[2], PrepareOptions(workers=int(sys.argv[3]), tokenizer=sys.argv[4], quiet=True))
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "tokens": sum(s["tokens"] for s in meta["splits"].values()),
                  "documents": sum(s["documents"] for s in meta["splits"].values()),
                  # VmHWM: the peak of this process's own memory (ru_maxrss would include the parent's at fork)
                  "main_peak_rss_mb": int([l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]) / 1024,
                  "worker_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", default=str(SHARED / "gutenberg" / "train-00.jsonl.xz"))
    parser.add_argument("--tokenizer", default=str(SHARED / "gpt2_tokenizer"))
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from gpt2lab.tokenizer import load_tokenizer

    tok = load_tokenizer(args.tokenizer)
    start = time.perf_counter()
    with lzma.open(args.input, "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f if line.strip()]
    read_seconds = time.perf_counter() - start  # decompress + parse: work prepare's main process must do too
    start = time.perf_counter()
    raw_tokens = sum(len(tok.encoding.encode_ordinary(t)) for t in texts)
    raw_seconds = time.perf_counter() - start
    raw_rate = raw_tokens / raw_seconds
    print(f"raw encode_ordinary, 1 core: {raw_tokens:,} tokens in {raw_seconds:.1f} s = {raw_rate:,.0f} tokens/s")
    start = time.perf_counter()
    for t in texts:  # what prepare calls: the same ids, returned as an array
        tok.encode_array(t)
    array_rate = raw_tokens / (time.perf_counter() - start)
    print(f"raw encode_to_numpy, 1 core: {array_rate:,.0f} tokens/s")
    corpus_mb = sum(len(t.encode("utf-8")) for t in texts) / 2**20
    del texts

    runs = []
    for workers in sorted({1, args.workers}):
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            out = subprocess.run([sys.executable, "-c", CHILD, args.input, f"{tmp}/data", str(workers), args.tokenizer],
                                 check=True, capture_output=True, text=True, env=env)
        child = json.loads(out.stdout.strip().splitlines()[-1])
        rate = child["tokens"] / child["seconds"]
        ratio = rate / (raw_rate * workers)
        # reading one xz stream cannot be split: with as many workers as cores, it takes CPU from them
        cores = os.cpu_count() or 1
        bound = 1.0 if workers < cores else raw_seconds / (raw_seconds + read_seconds)
        print(f"prepare, {workers} worker(s): {child['tokens']:,} tokens in {child['seconds']:.1f} s = {rate:,.0f} tokens/s "
              f"= {ratio:.2f} x (raw x workers) [CPU-accounting ceiling {bound:.2f}]; peak RSS main "
              f"{child['main_peak_rss_mb']:.0f} MB, largest worker {child['worker_peak_rss_mb']:.0f} MB; "
              f"corpus {corpus_mb:.0f} MB of text")
        runs.append({"workers": workers, **{k: round(v, 2) if isinstance(v, float) else v for k, v in child.items()},
                     "tokens_per_sec": round(rate), "ratio_vs_raw_times_workers": round(ratio, 3),
                     "ceiling_from_cpu_accounting": round(bound, 3)})

    from gpt2lab.commands.bench import source_version

    commit = source_version(ROOT)
    import tiktoken

    result = {
        "benchmark": "prepare_speed",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": commit,
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()},
        "tiktoken": tiktoken.__version__,
        "input": args.input,
        "corpus_text_mb": round(corpus_mb, 1),
        "raw_single_core": {"tokens": raw_tokens, "seconds": round(raw_seconds, 2), "tokens_per_sec": round(raw_rate)},
        "raw_single_core_encode_to_numpy_tokens_per_sec": round(array_rate),
        "read_decompress_parse_seconds": round(read_seconds, 2),
        "prepare": runs,
        "goal_ratio": 0.8,
        "notes": [
            "prepare's tokens include one <|endoftext|> per document; raw counts text tokens only",
            "ceiling_from_cpu_accounting: with workers == cores, the single-stream xz decompression and JSON parsing "
            "in the main process share the cores with tokenization, so tokens/s cannot exceed "
            "raw x workers x raw_seconds / (raw_seconds + read_seconds)",
        ],
    }
    path = Path(args.out) / f"prepare_speed_{datetime.now(timezone.utc):%Y%m%d}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
