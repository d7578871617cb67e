"""The `gpt2lab` command: argument parsing only. Each subcommand hands its arguments to one function."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from .errors import UserError
from .metrics.devices import GPUS
from .recipes import PRESETS, RECIPES

TOKENIZER_HELP = "folder with GPT-2's encoder.json + vocab.bpe (default: $GPT2LAB_TOKENIZER, else tiktoken's cache)"


def _catalogue() -> str:
    presets = "\n".join(f"  {name}" for name in PRESETS)
    recipes = "\n".join(f"  {name}: {entry['description']}" for name, entry in RECIPES.items())
    return f"presets (--preset):\n{presets}\n\nrecipes (--recipe):\n{recipes}"


def cmd_prepare(args) -> None:
    from .data.prepare import PrepareOptions, prepare

    opts = PrepareOptions(
        val_fraction=args.val_fraction, seed=args.seed, workers=args.workers, shard_tokens=args.shard_tokens,
        tokenizer=args.tokenizer, overwrite=args.overwrite, quiet=args.quiet,
    )
    meta = prepare(args.inputs, args.out, opts)
    for split, info in meta["splits"].items():
        print(f"{split}: {info['tokens']:,} tokens, {info['documents']:,} documents, {len(info['shards'])} shard(s)")
    print(f"split: {meta['split']['description']}")
    print(f"wrote {args.out} in {meta['prepare_seconds']:.1f} s")


def cmd_data_info(args) -> None:
    from .data.info import data_info, format_info
    from .tokenizer import load_tokenizer

    tokenizer = None
    if args.samples:
        try:
            tokenizer = load_tokenizer(args.tokenizer)
        except UserError as exc:
            print(f"note: no decoded samples ({exc})", file=sys.stderr)
    info = data_info(args.data_dir, args.samples, args.sample_tokens, tokenizer)
    print(json.dumps(info) if args.json else format_info(info))


def cmd_train(args) -> None:
    from .config import build_config
    from .train.trainer import Trainer

    flags = {
        "data": {"dir": args.data} if args.data else {},
        "schedule": {"max_steps": args.max_steps} if args.max_steps is not None else {},
        "run": {k: v for k, v in {
            "eval_every": args.eval_every, "checkpoint_every": args.checkpoint_every, "seed": args.seed,
            "device": args.device, "micro_batch": args.micro_batch, "profile_steps": args.profile,
            "auto_batch": True if args.auto_batch else None,
        }.items() if v is not None},
    }
    base, model = None, None
    saved = Path(args.out) / "config.json"
    if args.resume and saved.is_file():
        base = json.loads(saved.read_text())  # a resumed run keeps its own config unless told otherwise
    elif args.init_from:
        from .train.checkpoint import load_config, resolve_checkpoint

        model = dataclasses.asdict(load_config(resolve_checkpoint(args.init_from)).model)
    cfg = build_config(base=base, recipe=args.recipe, preset=args.preset, model=model, file=args.config,
                       sets=args.set, flags=flags)
    result = Trainer(cfg, args.out, resume=args.resume, init_from=args.init_from).fit()
    if result["checkpoint"]:
        print(f"checkpoint: {result['checkpoint']}")
    return {"SIGINT": 130, "SIGTERM": 143}.get(result["stopped_by"], 0)


def cmd_eval(args) -> None:
    from .eval.run import evaluate

    result = evaluate(args.checkpoint, args.data, args.split, args.hellaswag, args.limit, args.text, args.stride,
                      args.device, args.batch_size, args.max_batches, args.tokenizer)
    if args.json:
        print(json.dumps(result))
        return
    print(f"checkpoint: {result['checkpoint']}")
    if args.split in result:
        r = result[args.split]
        print(f"{args.split} ({args.data}): {r['tokens']:,} tokens | loss {r['loss']:.4f} | perplexity {r['perplexity']:.2f}")
    if "hellaswag" in result:
        r = result["hellaswag"]
        print(f"hellaswag: {r['examples']:,} examples | acc {r['acc']:.4f} | acc_norm {r['acc_norm']:.4f} | {r['seconds']:.1f} s")
    if "text" in result:
        r = result["text"]
        print(f"text ({args.text}): {r['tokens']:,} tokens | loss {r['loss']:.4f} | perplexity {r['perplexity']:.2f} "
              f"| {r['bits_per_byte']:.4f} bits/byte | stride {r['stride']}")


def cmd_export(args) -> None:
    from .interop.hf import export_hf

    info = export_hf(args.checkpoint, args.out, args.tokenizer)
    tokenizer = "with tokenizer files" if info["tokenizer"] else "without tokenizer files (none found; pass --tokenizer DIR)"
    print(f"wrote {info['architecture']} to {info['out']} {tokenizer}")


def cmd_import(args) -> None:
    from .interop.hf import import_hf

    info = import_hf(args.hf_dir, args.out)
    print(f"imported {info['architecture']} ({info['parameters']:,} parameters) into {info['out']}")


def cmd_sample(args) -> None:
    from .sampling import sample_text

    texts = sample_text(
        args.checkpoint, args.prompt, args.max_new_tokens, args.temperature, args.top_k, args.top_p,
        args.seed, args.num_samples, args.device, args.tokenizer,
    )
    for i, text in enumerate(texts):
        if len(texts) > 1:
            print(f"--- sample {i + 1} ---")
        print(args.prompt + text)


def cmd_plan(args) -> None:
    from .config import build_config
    from .metrics.devices import require_gpu
    from .plan import format_plan, make_plan

    cfg = build_config(recipe=args.recipe, preset=args.preset if args.preset or args.recipe else "gpt2-124m", sets=args.set)
    micro = args.micro_batch or cfg.run.micro_batch
    result = make_plan(cfg.model, require_gpu(args.gpu), args.tokens, micro, cfg.seq_len, args.precision,
                       args.mfu, args.price)
    print(json.dumps(result) if args.json else format_plan(result))


def cmd_report(args) -> None:
    from .report import write_report

    info = write_report(args.run_dir, overlap_check=not args.no_overlap_check)
    print(f"wrote {info['report']} and {len(info['plots'])} plot(s)")
    print(f"findings: {', '.join(info['findings']) if info['findings'] else 'none'}")


def cmd_bench(args) -> None:
    from .metrics.benchmark import run_bench

    report = run_bench(args.preset, args.micro_batch, args.steps, args.warmup, args.compile, args.device,
                       tuple(args.impl or ("gpt2lab", "hf-transformers")), args.seq_len, args.out or None, args.loss_chunk)
    if "speedup_vs_hf" in report:
        print(f"gpt2lab / hf-transformers tokens/s: {report['speedup_vs_hf']:.2f}x on {report['device']}")
    if report.get("path"):
        print(f"wrote {report['path']}")


def cmd_demo(args) -> None:
    from .demo import run_demo

    run_demo(args.out, args.max_steps, args.device, args.tokenizer)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpt2lab", description="Pretrain GPT-2-class language models from scratch.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fmt = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser("prepare", help="tokenize text into train/val token shards", formatter_class=fmt,
                       description="Tokenize plain text (.txt), JSON lines with a 'text' field (.jsonl), plain, "
                                   ".gz or .xz, Parquet, and Hugging Face datasets (hf:NAME[:CONFIG], streamed) into "
                                   "uint16 token shards (llm.c's .bin layout) plus meta.json. The validation split "
                                   "takes whole documents (or the dataset's own validation split). Rerunning an "
                                   "interrupted prepare resumes it.")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="files, folders, glob patterns, or hf:NAME[:CONFIG] (e.g. hf:HuggingFaceFW/fineweb-edu:sample-10BT)")
    p.add_argument("--out", required=True, help="the data directory to write")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of documents held out (default 0.1)")
    p.add_argument("--workers", type=int, default=1, help="tokenizer processes (default 1)")
    p.add_argument("--shard-tokens", type=int, default=100_000_000, help="tokens per shard (default 1e8)")
    p.add_argument("--seed", type=int, default=1337, help="seed for choosing validation documents")
    p.add_argument("--tokenizer", help=TOKENIZER_HELP)
    p.add_argument("--overwrite", action="store_true", help="replace an existing data directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("data-info", help="what a prepared data directory holds, checked, with decoded samples")
    p.add_argument("data_dir", help="a directory written by `gpt2lab prepare`")
    p.add_argument("--samples", type=int, default=3, help="random training windows to decode (0: none)")
    p.add_argument("--sample-tokens", type=int, default=48)
    p.add_argument("--tokenizer", help=TOKENIZER_HELP)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_data_info)

    p = sub.add_parser("train", help="train a model", formatter_class=fmt, epilog=_catalogue(),
                       description="Train a GPT. Config layers: defaults < --recipe < --preset < --config FILE "
                                   "< --set key=value < flags.")
    p.add_argument("--preset", help="a model preset (below)")
    p.add_argument("--recipe", help="a named whole run (below)")
    p.add_argument("--data", help="data directory written by `gpt2lab prepare`")
    p.add_argument("--out", required=True, help="run directory (metrics.jsonl, checkpoints, config.json)")
    p.add_argument("--config", help="TOML, YAML or JSON file with [model], [data], [optim], [schedule], [run]")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override one setting (repeatable)")
    p.add_argument("--max-steps", type=int, help="optimizer steps in the run (schedule.max_steps)")
    p.add_argument("--eval-every", type=int, help="steps between validation passes")
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints")
    p.add_argument("--micro-batch", type=int, help="sequences per forward pass (run.micro_batch)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (cuda never falls back to the CPU)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    p.add_argument("--auto-batch", action="store_true", help="find the largest micro-batch that fits the GPU")
    p.add_argument("--profile", type=int, metavar="N", help="write a torch.profiler trace of N steps to RUN_DIR/profile")
    p.add_argument("--init-from", metavar="CHECKPOINT", help="start from these weights (fine-tuning; e.g. from `gpt2lab import`)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="val loss, HellaSwag and text perplexity of a checkpoint",
                       description="Evaluate a checkpoint on a prepared split (--data), HellaSwag (--hellaswag) "
                                   "and/or any UTF-8 text (--text). With --json the last line of stdout is one JSON object.")
    p.add_argument("checkpoint", help="a checkpoint folder or a run directory (its latest checkpoint)")
    p.add_argument("--data", help="data directory written by `gpt2lab prepare`: loss and perplexity on --split")
    p.add_argument("--split", default="val", choices=["val", "train"])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-batches", type=int, default=0, help="0: every window of the split")
    p.add_argument("--hellaswag", metavar="FILE", help="the original hellaswag_val.jsonl: acc and acc_norm")
    p.add_argument("--limit", type=int, default=0, help="HellaSwag: only the first N examples")
    p.add_argument("--text", metavar="FILE", help="a UTF-8 text file: loss, perplexity, bits per byte")
    p.add_argument("--stride", type=int, default=0, help="text: slide windows by this many tokens (default: the context, no overlap)")
    p.add_argument("--device", default="auto")
    p.add_argument("--tokenizer", help=TOKENIZER_HELP)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("export", help="write a checkpoint as a Hugging Face transformers model folder")
    p.add_argument("checkpoint", help="a checkpoint folder or a run directory (its latest checkpoint)")
    p.add_argument("--format", default="hf", choices=["hf"], help="hf: safetensors + config for from_pretrained")
    p.add_argument("--out", required=True, help="the folder to write")
    p.add_argument("--tokenizer", help=TOKENIZER_HELP)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import", help="turn a transformers GPT-2 folder into a gpt2lab checkpoint")
    p.add_argument("hf_dir", help="a folder saved by transformers (gpt2, gpt2-medium, gpt2-large, gpt2-xl, ...)")
    p.add_argument("--out", required=True, help="the checkpoint folder to write")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("sample", help="generate text from a checkpoint")
    p.add_argument("checkpoint", help="a checkpoint folder or a run directory (its latest checkpoint)")
    p.add_argument("--prompt", default="", help="text to continue (default: a new document)")
    p.add_argument("--max-new-tokens", type=int, default=100)
    p.add_argument("--temperature", type=float, default=0.8, help="0 means greedy")
    p.add_argument("--top-k", type=int, default=50, help="0 turns top-k off")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int)
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--tokenizer", help=TOKENIZER_HELP)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("plan", help="memory, time and cost of a run on a GPU, before you start it",
                       description="Estimate parameters, FLOPs per token, memory (with and without activation "
                                   "checkpointing), the largest micro-batch that fits, tokens/s at a stated MFU, "
                                   "wall time and cost. GPUs: " + ", ".join(g.key for g in GPUS))
    p.add_argument("--preset", help="a model preset (default gpt2-124m)")
    p.add_argument("--recipe", help="a named run (its model and micro-batch)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a setting")
    p.add_argument("--gpu", required=True, help="e.g. rtx4090, h100-sxm, a100, rtx4050-laptop")
    p.add_argument("--tokens", type=float, required=True, help="training tokens, e.g. 10e9")
    p.add_argument("--micro-batch", type=int, help="sequences per forward pass (default: the config's)")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "fp32"])
    p.add_argument("--mfu", type=float, default=0.4, help="assumed model FLOPs utilisation (default 0.4)")
    p.add_argument("--price", type=float, help="dollars per GPU-hour, for the cost")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("report", help="plots, a lab-notebook report.md and a diagnosis of a run")
    p.add_argument("run_dir", help="a run directory")
    p.add_argument("--no-overlap-check", action="store_true", help="skip the validation/training overlap scan")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("bench", help="training tokens/s and MFU of gpt2lab and HF transformers, in one run")
    p.add_argument("--preset", default="gpt2-124m")
    p.add_argument("--micro-batch", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=0, help="default: the preset's context")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="torch.compile both models")
    p.add_argument("--loss-chunk", type=int, default=0, help="gpt2lab: chunked head loss (tokens per chunk)")
    p.add_argument("--impl", action="append", default=None, help="gpt2lab and/or hf-transformers (default both)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="bench/results", help="folder for the JSON result ('' to skip)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("demo", help="the whole pipeline in about a minute, on a corpus that ships with Python")
    p.add_argument("--out", default="runs/demo", help="folder for the corpus, data and run (default runs/demo)")
    p.add_argument("--max-steps", type=int, default=30)
    p.add_argument("--device", default="auto")
    p.add_argument("--tokenizer", help=TOKENIZER_HELP)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except UserError as exc:
        print(f"gpt2lab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gpt2lab: interrupted", file=sys.stderr)
        return 130
