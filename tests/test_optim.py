"""Optimizers: parameter roles and groups (by name), Muon's Newton-Schulz against an SVD, skipping on the device,
the registry, and optimizer state that survives a change of grouping."""

import pytest
import torch

from gpt2lab.config import OptimConfig
from gpt2lab.errors import UserError
from gpt2lab.model import GPT, GPTConfig
from gpt2lab.training.optim import build_optimizer, load_named_state_dict, named_state_dict, set_lr_multiplier
from gpt2lab.training.optim.groups import legacy_names
from gpt2lab import runtime
from gpt2lab.training.optim.muon import newton_schulz_dtype, orthogonalize

CPU = torch.device("cpu")
MODERN = dict(pos="rope", mlp="swiglu", norm="rmsnorm", bias=False)


def small(**kw):
    return GPT(GPTConfig(**{**dict(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32), **kw}))


def groups_by_role(optimizer):
    return {g["role"]: set(g["names"]) for g in optimizer.param_groups}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [(64, 256), (256, 64), (96, 160)])
def test_newton_schulz_gives_the_orthogonal_factor_of_an_svd(shape, dtype):
    torch.manual_seed(0)
    g = torch.randn(*shape)
    o = orthogonalize(g, dtype=dtype).float()
    singular = torch.linalg.svdvals(o)
    assert singular.min() > 0.6 and singular.max() < 1.25  # every direction scaled to about 1
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    cosine = (o * (u @ vh)).sum() / (o.norm() * (u @ vh).norm())
    assert cosine > 0.97  # the same directions as U V^T
    assert orthogonalize(g).shape == g.shape


def test_per_iteration_coefficients_are_minimax_and_orthogonalise_better_than_one_quintic():
    """polar.py: each iteration's quintic equioscillates (its worst error is reached at the interval's low end and
    at its peak, with opposite signs: the minimax property), the composition maps [1e-3, 1] into [0.85, 1.15]
    (the fixed quintic: about [0.47, 1.2]), and on a matrix whose singular values span 1e-3..1 the bf16 result is
    closer to U V^T than the quintic's, in the same directions."""
    import numpy as np

    from gpt2lab.training.optim.polar import minimax_quintic, polar_coefficients

    (a, b, c), error = minimax_quintic(0.05, 1.0)
    s = np.linspace(0.05, 1.0, 20001)
    p = a * s + b * s**3 + c * s**5
    assert np.abs(1 - p).max() == pytest.approx(error, rel=1e-3)
    assert (1 - p[0], p.max() - 1, p[-1] - 1) == pytest.approx((error,) * 3, rel=0.01)  # below at l, above at the peaks
    s = np.geomspace(1e-3, 1.0, 5000)
    for a, b, c in polar_coefficients(5):
        s = a * s + b * s**3 + c * s**5
    assert 0.85 < s.min() and s.max() < 1.15
    torch.manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(64, 64))
    v, _ = torch.linalg.qr(torch.randn(160, 64))
    g = (u * torch.logspace(-3, 0, 64)) @ v.T
    errors = {kind: (torch.linalg.svdvals(orthogonalize(g, 5, kind=kind).float()) - 1).abs().mean()
              for kind in ("quintic", "polar")}
    assert errors["polar"] < 0.75 * errors["quintic"]
    o = orthogonalize(g, 5, kind="polar").float()
    assert (o * (u @ v.T)).sum() / (o.norm() * (u @ v.T).norm()) > 0.9


def test_adamw_decays_matrices_embeddings_and_head_never_gains_or_biases():
    model = small(tie_embeddings=False)
    opt = build_optimizer(model, OptimConfig(weight_decay=0.1), CPU)
    roles = groups_by_role(opt)
    decay = {n for g in opt.param_groups if g["weight_decay"] > 0 for n in g["names"]}
    no_decay = {n for g in opt.param_groups if g["weight_decay"] == 0 for n in g["names"]}
    assert "transformer.wte.weight" in decay and "transformer.wpe.weight" in decay and "lm_head.weight" in decay
    assert "transformer.h.0.attn.c_attn.weight" in decay and "transformer.h.1.mlp.c_proj.weight" in decay
    assert {"transformer.h.0.ln_1.weight", "transformer.h.0.ln_1.bias", "transformer.h.0.attn.c_attn.bias",
            "transformer.ln_f.weight", "transformer.h.1.mlp.c_fc.bias"} <= no_decay
    assert roles["head"] == {"lm_head.weight"} and roles["embedding"] == {"transformer.wte.weight", "transformer.wpe.weight"}
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_a_tied_head_is_the_token_table_and_counted_once():
    model = small()
    roles = groups_by_role(build_optimizer(model, OptimConfig(), CPU))
    assert "head" not in roles and "transformer.wte.weight" in roles["embedding"]


def test_role_lrs_and_the_schedule_multiplier():
    cfg = OptimConfig(lr=1e-3, matrix_lr=2e-2, embedding_lr=5e-2, head_lr=4e-3, gain_lr=None, name="muon", weight_decay=0.0)
    opt = build_optimizer(small(tie_embeddings=False, **MODERN), cfg, CPU)
    lrs = {g["role"]: g["lr"] for g in opt.param_groups}
    assert lrs == {"matrix": 2e-2, "embedding": 5e-2, "head": 4e-3, "gain": 1e-3}
    set_lr_multiplier(opt, 0.5)
    assert {g["role"]: g["lr"] for g in opt.param_groups} == {r: v / 2 for r, v in lrs.items()}


def test_muon_groups_hidden_matrices_and_uses_adamw_for_the_rest():
    model = small(tie_embeddings=False, **MODERN)
    opt = build_optimizer(model, OptimConfig(name="muon"), CPU)
    muon = {n for g in opt.param_groups if g["use_muon"] for n in g["names"]}
    adamw = {n for g in opt.param_groups if not g["use_muon"] for n in g["names"]}
    assert muon == {n for n, p in model.named_parameters() if p.dim() == 2 and n.startswith("transformer.h.")}
    assert {"transformer.wte.weight", "lm_head.weight", "transformer.ln_f.weight"} <= adamw and not muon & adamw


def test_muon_moves_matrices_by_an_orthogonal_update_and_skips_on_the_device():
    torch.manual_seed(0)
    model = small()
    opt = build_optimizer(model, OptimConfig(name="muon", matrix_lr=0.1, weight_decay=0.0, settings={"muon": {"nesterov": False}}), CPU)
    w = model.transformer.h[0].mlp.c_fc.weight  # one logical matrix, tall (128 x 32): scaled by sqrt(128 / 32) = 2
    x = torch.randint(0, 64, (4, 16))
    model(x, x)[1].backward()
    before = w.detach().clone()
    opt.found_inf = torch.ones(())  # a bad step: nothing may move, momentum included
    opt.step()
    assert torch.equal(w, before) and not opt.state[w]["momentum_buffer"].any()
    opt.found_inf = None
    grad = w.grad.clone()
    opt.step()
    assert w.size(0) / w.size(1) == 4
    update = (before - w.detach()) / 0.1 / 2.0
    # first step: the momentum is the gradient
    assert torch.allclose(update, orthogonalize(grad, dtype=newton_schulz_dtype(CPU)), atol=1e-3)


def test_muon_momentum_warmup_matches_a_plain_momentum_ramp():
    """optim.muon.momentum_warmup_steps=2 (from 0.85): the matrices' momentum is 0.85, 0.90, then 0.95 from the third
    step on. Checked against momentum SGD written out in plain PyTorch with that ramp (buffer = mu * buffer +
    gradient; the weight moves by the LR times the buffer's orthogonalisation), over four steps of fixed gradients;
    without the setting, the momentum stays 0.95 whatever step the trainer announces."""
    from gpt2lab.training.optim import set_step

    torch.manual_seed(0)
    model = small()
    cfg = OptimConfig(name="muon", matrix_lr=0.1, weight_decay=0.0,
                      settings={"muon": {"nesterov": False, "momentum_warmup_steps": 2}})
    opt = build_optimizer(model, cfg, CPU)
    w = model.transformer.h[0].attn.c_proj.weight  # square: no scale
    grads = [torch.randn_like(w) for _ in range(4)]
    weight, buffer = w.detach().clone(), torch.zeros_like(w)
    for step, (grad, mu) in enumerate(zip(grads, (0.85, 0.90, 0.95, 0.95))):
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        w.grad = grad.clone()
        set_step(opt, step)
        opt.step()
        buffer = mu * buffer + grad
        weight = weight - 0.1 * orthogonalize(buffer, dtype=newton_schulz_dtype(CPU))
        assert torch.allclose(w.detach(), weight, atol=1e-5), step
    assert [opt.momentum_at(s) for s in (0, 1, 2, 100)] == pytest.approx([0.85, 0.90, 0.95, 0.95])
    plain = build_optimizer(small(), OptimConfig(name="muon"), CPU)
    set_step(plain, 0)
    assert {g["momentum"] for g in plain.param_groups if g["use_muon"]} == {0.95}


@pytest.mark.parametrize("native", [True, False])
def test_newton_schulz_runs_in_bf16_only_where_bf16_matmuls_are_native(monkeypatch, native):
    """A CPU without AVX512-BF16 or AMX emulates bf16 (Newton-Schulz took 8.9 s of a 12 s step on one): there it runs
    in fp32. Where bf16 is native, and on every GPU as before, it runs in bf16. Checked on the update Muon makes,
    against the orthogonalisation in each dtype (they differ by far more than the tolerance)."""
    monkeypatch.setattr(runtime, "cpu_bf16_native", lambda: (native, "amx_bf16" if native else "no AVX512-BF16 or AMX"))
    assert newton_schulz_dtype(CPU) == (torch.bfloat16 if native else torch.float32)
    assert newton_schulz_dtype(torch.device("cuda")) == torch.bfloat16  # a GPU: unchanged, whatever the CPU has
    torch.manual_seed(0)
    model = small()
    opt = build_optimizer(model, OptimConfig(name="muon", matrix_lr=0.1, weight_decay=0.0,
                                             settings={"muon": {"nesterov": False}}), CPU)
    w = model.transformer.h[0].attn.c_proj.weight  # square (32 x 32): no scale
    x = torch.randint(0, 64, (4, 16))
    model(x, x)[1].backward()
    before, grad = w.detach().clone(), w.grad.clone()
    opt.step()
    update = (before - w.detach()) / 0.1
    mine, other = (torch.bfloat16, torch.float32) if native else (torch.float32, torch.bfloat16)
    assert torch.allclose(update, orthogonalize(grad, dtype=mine), atol=1e-6)
    assert not torch.allclose(update, orthogonalize(grad, dtype=other), atol=1e-3)


def test_unknown_optimizer_is_one_line_with_a_suggestion():
    with pytest.raises(UserError, match="did you mean 'muon'"):
        build_optimizer(small(), OptimConfig(name="moun"), CPU)


def test_muon_refuses_fsdp_sharded_weights(monkeypatch):
    model = small()
    monkeypatch.setattr(torch.nn.Parameter, "full_tensor", lambda self: self, raising=False)
    with pytest.raises(UserError, match="run.parallel=fsdp"):
        build_optimizer(model, OptimConfig(name="muon"), CPU)


def test_state_by_name_survives_regrouping_and_reads_01s_positional_state():
    torch.manual_seed(0)
    model = small(tie_embeddings=False)
    x = torch.randint(0, 64, (4, 16))
    old = torch.optim.AdamW([{"params": [p for p in model.parameters() if p.dim() >= 2]},
                             {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0}])
    model(x, x)[1].backward()
    old.step()
    legacy = old.state_dict()  # 0.1's layout: two groups, state by position
    new = build_optimizer(model, OptimConfig(), CPU)
    load_named_state_dict(new, legacy, model)
    names = legacy_names(model)
    by_param = {p: n for n, p in model.named_parameters()}
    for p, state in new.state.items():
        expected = legacy["state"][names.index(by_param[p])]
        assert torch.equal(state["exp_avg"], expected["exp_avg"])
    again = build_optimizer(model, OptimConfig(), CPU)
    load_named_state_dict(again, named_state_dict(new), model)
    assert all(torch.equal(again.state[p]["exp_avg_sq"], new.state[p]["exp_avg_sq"]) for p in new.state)
    other = small(n_embd=48)
    with pytest.raises(UserError, match="no entry for"):
        load_named_state_dict(build_optimizer(other, OptimConfig(), CPU), {"format": "named", "state": {"x": {}}}, other)


def test_lion_moves_every_weight_by_the_lr_and_trains(data_dir, tmp_path):
    """The worked example of a new optimizer: its own file and one registration line."""
    from gpt2lab.metrics.logger import read_metrics
    from tests.helpers import micro_config, trainer

    torch.manual_seed(0)
    model = small()
    opt = build_optimizer(model, OptimConfig(name="lion", lr=1e-3, weight_decay=0.0), CPU)
    before = [p.detach().clone() for p in model.parameters()]
    x = torch.randint(0, 64, (4, 16))
    model(x, x)[1].backward()
    opt.step()
    moved = [(p.detach() - b).abs() for p, b in zip(model.parameters(), before)]
    assert all(torch.allclose(d[d > 0], torch.full_like(d[d > 0], 1e-3), rtol=1e-3) for d in moved)  # +-lr each
    cfg = micro_config(data_dir, "optim.name=lion", "optim.lr=1e-3", "schedule.max_steps=20")
    trainer(cfg, tmp_path / "run", echo=lambda *_: None).fit()
    losses = [r["loss"] for r in read_metrics(tmp_path / "run")]
    assert losses[-1] < losses[0] - 0.3


def _model_with_extra_weight():
    """A sketch of a new weight (a value-embedding table) that the role table does not know yet."""
    from gpt2lab.model import GPT, GPTConfig

    model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32, pos="rope", mlp="swiglu",
                          norm="rmsnorm", bias=False))
    model.transformer.h[0].attn.value_embed = torch.nn.Embedding(64, 32)
    return model


@pytest.mark.parametrize("name", ["adamw", "muon", "lion"])
def test_a_parameter_without_a_role_is_one_line_from_the_optimizer_builder(name):
    """A new weight used to fall into the "matrix" group silently (Muon would orthogonalise an embedding table)."""
    with pytest.raises(UserError, match="transformer.h.0.attn.value_embed.weight .* has no optimizer role"):
        build_optimizer(_model_with_extra_weight(), OptimConfig(name=name), CPU)


def test_every_parameter_is_in_exactly_one_group():
    from gpt2lab.training.optim.groups import check_groups

    model = small()
    optimizer = build_optimizer(model, OptimConfig(name="adamw"), CPU)
    check_groups(optimizer, model)
    optimizer.param_groups[0]["params"].append(optimizer.param_groups[0]["params"][0])  # one parameter twice
    with pytest.raises(UserError, match="is in 2 optimizer groups"):
        check_groups(optimizer, model)
    optimizer.param_groups[0]["params"] = optimizer.param_groups[0]["params"][1:-1]  # and one forgotten
    with pytest.raises(UserError, match="is in no optimizer group"):
        check_groups(optimizer, model)


def test_an_optimizers_own_settings_live_with_it_and_old_configs_load_with_a_note():
    """Muon declares its settings (optim/muon.py: Settings); config.py knows none of them. optim.muon.KEY on the
    command line, [optim.muon] in a file and the 0.2 layout's flat optim.momentum all reach it, typed; a typo is
    one line; the run's config keeps the typed values."""
    from gpt2lab.config import build_config, from_dict
    from gpt2lab.training.optim import settings_of
    from gpt2lab.training.optim.muon import Settings

    cfg = build_config(sets=["optim.name=muon", "optim.muon.momentum=0.9", "optim.muon.ns_steps=3"])
    assert settings_of(cfg.optim) == Settings(momentum=0.9, nesterov=True, ns_steps=3)
    assert cfg.to_dict()["optim"]["settings"]["muon"] == {"momentum": 0.9, "nesterov": True, "ns_steps": 3,
                                                           "coefficients": "quintic", "momentum_warmup_steps": 0,
                                                           "momentum_start": 0.85}
    assert from_dict(cfg.to_dict()).optim.settings == cfg.optim.settings  # config.json round trip
    old = build_config(base={"optim": {"name": "muon", "momentum": 0.8, "nesterov": False, "ns_steps": 5}})
    assert settings_of(old.optim) == Settings(momentum=0.8, nesterov=False, ns_steps=5)
    assert sum("now optim.muon" in n for n in old.notes) == 1
    for sets, message in ((["optim.muon.momentun=0.9"], "did you mean 'momentum'"),
                          (["optim.muon.ns_steps=many"], "optim.muon.ns_steps='many' is not a valid int"),
                          (["optim.muon.momentum=1.5"], "optim.muon.momentum must be in [0, 1)"),
                          (["optim.moun.momentum=0.9"], "did you mean 'muon'"),
                          (["optim.muon.coefficients=polr"], "optim.muon.coefficients must be quintic or polar"),
                          (["optim.muon.momentum_start=1"], "optim.muon.momentum_start in [0, 1)"),
                          (["optim.muon.momentum_warmup_steps=-5"], "momentum_warmup_steps must be 0 or more"),
                          (["optim.adamw.momentum=0.9"], "optim.adamw has no settings of its own")):
        with pytest.raises(UserError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
            c = build_config(sets=sets)
            c.optim.name = "adamw" if "adamw" in sets[0] else "muon"
            settings_of(c.optim)
