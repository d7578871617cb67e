import math

import numpy as np

from gpt2lab.cli import main
from gpt2lab.data.overlap import ngram_hashes, val_train_overlap
from gpt2lab.report import diagnose
from tests.helpers import trainer as make_trainer
from tests.helpers import make_data_dir, micro_config

CONFIG = {"optim": {"lr": 1e-3}, "schedule": {"warmup_steps": 10, "max_steps": 1000}}
CUDA = {"device": "cuda", "name": "NVIDIA H100 80GB HBM3", "parameters": 124_000_000, "peak_tflops": 989.4,
        "peak_source": "NVIDIA H100 SXM, dense bf16"}


def healthy(n=1000, overrides=None):
    """A run that does what it should: cosine decay to 10%, val tracking train, fast data, 45% MFU."""
    rng = np.random.default_rng(0)
    records = []
    for step in range(1, n + 1):
        progress = max(0.0, (step - 10) / (n - 10))
        r = {
            "step": step, "tokens": step * 524288, "loss": 3 + 7 * math.exp(-step / 150) + rng.normal(0, 0.02),
            "lr": 1e-3 * min(1, step / 10) if step <= 10 else 1e-4 + 0.5 * (1 + math.cos(math.pi * progress)) * 9e-4,
            "grad_norm": 0.5, "step_time": 1.0, "tokens_per_sec": 524288.0, "data_time": 0.002,
            "forward_time": 0.3, "backward_time": 0.6, "optimizer_time": 0.05, "mfu": 0.45, "peak_mem_gb": 40.0,
        }
        if step % 100 == 0:
            r["val_loss"] = r["loss"] + 0.02
            r["val_perplexity"] = math.exp(r["val_loss"])
        if step % 500 == 0:
            r["checkpoint_time"] = 1.5
        r.update((overrides or {}).get(step, {}))
        records.append(r)
    return records


def codes(records, device=CUDA, overlap=None, config=CONFIG):
    return [f.code for f in diagnose(records, config, device, overlap)]


def test_a_healthy_run_gets_no_findings():
    assert codes(healthy()) == []


def test_each_rule_fires_with_its_evidence():
    early = healthy()
    for r in early[300:]:
        r["lr"] = 1e-6
    finding = diagnose(early, CONFIG, CUDA)[0]
    assert finding.code == "lr-decayed-early" and "step 301 of 1,000" in finding.evidence and "70%" in finding.evidence

    gap = healthy()
    for r in gap:
        if "val_loss" in r:
            r["val_loss"] += r["step"] / 1000
    assert codes(gap) == ["train-val-gap"]

    slow = healthy()
    for r in slow:
        r["data_time"] = 0.2
    assert "20.0%" in diagnose(slow, CONFIG, CUDA)[0].evidence

    assert codes(healthy(), device=CUDA) == []
    low = healthy()
    for r in low:
        r["mfu"] = 0.04
    found = diagnose(low, CONFIG, CUDA)[0]
    assert found.code == "low-mfu" and "4.0%" in found.evidence

    spiky = healthy(overrides={600: {"loss": 9.0}, 700: {"skipped": True}})
    found = diagnose(spiky, CONFIG, CUDA)[0]
    assert found.code == "loss-spikes" and "step 600" in found.evidence and "1 skipped" in found.evidence

    saves = healthy()
    for r in saves:
        if r["step"] % 50 == 0:
            r["checkpoint_time"] = 5.0
    assert codes(saves) == ["checkpoint-time"]

    overlap = {"fraction": 0.4, "sampled": 1000, "train_tokens_scanned": 10**6, "ngram": 32}
    assert codes(healthy(), overlap=overlap) == ["val-overlap"]

    fallback = healthy()
    for r in fallback:
        r["peak_mem_gb"] = 0.244
    found = diagnose(fallback, CONFIG, CUDA)[0]
    assert found.code == "low-gpu-memory" and "0.24 GB" in found.evidence


def test_overlap_detector(tmp_path):
    clean = make_data_dir(tmp_path / "clean", vocab=50000, seed=1)
    rng = np.random.default_rng(0)
    for split in ("train", "val"):  # independent random text
        from gpt2lab.data.shards import write_shard

        for f in (tmp_path / "clean").glob(f"{split}_*.bin"):
            n = len(np.fromfile(f, dtype="<u2")) - 512
            write_shard(f, rng.integers(0, 50000, n))
    assert val_train_overlap(str(clean))["fraction"] == 0.0
    # validation cut from windows that overlap training text by half, as in the WikiText-103 report
    leaky = make_data_dir(tmp_path / "leaky", vocab=50000, seed=1)
    train = np.concatenate([np.fromfile(f, dtype="<u2")[512:] for f in sorted((tmp_path / "leaky").glob("train_*.bin"))])
    text = rng.integers(0, 50000, len(train))
    from gpt2lab.data.shards import write_shard

    write_shard(tmp_path / "leaky" / "train_000000.bin", text[:7000])
    write_shard(tmp_path / "leaky" / "train_000001.bin", text[7000:14000])
    write_shard(tmp_path / "leaky" / "train_000002.bin", text[14000:])
    write_shard(tmp_path / "leaky" / "val_000000.bin", np.concatenate([text[500:1500], rng.integers(0, 50000, 1000)]))
    result = val_train_overlap(str(leaky))
    assert 0.35 < result["fraction"] < 0.65


def test_ngram_hashes_are_positional():
    t = np.array([1, 2, 3, 1, 2, 3, 4])
    h = ngram_hashes(t, 3)
    assert h[0] == h[3] and len(set(h.tolist())) == 4


def test_report_on_a_real_run(data_dir, tmp_path, capsys):
    cfg = micro_config(data_dir, "schedule.max_steps=20", "eval.every=5", "checkpoint.every=10",
                       "log.every=5", "run.peak_tflops=0.5")
    make_trainer(cfg, tmp_path / "run", echo=lambda *_: None).fit()
    assert main(["report", str(tmp_path / "run")]) == 0
    assert "wrote" in capsys.readouterr().out
    report = (tmp_path / "run" / "report.md").read_text()
    for section in ("## Model", "## Training configuration", "## Device", "## Final metrics", "## Diagnosis", "## Plots"):
        assert section in report
    for png in ("loss.png", "lr.png", "throughput.png", "mfu.png", "perplexity.png"):
        assert (tmp_path / "run" / png).stat().st_size > 1000
    assert "median MFU" in report
    assert main(["report", str(tmp_path)]) == 2


def test_compare_writes_its_plot_and_table(data_dir, tmp_path, capsys):
    from gpt2lab.report.compare import reach

    for name, lr in (("slow", "1e-3"), ("fast", "1e-2")):
        cfg = micro_config(data_dir, "schedule.max_steps=12", "eval.every=2", f"optim.lr={lr}")
        make_trainer(cfg, tmp_path / name, echo=lambda *_: None).fit()
    assert main(["compare", str(tmp_path / "slow"), str(tmp_path / "fast"), "--out", str(tmp_path / "cmp"),
                 "--names", "slow", "fast"]) == 0
    table = (tmp_path / "cmp" / "compare.md").read_text()
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 5000
    assert "| slow |" in table and "| fast |" in table and "token ratio" in table
    fast_row = next(line for line in table.splitlines() if line.startswith("| fast |"))
    assert float(fast_row.split("|")[7]) < 1.0  # the higher LR reaches the slow run's final loss sooner
    assert reach([10, 20, 30], [5.0, 4.0, 3.0], 3.5) == 25.0 and reach([10, 20], [5.0, 4.0], 3.0) is None
    assert main(["compare", str(tmp_path / "slow"), "--out", str(tmp_path / "c2"), "--names", "a", "b"]) == 2
    assert "fewer than" not in table  # 6 points each
    short = micro_config(data_dir, "schedule.max_steps=12", "eval.every=12")
    make_trainer(short, tmp_path / "one", echo=lambda *_: None).fit()  # a single validation point
    assert main(["compare", str(tmp_path / "slow"), str(tmp_path / "one"), "--out", str(tmp_path / "c3")]) == 0
    assert "one has fewer than 5 validation points" in (tmp_path / "c3" / "compare.md").read_text()


def test_undertraining_is_diagnosed_and_short_runs_skip_the_timing_rules():
    cuda = dict(CUDA, parameters=124_000_000)
    few = healthy(200)
    for r in few:
        r["tokens"] = r["step"] * 1000  # 200k tokens for 124M parameters
    finding = next(f for f in diagnose(few, CONFIG, cuda) if f.code == "undertrained")
    assert "0.002 tokens per parameter" in finding.evidence and "20" in finding.evidence
    assert "undertrained" not in codes(healthy(), device=dict(CUDA, parameters=100_000))
    one_step = [dict(healthy(1)[0], checkpoint_time=30.0, data_time=0.9, mfu=0.01)]
    assert codes(one_step, device=dict(CUDA, parameters=1000)) == []  # a one-step run: no timing findings


def test_an_fsdp_ranks_sharded_peak_is_not_called_a_cpu_fallback():
    """W5: under FSDP rank 0's peak holds 1/world of the state; compared with the unsharded estimate, a healthy
    8-GPU run of a 1.5B model (about 3 GB per rank) was diagnosed as a CPU fallback."""
    from gpt2lab.report.diagnose import low_gpu_memory

    records = [{"step": s, "peak_mem_gb": 3.2} for s in range(1, 50)]
    device = {"device": "cuda:0", "parameters": 1_558_000_000, "parallel": "fsdp", "world_size": 8}
    assert low_gpu_memory(records, device) is None
    assert low_gpu_memory(records, {**device, "parallel": "ddp"}).code == "low-gpu-memory"
    tiny_peak = [{"step": 1, "peak_mem_gb": 0.2}]
    assert low_gpu_memory(tiny_peak, device).code == "low-gpu-memory"  # a real fallback is still found


def test_low_mfu_speaks_of_the_device_it_ran_on_and_advises_only_what_is_off():
    """Issue 27 item 10: the low-mfu finding used GPU wording on a CPU and advised compile and bf16 when both were on."""
    from gpt2lab.report.diagnose import low_mfu

    records = [{"step": s, "mfu": 0.05} for s in range(1, 60)]
    cpu = {"device": "cpu", "name": "AMD EPYC", "precision": "bf16", "compile": True, "peak_tflops": 0.4}
    found = low_mfu(records, cpu)
    assert "CPU" in found.title and "GPU" not in found.title
    assert "compile" not in found.advice and "bf16" not in found.advice and "--threads 1" in found.advice
    gpu = {"device": "cuda:0", "name": "NVIDIA H100", "precision": "fp32", "compile": False, "peak_tflops": 494.7}
    found = low_mfu(records, gpu)
    assert "GPU" in found.title and "run.compile" in found.advice and "bf16" in found.advice
    assert "--profile" in found.advice and "--profile" not in low_mfu(records, cpu).advice  # the host-bound question
