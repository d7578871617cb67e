"""The CPU peak behind MFU: measured once per machine, cached only when stable, never taken from an older probe."""

import json
import os

import pytest
import torch

from gpt2lab.metrics import cpu_peak


def test_probe_covers_the_small_models_widths():
    # On an AMX CPU, contractions as narrow as a small model's width run fastest; a probe without them
    # under-measures the peak and overstates MFU (probe version 1: 0.74 against a measured 1.0+ TFLOP/s).
    depths = {k for _, k, _ in cpu_peak.SHAPES}
    assert min(depths) <= 256 and 512 in depths and max(depths) >= 2048


def test_probe_measures_a_real_multiply(monkeypatch):
    calls = []
    real_mm = torch.mm

    def counting_mm(a, b, out=None):
        calls.append((tuple(a.shape), tuple(b.shape), out is not None))
        return real_mm(a, b, out=out)

    monkeypatch.setattr(cpu_peak, "SHAPES", ((64, 32, 48),))
    monkeypatch.setattr(torch, "mm", counting_mm)
    rate = cpu_peak.probe(torch.float32, rounds=2, seconds_per_shape=0.01)
    assert rate > 0 and calls and all(c == ((64, 32), (32, 48), True) for c in calls)


def test_peak_is_cached_and_an_older_probes_value_is_not_reused(monkeypatch, tmp_path):
    monkeypatch.setenv("GPT2LAB_CACHE", str(tmp_path))
    cpu, threads = "Test CPU", 2
    old_key = f"{cpu}|{threads} threads|torch {torch.__version__}|bf16"  # probe version 1's key
    (tmp_path / "cpu_peak.json").write_text(json.dumps({old_key: 7.0e11}))
    probes = []
    monkeypatch.setattr(cpu_peak, "probe", lambda dtype: probes.append(dtype) or 1.1e12)

    peak, source = cpu_peak.cpu_peak_flops("bf16", cpu, threads)
    assert peak == 1.1e12 and probes == [torch.bfloat16] * 3 and "measured" in source  # 2 agreeing + 1 thread
    again, _ = cpu_peak.cpu_peak_flops("bf16", cpu, threads)
    assert again == 1.1e12 and len(probes) == 3  # the second call reads the cache
    cache = json.loads((tmp_path / "cpu_peak.json").read_text())
    assert cache[old_key] == 7.0e11 and len(cache) == 2  # other entries kept, nothing overwritten
    kept = cache[f"{cpu}|{threads} threads|torch {torch.__version__}|bf16|probe {cpu_peak.PROBE_VERSION}"]
    assert kept["flops"] == 1.1e12 and kept["spread"] == 0.0 and kept["tries"] == 2 and kept["date"]


def test_a_damaged_or_unwritable_cache_only_means_probing_again(monkeypatch, tmp_path):
    monkeypatch.setenv("GPT2LAB_CACHE", str(tmp_path))
    (tmp_path / "cpu_peak.json").write_text("[not json")
    monkeypatch.setattr(cpu_peak, "probe", lambda dtype: 2.0e11)
    assert cpu_peak.cpu_peak_flops("fp32", "Test CPU", 1)[0] == 2.0e11
    assert json.loads((tmp_path / "cpu_peak.json").read_text())  # replaced by a valid file
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setenv("GPT2LAB_CACHE", str(blocked))  # a file where the folder should be
    assert cpu_peak.cpu_peak_flops("fp32", "Test CPU", 1)[0] == 2.0e11


def test_an_fp16_run_reads_the_fp32_probes_entry(monkeypatch, tmp_path):
    """A CPU fp16 run is measured with the fp32 probe: one measurement and one cache entry serve both."""
    monkeypatch.setenv("GPT2LAB_CACHE", str(tmp_path))
    monkeypatch.setattr(cpu_peak, "_measured", {})
    dtypes = []
    monkeypatch.setattr(cpu_peak, "probe", lambda dtype: dtypes.append(dtype) or 2.0e11)
    peak, source = cpu_peak.cpu_peak_flops("fp32", "Test CPU", 1)
    probes = len(dtypes)
    assert cpu_peak.cpu_peak_flops("fp16", "Test CPU", 1) == (peak, source) and "fp32 matmul probe" in source
    assert len(dtypes) == probes and set(dtypes) == {torch.float32}
    cpu_peak.cpu_peak_flops("bf16", "Test CPU", 1)
    assert dtypes[-1] == torch.bfloat16 and len(json.loads((tmp_path / "cpu_peak.json").read_text())) == 2


def test_an_implausible_cached_peak_is_measured_again(monkeypatch, tmp_path):
    # the cache is a plain JSON file: NaN, Infinity, 0, negatives, booleans and strings must not become the
    # denominator of MFU (a division by zero, or an MFU of 1e-300 or -40%)
    monkeypatch.setenv("GPT2LAB_CACHE", str(tmp_path))
    monkeypatch.setattr(cpu_peak, "probe", lambda dtype: 3.0e11)
    key = f"Test CPU|1 threads|torch {torch.__version__}|fp32|probe {cpu_peak.PROBE_VERSION}"
    for bad in ("NaN", "Infinity", "-Infinity", "0", "-5e11", "true", '"7e11"', "1e300"):
        (tmp_path / "cpu_peak.json").write_text(f'{{"{key}": {{"flops": {bad}}}}}')
        assert cpu_peak.cpu_peak_flops("fp32", "Test CPU", 1)[0] == 3.0e11, bad


def test_a_cache_that_cannot_be_written_leaves_no_partial_file(monkeypatch, tmp_path):
    monkeypatch.setenv("GPT2LAB_CACHE", str(tmp_path))
    monkeypatch.setattr(cpu_peak, "probe", lambda dtype: 2.0e11)

    def full_disk(fd):  # the text was written into the temporary file; making it durable finds the disk full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    assert cpu_peak.cpu_peak_flops("fp32", "Test CPU", 1)[0] == 2.0e11
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(autouse=True)
def quiet_machine(monkeypatch):
    """The machine's load and steal, which the probe reads, as a quiet machine's (the suite's own load is not)."""
    import gpt2lab.metrics.steal as steal

    monkeypatch.setattr(steal, "cpu_ticks", lambda path=None: None)
    monkeypatch.setattr(steal, "idle_ticks", lambda path=None: None)
    monkeypatch.setattr(cpu_peak, "_measured", {})


def _quiet(monkeypatch, tmp_path, busy=False):
    import gpt2lab.metrics.steal as steal

    monkeypatch.setenv("GPT2LAB_CACHE", str(tmp_path))
    if busy:  # the other process's ticks: every tick of the probe's time busy, none of it this process's
        readings = iter([(1000, 2000), (1000, 4000)])
        monkeypatch.setattr(steal, "idle_ticks", lambda path=None: next(readings))


def test_the_probe_repeats_until_two_measurements_agree(monkeypatch, tmp_path):
    _quiet(monkeypatch, tmp_path)
    readings = iter([0.32e12, 2.85e12, 1.00e12, 1.05e12, 1.0e12])  # the last: one thread
    monkeypatch.setattr(cpu_peak, "probe", lambda dtype: next(readings))
    peak, source = cpu_peak.cpu_peak_flops("bf16", "Test CPU", 2)
    assert peak == 1.05e12 and "unstable" not in source
    assert next(iter(json.loads((tmp_path / "cpu_peak.json").read_text()).values()))["tries"] == 4


def test_a_probe_that_never_settles_is_not_kept_and_says_so(monkeypatch, tmp_path):
    _quiet(monkeypatch, tmp_path)
    readings = iter([1e12, 2e12, 1e12, 2e12, 1e12])
    monkeypatch.setattr(cpu_peak, "probe", lambda dtype: next(readings))
    peak, source = cpu_peak.cpu_peak_flops("bf16", "Test CPU", 1)
    assert "unstable, not kept" in source and "never agreed" in source
    assert not (tmp_path / "cpu_peak.json").exists()


def test_two_threads_cannot_be_nine_times_one(monkeypatch, tmp_path):
    """The cached probe once read 2.85 TFLOP/s on 2 threads and 0.32 on 1: one of them was wrong."""
    _quiet(monkeypatch, tmp_path)
    readings = iter([2.85e12, 2.85e12, 0.32e12])
    monkeypatch.setattr(cpu_peak, "probe", lambda dtype: next(readings))
    _, source = cpu_peak.cpu_peak_flops("bf16", "Test CPU", 2)
    assert "8.9x one thread" in source and not (tmp_path / "cpu_peak.json").exists()


def test_a_busy_machine_measures_but_does_not_keep(monkeypatch, tmp_path):
    _quiet(monkeypatch, tmp_path, busy=True)
    monkeypatch.setattr(cpu_peak, "probe", lambda dtype: 1e12)
    _, source = cpu_peak.cpu_peak_flops("fp32", "Test CPU", 1)
    assert "other processes used" in source and not (tmp_path / "cpu_peak.json").exists()
    assert cpu_peak.busy_reason(0.12, 0.0).startswith("the hypervisor took 12%")
    assert cpu_peak.busy_reason(0.01, 0.1) is None


def test_reprobe_measures_afresh(monkeypatch, tmp_path):
    _quiet(monkeypatch, tmp_path)
    monkeypatch.setattr(cpu_peak, "probe", lambda dtype: 1e12)
    cpu_peak.cpu_peak_flops("fp32", "Test CPU", 1)
    monkeypatch.setattr(cpu_peak, "probe", lambda dtype: 2e12)
    assert cpu_peak.cpu_peak_flops("fp32", "Test CPU", 1)[0] == 1e12
    assert cpu_peak.cpu_peak_flops("fp32", "Test CPU", 1, fresh=True)[0] == 2e12
    assert cpu_peak.cpu_peak_flops("fp32", "Test CPU", 1)[0] == 2e12
