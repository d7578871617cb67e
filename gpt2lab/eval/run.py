"""`gpt2lab eval`: one checkpoint, any of three yardsticks (a prepared split, HellaSwag, a text file)."""

from __future__ import annotations

from pathlib import Path

from ..data.loader import Windows
from ..data.shards import read_meta
from ..errors import UserError
from ..runtime import resolve_runtime
from ..tokenizer import load_tokenizer
from ..train.checkpoint import load_model_from_checkpoint
from ..train.trainer import check_data_fits
from .hellaswag import encode_examples, evaluate_hellaswag, read_examples
from .perplexity import evaluate_loss, evaluate_text


def read_text(path: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"text file {p} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{p} is not UTF-8 text (byte {exc.start}: {exc.reason}); convert it to UTF-8 first") from None
    if not text.strip():
        raise UserError(f"{p} is empty; there is nothing to evaluate")
    return text


def evaluate(checkpoint: str, data: str | None = None, split: str = "val", hellaswag: str | None = None,
             limit: int = 0, text: str | None = None, stride: int = 0, device: str = "auto", batch_size: int = 8,
             max_batches: int = 0, tokenizer: str | None = None) -> dict:
    if not (data or hellaswag or text):
        raise UserError("nothing to evaluate: pass --data DATA_DIR, --hellaswag FILE and/or --text FILE")
    runtime = resolve_runtime(device)
    model, config, path = load_model_from_checkpoint(checkpoint, runtime.device)
    result: dict = {"checkpoint": str(path), "device": str(runtime.device)}
    if data:
        meta = read_meta(data)
        check_data_fits(config, meta)
        eot = meta.get("tokenizer", {}).get("eot")
        windows = Windows(data, split, config.seq_len, config.data.align_documents, eot)
        doc_eot = eot if config.data.document_masking else None  # evaluate as the model was trained
        result[split] = evaluate_loss(model, windows, batch_size, runtime, max_batches, doc_eot)
    if hellaswag or text:
        rows = read_examples(hellaswag, limit) if hellaswag else None  # bad input fails before any work
        content = read_text(text) if text else None
        if text and not 0 <= stride <= config.model.block_size:
            raise UserError(f"--stride must be between 1 and the context length {config.model.block_size}")
        tok = load_tokenizer(tokenizer)
        if rows:
            examples = encode_examples(rows, tok)
            result["hellaswag"] = evaluate_hellaswag(model, examples, runtime, config.model.block_size)
        if content:
            result["text"] = evaluate_text(model, content, tok, runtime, config.model.block_size, stride)
    return result
