"""Every decision a rank takes, taken by two real gloo ranks: they must agree (or the job hangs under NCCL)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tests.helpers import make_data_dir, micro_config
from tests.two_ranks import run_two_ranks

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform != "linux", reason="gloo ranks are tested on Linux")]


class SteppingClock:
    """A simulated clock that advances `dt` seconds each time it is read: each rank's own speed."""

    def __init__(self, dt: float):
        self.now, self.dt = 0.0, dt

    def __call__(self) -> float:
        self.now += self.dt
        return self.now


def _trainer(rank, data, run, *sets, clock=None, resume=False, cls=None):
    from gpt2lab.eval import build_evaluators
    from gpt2lab.training.trainer import Trainer

    cfg = micro_config(data, "run.parallel=ddp", "run.dist_timeout_s=30", *sets)
    return (cls or Trainer)(cfg, run, resume=resume, evaluators=build_evaluators, echo=lambda *_: None, clock=clock)


def _time_budget_rank(rank, data, run):
    from gpt2lab.training.trainer import Trainer

    lrs = []

    class Recording(Trainer):
        def train_step(self):
            pending = super().train_step()
            lrs.append(round(self.optimizer.param_groups[0]["lr"], 12))
            return pending

    # rank 1's clock runs 1.7x faster than rank 0's: each rank alone would plan a different number of steps
    t = _trainer(rank, data, run, "schedule.time_budget_s=6", "schedule.max_steps=400", "schedule.warmup_steps=2",
                 clock=SteppingClock(0.03 if rank == 0 else 0.051), cls=Recording)
    t.fit()
    return {"steps": t.step, "lrs": lrs}


def test_a_time_budget_is_one_clock_for_every_rank(tmp_path):
    """N3: each rank used its own clock for the LR and the planned step count."""
    data = make_data_dir(tmp_path / "data")
    a, b = run_two_ranks(_time_budget_rank, str(data), str(tmp_path / "run"))
    assert a["steps"] == b["steps"] and a["steps"] < 400
    assert a["lrs"] == b["lrs"]


def _rollback_rank(rank, data, run):
    from gpt2lab.training.saver import CheckpointSaver

    class SlowSaver(CheckpointSaver):  # a large checkpoint on a slow disk: the write is still running
        def _write(self, *args, **kw):
            time.sleep(2.0)
            super()._write(*args, **kw)

    t = _trainer(rank, data, run, "checkpoint.asynchronous=true")
    t.saver = SlowSaver(t.saver.run_dir, t.saver.config, t.saver.echo)
    t.save()  # rank 0 starts writing step 0 in the background; the others write nothing
    t.trusted = 0
    target = t.rollback_target()
    t.saver.wait()
    t.lock and t.lock.release()
    from gpt2lab.training.distributed import shutdown

    shutdown(t.dist)
    return target.name if target else None


def test_a_rollback_target_is_decided_once_after_the_save_in_flight(tmp_path):
    """N4: rank 0 rolled back while the other ranks, not waiting for its write, found no checkpoint and stopped."""
    data = make_data_dir(tmp_path / "data")
    a, b = run_two_ranks(_rollback_rank, str(data), str(tmp_path / "run"))
    assert a == b == "step_00000000"


def _corrupt_verdict_rank(rank, data, run):
    import gpt2lab.checkpoint as ckpt

    if rank == 1:  # this node sees a damaged copy (a stale cache of a network filesystem, say)
        def damaged(folder, deep=False):
            raise ckpt.CorruptCheckpoint("model.safetensors does not match its SHA-256 (this node's view)")

        ckpt.verify = damaged
    t = _trainer(rank, data, run, "schedule.max_steps=4", "checkpoint.every=2", resume=True)
    step = t.step
    t.lock and t.lock.release()
    from gpt2lab.training.distributed import shutdown

    shutdown(t.dist)
    return step


def test_corrupt_or_not_is_one_decision_on_resume(tmp_path):
    """S2: every rank hashed the whole checkpoint and decided alone; rank 0 now decides and the others follow."""
    from tests.helpers import trainer

    data = make_data_dir(tmp_path / "data")
    trainer(micro_config(data, "schedule.max_steps=4", "checkpoint.every=2"), tmp_path / "run",
            echo=lambda *_: None).fit()
    a, b = run_two_ranks(_corrupt_verdict_rank, str(data), str(tmp_path / "run"))
    assert a == b == 4


def _muon_model_and_optimizer():
    import torch

    from gpt2lab.config import OptimConfig
    from gpt2lab.model import GPT, GPTConfig
    from gpt2lab.training.optim import build_optimizer

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=3, n_head=2, n_embd=32))
    optimizer = build_optimizer(model, OptimConfig(name="muon", lr=0.01, matrix_lr=0.02), torch.device("cpu"))
    for step in range(2):
        g = torch.Generator().manual_seed(step)
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=g)
        optimizer.step()
    return model, optimizer


def _muon_rank(rank):
    import torch.distributed as dist

    dist.init_process_group("gloo")
    try:
        model, optimizer = _muon_model_and_optimizer()
        return {"weights": {k: v.clone() for k, v in model.state_dict().items()}, "ortho": optimizer.orthogonalized}
    finally:
        dist.destroy_process_group()


def test_muon_under_ddp_shares_newton_schulz_across_ranks_with_the_same_result():
    """S1: every rank orthogonalised every matrix; now each takes its share and the weights are the same as one
    process's, bit for bit."""
    import torch

    a, b = run_two_ranks(_muon_rank)
    model, alone = _muon_model_and_optimizer()
    assert a["ortho"] + b["ortho"] == alone.orthogonalized and abs(a["ortho"] - b["ortho"]) <= 2
    for name, expected in model.state_dict().items():
        assert torch.equal(a["weights"][name], expected) and torch.equal(b["weights"][name], expected), name


def _stop_rank(rank, which):
    import torch.distributed as dist

    from gpt2lab.errors import UserError
    from gpt2lab.training.distributed import Dist

    dist.init_process_group("gloo")
    try:
        d = Dist(rank=rank, world_size=2, strategy="ddp")
        try:
            d.stop_together("the GPU has been 0% busy" if rank == which else None)
            return None
        except UserError as exc:
            return str(exc)
    finally:
        dist.destroy_process_group()


def test_a_stop_one_rank_decides_stops_every_rank():
    """Unlisted bug 2: the memory check and the GPU-idle guard stopped one rank from its own view of the job
    (its GPU's memory, its GPU's utilisation), while the other ranks waited for it in the next collective."""
    a, b = run_two_ranks(_stop_rank, 1)
    assert a == "rank 1: the GPU has been 0% busy" and b == "the GPU has been 0% busy"
    a, b = run_two_ranks(_stop_rank, -1)
    assert a is None and b is None


def _profile_rank(rank, run):
    import torch
    import torch.distributed as dist

    from gpt2lab.metrics.profiler import Profiler

    dist.init_process_group("gloo")
    try:
        profiler = Profiler(run, 1, torch.device("cpu"), rank, dist.get_world_size())
        with profiler.session():
            for _ in range(3):
                with profiler.step():
                    torch.ones(64, 64) @ torch.ones(64, 64)
        return sorted(str(p.relative_to(run)) for p in Path(run).rglob("*") if p.is_file())
    finally:
        dist.destroy_process_group()


def test_each_rank_writes_its_own_profile(tmp_path):
    """C1: every rank wrote RUN_DIR/profile/trace.json and summary.txt, over each other."""
    run_two_ranks(_profile_rank, str(tmp_path))
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["profile/rank0/summary.txt", "profile/rank0/trace.json", "profile/rank1/summary.txt",
                     "profile/rank1/trace.json"]


def _disagreeing_rank(rank, data, run, rank1_sets, rank1_data):
    from gpt2lab.errors import UserError
    from gpt2lab.training.distributed import shutdown

    try:
        t = _trainer(rank, rank1_data if rank == 1 and rank1_data else data, run, *(rank1_sets if rank == 1 else []))
    except UserError as exc:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
        return str(exc)
    t.lock and t.lock.release()
    shutdown(t.dist)
    return None


@pytest.mark.parametrize("rank1_sets, rank1_data, said", [
    (["optim.lr=0.02"], None, "the ranks disagree at start-up: optim.lr (0.01 on rank 0, 0.02 on rank 1)"),
    ([], "other", "the ranks disagree at start-up: data (its fingerprint)"),
    ([], "missing", "rank 1: data directory"),
])
def test_ranks_started_apart_stop_together_at_start_up(tmp_path, rank1_sets, rank1_data, said):
    """A rank started with another setting trained on silently (under DDP another LR only makes its weights drift
    from the others'), and one that could not open its data left the others waiting in a collective."""
    data = make_data_dir(tmp_path / "data")
    if rank1_data == "other":
        make_data_dir(tmp_path / "other", seed=7)
    assert micro_config(data).optim.lr == 0.01  # the message above names the micro config's LR
    a, b = run_two_ranks(_disagreeing_rank, str(data), str(tmp_path / "run"), rank1_sets,
                         str(tmp_path / rank1_data) if rank1_data else None, timeout=60)
    # the same line on both (the rank with the problem says it without naming itself, as stop_together does)
    assert a is not None and said in a and a.removeprefix("rank 1: ") == b, (a, b)
