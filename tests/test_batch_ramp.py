"""schedule.batch_ramp_steps: a batch that grows by accumulating more micro-batches per step."""

import math

import pytest
import torch

from gpt2lab.checkpoint import read_tensors
from gpt2lab.errors import UserError
from gpt2lab.metrics.logger import read_metrics
from gpt2lab.training.batch_ramp import BatchRamp
from tests.helpers import micro_config, trainer


@pytest.mark.parametrize("full", [2, 3, 4, 7, 16])
@pytest.mark.parametrize("steps", [1, 5, 37, 100])
@pytest.mark.parametrize("start", [0.01, 0.25, 0.5, 0.99])
def test_the_count_grows_to_the_full_batch_and_its_sum_is_exact(full, steps, start):
    """Counts never fall, start near start x full (at least 1), reach full at the ramp's end; the tokens before a
    step (computed per count value) equal the plain sum over the steps before it."""
    ramp = BatchRamp(full, steps, start)
    counts = [ramp.micro_steps(k) for k in range(steps + 4)]
    assert counts == sorted(counts) and counts[0] == max(1, math.ceil(full * start))
    assert counts[steps:] == [full] * 4 and all(1 <= c <= full for c in counts)
    assert [ramp.micro_steps_before(s) for s in range(len(counts) + 1)] == [sum(counts[:s]) for s in range(len(counts) + 1)]
    assert BatchRamp(full).micro_steps_before(9) == 9 * full  # off: the full batch from the start


def test_a_ramped_run_takes_fewer_micro_batches_early_and_counts_its_tokens(data_dir, tmp_path):
    """batch_tokens of 4 micro-batches (4 x 32 tokens each), ramped over 6 steps from a quarter: step 1 takes one
    micro-batch, so its update is the update of a run whose batch is one micro-batch; every record's tokens is
    the sum of what the steps took, and `batch_tokens` says the step's own batch while it ramps."""
    ramped = micro_config(data_dir, "run.batch_tokens=512", "schedule.batch_ramp_steps=6", "schedule.max_steps=8")
    trainer(ramped, tmp_path / "ramped", echo=lambda *_: None).fit()
    records = read_metrics(tmp_path / "ramped")
    counts = [BatchRamp(4, 6, 0.25).micro_steps(k) for k in range(8)]
    assert counts[0] == 1 and counts[-1] == 4 and len(set(counts)) == 4
    assert [r["tokens"] for r in records] == [sum(counts[: k + 1]) * 128 for k in range(8)]
    assert [r.get("batch_tokens", 512) for r in records] == [c * 128 for c in counts]

    # the same run with a batch of one micro-batch: its step 1 (same data, same LR) is the ramped run's step 1
    single = micro_config(data_dir, "run.batch_tokens=128", "schedule.max_steps=8", "checkpoint.every=1",
                          "checkpoint.keep_last=none")
    again = micro_config(data_dir, "run.batch_tokens=512", "schedule.batch_ramp_steps=6", "schedule.max_steps=8",
                         "checkpoint.every=1", "checkpoint.keep_last=none")
    for cfg, name in ((single, "single"), (again, "again")):
        trainer(cfg, tmp_path / name, echo=lambda *_: None).fit()
    first = [read_tensors(tmp_path / name / "checkpoints" / "step_00000001" / "model.safetensors")
             for name in ("single", "again")]
    assert all(torch.equal(first[0][k], first[1][k]) for k in first[0])
    losses = [[r["loss"] for r in read_metrics(tmp_path / name)] for name in ("single", "again")]
    assert losses[0][0] == losses[1][0] and losses[0][1] != losses[1][1]  # step 2 takes two micro-batches


def test_a_ramp_without_accumulation_is_one_line(data_dir, tmp_path):
    with pytest.raises(UserError, match="accumulating more micro-batches per step, and this run has one"):
        trainer(micro_config(data_dir, "schedule.batch_ramp_steps=4"), tmp_path / "run", echo=lambda *_: None)
    for sets, message in ((["schedule.batch_ramp_steps=20"], "must be between 1 and max_steps=8"),
                          (["schedule.batch_ramp_start=1"], "batch_ramp_start must be in \\(0, 1\\)")):
        with pytest.raises(UserError, match=message):
            micro_config(data_dir, *sets).validate()
