"""Shape axes (issue 10): parameter counts in closed form, shapes matched to a parameter budget, sweeps of shape
fields and training settings in the spec, and the classifier head's own optimiser settings."""
import itertools
import random

import numpy as np
import pytest
import torch

from transferscale.errors import TransferscaleError
from transferscale.models.grid import build_model, num_params
from transferscale.plan import config_key, make_plan
from transferscale.shapes import SIZES, match_params, param_count, shape_dict
from transferscale.spec import parse_spec


def _random_shapes(family: str, rng: random.Random, n: int) -> list[dict]:
    out = []
    for _ in range(n):
        if family == "vit":
            heads = rng.choice([1, 2, 3, 4])
            out.append({"embed_dim": heads * rng.randint(2, 12), "depth": rng.randint(1, 4), "num_heads": heads,
                        "mlp_ratio": rng.choice([1.0, 1.5, 2.0, 3.3]), "patch_size": rng.choice([4, 7])})
        elif family == "mixer":
            out.append({"embed_dim": rng.randint(4, 60), "num_blocks": rng.randint(1, 4),
                        "mlp_ratio_tokens": rng.choice([0.5, 1.0, 1.7]),
                        "mlp_ratio_channels": rng.choice([1.0, 2.0, 2.5]), "patch_size": rng.choice([4, 7])})
        else:
            out.append({"layers": [rng.randint(1, 3) for _ in range(4)],
                        "widths": sorted(rng.randint(3, 40) for _ in range(4)), "stem_width": rng.randint(3, 20)})
    return out


@pytest.mark.parametrize("family", ["vit", "mixer", "resnet"])
@pytest.mark.parametrize("geometry", [((28, 28), 1), ((32, 32), 3)])
def test_param_count_equals_the_built_timm_module(family, geometry):
    img_size, in_chans = geometry
    rng = random.Random(hash((family, in_chans)) % 1000)
    shapes = [shape_dict(s) for s in SIZES[family].values()] + _random_shapes(family, rng, 6)
    for shape, classes in itertools.product(shapes, [0, 10]):
        built = num_params(build_model(family, shape, classes, img_size=img_size, in_chans=in_chans))
        assert param_count(family, shape, img_size=img_size, in_chans=in_chans, num_classes=classes) == built, shape


@pytest.mark.parametrize("family,field,base,targets", [
    ("vit", "embed_dim", {**shape_dict(SIZES["vit"]["m"]), "depth": 6}, [30_000, 100_000]),
    ("mixer", "embed_dim", {**shape_dict(SIZES["mixer"]["m"]), "num_blocks": 1}, [20_000, 80_000]),
    ("resnet", "widths", {**shape_dict(SIZES["resnet"]["m"]), "layers": [2, 2, 2, 2]}, [100_000, 400_000]),
])
def test_match_picks_the_closest_valid_width(family, field, base, targets):
    for target in targets:
        matched = match_params(family, base, target, tolerance=0.1)
        assert {k: v for k, v in matched.items() if k not in (field, "stem_width")} == \
            {k: v for k, v in base.items() if k not in (field, "stem_width")}
        got = param_count(family, matched)
        assert abs(got - target) <= 0.1 * target
        # brute force over every width: none is closer than the one chosen
        from transferscale.shapes import _with_width

        gaps = [abs(param_count(family, c) - target) for v in range(1, 600)
                if (c := _with_width(family, base, field, v)) is not None]
        assert abs(got - target) == min(gaps)
    if family == "vit":
        assert matched["embed_dim"] % matched["num_heads"] == 0


def test_match_fails_with_the_closest_shape_when_out_of_tolerance():
    base = shape_dict(SIZES["vit"]["s"])  # two heads: the width moves in steps of 2
    with pytest.raises(TransferscaleError, match=r"closest, embed_dim = \d+, has [\d,]+ \([+-]\d+%\).*tolerance"):
        match_params("vit", base, 250, tolerance=0.01)


SHAPE_SPEC = """
name = "shapes"
[[models]]
family = "vit"
sizes = ["m"]
{group}
[training]
budgets = [{{ data_fraction = 1.0, steps = 40 }}]
{training}
[downstream]
tasks = ["fractals_heldout"]
[baselines]
pixels = false
random_init = {random}
"""


def _spec(group="", training="", random="false"):
    return parse_spec(SHAPE_SPEC.format(group=group, training=training, random=random))


def test_a_sweep_trains_every_combination_and_names_each():
    plan = make_plan(_spec('sweep = { depth = [1, 3], mlp_ratio = [1.0, 4.0] }', random="true"))
    trained = [r for r in plan.runs if r.kind == "trained"]
    got = sorted((r.config["shape"]["depth"], r.config["shape"]["mlp_ratio"]) for r in trained)
    assert got == [(1, 1.0), (1, 4.0), (3, 1.0), (3, 4.0)]
    assert "vit-m-depth1-mlp_ratio1-d1-s40" in {r.name for r in trained}
    assert "vit-m-mlp_ratio4-d1-s40" in {r.name for r in trained}  # depth 3 is vit-m's own: not in the name
    assert len({r.name for r in plan.runs}) == len(plan.runs) == 8  # four trained, four random-init


def test_match_solves_the_width_for_each_budget():
    plan = make_plan(_spec('sweep = { depth = [1, 2, 8] }\nmatch = { params = [40000, 120000], tolerance = 0.05 }'))
    assert len(plan.runs) == 6
    for run in plan.runs:
        target = run.config["matched_params"]
        assert abs(param_count("vit", run.config["shape"]) - target) <= 0.05 * target
        assert f"-p{target // 1000}k-" in run.name
    widths = {(r.config["shape"]["depth"], r.config["matched_params"]): r.config["shape"]["embed_dim"]
              for r in plan.runs}
    assert widths[(1, 40000)] > widths[(2, 40000)] > widths[(8, 40000)]  # deep means narrow at equal params


def test_a_training_sweep_gives_the_head_its_own_settings_and_keeps_other_keys():
    plain = make_plan(_spec()).runs[0]
    assert "head_weight_decay" not in plain.config["training"] and "head_lr_mult" not in plain.config["training"]
    swept = make_plan(_spec(training="sweep = { head_weight_decay = [0.0, 1.0], head_lr_mult = [1.0, 10.0] }"))
    names = sorted(r.name for r in swept.runs)
    assert names == ["vit-m-d1-s40-hwd0", "vit-m-d1-s40-hwd0-hlr10", "vit-m-d1-s40-hwd1", "vit-m-d1-s40-hwd1-hlr10"]
    # the head at the body's default learning rate is the plain recipe's key, plus its own weight decay only
    hwd0 = next(r for r in swept.runs if r.name == "vit-m-d1-s40-hwd0")
    assert config_key({**plain.config, "training": {**plain.config["training"], "head_weight_decay": 0.0}}) == hwd0.key


@pytest.mark.parametrize("group,training,message", [
    ('sweep = { depht = [1, 2] }', "", "cannot sweep 'depht'.*depth"),
    ('sweep = { steps = [10, 20] }', "", "budgets"),
    ('sweep = { depth = 3 }', "", "non-empty list"),
    ('sweep = { depth = [2, 2] }', "", "twice"),
    ('sweep = { lr = [0.1, -1.0] }', "", "lr: -1.0"),
    ('lr = 0.1\nsweep = { lr = [0.1, 0.2] }', "", "not both"),
    ('match = { params = [30000] }\nsweep = { embed_dim = [16, 32] }', "", "do not also give it"),
    ('match = { params = [] }', "", "params"),
    ('match = { params = [30000], widht = "x" }', "", "widht"),
    ("", "sweep = { head_weight_decay = [-1.0] }", "head_weight_decay"),
    ("", "sweep = { data_fraction = [0.5] }", "budgets"),
])
def test_bad_sweeps_fail_with_what_to_change(group, training, message):
    with pytest.raises(TransferscaleError, match=message):
        _spec(group, training)


def test_matched_targets_that_give_one_shape_fail_at_plan_time():
    with pytest.raises(TransferscaleError, match="same shape"):
        make_plan(_spec('match = { params = [40000, 40010], tolerance = 0.2 }'))


# ---- the head's optimiser settings in training ------------------------------------------------------------


def _train(tmp_path, name: str, **training) -> torch.nn.Module:
    from transferscale.pretrain import train

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(60, 28, 28), dtype=np.uint8)
    y = np.repeat(np.arange(3), 20)
    table = {"data_fraction": 1.0, "steps": 6, "batch_size": 16, "lr": 0.01, "weight_decay": 0.05,
             "warmup_fraction": 0.0, "max_shift": 1, "seed": 0, **training}
    config = {"family": "vit", "shape": shape_dict(SIZES["vit"]["s"]), "training": table}
    return train(config, x, y, 3, tmp_path / f"{name}.pt").model


def test_head_settings_equal_to_the_body_train_the_same_model(tmp_path):
    plain = _train(tmp_path, "plain")
    split = _train(tmp_path, "split", head_weight_decay=0.05, head_lr_mult=1.0)
    for (name, a), b in zip(plain.state_dict().items(), split.state_dict().values(), strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-6), name


def test_a_tiny_head_learning_rate_freezes_the_head_only(tmp_path):
    torch.manual_seed(0)
    start = build_model("vit", shape_dict(SIZES["vit"]["s"]), 3)
    slow = _train(tmp_path, "slow", head_lr_mult=1e-9, head_weight_decay=0.0)
    fast = _train(tmp_path, "fast")
    assert torch.allclose(slow.head.weight, start.head.weight, atol=1e-8)
    assert not torch.allclose(fast.head.weight, start.head.weight, atol=1e-4)
    assert not torch.allclose(slow.blocks[0].attn.qkv.weight, start.blocks[0].attn.qkv.weight, atol=1e-4)


def test_head_weight_decay_shrinks_the_head():
    from transferscale.pretrain import param_groups

    model = build_model("resnet", shape_dict(SIZES["resnet"]["s"]), 5)
    groups = param_groups(model, {"weight_decay": 0.05, "head_weight_decay": 3.0})
    assert [len(g["params"]) for g in groups] == [len(list(model.parameters())) - 2, 2]
    assert groups[1]["weight_decay"] == 3.0 and groups[1]["lr_mult"] == 1.0
    assert {id(p) for p in groups[1]["params"]} == {id(model.fc.weight), id(model.fc.bias)}


# ---- the shipped studies and what runs them ----------------------------------------------------------------


def test_the_shape_study_matches_four_shapes_per_budget_from_deep_to_shallow():
    from transferscale.spec import load_spec

    for quick, budgets in ((False, 3), (True, 2)):
        spec, _ = load_spec("shape", quick=quick)
        trained = [r for r in make_plan(spec).runs if r.kind == "trained"]
        for family, knob in (("vit", "depth"), ("mixer", "num_blocks")):
            runs = [r for r in trained if r.family == family]
            targets = sorted({r.config["matched_params"] for r in runs})
            assert len(targets) == budgets
            for target in targets:
                at = [r for r in runs if r.config["matched_params"] == target]
                assert sorted(r.config["shape"][knob] for r in at) == [1, 2, 4, 8]
                assert all(abs(param_count(family, r.config["shape"]) - target) <= 0.1 * target for r in at)
        assert spec.costs
    assert load_spec("shape", quick=True)[0].downstream.tasks == ["fractals_heldout", "opencv_digits_shifted",
                                                                   "fashion_mnist"]


def test_the_head_hparams_study_sweeps_the_head_of_a_resnet_and_a_vit():
    from transferscale.spec import load_spec

    spec, _ = load_spec("head_hparams")
    assert spec.costs  # the report's frontiers need the costs
    trained = [r for r in make_plan(spec).runs if r.kind == "trained"]
    for family in ("resnet", "vit"):
        runs = [r for r in trained if r.family == family]
        decays = {r.config["training"]["head_weight_decay"] for r in runs}
        mults = {r.config["training"].get("head_lr_mult", 1.0) for r in runs}
        assert len(decays) >= 4 and min(decays) == 0 and max(decays) >= 1.0
        assert len(mults) >= 3 and len(runs) == len(decays) * len(mults)


def test_a_quick_variant_with_fewer_tasks_drops_their_options():
    text = SHAPE_SPEC.format(group="", training="", random="false").replace(
        'tasks = ["fractals_heldout"]', 'tasks = ["fractals_heldout", "opencv_digits"]\n'
        '[downstream.options]\nopencv_digits = { test_size = 100 }')
    text += '[quick]\nname = "q"\n[quick.downstream]\ntasks = ["fractals_heldout"]\n'
    spec = parse_spec(text, quick=True)
    assert spec.downstream.tasks == ["fractals_heldout"] and spec.downstream.options == {}
    assert parse_spec(text).downstream.options == {"opencv_digits": {"test_size": 100}}


COSTED = """
name = "costed"
output_dir = "{out}"
costs = true
[upstream]
dataset = "fractals"
options = {{ classes = 20, heldout = 5, train_per_class = 40, test_per_class = 10 }}
[[models]]
family = "vit"
sizes = ["s"]
sweep = {{ depth = [1, 2] }}
[training]
budgets = [{{ data_fraction = 0.5, steps = 4 }}]
[downstream]
tasks = ["fractals_heldout"]
[downstream.options]
fractals_heldout = {{ classes = 20, heldout = 5, train_per_class = 25, test_per_class = 10 }}
[probe]
shots = [1]
seeds = [0]
[baselines]
pixels = false
random_init = false
"""


def test_costs_true_measures_each_architecture_after_the_runs(tmp_path, data_cache, monkeypatch):
    from typer.testing import CliRunner

    from transferscale.cli import app
    from transferscale.store import Store

    monkeypatch.setenv("TRANSFERSCALE_CACHE", str(data_cache))
    path, out = tmp_path / "costed.toml", tmp_path / "costed"
    path.write_text(COSTED.format(out=out))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 0, result.output
    assert "costs: 2 architecture(s) measured" in result.output
    with Store(out, create=False) as store:
        costs = store.costs()
    assert sorted(costs["label"]) == ["vit-s", "vit-s-depth1"]
    assert sorted(costs["params"]) == sorted(param_count("vit", {**shape_dict(SIZES["vit"]["s"]), "depth": d},
                                                         num_classes=20) for d in (1, 2))
