import gzip
import json
import lzma

import numpy as np
import pytest

from gpt2lab.data import PrepareOptions, prepare, split_shards
from gpt2lab.data.prepare import split_at_line
from gpt2lab.errors import UserError
from gpt2lab.tokenizer import load_tokenizer
from tests.helpers import make_docs, write_jsonl



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


def test_every_document_is_eot_then_its_tokens(tmp_path, tokenizer_dir):
    docs = make_docs(6)
    src = write_jsonl(tmp_path / "d.jsonl", docs)
    prepare([str(src)], str(tmp_path / "out"), opts(tokenizer_dir, val_fraction=0.0))
    tok = load_tokenizer(tokenizer_dir)
    expected = np.concatenate([[tok.eot] + tok.encode(d) for d in docs])
    assert np.array_equal(np.concatenate(split_shards(tmp_path / "out", "train")), expected)


def test_crlf_text_is_read_byte_for_byte(tmp_path, tokenizer_dir):
    """A Windows text file keeps its \\r: the tokens are those of the exact text (not of \\n-only text)."""
    text = "".join(f"Line {i} of a Windows file.\r\n" for i in range(50))
    (tmp_path / "win.txt").write_bytes(text.encode())
    prepare([str(tmp_path / "win.txt")], str(tmp_path / "out"), opts(tokenizer_dir, val_fraction=0.0))
    tok = load_tokenizer(tokenizer_dir)
    got = np.concatenate(split_shards(tmp_path / "out", "train"))
    assert np.array_equal(got, [tok.eot] + tok.encode(text))
    assert len(got) > 1 + len(tok.encode(text.replace("\r\n", "\n")))


def test_val_files_are_validation_only(tmp_path, tokenizer_dir):
    train_docs, val_docs = make_docs(20, seed=1), [f"Held out book {i}. " + "quiet words " * 30 for i in range(3)]
    train, val = write_jsonl(tmp_path / "train.jsonl", train_docs), write_jsonl(tmp_path / "val.jsonl", val_docs)
    meta = prepare([str(train)], str(tmp_path / "out"), opts(tokenizer_dir, val_inputs=[str(val)]))
    tok = load_tokenizer(tokenizer_dir)
    train_text, val_text = decoded(tmp_path / "out", "train", tok), decoded(tmp_path / "out", "val", tok)
    assert all(d in val_text for d in val_docs) and "Held out" not in train_text
    assert all(d in train_text for d in train_docs)  # with --val, the other inputs all train
    assert meta["splits"]["val"]["documents"] == 3 and meta["split"]["method"] == "validation inputs"
    assert {"input": str(val), "split": "val"} in meta["sources"] and {"input": str(train), "split": "train"} in meta["sources"]
    assert "the 3 documents of the --val inputs" in meta["split"]["description"]


def test_overwrite_removes_only_what_prepare_wrote(tmp_path, tokenizer_dir):
    """An input that lives inside --out, and any other file there, survive --overwrite."""
    out = tmp_path / "data"
    out.mkdir()
    src = write_jsonl(out / "corpus.jsonl", make_docs(30))
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a gpt2lab data directory"):
        prepare([str(src)], str(out), opts(tokenizer_dir))
    other = tmp_path / "other"
    prepare([str(src)], str(other), opts(tokenizer_dir, shard_tokens=300))
    (other / "readme.md").write_text("mine too")
    shards_before = {p.name for p in other.glob("*.bin")}
    prepare([str(src)], str(other), opts(tokenizer_dir, shard_tokens=900, overwrite=True))
    assert (other / "readme.md").read_text() == "mine too"
    assert {p.name for p in other.glob("*.bin")} < shards_before  # fewer, larger shards; the old extra ones gone
    split_shards(other, "train")


def test_a_lost_shard_is_noticed_not_trusted(tmp_path, tokenizer_dir, capsys):
    src = write_jsonl(tmp_path / "d.jsonl", make_docs(40))
    prepare([str(src)], str(tmp_path / "out"), opts(tokenizer_dir, shard_tokens=400))
    (tmp_path / "out" / "train_000001.bin").unlink()
    prepare([str(src)], str(tmp_path / "out"), PrepareOptions(tokenizer=tokenizer_dir, shard_tokens=400))
    assert "damaged" in capsys.readouterr().out and "nothing to do" not in capsys.readouterr().out
    split_shards(tmp_path / "out", "train")  # whole again


@pytest.mark.slow
def test_a_broken_interrupted_prepare_starts_over(tmp_path, tokenizer_dir, monkeypatch):
    import importlib

    prep = importlib.import_module("gpt2lab.data.prepare")
    src = write_jsonl(tmp_path / "docs.jsonl", make_docs(80))
    options = dict(shard_tokens=500, val_fraction=0.1)
    real_finish, finished = prep.ShardFile.finish, []

    def crash(self):
        finished.append(1)
        if len(finished) == 4:
            raise KeyboardInterrupt
        return real_finish(self)

    monkeypatch.setattr(prep.ShardFile, "finish", crash)
    with pytest.raises(KeyboardInterrupt):
        prepare([str(src)], str(tmp_path / "out"), opts(tokenizer_dir, **options))
    monkeypatch.setattr(prep.ShardFile, "finish", real_finish)
    (tmp_path / ".out.partial" / "train_000001.bin").write_bytes(b"\0" * 40)  # progress.json now lies
    prepare([str(src)], str(tmp_path / "out"), opts(tokenizer_dir, **options))
    prepare([str(src)], str(tmp_path / "whole"), opts(tokenizer_dir, **options))
    for split in ("train", "val"):
        assert np.array_equal(np.concatenate(split_shards(tmp_path / "out", split)),
                              np.concatenate(split_shards(tmp_path / "whole", split)))


def test_a_second_prepare_on_the_same_out_is_refused(tmp_path, tokenizer_dir):
    from gpt2lab.files import FolderLock

    src = write_jsonl(tmp_path / "d.jsonl", make_docs(10))
    with FolderLock(tmp_path / ".out.partial"):  # as if another prepare were writing
        with pytest.raises(UserError, match="is in use by gpt2lab process"):
            prepare([str(src)], str(tmp_path / "out"), opts(tokenizer_dir))
    prepare([str(src)], str(tmp_path / "out"), opts(tokenizer_dir))  # free again: works
    assert not (tmp_path / ".out.partial").exists()


def test_numbers_out_of_range_are_one_line(tmp_path, tokenizer_dir):
    src = write_jsonl(tmp_path / "d.jsonl", make_docs(5))
    for options, message in ((dict(workers=10_000), "--workers must be between 1 and"), (dict(shard_tokens=2**31), "header"),
                             (dict(val_fraction=float("nan")), "--val-fraction"), (dict(seed=-1), "--seed")):
        with pytest.raises(UserError, match=message):
            prepare([str(src)], str(tmp_path / "out"), opts(tokenizer_dir, **options))


def test_a_shard_size_that_would_make_a_sea_of_files_stops_with_nothing_left(tmp_path, tokenizer_dir, monkeypatch):
    import importlib

    prepare_module = importlib.import_module("gpt2lab.data.prepare")  # the module, not the function of that name
    monkeypatch.setattr(prepare_module, "MAX_SHARDS", 6)  # the cap, not the code under test: 50,000 files is slow here
    src = write_jsonl(tmp_path / "d.jsonl", make_docs(20))
    with pytest.raises(UserError, match=r"--shard-tokens 10 makes more than 6 shards of the train split .*larger --shard-tokens"):
        prepare([str(src)], str(tmp_path / "out"), opts(tokenizer_dir, shard_tokens=10))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl"]  # no output, no working folder
    meta = prepare([str(src)], str(tmp_path / "out"), opts(tokenizer_dir, shard_tokens=1000))  # a sane size works
    assert len(meta["splits"]["train"]["shards"]) <= 6
