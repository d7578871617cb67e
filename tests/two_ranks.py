"""Two real gloo processes on this machine, for every decision a rank takes: each test's target runs in both
and returns what that rank decided; the test fails when they disagree (or when one hangs in a collective)."""

from __future__ import annotations

import os
import socket
import traceback

import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, port: int, target, args, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2")
    try:
        results[rank] = ("ok", target(rank, *args))
    except BaseException as exc:  # handed back to the test with its traceback
        results[rank] = ("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-3000:]}")


# Imported once by a fork server, not by every rank of every test (torch, the trainer, and torch._dynamo that every
# torch optimizer imports: about 5 s a process; a two-rank test took 15 s, now 3). Each rank is still a fresh process,
# forked from a server with no threads, no device and no process group: it decides on its own, as under torchrun.
# The server keeps the environment it started with: a rank's settings go through its arguments.
PRELOAD = ["torch", "torch._dynamo", "torch.distributed", "gpt2lab.training.trainer", "gpt2lab.eval", "tests.helpers"]


def _context():
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def run_two_ranks(target, *args, timeout: float = 120) -> list:
    """[rank 0's result, rank 1's result] of target(rank, *args), run as a torchrun-like job of two processes
    (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR/PORT set). A rank that fails or hangs fails the test."""
    ctx = _context()
    results = ctx.Manager().dict()
    port = _free_port()
    procs = [ctx.Process(target=_entry, args=(rank, port, target, args, results)) for rank in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
    hung = [rank for rank, p in enumerate(procs) if p.is_alive()]
    for p in procs:  # only the processes this helper started
        if p.is_alive():
            p.kill()
            p.join()
    assert not hung, f"rank(s) {hung} did not finish in {timeout} s (a collective the other rank never joined)"
    out = []
    for rank in range(2):
        status, value = results.get(rank, ("error", f"rank {rank} died with exit code {procs[rank].exitcode}"))
        assert status == "ok", f"rank {rank}: {value}"
        out.append(value)
    return out
