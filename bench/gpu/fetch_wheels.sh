#!/usr/bin/env bash
# Run HERE (a machine that reaches PyPI), in the project root, before a device session: the lent GPU machine has
# torch, tiktoken, safetensors, numpy, tqdm, pyyaml, matplotlib and transformers, but not pydantic, and fetches
# nothing. This downloads pydantic and what it needs (typing-extensions too: pydantic needs >=4.15, and the image's
# version is not known), for that machine's Python 3.12 on x86-64, into .whl/
# (ignored by git; name it in the device run's `carry`). It also writes .gpu/: the GPT-2 BPE files and ~10M
# tokens of Gutenberg train-00 prepared by gpt2lab, so the speedrun recipe has text to train on there.
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf .whl && mkdir -p .whl
for spec in "pydantic==$(python3 -c 'import pydantic; print(pydantic.VERSION)')" \
            "pydantic-core==$(python3 -c 'import pydantic_core; print(pydantic_core.__version__)')" \
            annotated-types typing-inspection \
            "typing-extensions==$(python3 -c 'import importlib.metadata as m; print(m.version("typing_extensions"))')"; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl "$spec"
done
shared="${GPT2LAB_SHARED:-../shared}/data"
rm -rf .gpu && mkdir -p .gpu
cp -r "$shared/gpt2_tokenizer" .gpu/tokenizer
cp "$shared/hellaswag/hellaswag_val.jsonl" .gpu/  # for ranks_check.sh (12 MB)
python3 - "$shared/gutenberg/train-00.jsonl.xz" .gpu/books.jsonl <<'PY'
import lzma, sys
budget, out = 40_000_000, open(sys.argv[2], "w")  # ~40M characters: about 10M GPT-2 tokens
with lzma.open(sys.argv[1], "rt", encoding="utf-8") as f:
    for line in f:
        out.write(line)
        budget -= len(line)
        if budget <= 0:
            break
PY
python3 -m gpt2lab prepare .gpu/books.jsonl --out .gpu/data --tokenizer .gpu/tokenizer --val-fraction 0.1 --quiet
rm .gpu/books.jsonl
ls -la .whl; du -sh .whl .gpu
