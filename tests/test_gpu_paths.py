"""What a first GPU run does, checked on the CPU: the strict CUDA double (tests/cuda_double.py) answers what a
CPU build cannot (GPUs, their names, capability, memory) and leaves torch's own checks real; gloo process
groups stand in for NCCL."""

import json
import math
import random

import numpy as np
import pytest
import torch

from gpt2lab.errors import UserError
from gpt2lab.runtime import resolve_runtime, rng_state, set_rng_state
from tests.helpers import micro_config, trainer
from tests.cuda_double import A100, H100, T4, install


def test_the_default_device_is_the_current_gpu_with_its_index(monkeypatch):
    """N1: `auto` and `cuda` used to reach torch.cuda.set_device(torch.device("cuda")), which torch refuses."""
    machine = install(monkeypatch, H100, H100)
    machine.current = 1
    for device in ("auto", "cuda"):
        rt = resolve_runtime(device, "auto")
        assert rt.device == torch.device("cuda", 1) and rt.precision == "bf16"
    assert ("set_device", 1) in machine.calls and ("set_device", 0) not in machine.calls
    assert "H100" in rt.banner()


def test_precision_auto_asks_the_gpu_the_run_is_on(monkeypatch):
    """N10: a T4 as GPU 1 beside an H100 gets fp16, an A100 beside a T4 gets bf16 (not GPU 0's answer)."""
    install(monkeypatch, H100, T4)
    rt = resolve_runtime("cuda:1", "auto")
    assert rt.precision == "fp16" and "grad scaler" in rt.why
    with pytest.raises(UserError, match="no bf16 tensor cores"):
        resolve_runtime("cuda:1", "bf16")
    install(monkeypatch, T4, A100)
    assert resolve_runtime("cuda:1", "auto").precision == "bf16"
    assert resolve_runtime("cuda:0", "auto").precision == "fp16"


def test_cuda_n_is_made_the_current_device(monkeypatch):
    machine = install(monkeypatch, T4, T4)
    rt = resolve_runtime("cuda:1", "fp16")
    assert str(rt.device) == "cuda:1" and machine.calls[-1] == ("set_device", 1) and machine.current == 1
    with pytest.raises(UserError, match="only 2 CUDA device"):
        resolve_runtime("cuda:2")


def test_cuda_rng_is_saved_for_the_training_device_only_and_old_states_still_load(monkeypatch):
    machine = install(monkeypatch, H100, H100, H100, H100)
    machine.generators[0].manual_seed(7)
    saved = rng_state(torch.device("cuda:0"))
    assert "cuda" not in saved and torch.equal(saved["cuda_device"], machine.generators[0].get_state())
    # a 0.1 checkpoint saved on a 4-GPU machine ("cuda": one state per visible GPU)
    states = []
    for i in range(4):
        machine.generators[i].manual_seed(100 + i)
        states.append(machine.generators[i].get_state())
    legacy = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
              "cuda": states}
    for g in machine.generators:
        g.manual_seed(0)
    set_rng_state(legacy, torch.device("cuda:3"))  # index 3 exists in the saved list
    assert torch.equal(machine.generators[3].get_state(), states[3])
    assert not torch.equal(machine.generators[2].get_state(), states[2])  # only the training device's
    install(monkeypatch, H100, H100, H100, H100, H100, H100, H100, H100)
    set_rng_state(legacy, torch.device("cuda:7"))  # beyond the saved list: no IndexError, a fresh stream


def test_fsdp_builds_its_mesh_on_the_runs_device(monkeypatch):
    """FSDP without a mesh picks the GPU it finds; the run's device must decide (here: CPU on a 'GPU machine'),
    with torch's real mesh and sharding over a gloo group of one."""
    import gpt2lab.training.distributed as distributed
    from gpt2lab.model import GPT, GPTConfig

    install(monkeypatch)
    d = distributed.init_distributed("fsdp", "cpu", 60)
    try:
        model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32))
        distributed.wrap_model(model, d, torch.device("cpu"))
        meshes = {p.device_mesh.device_type for p in model.parameters()}
        assert meshes == {"cpu"} and all(p.device.type == "cpu" for p in model.parameters())
    finally:
        distributed.shutdown(d)


def test_mfu_is_per_gpu(data_dir, tmp_path):
    from gpt2lab.training.step import Pending
    from gpt2lab.metrics.timing import Timing

    t = trainer(micro_config(data_dir, "run.peak_tflops=1"), tmp_path / "run", echo=lambda *_: None)
    stats = torch.tensor([3.0, 1.0, 0, 0, 0, 20, 0, 0], dtype=torch.float64)
    one = t.complete(Pending({"step": 1, "tokens": 1, "lr": 1.0}, stats, Timing({}, [])), 1.0)
    t.dist.world_size = 4
    four = t.complete(Pending({"step": 1, "tokens": 1, "lr": 1.0}, stats, Timing({}, [])), 1.0)
    assert four["tokens_per_sec"] == one["tokens_per_sec"] and four["mfu"] == pytest.approx(one["mfu"] / 4)
    t.lock.release()


def test_a_failure_that_is_not_corruption_stops_the_resume(data_dir, tmp_path, monkeypatch):
    """A CUDA error while loading is not a corrupt checkpoint: no silent fallback to an older one."""
    import gpt2lab.checkpoint as ckpt

    cfg = micro_config(data_dir, "schedule.max_steps=4", "checkpoint.every=2", "checkpoint.keep_last=none")
    trainer(cfg, tmp_path / "run", echo=lambda *_: None).fit()

    def cuda_error(*a, **k):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(ckpt, "load_weights", cuda_error)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        trainer(cfg, tmp_path / "run", resume=True, echo=lambda *_: None)
    assert len(ckpt.complete_checkpoints(tmp_path / "run")) == 2  # nothing was set aside


def test_init_from_works_under_fsdp(data_dir, tmp_path):
    """Loading the weights happens before FSDP shards the model (a group of one gloo process here)."""
    import gpt2lab.checkpoint as ckpt

    source = micro_config(data_dir, "schedule.max_steps=2")
    plain = []
    trainer(source, tmp_path / "src", echo=plain.append).fit()
    cfg = micro_config(data_dir, "schedule.max_steps=2", "run.parallel=fsdp")
    messages = []
    t = trainer(cfg, tmp_path / "ft", init_from=str(tmp_path / "src"), echo=messages.append)
    expected = ckpt.model_weights(ckpt.load_model_from_checkpoint(tmp_path / "src", torch.device("cpu"))[0])
    from gpt2lab.training.distributed import full_weights

    got = full_weights(t.model)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    t.fit()
    assert any("initialised from" in m for m in messages)
    # the start-up line says how the model is spread (the H200 log of a one-rank FSDP run did not), and a plain
    # process says nothing of it
    assert any(m.startswith("model: ") and m.endswith("| FSDP over 1 process (gloo)") for m in messages)
    assert not any("process" in m for m in plain if m.startswith("model: "))


@pytest.mark.slow
def test_auto_batch_tunes_on_rank_0_and_every_rank_takes_its_answer():
    from tests.two_ranks import run_two_ranks

    assert run_two_ranks(_tune_on_rank) == [8, 8]  # rank 1 alone would have chosen 2


def _tune_on_rank(rank: int) -> int:
    import torch.distributed as dist

    from gpt2lab.config import build_config
    from gpt2lab.model import GPT, GPTConfig
    from gpt2lab.training.autobatch import tune_micro_batch
    from gpt2lab.training.distributed import Dist

    dist.init_process_group("gloo", rank=rank, world_size=2)
    model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=16))
    optimizer = torch.optim.AdamW(model.parameters(), fused=True)
    optimizer.skips_on_device = True
    limit = 8 if rank == 0 else 2  # pretend the ranks have different free memory
    best = tune_micro_batch(model, optimizer, resolve_runtime("cpu", "fp32"), build_config(preset="tiny"),
                            Dist(rank=rank, world_size=2, strategy="ddp"), 32, 64, fits=lambda b: b <= limit)
    assert all(len(s) == 0 or float(s["step"]) == 0 for s in optimizer.state.values())  # nothing was updated
    dist.destroy_process_group()
    return best


def test_eval_uses_the_chunked_loss_and_never_the_whole_head(data_dir):
    from gpt2lab.data.loader import Windows
    from gpt2lab.eval.perplexity import evaluate_loss
    from gpt2lab.model import GPT

    cfg = micro_config(data_dir)
    model = GPT(cfg.model)
    calls = []
    model.lm_head.register_forward_hook(lambda *a: calls.append(1))
    windows = Windows(str(data_dir), "val", cfg.seq_len)
    rt = resolve_runtime("cpu", "fp32")
    chunked = evaluate_loss(model, windows, 8, rt, 2, loss_chunk=16)
    assert calls == []  # the head's full logits were never built
    whole = evaluate_loss(model, windows, 8, rt, 2)
    assert calls and math.isclose(chunked["loss"], whole["loss"], rel_tol=1e-5)


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                                   MemoryError()])
def test_running_out_of_memory_while_loading_sets_nothing_aside(data_dir, tmp_path, monkeypatch, error):
    """N5: an out-of-memory while loading weights on --resume renamed healthy checkpoints step_N.corrupt."""
    import gpt2lab.checkpoint as ckpt

    cfg = micro_config(data_dir, "schedule.max_steps=4", "checkpoint.every=2", "checkpoint.keep_last=none")
    trainer(cfg, tmp_path / "run", echo=lambda *_: None).fit()

    def out_of_memory(*a, **k):
        raise error

    monkeypatch.setattr(ckpt, "load_model", out_of_memory)  # safetensors' loader, as a full GPU ends it
    with pytest.raises(UserError, match="out of memory while loading step_00000004"):
        trainer(cfg, tmp_path / "run", resume=True, echo=lambda *_: None)
    assert len(ckpt.complete_checkpoints(tmp_path / "run")) == 2
    assert not list((tmp_path / "run" / "checkpoints").glob("*.corrupt"))


def test_an_intact_checkpoint_of_another_tensor_set_is_refused_not_set_aside(data_dir, tmp_path):
    """A checkpoint whose files match their SHA-256 but not this model is a mismatch, not damage."""
    import gpt2lab.checkpoint as ckpt

    cfg = micro_config(data_dir, "schedule.max_steps=2", "checkpoint.every=2")
    trainer(cfg, tmp_path / "run", echo=lambda *_: None).fit()
    folder = ckpt.complete_checkpoints(tmp_path / "run")[0]
    from safetensors.torch import load_file, save_file

    weights = load_file(str(folder / "model.safetensors"))
    weights["transformer.extra.weight"] = torch.zeros(2)
    save_file(weights, str(folder / "model.safetensors"))
    marker = json.loads((folder / "COMPLETE").read_text())
    marker["files"]["model.safetensors"] = ckpt._digest(folder / "model.safetensors")
    (folder / "COMPLETE").write_text(json.dumps(marker))
    with pytest.raises(UserError, match="does not match the model"):
        trainer(cfg, tmp_path / "run", resume=True, echo=lambda *_: None)
    assert ckpt.complete_checkpoints(tmp_path / "run") == [folder]


def test_an_fsdp_resume_keeps_this_runs_optimizer_settings(data_dir, tmp_path):
    """W1: set_state_dict restored the checkpoint's param groups, so a changed optim.lr (or decay) was ignored
    while metrics.jsonl reported the new one."""
    base = micro_config(data_dir, "schedule.max_steps=2", "checkpoint.every=2", "run.parallel=fsdp")
    trainer(base, tmp_path / "run", echo=lambda *_: None).fit()
    cfg = micro_config(data_dir, "schedule.max_steps=4", "checkpoint.every=2", "run.parallel=fsdp", "optim.lr=3e-3",
                       "optim.weight_decay=0.05")
    t = trainer(cfg, tmp_path / "run", resume=True, echo=lambda *_: None)
    assert {g["base_lr"] for g in t.optimizer.param_groups} == {3e-3}
    assert {g["weight_decay"] for g in t.optimizer.param_groups} <= {0.05, 0.0}
    t.fit()


def test_cuda_n_under_torchrun_is_refused_in_one_line(monkeypatch):
    """Under torchrun NCCL was bound to cuda:LOCAL_RANK while the model went to cuda:N."""
    from gpt2lab.training.distributed import init_distributed

    install(monkeypatch, H100, H100)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="CUDA_VISIBLE_DEVICES"):
        init_distributed("ddp", "cuda:1", 60)


def test_each_rank_profiles_into_its_own_folder(tmp_path):
    """C1: every rank wrote RUN_DIR/profile/ to the same paths."""
    from gpt2lab.metrics.profiler import Profiler

    cpu = torch.device("cpu")
    assert Profiler(tmp_path, 2, cpu).dir == tmp_path / "profile"
    folders = {Profiler(tmp_path, 2, cpu, rank, 2).dir for rank in range(2)}
    assert folders == {tmp_path / "profile" / "rank0", tmp_path / "profile" / "rank1"}


def test_ddp_is_wrapped_without_torchs_deprecation_warning(recwarn):
    """C2: torch 2.13 deprecates broadcast_buffers with a FutureWarning."""
    from gpt2lab.model import GPT, GPTConfig
    from gpt2lab.training import distributed

    d = distributed.init_distributed("fsdp", "cpu", 60)  # a group of one to wrap in
    try:
        model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=16))
        distributed.wrap_model(model, distributed.Dist(world_size=1, strategy="ddp"), torch.device("cpu"))
    finally:
        distributed.shutdown(d)
    assert not [w for w in recwarn if "broadcast_buffers" in str(w.message)]


def test_a_filesystem_without_locks_is_a_note_not_a_traceback(tmp_path, monkeypatch):
    """Unlisted bug 3: on NFS without lockd (or Lustre mounted without flock), flock fails with ENOLCK, and
    train, prepare and export ended in a traceback. A directory fsync there can fail with EINVAL too."""
    import errno
    import fcntl

    from gpt2lab.files import FolderLock, fsync_dir

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    lock = FolderLock(tmp_path / "out", "the run directory").acquire()
    assert "cannot lock" in lock.note
    lock.release()

    def no_dir_fsync(fd):
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr("os.fsync", no_dir_fsync)
    fsync_dir(tmp_path)  # no error: the rename is as durable as this filesystem makes it


def test_out_of_memory_in_an_evaluation_is_one_line(data_dir, tmp_path):
    """Evaluations ran outside the out-of-memory help: a traceback at the first eval of a run that trained fine."""
    class Hungry:
        name, metrics = "hungry", ()

        def due(self, step, final):
            return step == 2

        def describe(self):
            return {"name": self.name}

        def __call__(self, model, runtime, shard, reduce):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 6.00 GiB")

    from gpt2lab.training.trainer import Trainer

    cfg = micro_config(data_dir, "schedule.max_steps=4")
    t = Trainer(cfg, tmp_path / "run", evaluators=lambda *a: [Hungry()], echo=lambda *_: None)
    with pytest.raises(UserError, match="out of memory at micro-batch 4 x 32 \\(during an evaluation"):
        t.fit()


def test_gpt2lab_eval_out_of_memory_is_one_line(data_dir, tmp_path, monkeypatch):
    import gpt2lab.commands.eval as eval_command

    trainer(micro_config(data_dir, "schedule.max_steps=2"), tmp_path / "run", echo=lambda *_: None).fit()

    def hungry(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(eval_command, "evaluate_loss", hungry)
    options = eval_command.EvalOptions(data=str(data_dir), device="cpu", batch_size=64)
    with pytest.raises(UserError, match="lower --batch-size"):
        eval_command.evaluate(str(tmp_path / "run"), options)


def test_auto_batch_is_not_refused_for_the_micro_batch_it_replaces(monkeypatch, tmp_path):
    """Unlisted bug 1: with --auto-batch the memory check ran first, at the configured micro-batch that the
    search was about to replace: gpt2-124m at micro-batch 64 on a 6 GB laptop GPU was refused instead of tuned."""
    from types import SimpleNamespace

    from gpt2lab.config import build_config
    from gpt2lab.runtime import Runtime
    from gpt2lab.training.distributed import Dist
    from gpt2lab.training.trainer import Trainer

    install(monkeypatch, dict(name="NVIDIA GeForce RTX 4050 Laptop GPU", major=8, minor=9, total_memory=6 * 2**30))
    cuda = Runtime(device=torch.device("cuda:0"), precision="bf16")
    cfg = build_config(preset="gpt2-124m", sets=["run.micro_batch=64"])
    with pytest.raises(UserError, match="micro-batch 64 x 1024"):
        Trainer._check_memory(SimpleNamespace(cfg=cfg, runtime=cuda, dist=Dist()))
    cfg = build_config(preset="gpt2-124m", sets=["run.micro_batch=64", "run.auto_batch=true"])
    Trainer._check_memory(SimpleNamespace(cfg=cfg, runtime=cuda, dist=Dist()))  # the search starts from 1


def test_the_profile_summary_says_how_long_the_steps_took_and_what_cost_most(tmp_path):
    """summary.txt leads with the profiled steps' wall time (on a GPU also how much of it the GPU computed: the
    under-used GPU of the WikiText-103 report), then the operators by time."""
    from gpt2lab.metrics.profiler import Profiler

    profiler = Profiler(tmp_path, 3, torch.device("cpu"))
    a = torch.randn(64, 64)
    with profiler.session():
        for _ in range(6):
            with profiler.step():
                a = torch.tanh(a @ a)
    text = (tmp_path / "profile" / "summary.txt").read_text()
    assert text.startswith("3 steps in ") and "ms per step" in text
    assert "by CPU time" in text and "aten::mm" in text and (tmp_path / "profile" / "trace.json").exists()
    events = torch.profiler.profile()  # the field the GPU summary sums exists in this torch
    with events:
        torch.ones(2) + 1
    assert all(hasattr(e, "self_device_time_total") for e in events.key_averages())


def test_the_gpu_busy_time_is_what_torchs_own_table_totals():
    """The H200's first profile summed every event's device time and said the GPU was busy for 205% of the wall
    time: a compiled graph's annotation spans the kernels inside it. Events as a CUDA profile records them (torch's
    own event classes, a kernel, a copy, an annotation over them, a CPU op), checked against torch's table total."""
    import re

    from torch.autograd import DeviceType
    from torch.autograd.profiler_util import EventList, FunctionEvent

    from gpt2lab.metrics.profiler import gpu_busy_seconds

    def event(i, name, start, end, device=DeviceType.CUDA, annotation=False):
        return FunctionEvent(i, name, thread=0, start_us=start, end_us=end, device_type=device, use_device="cuda", stack=[],
                             is_user_annotation=annotation)

    events = EventList([event(1, "## Call CompiledFxGraph abc", 0, 3000, annotation=True),
                        event(2, "triton_red_fused_log_softmax", 0, 1000), event(3, "Memcpy HtoD", 1000, 1500),
                        event(4, "aten::mm", 0, 400, device=DeviceType.CPU)], use_device="cuda")
    events._build_tree()  # what the profiler does when it stops
    averages = events.key_averages()
    total = re.search(r"Self CUDA time total: ([\d.]+)ms", averages.table(sort_by="cuda_time_total"))
    assert gpu_busy_seconds(averages) == pytest.approx(float(total.group(1)) / 1e3) == pytest.approx(1.5e-3)


def test_the_first_steps_peak_memory_is_not_the_auto_batch_trials(monkeypatch):
    """On the H200 the speedrun's step 1 reported 118 GB at micro-batch 64: the peak of the trial that did not fit
    (128), not training's. The search leaves the GPU's peak counter at what is allocated after it."""
    from gpt2lab.config import build_config
    from gpt2lab.model import GPT, GPTConfig
    from gpt2lab.training.autobatch import tune_micro_batch
    from gpt2lab.training.distributed import Dist
    from tests.cuda_double import install

    machine = install(monkeypatch)
    gpu = machine.gpus[0]
    model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=16))
    optimizer = torch.optim.AdamW(model.parameters())

    def fits(b):  # a trial allocates for b sequences; 128 fills the card and fails
        gpu.peak = max(gpu.peak, b * 2**30)
        return b <= 64

    gpu.allocated = 3 * 2**30  # weights, gradients, optimizer state
    best = tune_micro_batch(model, optimizer, resolve_runtime("cuda", "fp32"), build_config(preset="tiny"),
                            Dist(rank=0, world_size=1), 512, 256, fits=fits)
    assert best == 64 and torch.cuda.max_memory_allocated() == 3 * 2**30
