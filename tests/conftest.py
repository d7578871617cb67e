"""Shared fixtures: paths into ../shared (skipped cleanly when absent) and small synthetic data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import SmallRun, make_data_dir, small_run_in


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto`: one worker per core this process may use, at most 4 (more only adds torch imports)."""
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def _share_the_cores() -> None:
    """In an xdist worker: this worker's share of the cores as torch's threads, and (through OMP_NUM_THREADS) as
    the default of every process a test starts, so that workers do not oversubscribe the machine."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        threads = max(1, cores // workers)
        torch.set_num_threads(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))


_share_the_cores()


def pytest_configure(config) -> None:
    """Before any worker starts (the machine is as quiet as it will be): the CPU peak behind MFU, for one thread
    in both precisions, measured and cached as gpt2lab caches it (~/.cache/gpt2lab or $GPT2LAB_CACHE; a stable
    measurement only). Otherwise every training process a test starts, with the workers keeping the cores busy,
    would measure an unstable peak again (about 5 s each). Tests of the probe use their own cache."""
    if os.environ.get("PYTEST_XDIST_WORKER") or getattr(config.option, "numprocesses", None) in (None, 0):
        return
    import torch

    from gpt2lab.metrics.cpu_peak import cpu_peak_flops
    from gpt2lab.runtime import cpu_bf16_native, cpu_name

    before = torch.get_num_threads()  # bf16 only where native: emulated, the probe alone would take half an hour
    for precision in ("bf16", "fp32") if cpu_bf16_native()[0] else ("fp32",):
        cpu_peak_flops(precision, cpu_name(), threads=1)
    torch.set_num_threads(before)


def pytest_collection_modifyitems(config, items) -> None:
    """Slow tests (processes, end-to-end runs: up to a minute each) first, the rest in their order after them: the
    workers then end on short tests, not one worker on a long test while the other has nothing left to take."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """A test that runs `--threads N` or run.threads=N in this process (train, bench) sets torch's threads for the
    whole worker; every later test would run oversubscribed (a worker was left at 3 threads on 2 cores). Each
    test gets back the worker's share."""
    import torch

    before = torch.get_num_threads()
    yield
    if torch.get_num_threads() != before:
        torch.set_num_threads(before)


SHARED = Path(os.environ.get("GPT2LAB_SHARED") or Path(__file__).resolve().parents[2] / "shared")
TOKENIZER_DIR = SHARED / "data" / "gpt2_tokenizer"


GPT2_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"


def _from_tiktoken_cache(folder: Path) -> bool:
    """GPT-2's encoder.json and vocab.bpe from a tiktoken cache (TIKTOKEN_CACHE_DIR: README's offline route), where
    tiktoken keeps each download under the SHA-1 of its address; False when the cache does not hold them."""
    import hashlib
    import shutil

    cache = os.environ.get("TIKTOKEN_CACHE_DIR")
    if not cache:
        return False
    files = {name: Path(cache) / hashlib.sha1((GPT2_URL + name).encode()).hexdigest() for name in ("encoder.json", "vocab.bpe")}
    if not all(p.is_file() for p in files.values()):
        return False
    folder.mkdir(parents=True, exist_ok=True)
    for name, path in files.items():
        shutil.copy(path, folder / name)
    return True


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> str:
    """GPT-2's BPE files: from ../shared, or, without it, from a tiktoken cache named by TIKTOKEN_CACHE_DIR."""
    if (TOKENIZER_DIR / "encoder.json").is_file():
        return str(TOKENIZER_DIR)
    folder = tmp_path_factory.mktemp("gpt2_tokenizer")
    if _from_tiktoken_cache(folder):
        return str(folder)
    pytest.skip(f"GPT-2 tokenizer files not found at {TOKENIZER_DIR} (../shared is absent) nor in a tiktoken cache "
                "(set TIKTOKEN_CACHE_DIR)")


@pytest.fixture
def offline_tokenizer(tokenizer_dir, monkeypatch):
    """Points tiktoken's cache at the shared copy (or keeps the user's TIKTOKEN_CACHE_DIR) so that the default (no
    folder) path works offline."""
    if (TOKENIZER_DIR / "tiktoken_cache").is_dir():
        monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(TOKENIZER_DIR / "tiktoken_cache"))
    monkeypatch.delenv("GPT2LAB_TOKENIZER", raising=False)
    return tokenizer_dir


@pytest.fixture(scope="session")
def shared_file():
    def get(*parts: str) -> Path:
        path = SHARED.joinpath(*parts)
        if not path.exists():
            pytest.skip(f"{path} not found (../shared is absent)")
        return path

    return get


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return make_data_dir(tmp_path / "data")




@pytest.fixture(scope="session")
def small_run(tmp_path_factory) -> SmallRun:
    """One finished micro run shared by the tests that read a run (copy it before changing it): 8 steps of the
    micro model, checkpoints at steps 4 and 8, validation every 2 steps, metrics.jsonl and the run record."""
    return small_run_in(tmp_path_factory.mktemp("small_run"))
