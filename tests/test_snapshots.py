"""Snapshots: a model midway through its training schedule, evaluated as a run of its own.

A snapshot must be exactly the model its full run has at that step, whether the full run saved it as it
passed or the snapshot trained itself (the full run not run yet, or run before the spec asked for it).
"""
import numpy as np
import pandas as pd
import pytest
import torch

from transferscale.errors import TransferscaleError
from transferscale.plan import config_key, make_plan, snapshot_steps, trajectory_config
from transferscale.pretrain import load_checkpoint, train
from transferscale.spec import load_spec, parse_spec

CONFIG = {"family": "resnet", "shape": {"layers": [1, 1, 1, 1], "widths": [4, 8, 8, 8], "stem_width": 4},
          "training": {"data_fraction": 1.0, "steps": 12, "batch_size": 8, "lr": 1e-3, "weight_decay": 0.0,
                       "warmup_fraction": 0.25, "max_shift": 1, "seed": 0}}


def _data():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(64, 28, 28), dtype=np.uint8)
    return x, np.repeat(np.arange(4), 16).astype(np.int64)


def _snapshot(config, step):
    return {**config, "training": {**config["training"], "steps": step, "schedule_steps": config["training"]["steps"]}}


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_trajectory_config_is_the_full_runs_config():
    snap = _snapshot(CONFIG, 5)
    assert trajectory_config(snap) == CONFIG and config_key(trajectory_config(snap)) == config_key(CONFIG)
    assert trajectory_config(CONFIG) is CONFIG
    assert snapshot_steps([0.25, 0.5], 12) == [3, 6]
    assert snapshot_steps([0.01, 0.99], 12) == []  # rounds to step 0 and to the run's end: nothing to add
    assert snapshot_steps([0.3, 0.33], 10) == [3]  # two fractions on one step give one snapshot


def test_a_snapshot_is_the_full_runs_model_at_that_step(tmp_path):
    """Kept by the full run, trained alone from scratch, or resumed from the full run's partial checkpoint:
    the same weights, bit for bit, and the same checkpoint bytes (so the same feature-cache identity)."""
    x, y = _data()
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    kept = tmp_path / "a" / "full@5.pt"  # in a study both are written at the same path
    train(CONFIG, x, y, 4, tmp_path / "a" / "full.pt", keep={5: kept}, checkpoint_every=100)
    alone = train(_snapshot(CONFIG, 5), x, y, 4, tmp_path / "b" / "full@5.pt")
    assert alone.resumed_from == 0 and alone.steps_done == 5
    assert _equal(alone.model.state_dict(), load_checkpoint(kept)["model"])
    assert (tmp_path / "b" / "full@5.pt").read_bytes() == kept.read_bytes()
    # the full run killed after step 5 leaves its rolling checkpoint at step 4: a snapshot at step 6 starts
    # there and still ends with the uninterrupted run's weights
    train(CONFIG, x, y, 4, tmp_path / "ref.pt", keep={6: tmp_path / "ref@6.pt"}, checkpoint_every=100)

    class Killed(Exception):
        pass

    def kill_after_5(step, steps, loss):
        if step == 5:
            raise Killed

    with pytest.raises(Killed):
        train(CONFIG, x, y, 4, tmp_path / "killed.pt", checkpoint_every=4, on_step=kill_after_5)
    assert load_checkpoint(tmp_path / "killed.pt")["step"] == 4
    resumed = train(_snapshot(CONFIG, 6), x, y, 4, tmp_path / "killed@6.pt", resume_from=(tmp_path / "killed.pt",))
    assert resumed.resumed_from == 4
    assert _equal(resumed.model.state_dict(), load_checkpoint(tmp_path / "ref@6.pt")["model"])
    # a checkpoint past the snapshot's step (the finished full run) cannot be used: it trains from scratch
    again = train(_snapshot(CONFIG, 6), x, y, 4, tmp_path / "late@6.pt", resume_from=(tmp_path / "ref.pt",))
    assert again.resumed_from == 0 and _equal(again.model.state_dict(), resumed.model.state_dict())


def test_snapshot_fractions_are_validated():
    base = """
name = "x"
[upstream]
dataset = "fractals"
[[models]]
family = "resnet"
sizes = ["s"]
[training]
budgets = [{ data_fraction = 1.0, steps = 100, snapshots = SNAP }]
[downstream]
tasks = ["fractals_heldout"]
"""
    for bad in ("[0.0]", "[1.0]", "[1.5]", "[0.5, 0.5]"):
        with pytest.raises(TransferscaleError, match="snapshots"):
            parse_spec(base.replace("SNAP", bad))
    plan = make_plan(parse_spec(base.replace("SNAP", "[0.25, 0.5]")))
    names = [r.name for r in plan.runs if r.kind == "trained"]
    assert names == ["resnet-s-d1-s100", "resnet-s-d1-s25of100", "resnet-s-d1-s50of100"]
    full = next(r for r in plan.runs if r.name == "resnet-s-d1-s100")
    assert [r.name for r in plan.snapshots_of(full)] == names[1:]
    # adding snapshots leaves the full run's key alone: it is not trained again
    without = make_plan(parse_spec(base.replace("SNAP", "[]")))
    assert next(r for r in without.runs if r.name == "resnet-s-d1-s100").key == full.key
    # the snapshots' cost is an evaluation, not training
    snap = next(r for r in plan.runs if r.name == "resnet-s-d1-s25of100")
    assert plan.work(snap, []) == 0 and plan.work(full, []) == 100


@pytest.mark.slow
def test_snapshot_rows_do_not_depend_on_whether_the_full_run_kept_them(tiny_spec, tmp_path):
    """A study whose full run saves its snapshots, and the same study run in two steps (the full run first,
    the snapshots added later and trained alone), give identical rows for every run."""
    from transferscale.engine.runner import run_study
    from transferscale.store import read_results

    def run(path, text_edit):
        text = path.read_text()
        path.write_text(text_edit(text))
        spec, text = load_spec(path)
        return run_study(spec, text, spec.study_dir())

    with_snaps = 'budgets = [{ data_fraction = 0.5, steps = 30, snapshots = [0.3, 0.6] }]'
    no_snaps = "budgets = [{ data_fraction = 0.5, steps = 30 }]"

    def table(out):
        cols = ["name", "metric", "task", "shots", "seed", "layer", "l2", "value"]
        return read_results(out)[cols].sort_values(cols[:7]).reset_index(drop=True)

    path_a, out_a = tiny_spec("a")
    first = run(path_a, lambda t: t.replace(no_snaps, with_snaps))
    assert first.failed == {}
    path_b, out_b = tiny_spec("b")
    run(path_b, lambda t: t)
    later = run(path_b, lambda t: t.replace(no_snaps, with_snaps))
    assert sorted(later.done) and later.failed == {}
    a, b = table(out_a), table(out_b)
    assert set(a.name) >= {"resnet-s-d0.5-s9of30", "resnet-s-d0.5-s18of30", "vit-s-d0.5-s9of30"}
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    # a snapshot is a trained run of its own: upstream accuracy measured, probed like any other
    up = read_results(out_a).query("metric == 'upstream_accuracy'").set_index("name").value
    assert up["resnet-s-d0.5-s9of30"] != up["resnet-s-d0.5-s30"]


def test_a_group_can_give_its_own_budgets_and_snapshots_can_probe_the_final_layer_only():
    text = spec_text_without_snapshot_layers().replace("steps = 40 }", "steps = 40, snapshots = [0.5] }")
    spec = parse_spec(text + '[probe]\nsnapshot_layers = "final"\n[baselines]\nrandom_init = false\npixels = false\n')
    plan = make_plan(spec)
    assert [r.name for r in plan.runs] == ["resnet-s-d0.5-s40", "resnet-s-d0.5-s20of40", "vit-s-d1-s100"]
    probe = plan.protocols["fewshot"]
    assert [probe.layers_for(r) for r in plan.runs] == ["all", "final", "all"]
    # left unset, the option stays out of the evaluation keys, so stores made before it keep their results
    assert "snapshot_layers" in probe.key_options()
    unset = make_plan(parse_spec(spec_text_without_snapshot_layers()))
    assert "snapshot_layers" not in unset.protocols["fewshot"].key_options()
    with pytest.raises(TransferscaleError, match="no budgets for the vit models"):
        parse_spec(spec_text_without_snapshot_layers().replace("[training]\nbudgets = [{ data_fraction = 1.0, "
                                                               "steps = 100 }]", "[training]"))


def spec_text_without_snapshot_layers():
    return """
name = "x"
[upstream]
dataset = "fractals"
[[models]]
family = "resnet"
sizes = ["s"]
budgets = [{ data_fraction = 0.5, steps = 40 }]
[[models]]
family = "vit"
sizes = ["s"]
[training]
budgets = [{ data_fraction = 1.0, steps = 100 }]
[downstream]
tasks = ["fractals_heldout"]
"""


def test_fine_tuning_leaves_snapshots_out_unless_asked():
    text = spec_text_without_snapshot_layers().replace("steps = 40 }", "steps = 40, snapshots = [0.5] }")
    text += '\n[finetune]\ntasks = ["fractals_heldout"]\nruns = ["resnet-*"]\n'
    plan = make_plan(parse_spec(text))
    owed = {r.name: [e.protocol for e in plan.evaluations(r)] for r in plan.runs}
    assert owed["resnet-s-d0.5-s40"] == ["fewshot", "finetune"] and owed["resnet-s-d0.5-s20of40"] == ["fewshot"]
    plan = make_plan(parse_spec(text + "snapshots = true\n"))
    assert [e.protocol for e in plan.evaluations(plan.runs[1])] == ["fewshot", "finetune"]


@pytest.mark.slow
def test_snapshots_probed_at_the_final_layer_only_cache_only_that_layer(tiny_spec):
    """snapshot_layers = "final": snapshot rows at layer -1 only, equal to the all-layer study's, and the
    feature cache holds one layer for them."""
    import numpy as np

    from transferscale.engine.runner import run_study
    from transferscale.store import read_results

    with_snaps = 'budgets = [{ data_fraction = 0.5, steps = 30, snapshots = [0.5] }]'
    no_snaps = "budgets = [{ data_fraction = 0.5, steps = 30 }]"
    tables = {}
    for name, probe_extra in (("all", ""), ("final", 'snapshot_layers = "final"\n')):
        path, out = tiny_spec(name)
        path.write_text(path.read_text().replace(no_snaps, with_snaps).replace("[probe]\n", "[probe]\n" + probe_extra))
        spec, text = load_spec(path)
        assert run_study(spec, text, spec.study_dir()).failed == {}
        df = read_results(out)
        tables[name] = df[df.metric == "fewshot_accuracy"]
        sizes = [np.load(f).files for f in (out / "features").glob("*.npz")]
        tables[name + "_files"] = sizes
    snap = "resnet-s-d0.5-s15of30"
    final = tables["final"]
    assert set(final[final.name == snap].layer) == {-1}
    assert set(final[final.name == "resnet-s-d0.5-s30"].layer) == {-1, 0, 1, 2, 3, 4}
    cols = ["name", "task", "shots", "seed", "layer", "value"]
    a = tables["all"].query("layer == -1")[cols].sort_values(cols[:5]).reset_index(drop=True)
    b = final.query("layer == -1")[cols].sort_values(cols[:5]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    one_layer = [f for f in tables["final_files"] if sum(n.startswith("layer_") for n in f) == 1]
    # 2 snapshots (resnet, vit) and the pixels baseline (one layer by nature) x 2 tasks x 2 splits
    assert len(one_layer) == 3 * 2 * 2
