"""Automatic diagnosis of a run: each rule looks for one known way a run goes wrong and, when it fires,
cites the numbers that show it and says what to change. A healthy run gets no findings.

Rules and thresholds:
  lr-schedule-broken  the LR rose by more than 1% after its peak (a decaying schedule only comes down)
  lr-never-decayed    a decaying schedule whose last LR is still 90% of its peak or more
  lr-decayed-early    the LR is below 5% of its peak for more than the last 20% of the run
  train-val-gap       val loss minus train loss (last 10 steps) grows by more than 0.1 nats from the first to the
                      last third of the evals after the first 20% of the run
  data-wait           waiting for data takes more than 5% of step time
  low-mfu             median MFU below 20% (well-tuned GPT-2 training reaches 35-50% on datacenter GPUs)
  loss-spikes         steps whose loss is more than 6 robust deviations above the median of the previous 50,
                      and steps the guards skipped
  checkpoint-time     saving checkpoints takes more than 2% of the run's time
  val-overlap         more than 1% of sampled validation 32-grams occur verbatim in the training data
  low-gpu-memory      a CUDA run whose peak memory is below half of what its weights, gradients and AdamW
                      state alone need (the signature of a CPU fallback), or a large model trained on the CPU
  undertrained        fewer than 1 training token per parameter (compute-optimal training is about 20:
                      Hoffmann et al. 2022), for a run that meant to train (more than 50 steps, or val perplexity
                      still above 100)
  schedule-changed    the LR schedule was changed when the run was resumed (the LR jumps at that step)
The timing rules (data-wait, low-mfu, checkpoint-time) need at least MIN_TIMED_STEPS steps: a run of a few steps
is all warm-up.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

GB = 2**30
MIN_TIMED_STEPS = 20
COMPUTE_OPTIMAL_TOKENS_PER_PARAM = 20


@dataclass
class Finding:
    code: str
    title: str
    evidence: str
    advice: str


def _after_warmup(records: list[dict], config: dict) -> list[dict]:
    warmup = config.get("schedule", {}).get("warmup_steps")
    if warmup is None:  # a time-budgeted run plans its warmup as it goes: it ended where the LR peaked
        lrs = [r.get("lr") for r in records]
        known = [i for i, v in enumerate(lrs) if isinstance(v, (int, float))]
        warmup = records[max(known, key=lambda i: lrs[i])]["step"] if known else 0
    return [r for r in records if r["step"] > warmup]


def lr_schedule_broken(records, config, **_):
    """A schedule meant to decay that never came down, or that went back up after its peak (a time budget whose
    warmup outlived the run, a plan whose estimate jumped)."""
    decay = config.get("schedule", {}).get("decay", "cosine")
    lrs = [r["lr"] for r in records if isinstance(r.get("lr"), (int, float))]
    if decay == "constant" or len(lrs) < 10:
        return None
    peak_at = max(range(len(lrs)), key=lrs.__getitem__)
    rises = [(records[i]["step"], lrs[i - 1], lrs[i]) for i in range(peak_at + 1, len(lrs)) if lrs[i] > lrs[i - 1] * 1.01]
    if rises:
        step, before, after = rises[0]
        return Finding("lr-schedule-broken", "The learning rate went back up after its peak",
                       f"at step {step:,} it rose from {before:.3g} to {after:.3g} ({len(rises)} such rise(s)); a "
                       f"{decay} schedule only comes down after warmup",
                       "report it (a time budget's plan must never move the decay backwards); meanwhile set "
                       "schedule.warmup_steps and --max-steps instead of --time-budget")
    if peak_at >= len(lrs) - 2 or lrs[-1] >= 0.9 * lrs[peak_at]:
        return Finding("lr-never-decayed", "The learning rate never decayed",
                       f"the LR was {lrs[-1]:.3g} at the last step, {lrs[-1] / max(lrs):.0%} of its peak {max(lrs):.3g}: "
                       f"the {decay} decay did not happen (a warmup as long as the run, or a stopped run)",
                       "set schedule.warmup_steps well below the run's steps, or let the run finish its schedule")
    return None


def lr_decayed_early(records, config, **_):
    peak = config.get("optim", {}).get("lr")
    if not isinstance(peak, (int, float)) or not peak or len(records) < 10 or any("lr" not in r for r in records):
        return None
    last = records[-1]["step"]
    low = [r for r in _after_warmup(records, config) if r["lr"] < 0.05 * peak]
    if not low or last - low[0]["step"] <= 0.2 * last:
        return None
    s = low[0]["step"]
    return Finding(
        "lr-decayed-early", "The learning rate decayed to almost nothing long before the end",
        f"the LR fell below 5% of its peak {peak:.2e} at step {s:,} of {last:,}; the last {last - s:,} steps "
        f"({(last - s) / last:.0%} of the run) ran at LR <= {low[0]['lr']:.2e}",
        "set schedule.max_steps to the run's real length (the decay should end where training ends), or raise schedule.min_lr",
    )


def train_val_gap(records, **_):
    # early evals are left out: while the loss falls fast, any train-loss average lags the val loss
    last_step = records[-1]["step"]
    evals = [i for i, r in enumerate(records) if _finite([r.get("val_loss")]) and r["step"] > 0.2 * last_step]
    if len(evals) < 4:
        return None
    gaps = []
    for i in evals:
        losses = _finite(r.get("loss") for r in records[max(0, i - 9) : i + 1])
        if not losses:
            continue
        train = statistics.fmean(losses)
        gaps.append((records[i]["step"], records[i]["val_loss"] - train))
    if len(gaps) < 4:
        return None
    third = max(1, len(gaps) // 3)
    early = statistics.fmean(g for _, g in gaps[:third])
    late = statistics.fmean(g for _, g in gaps[-third:])
    if late - early <= 0.1:
        return None
    return Finding(
        "train-val-gap", "Validation loss is pulling away from training loss (overfitting)",
        f"val - train loss grew from {early:+.3f} (first third of evals after 20% of the run) to {late:+.3f} "
        f"(last third); at step {gaps[-1][0]:,} it is {gaps[-1][1]:+.3f}",
        "train on more distinct data (fewer epochs), add weight decay or dropout, or keep the checkpoint with the lowest val loss",
    )


def _finite(values) -> list[float]:
    return [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def data_wait(records, **_):
    timed = [r for r in records[1:] if isinstance(r.get("data_time"), (int, float)) and isinstance(r.get("step_time"), (int, float))]
    if len(timed) < MIN_TIMED_STEPS:
        return None
    share = sum(r["data_time"] for r in timed) / max(1e-9, sum(r["step_time"] for r in timed))
    if share <= 0.05:
        return None
    return Finding(
        "data-wait", "Training waits for data",
        f"{share:.1%} of step time was spent fetching batches (over {len(timed):,} steps)",
        "keep token shards on a fast local disk, prepare data ahead of time, and raise the micro-batch so each fetch feeds more compute",
    )


def low_mfu(records, device, **_):
    mfus = _finite(r.get("mfu") for r in records[10:])
    if len(mfus) < MIN_TIMED_STEPS:
        return None
    median = statistics.median(mfus)
    if median >= 0.2:
        return None
    cpu = not str(device.get("device", "")).startswith(("cuda", "mps"))
    advice = ["raise run.micro_batch" + ("" if cpu else " (check with `gpt2lab plan`)")]
    if not device.get("compile"):
        advice.append("turn on run.compile")
    if device.get("precision") not in ("bf16", "fp16"):
        advice.append("train in bf16" + (" (on a CPU with AVX512-BF16 or AMX)" if cpu else ""))
    advice.append("use a context of 512-1024 for small models" if not cpu else
                  "on a shared machine try --threads 1 (the CPU's own peak is what MFU is measured against)")
    if not cpu:  # an H200 computed 30% of a 25M model's 8,192-token step: the rest was the host launching kernels
        advice.append("see with --profile 20 how much of a step the GPU computes (the rest it waits on the host)")
    what = "The CPU is far from its measured matmul peak" if cpu else "The GPU is far from its peak"
    typical = ("a small model's step on a CPU spends much of its time outside the matmuls (softmax over the "
               "vocabulary, attention): 20-30% is what this project measures" if cpu
               else "well-tuned GPT-2 training reaches 35-50% on datacenter GPUs")
    return Finding(
        "low-mfu", f"{what} (low MFU)",
        f"median MFU {median:.1%} on {device.get('name', 'the device')} (peak {device.get('peak_tflops') or 0:.2f} TFLOP/s, "
        f"{device.get('peak_source', '')}); {typical}",
        ", ".join(advice),
    )


def _spikes(records) -> list[tuple[int, float, float]]:
    """(step, loss, median of the 50 before) where the loss is more than 6 robust deviations above that median."""
    spikes = []
    for i in range(50, len(records)):
        window = _finite(r.get("loss") for r in records[i - 50 : i])
        loss = records[i].get("loss")
        if len(window) < 25 or not isinstance(loss, float) or not math.isfinite(loss):
            continue
        median = statistics.median(window)
        mad = statistics.median(abs(x - median) for x in window) * 1.4826 or 1e-6
        if (loss - median) / mad > 6 and loss - median > 0.1:
            spikes.append((records[i]["step"], loss, median))
    return spikes


def loss_spikes(records, **_):
    spikes = _spikes(records)
    skipped = [r["step"] for r in records if r.get("skipped")]
    if not spikes and not skipped:
        return None
    parts = []
    if spikes:
        shown = ", ".join(f"step {s:,}: {l:.3f} vs median {m:.3f}" for s, l, m in spikes[:5])
        parts.append(f"{len(spikes)} loss spike(s) ({shown})")
    if skipped:
        parts.append(f"{len(skipped)} skipped step(s) (first at step {skipped[0]:,})")
    return Finding(
        "loss-spikes", "Loss spikes or skipped steps", "; ".join(parts),
        "lower optim.lr or lengthen the warmup, keep gradient clipping on (optim.grad_clip=1.0), and check the batches at those steps",
    )


def checkpoint_time(records, **_):
    saves = _finite(r.get("checkpoint_time") for r in records)
    if not saves or len(records) < MIN_TIMED_STEPS:
        return None
    total = sum(_finite(r.get("step_time") for r in records)) + sum(saves)
    share = sum(saves) / total
    if share <= 0.02:
        return None
    return Finding(
        "checkpoint-time", "Checkpoints stall training",
        f"{len(saves)} saves took {sum(saves):.1f} s, {share:.1%} of the run's time ({statistics.fmean(saves):.2f} s each)",
        "checkpoint less often (run.checkpoint_every) or on a faster disk",
    )


def val_overlap(records, overlap=None, **_):
    if not overlap or overlap["fraction"] <= 0.01:
        return None
    return Finding(
        "val-overlap", "Validation text also appears in the training data",
        f"{overlap['fraction']:.1%} of {overlap['sampled']:,} sampled validation {overlap['ngram']}-token runs occur verbatim "
        f"in the first {overlap['train_tokens_scanned']:,} training tokens; val loss is optimistic",
        "split by document before windowing (`gpt2lab prepare` does), and never cut overlapping windows across the split",
    )


def low_gpu_memory(records, device, **_):
    params = device.get("parameters") or 0
    if str(device.get("device", "")).startswith("cuda"):
        peaks = _finite(r.get("peak_mem_gb") for r in records)
        # rank 0's peak: under FSDP it holds 1/world of the weights, gradients and optimizer state
        shards = int(device.get("world_size") or 1) if device.get("parallel") == "fsdp" else 1
        need = 16 * params / GB / max(shards, 1)
        if peaks and max(peaks) < 0.5 * need:
            per = f" per rank (sharded {shards} ways)" if shards > 1 else ""
            return Finding(
                "low-gpu-memory", "GPU memory use is far too low for this model (CPU-fallback signature)",
                f"peak GPU memory {max(peaks):.2f} GB, but weights, gradients and AdamW state of {params:,} parameters "
                f"alone need {need:.2f} GB{per}",
                "check that the model and batches are on the GPU (gpt2lab's placement guard stops such runs) and that no other process holds the work",
            )
    elif params > 50e6:
        return Finding(
            "low-gpu-memory", "A large model trained on the CPU",
            f"{params:,} parameters trained on {device.get('name', 'the CPU')}: device.json says {device.get('device')}",
            "train on a GPU (--device cuda); `gpt2lab plan` estimates time and memory",
        )
    return None


def undertrained(records, device, **_):
    params = device.get("parameters") or 0
    tokens = records[-1].get("tokens") or 0
    if not params or tokens >= params:
        return None
    perplexities = _finite(r.get("val_perplexity") for r in records)
    if len(records) <= 50 and not (perplexities and perplexities[-1] > 100):
        return None
    ratio = tokens / params
    need = COMPUTE_OPTIMAL_TOKENS_PER_PARAM * params
    ppl = f"; final val perplexity {perplexities[-1]:,.0f}" if perplexities else ""
    return Finding(
        "undertrained", "The model saw far too few tokens for its size",
        f"{tokens:,} tokens for {params:,} parameters: {ratio:.3f} tokens per parameter, where compute-optimal training "
        f"uses about {COMPUTE_OPTIMAL_TOKENS_PER_PARAM} ({need:,.0f} tokens){ppl}",
        "train longer (--max-steps or --time-budget) or choose a smaller model for this budget (`gpt2lab plan`)",
    )


def schedule_changed(records, **_):
    changes = [r for r in records if r.get("schedule_change")]
    if not changes:
        return None
    first = changes[0]
    before = next((r for r in reversed(records) if r["step"] < first["step"]), None)
    jump = f"; the LR went from {before['lr']:.3g} to {first['lr']:.3g}" if before and "lr" in first else ""
    return Finding(
        "schedule-changed", "The LR schedule was changed on resume",
        f"at step {first['step']:,}: {first['schedule_change']}{jump}",
        "keep schedule.max_steps (and the other schedule settings) when resuming, or plan the longer run from the start",
    )


RULES = [lr_schedule_broken, lr_decayed_early, train_val_gap, data_wait, low_mfu, loss_spikes, checkpoint_time, val_overlap, low_gpu_memory,
         undertrained, schedule_changed]


def diagnose(records: list[dict], config: dict, device: dict, overlap: dict | None = None) -> list[Finding]:
    if not records:
        return []
    findings = [rule(records=records, config=config, device=device, overlap=overlap) for rule in RULES]
    return [f for f in findings if f is not None]
