import json

import pytest

from gpt2lab.config import Config, build_config, parse_sets
from gpt2lab.errors import UserError
from gpt2lab.recipes import PRESETS, RECIPES


def test_layers_apply_in_order(tmp_path):
    f = tmp_path / "run.toml"
    f.write_text('[optim]\nlr = 1e-3\nweight_decay = 0.05\n[run]\nmicro_batch = 4\n')
    cfg = build_config(recipe="gpt2-124m-modern-fineweb10b", preset="tiny", file=str(f),
                       sets=["optim.lr=2e-3", "run.compile=false"], flags={"schedule": {"max_steps": 700}})
    assert cfg.model.n_layer == 2 and cfg.model.pos == "learned"  # the preset replaced the recipe's model
    assert cfg.optim.lr == 2e-3 and cfg.optim.weight_decay == 0.05  # --set beat the file, the file beat the recipe
    assert cfg.run.micro_batch == 4 and cfg.run.compile == "off"
    assert cfg.schedule.max_steps == 700 and cfg.schedule.warmup_steps == 285


def test_yaml_and_json_files(tmp_path):
    (tmp_path / "a.yaml").write_text("model:\n  n_layer: 3\nrun:\n  seed: 5\n")
    (tmp_path / "b.json").write_text(json.dumps({"model": {"n_layer": 3}, "run": {"seed": 5}}))
    for name in ("a.yaml", "b.json"):
        cfg = build_config(preset="tiny", file=str(tmp_path / name))
        assert cfg.model.n_layer == 3 and cfg.run.seed == 5


def test_saved_config_round_trips():
    cfg = build_config(recipe="gpt2-25m-wikitext103")
    again = build_config(base=json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(sets=["optim.lrr=1"]), "did you mean 'optim.lr'"),
        (dict(sets=["optimizer.lr=1"]), "did you mean 'optim'"),
        (dict(preset="gpt2-124"), "did you mean 'gpt2-124m'"),
        (dict(recipe="nope"), "unknown recipe"),
        (dict(sets=["run.micro_batch=abc"]), "not a valid int"),
        (dict(sets=["run.micro_batch=2.5"]), "not a valid int"),
        (dict(sets=["run.compile=maybe"]), "not one of auto, on, off"), (dict(sets=["run.rollback=maybe"]), "not a valid bool"),
        (dict(sets=["lr=1"]), "section.key=value"),
        (dict(sets=["model.n_head=5"]), "not divisible"),
        (dict(sets=["data.seq_len=2048"]), "longer than model.block_size"),
        (dict(sets=["schedule.warmup_steps=5000"]), "warmup_steps"),
        (dict(sets=["optim.lr=-1"]), "optim.lr must be in"),
        (dict(sets=["run.precision=fp8"]), "not one of"),
        (dict(sets=["run.stop_at_step=-3"]), "run.stop_at_step must be a step of at least 1"),
    ],
)
def test_bad_settings_are_one_line_errors(kwargs, message):
    with pytest.raises(UserError, match=message) as err:
        build_config(**kwargs)
    assert "\n" not in str(err.value)


def test_number_formats():
    layer = parse_sets(["run.batch_tokens=524_288", "schedule.max_steps=1e3"])
    cfg = build_config(sets=[f"{s}.{k}={v}" for s, d in layer.items() for k, v in d.items()])
    assert cfg.run.batch_tokens == 524288 and cfg.schedule.max_steps == 1000


def test_grad_accumulation_steps():
    cfg = build_config(recipe="gpt2-124m-modern-fineweb10b")
    assert cfg.grad_accum_steps(1) == 16 and cfg.grad_accum_steps(8) == 2
    with pytest.raises(UserError, match="multiple"):
        cfg.grad_accum_steps(3)


def test_every_preset_and_recipe_builds():
    for name in PRESETS:
        build_config(preset=name)
    for name in RECIPES:
        cfg = build_config(recipe=name)
        assert isinstance(cfg, Config)


def test_seed_recipes_match_their_reports():
    modern = build_config(recipe="gpt2-124m-modern-fineweb10b")
    assert (modern.model.pos, modern.model.mlp, modern.model.norm, modern.model.vocab_size) == ("rope", "swiglu", "rmsnorm", 50304)
    assert (modern.optim.lr, modern.schedule.min_lr, modern.schedule.warmup_steps, modern.schedule.max_steps) == (1.8e-3, 1.8e-4, 285, 38146)
    assert modern.run.micro_batch * modern.seq_len * modern.grad_accum_steps() == 524288
    small = build_config(recipe="gpt2-25m-wikitext103")
    assert (small.model.n_layer, small.model.n_embd, small.model.n_head, small.seq_len) == (6, 256, 8, 512)
    assert (small.run.micro_batch, small.run.precision, small.optim.lr) == (16, "fp16", 3e-4)


def test_an_unset_eval_interval_gives_about_20_validation_points():
    """Issue 27 item 5: the default 250-step interval gave a 128-step run one validation point."""
    cfg = build_config(preset="tiny", sets=["schedule.max_steps=128"])
    assert cfg.eval.every == 6 and any("about 20 validation points" in n for n in cfg.notes)
    assert build_config(preset="tiny", sets=["schedule.max_steps=100000"]).eval.every == 250
    assert build_config(preset="tiny", sets=["schedule.max_steps=128", "eval.every=250"]).eval.every == 250
    assert build_config(recipe="speedrun-cpu").eval.every == 64  # a recipe's own interval stays
