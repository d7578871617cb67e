"""Hand-made lab run records (bench/lab/): finished 1M runs with tuning-split curves, scoring caches and clocks,
and the lab a test starts from. Shared by the lab's tests; nothing here trains or evaluates."""

import json

from bench import lab

STEPS = lab.steps_of("1M")  # 512 steps of 2,048 tokens


def write_run(work, name, seed, loss_at, scored, clocks=(1.0, None), threads=1, every=16, device="AMD EPYC",
              precision="bf16", horizon="1M"):
    """A finished run at `horizon` (in its precision's folder): a record every `every` steps (real runs record
    every step) with `loss_at(step)` on the tuning split, `scored` (step -> scoring-split loss) in its scoring
    cache, and `clocks`: (wall seconds, CPU seconds or None) per step."""
    run = lab.run_dir(work, name, horizon, seed, precision)
    run.mkdir(parents=True)
    (run / "device.json").write_text(json.dumps({"type": "cpu", "name": device, "threads": threads}))
    wall, cpu = clocks
    with open(run / "metrics.jsonl", "w") as f:
        for step in range(every, lab.steps_of(horizon) + 1, every):
            record = {"step": step, "tokens": step * lab.TOKENS_PER_STEP, "elapsed": wall * step,
                      "loss": loss_at(step) + 0.1, "val_loss": loss_at(step)}
            if cpu is not None:
                record["cpu_seconds"] = cpu * step
            f.write(json.dumps(record) + "\n")
    (run / "scoring.json").write_text(json.dumps({f"step_{s:08d}": loss for s, loss in scored.items()}))
    return run


def lab_with_runs(tmp_path):
    """A 1M lab: a three-point baseline sweep and speedrun-cpu on two seeds (the runs the lab tests start from)."""
    # the sweep: 1.2e-3 ends lowest on the tuning split; its scoring-split final loss (5.5) is the target
    write_run(tmp_path, "baseline-lr0.0006", 1337, lambda s: 6 - 0.8 * s / STEPS, {STEPS: 5.7})
    write_run(tmp_path, "baseline-lr0.0012", 1337, lambda s: 6 - s / STEPS, {STEPS: 5.5}, clocks=(2.0, 1.5))
    write_run(tmp_path, "baseline-lr0.0024", 1337, lambda s: 6 - 0.9 * s / STEPS, {STEPS: 5.6})
    # a contender four times as fast per token, 1.5x as slow per step; seed 1338 ran before CPU seconds were kept
    fast = {96: 5.6, 112: 5.52, 128: 5.44, STEPS: 4.0}
    write_run(tmp_path, "speedrun-cpu", 1337, lambda s: 6 - 4 * s / STEPS, fast, clocks=(3.0, 2.0))
    write_run(tmp_path, "speedrun-cpu", 1338, lambda s: 6 - 4 * s / STEPS, {**fast, 112: 5.5}, clocks=(3.0, None))
    return tmp_path


def micro_checkpoint(run, step):
    """A real (micro) checkpoint of `run` at `step`, as gpt2lab saves it."""
    import torch

    from gpt2lab.checkpoint import save_checkpoint
    from gpt2lab.config import build_config
    from gpt2lab.model import GPT
    from tests.helpers import MICRO_MODEL

    cfg = build_config(sets=MICRO_MODEL)
    model = GPT(cfg.model)
    optimizer = torch.optim.AdamW(model.parameters())
    return save_checkpoint(run, step, model, cfg, {"optimizer": optimizer.state_dict(), "moments": [torch.ones(1000)]})
