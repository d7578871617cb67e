"""`gpt2lab eval`: one checkpoint, any of three yardsticks (a prepared split, HellaSwag, a text file)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..checkpoint import load_model_from_checkpoint
from ..data.loader import Windows
from ..data.shards import check_vocab, read_meta
from ..errors import UserError
from ..files import input_file
from ..eval.hellaswag import encode_examples, evaluate_hellaswag, read_examples
from ..eval.perplexity import evaluate_loss, evaluate_text
from ..runtime import resolve_runtime
from ..tokenizer import check_fits, load_tokenizer
from ..progress import progress_bar


@dataclass
class EvalOptions:
    data: str | None = None
    split: str = "val"
    hellaswag: str | None = None
    limit: int | None = None
    text: str | None = None
    stride: int | None = None
    device: str = "auto"
    batch_size: int = 8
    max_batches: int | None = None
    tokenizer: str | None = None
    quiet: bool = False
    skip_hash: bool = False  # check the checkpoint's sizes only (huge checkpoints)
    tasks: str | None = None  # evaluations registered in eval/__init__.py, by name, comma-separated (need --data)


def read_text(path: str) -> str:
    """A UTF-8 file's text exactly as it is on disk: no newline translation (\\r\\n counts as two bytes)."""
    p = input_file(path, "text file", "pass a UTF-8 text file (save a stream to a file first)")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{p} is not UTF-8 text (byte {exc.start}: {exc.reason}); convert it to UTF-8 first") from None
    if not text.strip():
        raise UserError(f"{p} is empty; there is nothing to evaluate")
    return text


def _check(o: EvalOptions, block_size: int) -> None:
    if not 1 <= o.batch_size <= 65536:
        raise UserError(f"--batch-size must be between 1 and 65536, got {o.batch_size}")
    for name, value in (("--max-batches", o.max_batches), ("--limit", o.limit)):
        if value is not None and not value >= 1:
            raise UserError(f"{name} must be at least 1 (leave it out for all), got {value}")
    if o.stride is not None and not 1 <= o.stride <= block_size:
        raise UserError(f"--stride must be between 1 and the context length {block_size}, got {o.stride}")


def evaluate(checkpoint: str, options: EvalOptions) -> dict:
    """Val loss, HellaSwag and text perplexity of a checkpoint; running out of device memory is one line."""
    try:
        return _evaluate(checkpoint, options)
    except torch.OutOfMemoryError:
        raise UserError(f"out of memory on {options.device} while evaluating at --batch-size {options.batch_size}; "
                        "lower --batch-size, or pass --device cpu") from None


def _evaluate(checkpoint: str, options: EvalOptions) -> dict:
    o = options
    if not (o.data or o.hellaswag or o.text):
        raise UserError("nothing to evaluate: pass --data DATA_DIR, --hellaswag FILE and/or --text FILE")
    if o.tasks and not o.data:
        raise UserError("--tasks runs the registered evaluations on a data folder's validation split: pass --data")
    runtime = resolve_runtime(o.device)
    model, config, path = load_model_from_checkpoint(checkpoint, runtime.device, hashes=not o.skip_hash)
    _check(o, config.model.block_size)
    result: dict = {"checkpoint": str(path), "device": str(runtime.device), "precision": runtime.precision}
    rows = read_examples(o.hellaswag, o.limit) if o.hellaswag else None  # bad input fails before any work
    content = read_text(o.text) if o.text else None
    if o.data:
        result[o.split] = _data_loss(model, config, runtime, o)
    if o.tasks:
        result["tasks"] = registered(model, config, runtime, o)
    if rows or content:
        result.update(_tokenized(model, config, runtime, o, path, rows, content))
    return result


def registered(model, config, runtime, o: EvalOptions) -> dict:
    """The evaluations of eval/__init__.py named in --tasks, built and called exactly as the training loop does
    (the checkpoint's own settings, this data folder, --batch-size and --max-batches): one path for both."""
    from ..eval import EVALUATORS, build_evaluators

    names = [t.strip() for t in o.tasks.split(",") if t.strip()]
    cfg = config  # the checkpoint's own, freshly read: changed here for this evaluation only
    cfg.data.dir, cfg.eval.tasks, cfg.run.micro_batch = o.data, ",".join(n for n in names if n != "val"), o.batch_size
    cfg.eval.batches = o.max_batches
    if "hellaswag" in names:
        if not o.hellaswag:
            raise UserError("--tasks hellaswag needs --hellaswag FILE (the original hellaswag_val.jsonl)")
        cfg.eval.hellaswag_path, cfg.eval.hellaswag_every, cfg.eval.hellaswag_limit = o.hellaswag, 1, o.limit
    known = {e.name for e in EVALUATORS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UserError(f"--tasks names {unknown[0]!r}, which is not an evaluation of gpt2lab; choose from "
                        f"{', '.join(sorted(known))}")
    chosen = [e for e in build_evaluators(cfg, read_meta(o.data), lambda *_: None) if e.name in names]
    out: dict = {}
    for evaluator in chosen:
        out.update(evaluator(model, runtime))
    return out


def _data_loss(model, config, runtime, o: EvalOptions) -> dict:
    """Loss and perplexity on a prepared split, windowed and masked as the model was trained."""
    meta = read_meta(o.data)
    check_vocab(meta, config.model.vocab_size)
    eot = meta["tokenizer"].get("eot")
    windows = Windows(o.data, o.split, config.seq_len, config.data.align_documents, eot, max_token=config.model.vocab_size)
    doc_eot = eot if config.data.document_masking else None  # evaluate as the model was trained
    n = len(windows) if o.max_batches is None else min(len(windows), o.max_batches * o.batch_size)
    with progress_bar(math.ceil(n / o.batch_size), f"{o.split} loss", "batch", o.quiet) as bar:
        return evaluate_loss(model, windows, o.batch_size, runtime, o.max_batches, doc_eot,
                             loss_chunk=config.run.loss_chunk or runtime.loss_chunk, progress=bar.update)


def _tokenized(model, config, runtime, o: EvalOptions, path, rows, content) -> dict:
    """HellaSwag and a text file's perplexity: both need the tokenizer."""
    folder = o.tokenizer or (read_meta(o.data)["tokenizer"].get("folder") if o.data else None)
    tok = load_tokenizer(folder)
    check_fits(tok, config.model.vocab_size, f"the checkpoint {path}")
    result = {}
    if rows:
        examples = encode_examples(rows, tok)
        with progress_bar(len(examples), "hellaswag", "example", o.quiet) as bar:
            result["hellaswag"] = evaluate_hellaswag(model, examples, runtime, config.model.block_size, progress=bar.update)
    if content:
        with progress_bar(None, "text", "window", o.quiet) as bar:
            result["text"] = evaluate_text(model, content, tok, runtime, config.model.block_size, o.stride,
                                           progress=bar.update)
    return result
