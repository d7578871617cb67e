"""`gpt2lab bench`: training throughput of gpt2lab against Hugging Face transformers, in one process, trusted on a
noisy machine.

Contenders (random tokens: the benchmark measures the model and the step, not the data):
  gpt2lab          gpt2lab's defaults on this device: its precision and compile choice ("auto"), its training
                   step (fused AdamW, clipping, the on-device guard), run.loss_chunk if given
  gpt2lab-fp32     the same step in fp32, eager: what gpt2lab did before precision and compile were "auto"
  hf               transformers' model of the same configuration (GPT2LMHeadModel; Llama/Qwen3 for modern
                   presets), sdpa attention, as a user gets it: fp32 eager, torch's default AdamW
  hf-matched       the same model at gpt2lab's precision and compile setting, with fused AdamW
Every contender is built and warmed up first (compile time measured then, and reported only when compiling);
then the timed steps run in interleaved rounds, so that a noisy neighbour slows all contenders alike. Each
contender's tokens/s is the median over rounds, with its spread ((max - min) / median); a spread above 10% is
warned about, and so is a VM whose hypervisor took over 5% of its CPU time while timing (steal, on Linux).
MFU is against the device's peak for the precision used: the GPU table, or the CPU's measured matmul peak.
Results go to a JSON file only with --save DIR.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from ..config import build_config
from ..errors import UserError
from ..files import absolute, write_json_atomic
from ..metrics.cpu_peak import cpu_peak_flops
from ..metrics.devices import device_peak_flops
from ..metrics.flops import flops_per_token
from ..metrics.steal import cpu_ticks, steal_share
from ..model import GPT
from ..runtime import Runtime, resolve_runtime
from ..training.guards import LossGuard
from ..training.optim import build_optimizer
from ..training.step import StepParts, train_step

CONTENDERS = ("gpt2lab", "gpt2lab-fp32", "hf", "hf-matched")
SPREAD_WARNING = 0.10
STEAL_WARNING = 0.05


@dataclass
class BenchOptions:
    preset: str = "gpt2-124m"
    micro_batch: int = 16
    seq_len: int | None = None
    steps: int = 5  # timed steps per round
    rounds: int = 5
    warmup: int = 2
    device: str = "auto"
    precision: str = "auto"
    compile: str = "auto"
    loss_chunk: int | None = None
    contenders: tuple[str, ...] = CONTENDERS
    save: str | None = None
    threads: int | None = None
    interleave: bool | None = None  # None: interleaved rounds on a CPU, one contender at a time on a GPU
    reprobe: bool = False  # CPU: measure the peak behind MFU afresh


def _hf_model(config):
    from ..interop.hf import hf_architecture, hf_gpt2_config, hf_llama_config

    try:
        import transformers
    except ImportError:
        raise UserError("the hf contenders need transformers: pip install 'gpt2lab[hf]' (or --contender gpt2lab)") from None
    arch = hf_architecture(config)
    if arch == "gpt2":
        cfg, cls = hf_gpt2_config(config), transformers.GPT2LMHeadModel
    else:
        cfg = hf_llama_config(config, arch)
        cls = transformers.Qwen3ForCausalLM if arch == "qwen3" else transformers.LlamaForCausalLM
    cfg._attn_implementation = "sdpa"
    return cls(cfg)


class Contender:
    """One way of training the model: built, compiled and warmed up, then timed step by step."""

    def __init__(self, name: str, cfg, runtime: Runtime, micro_batch: int, loss_chunk: int | None):
        self.name, self.runtime = name, runtime
        torch.manual_seed(0)
        hf = name.startswith("hf")
        self.model = (_hf_model(cfg.model) if hf else GPT(cfg.model)).to(runtime.device).train()
        fused = runtime.device.type in ("cuda", "cpu") and name != "hf"
        if hf:
            self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, fused=fused or None)
        else:
            self.optimizer = build_optimizer(self.model, cfg.optim, runtime.device)
        self.forward = torch.compile(self.model) if runtime.compile else self.model
        x = torch.randint(0, 50257, (micro_batch, cfg.seq_len + 1), device=runtime.device)
        self.batch = (x[:, :-1], x[:, 1:])
        self.guard = LossGuard(None, runtime.device)
        self.loss_chunk = loss_chunk
        self.tokens = micro_batch * cfg.seq_len
        # fp16 trains with a GradScaler in `train`, so its bench step does too (hf, fp32 by definition, never)
        self.scaler = torch.amp.GradScaler(runtime.device.type) if runtime.precision == "fp16" else None

    def step(self) -> torch.Tensor:
        if self.name.startswith("hf"):
            with self.runtime.autocast():
                loss = self.forward(input_ids=self.batch[0], labels=self.batch[0]).loss  # transformers shifts labels
            if self.scaler is None:
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
                self.optimizer.step()
            else:
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
                self.scaler.step(self.optimizer)
                self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            return loss
        parts = StepParts(self.forward, self.optimizer, self.guard, self.runtime, grad_clip=1.0, scaler=self.scaler,
                          forward={"loss_chunk": self.loss_chunk})
        stats, _ = train_step(parts, lambda: self.batch)
        return stats

    def warm_up(self, steps: int) -> float:
        """Seconds of the first step (compilation included), after which `steps` more run untimed."""
        start = time.perf_counter()
        self.step()
        self.runtime.synchronize()
        first = time.perf_counter() - start
        for _ in range(steps):
            self.step()
        self.runtime.synchronize()
        return first

    def timed(self, steps: int) -> float:
        """Tokens per second over `steps` steps."""
        self.runtime.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        self.runtime.synchronize()
        return self.tokens * steps / (time.perf_counter() - start)


def _runtime_of(name: str, o: BenchOptions, tokens: int) -> Runtime:
    """gpt2lab-fp32 is gpt2lab before this round: fp32, eager, the whole head at once."""
    if name in ("gpt2lab-fp32", "hf"):
        runtime = resolve_runtime(o.device, "fp32", "off")
        runtime.loss_chunk = None
        return runtime
    return resolve_runtime(o.device, o.precision, o.compile, 10**9, o.loss_chunk)


def _peak(runtime: Runtime, fresh: bool = False) -> tuple[float | None, str]:
    name = runtime.describe()["name"]
    if runtime.device.type == "cpu":
        return cpu_peak_flops(runtime.precision, name, fresh=fresh)
    return device_peak_flops(name, runtime.precision)


def _check(o: BenchOptions) -> None:
    unknown = [c for c in o.contenders if c not in CONTENDERS]
    if unknown:
        raise UserError(f"unknown contender(s) {', '.join(unknown)}; choose from {', '.join(CONTENDERS)}")
    if not (1 <= o.steps <= 10_000 and 1 <= o.rounds <= 1000 and 0 <= o.warmup <= 10_000 and 1 <= o.micro_batch <= 65536):
        raise UserError("--steps and --rounds must be at least 1, --warmup at least 0, --micro-batch between 1 and 65536")
    if o.threads is not None and not 1 <= o.threads <= 1024:
        raise UserError(f"--threads must be between 1 and 1024, got {o.threads}")


def run_bench(options: BenchOptions, echo=print) -> dict:
    o = options
    _check(o)
    if o.threads:
        torch.set_num_threads(o.threads)
    cfg = build_config(preset=o.preset, sets=[f"data.seq_len={o.seq_len}"] if o.seq_len else [])
    tokens = o.micro_batch * cfg.seq_len
    ticks = cpu_ticks()
    runtime, measured = _measure(o, cfg, tokens, echo)
    steal = steal_share(ticks, cpu_ticks())
    flops = flops_per_token(cfg.model, cfg.seq_len).training
    reprobed: set[str] = set()  # afresh once per precision, then from the cache like everything else

    def peak(runtime: Runtime):
        fresh = o.reprobe and runtime.precision not in reprobed
        reprobed.add(runtime.precision)
        return _peak(runtime, fresh)

    results = [_result(m, tokens, flops, echo, peak) for m in measured]
    if steal is not None and steal > STEAL_WARNING:
        echo(f"warning: the hypervisor took {steal:.0%} of this VM's CPU time while timing (steal): absolute rates "
             "are low and noisy; compare the ratios, or rerun when the host is quieter")
    report = _report(o, cfg, runtime, results)
    report["cpu_steal"] = round(steal, 4) if steal is not None else None
    for line in _ratios(report):
        echo(line)
    if o.save:
        report["path"] = str(_save(report, o))
    return report


@dataclass
class Measured:
    name: str
    runtime: Runtime
    rates: list[float]
    compile_s: float | None
    peak_mem_gb: float | None


def _measure(o: BenchOptions, cfg, tokens: int, echo) -> tuple[Runtime | None, list[Measured]]:
    """Every contender's rates. On a CPU they are resident together and timed in interleaved rounds (a noisy
    neighbour slows all alike; RAM holds them). On a GPU one at a time: four resident 124M contenders do not fit
    in 24 GB, and each one's peak memory is its own (reset before it is built, read after its rounds)."""
    device = resolve_runtime(o.device, "fp32", "off").device
    if o.interleave if o.interleave is not None else device.type == "cpu":
        built = [_build(name, o, cfg, tokens) for name in o.contenders]
        rates: dict[str, list[float]] = {c.name: [] for c, _ in built}
        for _ in range(o.rounds):
            for c, _ in built:
                rates[c.name].append(c.timed(o.steps))
        return (built[0][0].runtime if built else None,
                [Measured(c.name, c.runtime, rates[c.name], first, None) for c, first in built])
    measured, runtime = [], None
    for name in o.contenders:
        reset_peak_memory(device)
        c, first = _build(name, o, cfg, tokens)
        values = [c.timed(o.steps) for _ in range(o.rounds)]
        runtime = runtime or c.runtime
        measured.append(Measured(c.name, c.runtime, values, first, peak_memory_gb(device)))
        del c
        free_memory(device)
    return runtime, measured


def _build(name: str, o: BenchOptions, cfg, tokens: int) -> tuple[Contender, float | None]:
    """A contender, built and warmed up; with the seconds of its first step when it compiles."""
    runtime = _runtime_of(name, o, tokens)
    c = Contender(name, cfg, runtime, o.micro_batch, runtime.loss_chunk if name.startswith("gpt2lab") else None)
    first = c.warm_up(o.warmup)
    return c, (round(first, 2) if runtime.compile else None)


def _result(m: Measured, tokens: int, flops: float, echo, peak_of=_peak) -> dict:
    median = statistics.median(m.rates)
    peak, source = peak_of(m.runtime)
    r = {"contender": m.name, "precision": m.runtime.precision, "compile": m.runtime.compile,
         "tokens_per_sec": round(median, 1), "spread": round((max(m.rates) - min(m.rates)) / median, 4),
         "rounds": [round(v, 1) for v in m.rates], "step_time_s": round(tokens / median, 5),
         "mfu": round(median * flops / peak, 4) if peak else None, "peak_tflops": round(peak / 1e12, 3) if peak else None,
         "peak_source": source, "peak_mem_gb": m.peak_mem_gb}
    if m.compile_s is not None:
        r["compile_s"] = m.compile_s
    mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
    compiled = f" | compile {r['compile_s']:.1f} s" if "compile_s" in r else ""
    echo(f"{m.name:13s} {r['precision']:>4} {'compiled' if m.runtime.compile else 'eager':8s} "
         f"{median:>10,.0f} tok/s (spread {r['spread']:.1%}) | MFU {mfu} | step {r['step_time_s'] * 1000:,.1f} ms{compiled}")
    if r["spread"] > SPREAD_WARNING:
        echo(f"warning: {m.name}'s rounds spread {r['spread']:.0%} (> {SPREAD_WARNING:.0%}): the machine was busy; "
             "rerun with more --rounds on a quiet machine")
    return r


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gb(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 3) if device.type == "cuda" else None


def free_memory(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def source_version(folder: Path) -> str | None:
    """The commit the code in folder is at, with '+changes' when tracked files differ from it (a copied working
    tree, as on a lent GPU, can carry a commit's history with newer code); None outside a git checkout or
    without git."""
    def git(*args):
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, cwd=folder).stdout.strip()
        except OSError:  # no git on this machine (a pip-installed gpt2lab on a GPU box): no commit to name
            return ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return None
    return commit + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def _report(o: BenchOptions, cfg, runtime: Runtime | None, results: list[dict]) -> dict:
    commit = source_version(Path(__file__).resolve().parent)
    by = {r["contender"]: r["tokens_per_sec"] for r in results}
    ratios = {f"{a}/{b}": round(by[a] / by[b], 3) for a, b in (("gpt2lab", "hf"), ("gpt2lab", "hf-matched"),
                                                                 ("gpt2lab", "gpt2lab-fp32"), ("hf-matched", "hf"))
              if a in by and b in by}
    described = runtime.describe() if runtime else {}
    return {"device": described.get("name"), "threads": described.get("threads"), "torch": torch.__version__,
            "cuda": torch.version.cuda, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "commit": commit, "preset": o.preset, "micro_batch": o.micro_batch, "seq_len": cfg.seq_len,
            "options": {k: v for k, v in asdict(o).items() if k != "save"}, "results": results, "ratios": ratios}


def _ratios(report: dict) -> list[str]:
    return [f"{name}: {value:.2f}x on {report['device']}" for name, value in report["ratios"].items()]


def _save(report: dict, o: BenchOptions) -> Path:
    folder = absolute(o.save)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {folder} ({exc.strerror}); choose another --save folder") from None
    device = (report["device"] or "device").replace(" ", "-").replace("(R)", "").replace("/", "-")
    path = folder / f"bench_{o.preset}_{device}_{datetime.now(timezone.utc):%Y%m%d-%H%M%S}.json"
    write_json_atomic(path, report, "the benchmark result")
    return path
