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
    first = prepare([str(src)], str(tmp_path / "out"), opts(tokenizer_dir))
    again = prepare([str(src)], str(tmp_path / "out"), opts(tokenizer_dir))  # same inputs and options: nothing to do
    assert again["created"] == first["created"]
    with pytest.raises(UserError, match="--overwrite"):
        prepare([str(src)], str(tmp_path / "out"), opts(tokenizer_dir, val_fraction=0.3))
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


def test_large_corpora_are_split_by_hash_in_one_pass(tmp_path, tokenizer_dir, monkeypatch):
    import importlib

    prep = importlib.import_module("gpt2lab.data.prepare")
    monkeypatch.setattr(prep, "LOOKAHEAD_DOCS", 20)  # as if the corpus were too big to look at whole
    docs = make_docs(400)
    src = write_jsonl(tmp_path / "docs.jsonl", docs)
    meta = prepare([str(src)], str(tmp_path / "out"), opts(tokenizer_dir, val_fraction=0.1))
    assert meta["split"]["method"] == "hashed"
    n_val = meta["splits"]["val"]["documents"]
    assert 20 <= n_val <= 62  # binomial(400, 0.1): mean 40, sd 6
    tok = load_tokenizer(tokenizer_dir)
    train, val = decoded(tmp_path / "out", "train", tok), decoded(tmp_path / "out", "val", tok)
    val_docs = [d for d in docs if d in val]
    assert len(val_docs) == n_val and not any(d in train for d in val_docs)


def test_an_interrupted_prepare_resumes_where_it_stopped(tmp_path, tokenizer_dir, monkeypatch):
    import importlib

    prep = importlib.import_module("gpt2lab.data.prepare")
    src = write_jsonl(tmp_path / "docs.jsonl", make_docs(120))
    options = dict(shard_tokens=700, val_fraction=0.1)
    prepare([str(src)], str(tmp_path / "whole"), opts(tokenizer_dir, **options))

    real_finish, finished = prep.ShardFile.finish, []

    def crash_on_fifth(self):
        finished.append(self.path.name)
        if len(finished) == 5:
            raise KeyboardInterrupt  # as if killed while finishing the fifth shard
        return real_finish(self)

    monkeypatch.setattr(prep.ShardFile, "finish", crash_on_fifth)
    with pytest.raises(KeyboardInterrupt):
        prepare([str(src)], str(tmp_path / "out"), opts(tokenizer_dir, **options))
    assert (tmp_path / ".out.partial" / "progress.json").is_file() and not (tmp_path / "out").exists()

    monkeypatch.setattr(prep.ShardFile, "finish", real_finish)
    from gpt2lab.tokenizer import Tokenizer

    encoded, real_encode = [], Tokenizer.encode_array
    monkeypatch.setattr(Tokenizer, "encode_array", lambda self, text: encoded.append(text) or real_encode(self, text))
    meta = prepare([str(src)], str(tmp_path / "out"), opts(tokenizer_dir, **options))
    assert len(encoded) < 120 * 0.8  # the documents already on disk were not tokenized again
    whole = json.loads((tmp_path / "whole" / "meta.json").read_text())
    assert meta["splits"] == whole["splits"]
    for split in ("train", "val"):
        assert np.array_equal(np.concatenate(split_shards(tmp_path / "out", split)),
                              np.concatenate(split_shards(tmp_path / "whole", split)))
    assert not (tmp_path / ".out.partial").exists()


def test_data_info(tmp_path, tokenizer_dir, capsys):
    from gpt2lab.cli import main

    src = write_jsonl(tmp_path / "docs.jsonl", make_docs(30))
    prepare([str(src)], str(tmp_path / "out"), opts(tokenizer_dir))
    assert main(["data-info", str(tmp_path / "out"), "--tokenizer", tokenizer_dir, "--json"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["splits"]["train"]["documents"] + info["splits"]["val"]["documents"] == 30
    assert len(info["samples"]) == 3 and all(s["text"] for s in info["samples"])
    assert main(["data-info", str(tmp_path / "out"), "--samples", "0"]) == 0
    assert "headers and sizes match" in capsys.readouterr().out
    shard = tmp_path / "out" / "train_000000.bin"
    shard.write_bytes(shard.read_bytes()[:-3])
    assert main(["data-info", str(tmp_path / "out")]) == 2
