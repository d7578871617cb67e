import pytest

from gpt2lab.errors import UserError
from gpt2lab.tokenizer import load_tokenizer


def test_hello_world_from_folder(tokenizer_dir):
    tok = load_tokenizer(tokenizer_dir)
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.n_vocab == 50257 and tok.eot == 50256
    text = "Some text, with <|endoftext|> inside, é and 日本."
    assert tok.decode(tok.encode(text)) == text
    assert 50256 not in tok.encode(text)  # special tokens in data are plain text, never the separator


def test_tiktoken_cache_dir_is_honoured(offline_tokenizer):
    tok = load_tokenizer()
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.source.startswith("tiktoken:gpt2")


def test_env_variable_names_a_folder(tokenizer_dir, monkeypatch):
    monkeypatch.setenv("GPT2LAB_TOKENIZER", tokenizer_dir)
    assert load_tokenizer().encode("Hello world") == [15496, 995]


def test_tiktoken_file_alone_is_enough(shared_file, tmp_path):
    import shutil

    shutil.copy(shared_file("data", "gpt2_tokenizer", "r50k_base.tiktoken"), tmp_path)
    assert load_tokenizer(tmp_path).encode("Hello world") == [15496, 995]


def test_missing_vocabulary_gives_one_line_fix(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="encoder.json"):
        load_tokenizer(tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        load_tokenizer(tmp_path / "nope")
    # no folder, an empty tiktoken cache and no network: the error says how to fix it
    monkeypatch.delenv("GPT2LAB_TOKENIZER", raising=False)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    import tiktoken.registry

    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    monkeypatch.setattr("tiktoken.load.read_file", lambda path: (_ for _ in ()).throw(ConnectionError("offline")))
    with pytest.raises(UserError, match="TIKTOKEN_CACHE_DIR") as err:
        load_tokenizer()
    assert "\n" not in str(err.value)


def test_a_tokenizer_folder_is_read_as_it_is_and_never_cached(tmp_path, tokenizer_dir, monkeypatch):
    import shutil

    from gpt2lab.errors import UserError

    cache = tmp_path / "cache"
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    folder = tmp_path / "tok"
    shutil.copytree(tokenizer_dir, folder, ignore=shutil.ignore_patterns("tiktoken_cache", "r50k_base.tiktoken"))
    assert load_tokenizer(str(folder)).encode("Hello world") == [15496, 995]
    assert not cache.exists() or not list(cache.iterdir())  # the user's cache was not written
    first = load_tokenizer(str(folder)).encoding
    assert load_tokenizer(str(folder)).encoding is first  # the same bytes: built once in this process
    original = (folder / "encoder.json").read_bytes()
    (folder / "encoder.json").write_text("{not json")  # the folder is damaged now: that must show at once
    with pytest.raises(UserError, match="not GPT-2's"):
        load_tokenizer(str(folder))
    (folder / "encoder.json").write_bytes(original)  # and repaired: the same bytes again
    assert load_tokenizer(str(folder)).encoding is first
    import os

    assert os.environ["TIKTOKEN_CACHE_DIR"] == str(cache)  # restored
