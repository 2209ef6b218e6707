"""The plan: run names from the config, mixed model sources and modalities, the evaluations each run owes."""
import pytest

from transferscale.errors import TransferscaleError
from transferscale.plan import make_plan
from transferscale.spec import parse_spec

GRID = """
name = "plan"
[[models]]
family = "vit"
sizes = ["s"]
[[models]]
family = "vit"
sizes = ["s"]
shape = {{ depth = 6 }}
lr = 0.006
[training]
budgets = [{{ data_fraction = 0.5, steps = 30 }}]
[downstream]
tasks = [{tasks}]
{extra}
"""


def _plan(tasks='"fractals_heldout"', extra=""):
    return make_plan(parse_spec(GRID.format(tasks=tasks, extra=extra)))


def test_names_show_shape_overrides_and_settings_and_are_unique():
    names = [r.name for r in _plan().runs]
    assert names == ["vit-s-d0.5-s30", "vit-s-depth6-d0.5-s30-lr0.006", "vit-s-random", "vit-s-depth6-random",
                     "pixels"]


def test_names_are_stable_when_the_spec_grows():
    before = {r.key: r.name for r in _plan().runs}
    grown = GRID.replace('sizes = ["s"]\n[[models]]', 'sizes = ["s", "m"]\n[[models]]', 1)
    after = {r.key: r.name for r in make_plan(parse_spec(grown.format(tasks='"fractals_heldout"', extra=""))).runs}
    assert all(after[key] == name for key, name in before.items())  # a new size renames nothing
    assert "vit-m-d0.5-s30" in after.values()


def test_models_of_each_modality_owe_only_tasks_of_their_modality():
    text = GRID.format(tasks='"fractals_heldout", "bbc_news"', extra="").replace(
        'name = "plan"\n', 'name = "plan"\n[[models]]\nsource = "hf:sentence-transformers/all-MiniLM-L6-v2"\n'
        'name = "minilm"\n')
    plan = make_plan(parse_spec(text))
    owed = {r.name: sorted({e.task for e in plan.evaluations(r)}) for r in plan.runs}
    assert owed == {"minilm": ["bbc_news"], "vit-s-d0.5-s30": ["fractals_heldout"],
                    "vit-s-depth6-d0.5-s30-lr0.006": ["fractals_heldout"], "vit-s-random": ["fractals_heldout"],
                    "vit-s-depth6-random": ["fractals_heldout"], "pixels": ["fractals_heldout"],
                    "bag-of-words": ["bbc_news"]}
    kinds = {r.name: (r.kind, r.modality) for r in plan.runs}
    assert kinds["minilm"] == ("pretrained", "text") and kinds["bag-of-words"] == ("words", "text")


def test_two_models_with_one_name_fail_clearly():
    text = GRID.format(tasks='"fractals_heldout"', extra="").replace(
        'name = "plan"\n', 'name = "plan"\n[[models]]\nsource = "hf:sentence-transformers/all-MiniLM-L6-v2"\n'
        'name = "pixels"\n')
    with pytest.raises(TransferscaleError, match="two runs are both named 'pixels'"):
        make_plan(parse_spec(text))


def test_grid_models_need_a_training_table():
    text = GRID.format(tasks='"fractals_heldout"', extra="").replace("[training]\nbudgets", "[x]\nbudgets")
    with pytest.raises(TransferscaleError, match="unknown key 'x'"):
        parse_spec(text)
    text = GRID.format(tasks='"fractals_heldout"', extra="").replace(
        "[training]\nbudgets = [{ data_fraction = 0.5, steps = 30 }]\n", "")
    with pytest.raises(TransferscaleError, match=r"grid models .* but no \[training\] table"):
        parse_spec(text)


def test_a_source_model_at_random_init_is_a_baseline():
    text = GRID.format(tasks='"fractals_heldout"', extra="").replace(
        'name = "plan"\n', 'name = "plan"\n[[models]]\nsource = "timm:tf_efficientnet_lite0"\n'
        'options = { random_init = true, img_size = 64 }\n')
    run = make_plan(parse_spec(text)).runs[0]
    assert (run.name, run.kind, run.is_baseline) == ("tf_efficientnet_lite0-64-random", "random_init", True)
