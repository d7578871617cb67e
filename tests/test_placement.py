"""The placement dry run: every preset's and recipe's training step, resume and rollback with the model on a device
that is not the CPU (the meta device stands in for a GPU: it holds no memory, so gpt2-124m costs nothing, and
an operation that mixes it with CPU tensors fails as it would on CUDA). Before each step, every parameter,
gradient, optimizer state tensor (`step` included, by torch's rule) and batch must be on the parameters' device.
"""

import pytest
import torch

from gpt2lab.config import build_config
from gpt2lab.model import GPT
from gpt2lab.runtime import Runtime
from gpt2lab.training.guards import LossGuard, misplaced
from gpt2lab.training.optim import build_optimizer, load_named_state_dict, named_state_dict
from gpt2lab.training.optim.muon import Muon
from gpt2lab.training.step import StepParts, train_step

META = torch.device("meta")
CASES = [("preset", "tiny"), ("recipe", "speedrun-cpu"),
         *[pytest.param(*case, marks=pytest.mark.slow) for case in  # the full-size ones: 2-5 s each
           (("preset", "gpt2-124m"), ("preset", "gpt2-124m-modern"), ("recipe", "gpt2-124m-speedrun"))]]


def _config(kind, name, *sets):
    return build_config(**{kind: name}, sets=["run.micro_batch=2", "data.seq_len=64", *sets])


def _as_loaded(state):
    """What a checkpoint gives back: the same structure, every tensor on the CPU (safetensors reads there)."""
    if isinstance(state, torch.Tensor):
        return torch.ones((), dtype=state.dtype) if state.dim() == 0 else torch.empty(state.shape, dtype=state.dtype)
    if isinstance(state, dict):
        return {k: _as_loaded(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_as_loaded(v) for v in state)
    return state


class MetaAdamW(torch.optim.AdamW):
    """torch's AdamW where its fused kernel cannot run (meta): the on-device skip flag is dropped."""

    def step(self, closure=None):
        self.__dict__.pop("found_inf", None)
        return super().step(closure)


class MetaRun:
    """A model, optimizer and guard on the meta device, stepped by gpt2lab's own train_step."""

    def __init__(self, cfg):
        self.cfg = cfg
        with META:
            self.model = GPT(cfg.model)
        self.optimizer = build_optimizer(self.model, cfg.optim, META)
        # meta has no fused kernels of its own, so the builders choose the unfused path there; set what they choose
        # on a GPU: Muon's AdamW part fused (torch's functional fused AdamW runs on meta) and every update decided
        # on the device. torch's AdamW class refuses fused on meta: it updates unconditionally (MetaAdamW), which
        # changes values only, and values mean nothing on meta
        for group in self.optimizer.param_groups:
            if "use_muon" in group:
                group["fused"] = True
        if type(self.optimizer) is torch.optim.AdamW:
            self.optimizer.__class__ = MetaAdamW
        self.optimizer.skips_on_device = True
        self.guard = LossGuard(cfg.guard.spike_z, META)
        self.runtime = Runtime(device=META, precision="fp32")

    def batch(self):
        x = torch.empty((self.cfg.run.micro_batch, self.cfg.seq_len), dtype=torch.long, device=META)
        self.last_batch = x
        return x, x

    def step(self):
        assert not misplaced(self.model, self.optimizer, self.batch()[0])
        parts = StepParts(self.model, self.optimizer, self.guard, self.runtime, micro_steps=2,
                          grad_clip=self.cfg.optim.grad_clip)
        stats, _ = train_step(parts, self.batch)
        assert stats.device == META
        assert not misplaced(self.model, self.optimizer, self.last_batch)


@pytest.mark.parametrize("kind,name", CASES)
def test_steps_resume_and_rollback_keep_every_tensor_on_the_device(kind, name):
    run = MetaRun(_config(kind, name))
    run.step()
    run.step()
    saved = _as_loaded(named_state_dict(run.optimizer))
    resumed = MetaRun(run.cfg)  # --resume: a fresh model and optimizer, the state read from disk
    load_named_state_dict(resumed.optimizer, saved, resumed.model)
    assert not misplaced(resumed.model, resumed.optimizer)
    resumed.step()
    load_named_state_dict(resumed.optimizer, saved, resumed.model)  # a rollback: into the running optimizer
    resumed.step()


def test_muons_fused_adamw_step_counts_follow_the_parameters_on_resume():
    """N2: a resumed Muon run kept its AdamW `step` tensors on the CPU (its groups said neither fused nor
    capturable), and the fused CUDA kernel refuses them. Muon is built as on a GPU, with the fused AdamW part."""
    cfg = _config("recipe", "gpt2-124m-speedrun")
    with META:
        model = GPT(cfg.model)
    from gpt2lab.training.optim.groups import param_groups

    from gpt2lab.training.optim import settings_of

    o, s = cfg.optim, settings_of(cfg.optim)
    optimizer = Muon(param_groups(model, o, ("matrix",), use_muon=True)
                     + param_groups(model, o, ("embedding", "head", "gain"), use_muon=False),
                     s.momentum, s.nesterov, s.ns_steps, (o.beta1, o.beta2), o.eps, True, cfg.model.mlp)
    state = {}
    for group in optimizer.param_groups:
        for name, p in zip(group["names"], group["params"]):
            if group["use_muon"]:
                state[name] = {"momentum_buffer": torch.empty(p.shape)}
            else:
                state[name] = {"step": torch.tensor(3.0), "exp_avg": torch.empty(p.shape),
                               "exp_avg_sq": torch.empty(p.shape)}
    load_named_state_dict(optimizer, {"format": "named", "state": state, "groups": []}, model)
    steps = [s["step"].device for s in optimizer.state.values() if "step" in s]
    assert steps and all(d == META for d in steps)
    assert not misplaced(model, optimizer)


def test_a_misplaced_tensor_is_named():
    model = torch.nn.Linear(2, 2).to(META)
    optimizer = torch.optim.AdamW(model.parameters(), capturable=True)
    optimizer.state[model.weight] = {"step": torch.tensor(1.0), "exp_avg": torch.empty(2, 2, device=META)}
    stray = misplaced(model, optimizer, torch.zeros(1, dtype=torch.long))
    assert any("'step' of weight on cpu" in s for s in stray) and any("batch on cpu" in s for s in stray)
