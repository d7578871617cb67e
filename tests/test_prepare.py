import gzip
import json
import lzma

import numpy as np
import pytest

from gpt2lab.data import PrepareOptions, prepare, split_shards
from gpt2lab.data.prepare import split_at_line
from gpt2lab.errors import UserError
from gpt2lab.tokenizer import load_tokenizer

WORDS = "river stone lamp orchard violet anchor meadow copper lantern thistle harbor falcon".split()


def make_docs(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"Document {i} begins. " + " ".join(rng.choice(WORDS, 40)) + f"\n\nIt ends as number {i}." for i in range(n)]


def write_jsonl(path, docs, opener=open):
    with opener(path, "wt", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"text": d, "id": 1}) + "\n")
    return path


def decoded(data_dir, split, tok):
    return "".join(tok.decode(np.asarray(s).tolist()) for s in split_shards(data_dir, split))


def opts(tokenizer_dir, **kw):
    return PrepareOptions(tokenizer=tokenizer_dir, quiet=True, **kw)


def test_split_is_by_document_and_nothing_leaks(tmp_path, tokenizer_dir):
    docs = make_docs(50)
    src = write_jsonl(tmp_path / "docs.jsonl", docs)
    meta = prepare([str(src)], str(tmp_path / "out"), opts(tokenizer_dir, val_fraction=0.2, shard_tokens=500))
    assert meta["split"]["method"] == "documents"
    assert meta["splits"]["val"]["documents"] == 10 and meta["splits"]["train"]["documents"] == 40
    assert len(meta["splits"]["train"]["shards"]) > 1  # small shards force several
    tok = load_tokenizer(tokenizer_dir)
    train, val = decoded(tmp_path / "out", "train", tok), decoded(tmp_path / "out", "val", tok)
    val_docs = [d for d in docs if d in val]
    assert len(val_docs) == 10
    for d in val_docs:
        assert d not in train
        assert d.split("\n\n")[0] not in train  # not even its first paragraph
    # every document is preceded by <|endoftext|>, and the token counts add up
    for split, text in (("train", train), ("val", val)):
        assert text.count("<|endoftext|>") == meta["splits"][split]["documents"]
    total = sum(len(tok.encode(d)) + 1 for d in docs)
    assert meta["splits"]["train"]["tokens"] + meta["splits"]["val"]["tokens"] == total


def test_single_document_gets_a_tail_split(tmp_path, tokenizer_dir):
    text = "".join(f"Line {i} of the only document.\n" + ("\n" if i % 5 == 0 else "") for i in range(400))
    (tmp_path / "one.txt").write_text(text)
    meta = prepare([str(tmp_path / "one.txt")], str(tmp_path / "out"), opts(tokenizer_dir))
    assert meta["split"]["method"] == "document-tail"
    assert "too few documents" in meta["split"]["description"]
    tok = load_tokenizer(tokenizer_dir)
    train = decoded(tmp_path / "out", "train", tok).replace("<|endoftext|>", "")
    val = decoded(tmp_path / "out", "val", tok).replace("<|endoftext|>", "")
    assert train + val == text
    assert 0.05 < len(val) / len(text) < 0.15
    assert val.startswith("Line ") and val not in train


def test_split_at_line_prefers_paragraphs():
    head, tail = split_at_line("a\nb\n\nc\nd\ne\n", 0.5)
    assert head + tail == "a\nb\n\nc\nd\ne\n"
    assert tail.startswith(("c", "d", "e"))


def test_compressed_and_plain_inputs_and_folders(tmp_path, tokenizer_dir):
    docs = make_docs(12)
    write_jsonl(tmp_path / "a.jsonl.gz", docs[:4], gzip.open)
    write_jsonl(tmp_path / "b.jsonl.xz", docs[4:8], lzma.open)
    folder = tmp_path / "txt"
    folder.mkdir()
    for i, d in enumerate(docs[8:]):
        (folder / f"{i}.txt").write_text(d)
    meta = prepare([str(tmp_path / "*.jsonl.*"), str(folder)], str(tmp_path / "out"), opts(tokenizer_dir, val_fraction=0.25))
    assert meta["split"]["source_documents"] == 12
    assert meta["splits"]["train"]["documents"] + meta["splits"]["val"]["documents"] == 12


def test_workers_give_identical_shards(tmp_path, tokenizer_dir, monkeypatch):
    import importlib

    prep = importlib.import_module("gpt2lab.data.prepare")  # the package re-exports a function of that name

    monkeypatch.setattr(prep, "CHUNK_CHARS", 2000)  # many chunks, so order across workers matters
    src = write_jsonl(tmp_path / "docs.jsonl", make_docs(60))
    prepare([str(src)], str(tmp_path / "one"), opts(tokenizer_dir, workers=1))
    prepare([str(src)], str(tmp_path / "two"), opts(tokenizer_dir, workers=2))
    for split in ("train", "val"):
        a = np.concatenate(split_shards(tmp_path / "one", split))
        b = np.concatenate(split_shards(tmp_path / "two", split))
        assert np.array_equal(a, b)


def test_gutenberg_val_token_count(tmp_path, tokenizer_dir, shared_file):
    src = shared_file("data", "gutenberg", "val.jsonl.xz")
    meta = prepare([str(src)], str(tmp_path / "out"), opts(tokenizer_dir, val_fraction=0.0, workers=2))
    train = meta["splits"]["train"]
    assert train["documents"] == 18
    assert train["tokens"] - train["documents"] == 1_677_039  # shared/README.md's count, without separators


@pytest.mark.parametrize(
    "content,message",
    [
        (b"", "no text found"),
        (b'{"text": "ok"}\n{"text": broken\n', "is not valid JSON"),
        (b'{"body": "no text field"}\n', "no string field 'text'"),
        (b"\xff\xfe caf\xe9\n", "not UTF-8"),
    ],
)
def test_bad_input_is_a_clear_error_and_leaves_nothing(tmp_path, tokenizer_dir, content, message):
    name = "bad.txt" if b"caf" in content else "bad.jsonl"
    (tmp_path / name).write_bytes(content)
    with pytest.raises(UserError, match=message):
        prepare([str(tmp_path / name)], str(tmp_path / "out"), opts(tokenizer_dir))
    assert not (tmp_path / "out").exists()


def test_existing_output_needs_overwrite(tmp_path, tokenizer_dir):
    src = write_jsonl(tmp_path / "docs.jsonl", make_docs(20))
    prepare([str(src)], str(tmp_path / "out"), opts(tokenizer_dir))
    with pytest.raises(UserError, match="--overwrite"):
        prepare([str(src)], str(tmp_path / "out"), opts(tokenizer_dir))
    prepare([str(src)], str(tmp_path / "out"), opts(tokenizer_dir, overwrite=True))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "precious.txt").write_text("keep me")
    with pytest.raises(UserError, match="not a gpt2lab data directory"):
        prepare([str(src)], str(tmp_path / "other"), opts(tokenizer_dir, overwrite=True))
    assert (tmp_path / "other" / "precious.txt").exists()


def test_missing_input(tmp_path, tokenizer_dir):
    with pytest.raises(UserError, match="does not exist"):
        prepare([str(tmp_path / "nope.txt")], str(tmp_path / "out"), opts(tokenizer_dir))
    with pytest.raises(UserError, match="matches no file"):
        prepare([str(tmp_path / "*.jsonl")], str(tmp_path / "out"), opts(tokenizer_dir))
