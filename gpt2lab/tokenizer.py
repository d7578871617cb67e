"""GPT-2's byte-pair encoding through tiktoken, usable offline.

Where the vocabulary comes from, in order:
  1. a folder passed in (or named by $GPT2LAB_TOKENIZER) holding encoder.json + vocab.bpe, or r50k_base.tiktoken;
  2. tiktoken's own cache ($TIKTOKEN_CACHE_DIR), which downloads the files once when there is a network.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .errors import UserError
from .files import input_folder

ENDOFTEXT = "<|endoftext|>"
GPT2_EOT = 50256


class Tokenizer:
    """A thin wrapper over a tiktoken Encoding: plain-text encode (no special tokens), decode, and the EOT id."""

    def __init__(self, encoding, source: str):
        self.encoding = encoding
        self.source = source  # where the vocabulary was loaded from, for metadata and messages
        self.name = encoding.name
        self.n_vocab = encoding.n_vocab
        self.eot = encoding.eot_token

    def encode(self, text: str) -> list[int]:
        return self.encoding.encode_ordinary(text)

    def encode_array(self, text: str):
        """encode() as a numpy array, without a Python list in between (special-token strings stay text)."""
        import numpy as np

        if hasattr(self.encoding, "encode_to_numpy"):  # tiktoken >= 0.8
            return self.encoding.encode_to_numpy(text, allowed_special=set(), disallowed_special=())
        return np.array(self.encoding.encode_ordinary(text), dtype=np.uint32)

    def decode(self, ids) -> str:
        return self.encoding.decode(list(ids))


@contextlib.contextmanager
def _no_tiktoken_cache():
    """tiktoken copies every file it reads into its cache, keyed by the file's path (so a fixed or replaced
    folder would be ignored, and the user's cache written to). An empty TIKTOKEN_CACHE_DIR turns that off."""
    saved = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = ""
    try:
        yield
    finally:
        if saved is None:
            del os.environ["TIKTOKEN_CACHE_DIR"]
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = saved


_ENCODINGS: dict[tuple[str, ...], object] = {}  # this process's encodings, by the SHA-256s of the files read


def _from_folder(folder: Path):
    """GPT-2's encoding from the files in a folder as they are now. Building it takes about 1 s; it is kept for
    this process under the files' SHA-256s (a few ms to compute), so a second load of the same bytes is free and
    a changed file is read again."""
    import hashlib

    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks, load_tiktoken_bpe
    from tiktoken_ext.openai_public import r50k_pat_str

    pair = folder / "vocab.bpe", folder / "encoder.json"
    single = folder / "r50k_base.tiktoken"
    if not (all(p.is_file() for p in pair) or single.is_file()):
        raise UserError(
            f"tokenizer folder {folder} holds neither encoder.json + vocab.bpe nor r50k_base.tiktoken; "
            "point --tokenizer at a folder with GPT-2's BPE files"
        )
    files = pair if all(p.is_file() for p in pair) else (single,)
    try:
        key = tuple(hashlib.sha256(p.read_bytes()).hexdigest() for p in files)
        if key in _ENCODINGS:
            return _ENCODINGS[key]
        with _no_tiktoken_cache():
            if len(files) == 2:
                ranks = data_gym_to_mergeable_bpe_ranks(str(pair[0]), str(pair[1]))
            else:
                ranks = load_tiktoken_bpe(str(single))
        encoding = tiktoken.Encoding(name="gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                                     special_tokens={ENDOFTEXT: GPT2_EOT})
    except Exception as exc:  # malformed JSON, a merges file that does not match, unreadable bytes, ...
        first = str(exc).splitlines()[0][:120] if str(exc) else ""
        raise UserError(f"the BPE files in {folder} are not GPT-2's ({type(exc).__name__}: {first}); "
                        "point --tokenizer at the original encoder.json and vocab.bpe") from None
    if encoding.n_vocab != GPT2_EOT + 1:
        raise UserError(f"the BPE files in {folder} give {encoding.n_vocab} tokens, not GPT-2's {GPT2_EOT + 1}; "
                        "point --tokenizer at the original encoder.json and vocab.bpe")
    _ENCODINGS[key] = encoding
    return encoding


_BPE_URLS = {  # where tiktoken downloads GPT-2's files; its cache names each by the SHA-1 of its URL
    "encoder.json": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
    "vocab.bpe": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
}


def bpe_files(folder: str | os.PathLike | None = None) -> tuple[Path, Path] | None:
    """(encoder.json, vocab.bpe) from a folder, $GPT2LAB_TOKENIZER or tiktoken's cache; None if not on disk."""
    folder = folder or os.environ.get("GPT2LAB_TOKENIZER")
    if folder:
        pair = Path(folder) / "encoder.json", Path(folder) / "vocab.bpe"
    else:
        import hashlib
        import tempfile

        cache = Path(os.environ.get("TIKTOKEN_CACHE_DIR") or Path(tempfile.gettempdir()) / "data-gym-cache")
        pair = tuple(cache / hashlib.sha1(_BPE_URLS[n].encode()).hexdigest() for n in ("encoder.json", "vocab.bpe"))
    return pair if all(p.is_file() for p in pair) else None


def load_tokenizer(folder: str | os.PathLike | None = None) -> Tokenizer:
    """GPT-2's tokenizer from a local folder if given (or $GPT2LAB_TOKENIZER), else through tiktoken's cache."""
    folder = folder or os.environ.get("GPT2LAB_TOKENIZER")
    if folder:
        path = input_folder(Path(folder).expanduser(), "tokenizer folder", "pass a folder holding encoder.json and vocab.bpe")
        return Tokenizer(_from_folder(path), source=str(path.resolve()))
    import tiktoken

    try:
        encoding = tiktoken.get_encoding("gpt2")
    except Exception as exc:  # tiktoken raises requests/urllib errors of many kinds when offline
        raise UserError(
            "could not load GPT-2's BPE vocabulary (no network and no local copy: "
            f"{type(exc).__name__}); set TIKTOKEN_CACHE_DIR to a tiktoken cache, or pass --tokenizer DIR "
            "(or set GPT2LAB_TOKENIZER) to a folder holding encoder.json and vocab.bpe"
        ) from None
    cache = os.environ.get("TIKTOKEN_CACHE_DIR", "tiktoken's default cache")
    return Tokenizer(encoding, source=f"tiktoken:gpt2 ({cache})")


def check_fits(tokenizer: Tokenizer, vocab_size: int, what: str = "this model") -> None:
    """The tokenizer's ids must all be rows of the model's embedding."""
    if tokenizer.n_vocab > vocab_size:
        raise UserError(f"{what} has a vocabulary of {vocab_size} but the GPT-2 tokenizer has {tokenizer.n_vocab} tokens; "
                        "text can only be scored or sampled with a model trained on GPT-2 tokens (vocab_size >= 50257)")
