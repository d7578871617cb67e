"""The `gpt2lab` command: argument parsing only. prepare, train, eval, sample and export hand their arguments to
the Python API (gpt2lab/api.py); the other subcommands to one function of a part (data, report, interop) or of
gpt2lab/commands/."""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import __version__
from .errors import UserError
from .recipes import PRESETS, RECIPES

TOKENIZER_HELP = ("folder with GPT-2's encoder.json + vocab.bpe (default: the data's, $GPT2LAB_TOKENIZER, else "
                  "tiktoken's cache)")


class Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (no usage block), exit code 2, like every gpt2lab error."""

    def error(self, message: str):
        where = self.prog.removeprefix("gpt2lab").strip()
        self.exit(2, f"gpt2lab: error: {where + ': ' if where else ''}{message}; see {self.prog} --help\n")


class Once(argparse.Action):
    """An option that may be given once: a second value is refused, not silently put in the first one's place."""

    def __call__(self, parser, namespace, values, option_string=None):
        if getattr(namespace, self.dest, None) is not None:
            parser.error(f"{option_string} was given twice; evaluate one file per run (or concatenate them)")
        setattr(namespace, self.dest, values)


def _catalogue() -> str:
    presets = "\n".join(f"  {name}" for name in PRESETS)
    recipes = "\n".join(f"  {name}: {entry['description']}" for name, entry in RECIPES.items())
    return f"presets (--preset):\n{presets}\n\nrecipes (--recipe):\n{recipes}"


def cmd_prepare(args) -> None:
    from . import api

    meta = api.prepare(args.inputs, out=args.out, val=args.val, val_fraction=args.val_fraction, seed=args.seed,
                       workers=args.workers, shard_tokens=args.shard_tokens, tokenizer=args.tokenizer,
                       text_field=args.text_field, overwrite=args.overwrite, quiet=args.quiet).meta
    for split, info in meta["splits"].items():
        print(f"{split}: {info['tokens']:,} tokens, {info['documents']:,} documents, {len(info['shards'])} shard(s)")
    print(f"split: {meta['split']['description']}")
    print(f"wrote {args.out} in {meta['prepare_seconds']:.1f} s")


def cmd_data_info(args) -> None:
    from .data.info import data_info, format_info

    info = data_info(args.data_dir, args.samples, args.sample_tokens, args.tokenizer)
    print(json.dumps(info) if args.json else format_info(info))


def cmd_train(args) -> int:
    from . import api

    def given(**values):
        return {k: v for k, v in values.items() if v is not None}

    sections = {
        "run": given(micro_batch=args.micro_batch, auto_batch=True if args.auto_batch else None, threads=args.threads,
                     stop_at_step=args.stop_at),
        "eval": given(every=args.eval_every), "checkpoint": given(every=args.checkpoint_every),
        "log": given(profile_steps=args.profile),
    }
    result = api.train(args.preset, out=args.out, data=args.data, recipe=args.recipe, config_file=args.config,
                       sets=args.set, max_steps=args.max_steps, time_budget=args.time_budget, device=args.device,
                       seed=args.seed, resume=args.resume, init_from=args.init_from,
                       **{k: v for k, v in sections.items() if v})
    if result.checkpoint:
        print(f"checkpoint: {result.checkpoint}")
    return {"SIGINT": 130, "SIGTERM": 143}.get(result.stopped_by, 0)


def cmd_eval(args) -> None:
    from . import api

    _skipping_hash(args)
    result = api.evaluate(args.checkpoint, data=args.data, split=args.split, hellaswag=args.hellaswag, limit=args.limit,
                          text=args.text, stride=args.stride, device=args.device, batch_size=args.batch_size,
                          max_batches=args.max_batches, tokenizer=args.tokenizer, quiet=args.quiet,
                          skip_hash=args.skip_hash, tasks=args.tasks)
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
    if "tasks" in result:
        print("tasks: " + " | ".join(f"{k} {v:.4f}" for k, v in result["tasks"].items()))


def cmd_export(args) -> None:
    from . import api

    _skipping_hash(args)
    info = api.export(args.checkpoint, out=args.out, tokenizer=args.tokenizer, skip_hash=args.skip_hash)
    tokenizer = "with tokenizer files" if info["tokenizer"] else "without tokenizer files (none found; pass --tokenizer DIR)"
    print(f"wrote {info['architecture']} to {info['out']} {tokenizer}")


def cmd_import(args) -> None:
    from .interop.hf import import_hf

    info = import_hf(args.hf_dir, args.out)
    print(f"imported {info['architecture']} ({info['parameters']:,} parameters) into {info['out']}")


def cmd_sample(args) -> None:
    from . import api

    _skipping_hash(args)
    texts = api.sample(args.checkpoint, args.prompt, device=args.device, tokenizer=args.tokenizer,
                       skip_hash=args.skip_hash, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                       top_k=args.top_k, top_p=args.top_p, seed=args.seed, num_samples=args.num_samples)
    texts = texts if isinstance(texts, list) else [texts]
    for i, text in enumerate(texts):
        if len(texts) > 1:
            print(f"--- sample {i + 1} ---")
        print(args.prompt + text)


def cmd_plan(args) -> None:
    from .commands.plan import format_plan, make_plan
    from .config import build_config
    from .metrics.devices import require_gpu

    cfg = build_config(recipe=args.recipe, preset=args.preset if args.preset or args.recipe else "gpt2-124m", sets=args.set)
    micro = args.micro_batch or cfg.run.micro_batch
    result = make_plan(cfg.model, require_gpu(args.gpu), args.tokens, micro, cfg.seq_len,
                       args.precision or cfg.run.precision,
                       args.mfu, args.price, cfg.optim.name, cfg.run.compile)
    print(json.dumps(result) if args.json else format_plan(result))


def cmd_report(args) -> None:
    from .report import write_report

    info = write_report(args.run_dir, overlap_check=not args.no_overlap_check)
    print(f"wrote {info['report']} and {len(info['plots'])} plot(s){info['plot_note']}")
    print(f"findings: {', '.join(info['findings']) if info['findings'] else 'none'}")


def cmd_thin(args) -> None:
    from .commands.thin import thin_run

    info = thin_run(args.run_dir, keep=args.keep)
    kept = f"; kept the training state of {', '.join(info['kept'])}" if info["kept"] else ""
    print(f"thinned {len(info['thinned'])} checkpoint(s) to their weights, freeing {info['freed_bytes'] / 2**20:,.0f} MiB{kept}")
    for name, why in info["skipped"].items():
        print(f"warning: {name} left as it is: {why}", file=sys.stderr)


def cmd_compare(args) -> None:
    from .report.compare import compare_runs

    info = compare_runs(args.run_dirs, args.out, args.names)
    print(info["table"])
    print(f"wrote {info['png']} and {info['markdown']}")


def cmd_bench(args) -> None:
    from .commands.bench import BenchOptions, run_bench

    options = BenchOptions(preset=args.preset, micro_batch=args.micro_batch, seq_len=args.seq_len, steps=args.steps,
                           rounds=args.rounds, warmup=args.warmup, device=args.device, precision=args.precision,
                           compile=args.compile, loss_chunk=args.loss_chunk,
                           contenders=tuple(args.contender or ("gpt2lab", "gpt2lab-fp32", "hf", "hf-matched")),
                           save=args.save, threads=args.threads, reprobe=args.reprobe)
    report = run_bench(options)
    if report.get("path"):
        print(f"wrote {report['path']}")


def cmd_selftest(args) -> int:
    from .commands.selftest import run_selftest

    return run_selftest(args.device)


def cmd_demo(args) -> None:
    from .commands.demo import run_demo

    run_demo(args.out, args.max_steps, args.device, args.tokenizer)


def _add_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="tokenize text into train/val token shards", formatter_class=FORMAT,
                       description="Tokenize plain text (.txt), JSON lines with a text field (.jsonl), plain, "
                                   ".gz or .xz, Parquet, and Hugging Face datasets (hf:NAME[:CONFIG], streamed) into "
                                   "uint16 token shards (llm.c's .bin layout) plus meta.json. The validation split "
                                   "takes whole documents (or the dataset's own validation split, or --val files). "
                                   "Rerunning an interrupted prepare resumes it.")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="files, folders, glob patterns, or hf:NAME[:CONFIG] (e.g. hf:HuggingFaceFW/fineweb-edu:sample-10BT)")
    p.add_argument("--out", required=True, help="the data directory to write")
    p.add_argument("--val", nargs="+", metavar="FILE", help="inputs that are validation only: none of their text trains")
    p.add_argument("--val-fraction", type=float, default=None,
                   help="share of the inputs' documents held out for validation (default 0.1; 0 with --val)")
    p.add_argument("--workers", type=int, default=1, help="tokenizer processes (default 1)")
    p.add_argument("--shard-tokens", type=int, default=100_000_000, help="tokens per shard (default 100,000,000)")
    p.add_argument("--seed", type=int, default=1337, help="seed for choosing validation documents (default 1337)")
    p.add_argument("--text-field", default="text", help="the JSON / Parquet field that holds the text (default text)")
    p.add_argument("--tokenizer", help=TOKENIZER_HELP)
    p.add_argument("--overwrite", action="store_true", help="replace the files of an earlier prepare in --out (only those)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("data-info", help="what a prepared data directory holds, checked, with decoded samples",
                       formatter_class=FORMAT)
    p.add_argument("data_dir", help="a directory written by `gpt2lab prepare`")
    p.add_argument("--samples", type=int, default=3, help="random training windows to decode (0: none; default 3)")
    p.add_argument("--sample-tokens", type=int, default=48, help="tokens per decoded window (default 48)")
    p.add_argument("--tokenizer", help=TOKENIZER_HELP)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_data_info)


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model", formatter_class=FORMAT, epilog=_catalogue(),
                       description="Train a GPT. Config layers: defaults < --recipe < --preset < --config FILE "
                                   "< --set key=value < flags. A resumed run starts from its own saved config.")
    p.add_argument("--preset", help="a model preset (below)")
    p.add_argument("--recipe", help="a named whole run (below)")
    p.add_argument("--data", help="data directory written by `gpt2lab prepare`")
    p.add_argument("--out", required=True, help="run directory (metrics.jsonl, checkpoints, config.json)")
    p.add_argument("--config", help="TOML, YAML or JSON file with [model], [data], [optim], [schedule], [run], [eval], "
                                    "[checkpoint], [guard], [log]")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one setting (repeatable); none/off for an optional one")
    p.add_argument("--max-steps", type=int, help="optimizer steps in the run (schedule.max_steps; default 1000)")
    p.add_argument("--time-budget", metavar="DURATION",
                   help="end the run, LR decay included, after this long (e.g. 2h, 90m); max-steps becomes a cap")
    p.add_argument("--eval-every", type=int, help="steps between validation passes (eval.every; default 250)")
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (checkpoint.every; default 1000)")
    p.add_argument("--micro-batch", type=int, help="sequences per forward pass (run.micro_batch; default 8)")
    p.add_argument("--threads", type=int, help="CPU threads (run.threads; default one per core; 1 on a busy "
                   "shared machine is often faster)")
    p.add_argument("--seed", type=int, help="run.seed (default 1337)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (never a silent fallback; default auto)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    p.add_argument("--stop-at", type=int, metavar="STEP", help="pause after this step with a checkpoint "
                   "(run.stop_at_step); the schedule still ends at --max-steps, and --resume goes on from there")
    p.add_argument("--auto-batch", action="store_true", help="find the largest micro-batch that fits the GPU")
    p.add_argument("--profile", type=int, metavar="N", help="write a torch.profiler trace of N steps to RUN_DIR/profile")
    p.add_argument("--init-from", metavar="CHECKPOINT", help="start from these weights (fine-tuning; e.g. from `gpt2lab import`)")
    p.set_defaults(func=cmd_train)


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="val loss, HellaSwag and text perplexity of a checkpoint", formatter_class=FORMAT,
                       description="Evaluate a checkpoint on a prepared split (--data), HellaSwag (--hellaswag) "
                                   "and/or any UTF-8 text (--text). With --json the last line of stdout is one JSON object.")
    p.add_argument("checkpoint", help="a checkpoint folder or a run directory (its latest checkpoint)")
    p.add_argument("--data", help="data directory written by `gpt2lab prepare`: loss and perplexity on --split")
    p.add_argument("--split", default="val", choices=["val", "train"], help="which split of --data (default val)")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass (default 8)")
    p.add_argument("--max-batches", type=int, default=None, help="evaluate only this many batches (default: all)")
    p.add_argument("--hellaswag", metavar="FILE", help="the original hellaswag_val.jsonl: acc and acc_norm")
    p.add_argument("--limit", type=int, default=None, help="HellaSwag: only the first N examples (default: all)")
    p.add_argument("--text", metavar="FILE", action=Once, help="a UTF-8 text file: loss, perplexity, bits per byte")
    p.add_argument("--stride", type=int, default=None, help="text: slide windows by this many tokens (default: the context)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--tokenizer", help=TOKENIZER_HELP)
    p.add_argument("--tasks", help="registered evaluations by name, comma-separated, run as training runs them "
                   "(with --data): val, token_accuracy, hellaswag (with --hellaswag)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--skip-hash", action="store_true", help=SKIP_HASH_HELP)
    p.set_defaults(func=cmd_eval)


SKIP_HASH_HELP = ("check the checkpoint's file sizes against its manifest but not their SHA-256 (faster for huge "
                  "checkpoints; by default both are checked)")


def _skipping_hash(args) -> None:
    if args.skip_hash:
        print("note: --skip-hash: the checkpoint's SHA-256s are not checked, only its file sizes", file=sys.stderr)


def _add_interop(sub) -> None:
    p = sub.add_parser("export", help="write a checkpoint as a Hugging Face transformers model folder", formatter_class=FORMAT)
    p.add_argument("checkpoint", help="a checkpoint folder or a run directory (its latest checkpoint)")
    p.add_argument("--format", default="hf", choices=["hf"], help="hf: safetensors + config for from_pretrained (default)")
    p.add_argument("--out", required=True, help="the folder to write (new or empty)")
    p.add_argument("--tokenizer", help=TOKENIZER_HELP)
    p.add_argument("--skip-hash", action="store_true", help=SKIP_HASH_HELP)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import", help="turn a transformers GPT-2 folder into a gpt2lab checkpoint", formatter_class=FORMAT)
    p.add_argument("hf_dir", help="a folder saved by transformers (gpt2, gpt2-medium, gpt2-large, gpt2-xl, ...)")
    p.add_argument("--out", required=True, help="the checkpoint folder to write (new or empty)")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("sample", help="generate text from a checkpoint", formatter_class=FORMAT)
    p.add_argument("checkpoint", help="a checkpoint folder or a run directory (its latest checkpoint)")
    p.add_argument("--prompt", default="", help="text to continue (default: a new document)")
    p.add_argument("--max-new-tokens", type=int, default=100, help="default 100")
    p.add_argument("--temperature", type=float, default=0.8, help="0 means greedy (default 0.8)")
    p.add_argument("--top-k", type=int, default=50, help="0 turns top-k off (default 50)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold (default 1.0: off)")
    p.add_argument("--seed", type=int, help="for reproducible samples (default: random)")
    p.add_argument("--num-samples", type=int, default=1, help="default 1")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--tokenizer", help=TOKENIZER_HELP)
    p.add_argument("--skip-hash", action="store_true", help=SKIP_HASH_HELP)
    p.set_defaults(func=cmd_sample)


def _add_tools(sub, command: str | None) -> None:
    gpus = ""
    if command == "plan":  # the GPU table is in metrics/: loaded only for the command that lists it
        from .metrics.devices import GPUS

        gpus = " GPUs: " + ", ".join(g.key for g in GPUS)
    p = sub.add_parser("plan", help="memory, time and cost of a run on a GPU, before you start it", formatter_class=FORMAT,
                       description="Estimate parameters, FLOPs per token, memory (with and without activation "
                                   "checkpointing), the largest micro-batch that fits, tokens/s at a stated MFU, "
                                   "wall time and cost." + gpus)
    p.add_argument("--preset", help="a model preset (default gpt2-124m)")
    p.add_argument("--recipe", help="a named run (its model, micro-batch and optimizer)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a setting")
    p.add_argument("--gpu", required=True, help="e.g. rtx4090, h100-sxm, a100, rtx4050-laptop")
    p.add_argument("--tokens", type=float, required=True, help="training tokens, e.g. 10e9")
    p.add_argument("--micro-batch", type=int, help="sequences per forward pass (default: the config's)")
    p.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"],
                   help="default: the config's run.precision (auto: bf16 where the GPU has it, else fp16, as a run picks)")
    p.add_argument("--mfu", type=float, default=0.4, help="assumed model FLOPs utilisation (default 0.4)")
    p.add_argument("--price", type=float, help="dollars per GPU-hour, for the cost")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("report", help="plots, a lab-notebook report.md and a diagnosis of a run", formatter_class=FORMAT)
    p.add_argument("run_dir", help="a run directory")
    p.add_argument("--no-overlap-check", action="store_true", help="skip the validation/training overlap scan")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("thin", help="reduce a run's older checkpoints to their weights (about a third of the disk)",
                       formatter_class=FORMAT,
                       description="Drop the training state (optimizer moments, RNG, data position) of every checkpoint "
                                   "of RUN_DIR but the newest --keep. Thinned checkpoints still serve eval, sample, "
                                   "export and --init-from; --resume continues from the newest one that was kept whole. "
                                   "Refused while the run is being trained.")
    p.add_argument("run_dir", help="a run directory")
    p.add_argument("--keep", type=int, default=1, help="how many of the newest checkpoints keep their training state "
                                                       "(default 1: the run can be resumed)")
    p.set_defaults(func=cmd_thin)

    p = sub.add_parser("compare", help="val loss of several runs against tokens and time: one PNG and a table",
                       formatter_class=FORMAT)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories; the first is the reference")
    p.add_argument("--out", help="folder for compare.png and compare.md (default: compare-FIRST_RUN here)")
    p.add_argument("--names", nargs="+", help="a label per run (default: the folder names)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("bench", help="training tokens/s and MFU of gpt2lab and HF transformers, interleaved in one run",
                       formatter_class=FORMAT)
    p.add_argument("--preset", default="gpt2-124m", help="default gpt2-124m")
    p.add_argument("--micro-batch", type=int, default=16, help="default 16")
    p.add_argument("--seq-len", type=int, default=None, help="default: the preset's context")
    p.add_argument("--steps", type=int, default=5, help="timed steps per round (default 5)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps after the first (default 2)")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"], help="gpt2lab's (default auto)")
    p.add_argument("--compile", default="auto", choices=["auto", "on", "off"], help="gpt2lab's (default auto)")
    p.add_argument("--loss-chunk", type=int, default=None, help="gpt2lab: chunked head loss (tokens per chunk)")
    p.add_argument("--contender", action="append", default=None,
                   help="gpt2lab, gpt2lab-fp32, hf and/or hf-matched (repeatable; default all four)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--reprobe", action="store_true", help="CPU: measure the matmul peak behind MFU afresh, not from the cache")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--save", metavar="DIR", help="also write the result as JSON into DIR (e.g. bench/results)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("selftest", help="the first command on a new machine: train, resume, eval, sample, export and "
                       "speed checks on this device, PASS/FAIL each", formatter_class=FORMAT)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.set_defaults(func=cmd_selftest)

    p = sub.add_parser("demo", help="the whole pipeline in about a minute, on a corpus that ships with Python",
                       formatter_class=FORMAT)
    p.add_argument("--out", default="runs/demo", help="folder for the corpus, data and run (default runs/demo)")
    p.add_argument("--max-steps", type=int, default=30, help="default 30")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--tokenizer", help=TOKENIZER_HELP)
    p.set_defaults(func=cmd_demo)


FORMAT = argparse.RawDescriptionHelpFormatter


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = Parser(prog="gpt2lab", description="Pretrain GPT-2-class language models from scratch.")
    parser.add_argument("--version", action="version", version=f"gpt2lab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    _add_prepare(sub)
    _add_train(sub)
    _add_eval(sub)
    _add_interop(sub)
    _add_tools(sub, command)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    for stream in (sys.stdout, sys.stderr):  # a path with a byte that is not UTF-8 must not crash a print
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    try:
        return args.func(args) or 0
    except UserError as exc:
        print(f"gpt2lab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gpt2lab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of our output (head, less) went away: no traceback for that
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the flush at exit would fail again
        return 1
