"""Spec validation: a bad spec fails before any work, naming the field, the value and what is valid."""
import pytest

from transferscale.errors import TransferscaleError
from transferscale.plan import config_key, make_plan
from transferscale.spec import builtin_spec_text, load_spec, parse_spec

MINI = """
name = "mini"
[upstream]
dataset = "fractals"
options = { classes = 20, heldout = 5, train_per_class = 30, test_per_class = 10 }
[[models]]
family = "resnet"
sizes = ["s"]
[training]
budgets = [{ data_fraction = 0.5, steps = 10 }]
[downstream]
tasks = ["fractals_heldout"]
[downstream.options]
fractals_heldout = { classes = 20, heldout = 5, train_per_class = 25, test_per_class = 10 }
"""


def test_default_spec_is_valid_and_big_enough():
    spec, _ = load_spec(None)
    plan = make_plan(spec)
    trained = [r for r in plan.runs if r.kind == "trained"]
    assert len(trained) >= 24
    assert {r.family for r in trained} == {"vit", "mixer", "resnet"}
    assert {r.kind for r in plan.runs} == {"trained", "random_init", "pixels"}
    quick = make_plan(load_spec(None, quick=True)[0])
    assert len(quick.runs) < len(plan.runs) and quick.spec.name != spec.name


def test_minimal_spec_gets_defaults():
    spec = parse_spec(MINI)
    assert spec.probe.shots == [1, 5, 10, 25] and spec.probe.l2 == [1024.0]
    assert spec.study_dir().name == "mini"


@pytest.mark.parametrize(
    "old,new,message",
    [
        ('name = "mini"', 'name = "mini"\nnmae = 1', r"unknown key 'nmae'.*did you mean 'name'"),
        ('family = "resnet"', 'family = "resnt"', r"unknown model family 'resnt'.*did you mean 'resnet'"),
        ('sizes = ["s"]', 'sizes = ["xl"]', r"unknown size 'xl' for family 'resnet'"),
        ('tasks = ["fractals_heldout"]', 'tasks = ["fractals_heldout", "fashion_minst"]',
         r"unknown dataset 'fashion_minst'.*did you mean 'fashion_mnist'"),
        ("data_fraction = 0.5", "data_fraction = 1.5",
         r"training.budgets\[0\].data_fraction.*less than or equal to 1.*1.5"),
        ("steps = 10", "stesp = 10", r"unknown key 'training.budgets\[0\].stesp'.*did you mean 'steps'"),
        ("train_per_class = 30,", "train_per_clas = 30,", r"unknown option.*'train_per_clas'.*fractals"),
        ("[training]", "[probe]\nshots = [0, 5]\n[training]", r"probe.shots.*positive"),
        ("[training]", "[probe]\nseeds = [-1]\n[training]", r"probe.seeds: seeds must be integers >= 0"),
        ("[training]", "[probe]\nl2 = [inf]\n[training]", r"probe.l2: l2 values must be finite and > 0"),
        ("[training]", '[finetune]\ntasks = ["sklearn_digits"]\n[training]',
         r"finetune.tasks \['sklearn_digits'\] are not in downstream.tasks"),
        ("[training]", "[finetune]\nstep = 3\n[training]", r"unknown key 'finetune.step'.*did you mean 'steps'"),
        ("fractals_heldout = { classes = 20", "fractals_heldout = { classes = 30",
         r"fractals_heldout.classes = 30 must equal upstream.options.classes = 20"),
    ],
)
def test_bad_specs_fail_clearly(old, new, message):
    assert old in MINI
    with pytest.raises(TransferscaleError, match=message):
        parse_spec(MINI.replace(old, new, 1))


def test_not_toml_and_missing_file(tmp_path):
    with pytest.raises(TransferscaleError, match="not valid TOML"):
        parse_spec("name = ")
    with pytest.raises(TransferscaleError, match="no study spec at .*transferscale init"):
        load_spec(tmp_path / "nope.toml")
    with pytest.raises(TransferscaleError, match=r"no \[quick\] table"):
        parse_spec(MINI, quick=True)


def test_run_keys_are_stable_and_change_only_with_what_a_run_computes():
    a = make_plan(parse_spec(MINI))
    b = make_plan(parse_spec(MINI.replace('name = "mini"', 'name = "renamed"\ndescription = "x"')))
    assert [r.key for r in a.runs] == [r.key for r in b.runs]
    c = make_plan(parse_spec(MINI.replace("steps = 10", "steps = 11")))
    trained_a = [r.key for r in a.runs if r.kind == "trained"]
    trained_c = [r.key for r in c.runs if r.kind == "trained"]
    assert trained_a != trained_c
    # baselines do not depend on the training budget
    assert {r.key for r in a.runs if r.is_baseline} == {r.key for r in c.runs if r.is_baseline}
    assert config_key({"a": 1, "b": [1, 2]}) == config_key({"b": [1, 2], "a": 1})


def test_builtin_text_roundtrip():
    assert "[quick]" in builtin_spec_text()
    with pytest.raises(TransferscaleError, match="did you mean 'default'"):
        builtin_spec_text("defualt")
