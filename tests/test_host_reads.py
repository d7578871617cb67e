"""The training step does not make the host wait for the device: at most one read of device values per step,
and of the step before (so a GPU can run one step ahead of the CPU); none inside the chunked head loss."""

import contextlib

import pytest
import torch

from gpt2lab.model import loss as loss_module
from gpt2lab.model.loss import head_loss
from tests.helpers import micro_config, trainer

READS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__", "nonzero", "numpy", "cpu")


@contextlib.contextmanager
def counting_host_reads(log: list):
    """Every call of a Tensor method that brings a device value to the host is appended to `log`."""
    originals = {name: getattr(torch.Tensor, name) for name in READS}

    def wrap(name, original):
        def counted(self, *args, **kwargs):
            log.append(name)
            return original(self, *args, **kwargs)
        return counted

    for name, original in originals.items():
        setattr(torch.Tensor, name, wrap(name, original))
    try:
        yield log
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_one_host_read_per_step_of_the_step_before(data_dir, tmp_path, optimizer):
    cfg = micro_config(data_dir, "schedule.max_steps=12", f"optim.name={optimizer}", "run.batch_tokens=256",
                       "checkpoint.every=none", "eval.every=none")
    t = trainer(cfg, tmp_path / "run", echo=lambda *_: None)
    from gpt2lab.training import step as step_module

    reads_by_step, read_of = {}, []
    real_read = step_module.Pending.read

    def read(pending, *args, **kwargs):  # which step's values, read while the trainer is at which step
        read_of.append((t.step, pending.record["step"]))
        return real_read(pending, *args, **kwargs)

    step_module.Pending.read = read
    real_train_step = t.train_step

    def train_step():
        with counting_host_reads(reads_by_step.setdefault(t.step + 1, [])):
            return real_train_step()

    t.train_step = train_step
    try:
        t.fit()
    finally:
        step_module.Pending.read = real_read
    # inside the steps themselves (forward, backward, clip, guard, optimizer): nothing is read
    assert all(reads == [] for reads in reads_by_step.values()), reads_by_step
    # the loop reads each step's values once, while the next step has already been queued
    assert [s for s, _ in read_of[:-1]] == [r + 1 for _, r in read_of[:-1]]
    assert [r for _, r in read_of] == list(range(1, 13))


def test_the_loop_between_steps_reads_once(data_dir, tmp_path):
    """Everything the loop does per step, the record and the console line included: one read (a batched
    .tolist()). Saving and evaluating read values by nature and are counted apart."""
    cfg = micro_config(data_dir, "schedule.max_steps=10", "checkpoint.every=none", "eval.every=none", "log.every=3",
                       "checkpoint.asynchronous=false")  # the writer's own reads then fall inside save()
    t = trainer(cfg, tmp_path / "run", echo=lambda *_: None)
    log, outside = [], []

    def apart(method):
        def run(*args, **kwargs):
            start = len(log)
            try:
                return method(*args, **kwargs)
            finally:
                outside.extend(log[start:])
                del log[start:]
        return run

    t.save, t.evaluate = apart(t.save), apart(t.evaluate)
    with counting_host_reads(log):
        t.fit()
    assert log == ["tolist"] * 10, log  # one per step: the step's record
    assert outside  # the final evaluation and checkpoint did read (and were not counted as steps)


def _not_when_compiled(*args, **kwargs):
    raise AssertionError("the in-place (eager CPU) form of the head loss ran inside a compiled graph")


@pytest.mark.slow
def test_the_chunked_loss_reads_nothing_and_compiles_as_one_graph():
    torch.manual_seed(0)
    h = torch.randn(4, 32, 16, requires_grad=True)
    w = torch.randn(100, 16, requires_grad=True)
    y = torch.randint(0, 100, (4, 32))
    y[0, :3] = -1
    log = []
    with counting_host_reads(log):
        loss = head_loss(h, w, y, 37, 15.0)
        loss.backward()
    assert log == []
    compiled = torch.compile(lambda a, b, c: head_loss(a, b, c, 37, 15.0), fullgraph=True)
    with pytest.MonkeyPatch.context() as patch:  # a compiled run keeps the fusable form, on a CPU too
        patch.setattr(loss_module, "_chunk_in_place", _not_when_compiled)
        assert torch.allclose(compiled(h, w, y), loss)
