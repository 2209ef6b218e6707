"""`transferscale axes` and the table it reads (analysis.tables.axis_points) on a small synthetic store: a head
weight decay sweep whose far task rises as upstream accuracy falls, so the same-curve test must find the head
weight decay on that task and US and DS must be at odds across it there."""
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from transferscale.analysis.atodds import analyse_axes
from transferscale.analysis.samecurve import same_curve_test
from transferscale.analysis.tables import axis_points
from transferscale.cli import app
from transferscale.store import Measurement, Store

HWD = [0.0, 0.1, 1.0, 10.0]
SHAPES = {("resnet", "s"): {"layers": [1, 1, 1, 1], "widths": [16, 32, 64, 128], "stem_width": 16},
          ("resnet", "m"): {"layers": [1, 1, 1, 1], "widths": [24, 48, 96, 192], "stem_width": 16},
          ("vit", "s"): {"embed_dim": 64, "depth": 4, "num_heads": 4, "mlp_ratio": 2.0, "patch_size": 7},
          ("vit", "m"): {"embed_dim": 96, "depth": 4, "num_heads": 4, "mlp_ratio": 2.0, "patch_size": 7}}
UPSTREAM = {"dataset": "fractals", "options": {"classes": 20}}


def hp_config(family: str, size: str, steps: int, hwd: float) -> dict:
    training = {"data_fraction": 1.0, "steps": steps, "batch_size": 128, "lr": 0.002, "weight_decay": 0.05,
                "warmup_fraction": 0.1, "max_shift": 2, "seed": 0, "head_weight_decay": hwd}
    return {"kind": "trained", "family": family, "shape": SHAPES[family, size], "upstream": UPSTREAM,
            "training": training, "recipe": "test"}


def write_hp_study(path, costs: bool = False, finetune: bool = False):
    """32 trained runs (2 families x 2 sizes x 2 step counts x 4 head weight decays), a random-init and a
    raw-pixel baseline; tasks `near` (DS a curve of US) and `far` (DS rises by 2 points per decay step while
    US falls by 1.5): at 5 and 10 shots, two seeds each; optional fine-tuning rows on `near` and costs."""
    rng = np.random.default_rng(0)
    with Store(path) as store:
        store.set_meta(name="hp-fixture", spec_json=json.dumps({"name": "hp-fixture",
                                                                "downstream": {"tasks": ["near", "far"]}}))
        runs = []
        for family in ("resnet", "vit"):
            for size in ("s", "m"):
                for steps in (100, 300):
                    for i, hwd in enumerate(HWD):
                        us = (0.5 + 0.1 * (size == "m") + 0.05 * (family == "resnet") + 0.06 * (steps == 300)
                              - 0.015 * i + rng.normal(0, 0.01))
                        name = f"{family}-{size}-d1-s{steps}-hwd{hwd:g}"
                        runs.append((name, "trained", family, size, hp_config(family, size, steps, hwd), us, i))
        runs.append(("resnet-s-random", "random_init", "resnet", "s",
                     {"kind": "random_init", "family": "resnet", "shape": SHAPES["resnet", "s"],
                      "upstream": UPSTREAM, "seed": 0}, 0.05, 0))
        runs.append(("pixels", "pixels", "pixels", None, {"kind": "pixels"}, None, 0))
        for k, (name, kind, family, size, config, us, i) in enumerate(runs):
            run = SimpleNamespace(key=f"k{k:02d}", name=name, kind=kind, family=family, size=size, config=config)
            store.mark_running(run, versions={})
            rows = [] if us is None else [Measurement("upstream_accuracy", "fractals", float(us))]
            for shots in (5, 10):
                for seed in (0, 1):
                    near = 0.95 - 0.8 * (1 - (us or 0.05)) ** 1.5 + rng.normal(0, 0.004) + 0.01 * (shots == 10)
                    far = 0.3 + 0.2 * (us or 0.05) + 0.02 * i + rng.normal(0, 0.004)
                    rows.append(Measurement("fewshot_accuracy", "near", float(near), shots, seed, -1, 1024.0))
                    rows.append(Measurement("fewshot_accuracy", "far", float(far), shots, seed, -1, 1024.0))
            if finetune and kind == "trained":
                rows.append(Measurement("finetune_accuracy", "near", float(us + 0.2 + rng.normal(0, 0.004)), seed=0))
            store.commit_run(run.key, rows, [], params=1000, train_seconds=1.0, eval_seconds=1.0)
        if costs:
            from transferscale.models.cost import architecture_keys

            arch = architecture_keys(store.run_configs())
            seen = {}
            for k, (_name, _kind, family, size, *_rest) in enumerate(runs):
                key = arch.get(f"k{k:02d}")
                if key is not None and key not in seen:
                    params = {"s": 10_000, "m": 25_000}[size] * (2 if family == "vit" else 1)
                    seen[key] = {"arch": key, "label": f"{family}-{size}", "family": family, "architecture": "{}",
                                 "params": params, "flops": 40.0 * params, "train_throughput": 1e7 / params,
                                 "infer_throughput": 3e7 / params, "batch_size": 128, "threads": 1, "repeats": 5,
                                 "warmup": 2, "torch": "test", "machine": "test", "measured": 0.0, "seconds": 0.1}
            store.write_costs(list(seen.values()))
    return path


@pytest.fixture(scope="module")
def hp_study(tmp_path_factory):
    return write_hp_study(tmp_path_factory.mktemp("axes") / "study", finetune=True)


def _invoke(*args):
    return CliRunner().invoke(app, ["axes", *map(str, args)])


def test_axis_points_has_one_row_per_run_task_and_shots_with_every_axis(hp_study):
    table = axis_points(hp_study)
    pts = table.points
    assert len(pts) == 32 * 2 * 2 and set(pts["task"]) == {"near", "far"} and set(pts["shots"]) == {5, 10}
    assert not pts["name"].str.contains("random|pixels").any()  # baselines are no points
    assert table.scale == ["family", "size", "steps"]  # data fraction is 1.0 everywhere
    assert table.shape == ["widths", "embed_dim"] and table.training == ["head_weight_decay"]
    assert table.hyper_parameters == ["head_weight_decay"]
    row = pts[(pts["name"] == "resnet-m-d1-s300-hwd0.1") & (pts["task"] == "far") & (pts["shots"] == 10)].iloc[0]
    assert row["widths"] == "24x48x96x192" and np.isnan(row["embed_dim"]) and row["head_weight_decay"] == 0.1
    assert row["lr"] == 0.002 and row["protocol"] == "fewshot"
    five = axis_points(hp_study, shots=5).points
    assert set(five["shots"]) == {5} and len(five) == 64
    ft = axis_points(hp_study, protocol="finetune")
    assert len(ft.points) == 32 and set(ft.points["task"]) == {"near"} and ft.points["shots"].isna().all()


def test_the_command_finds_the_head_decay_on_the_far_task_only(hp_study, tmp_path):
    out = _invoke(hp_study, "--permutations", 499, "--within", "family", "-o", tmp_path / "axes.csv")
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert "at 10 shots (the largest" in text
    assert "On far, 10-shot, head weight decay adds information beyond US" in text
    assert "On near, 10-shot, family, size, steps, embed dim, head weight decay: no information beyond US" in text
    assert "widths: cannot tell (their levels lie apart in US accuracy" in text  # two ResNet sizes, apart
    assert "On far, 10-shot, US and DS are at odds across head weight decay in 8 of 8 settings" in text
    assert "On near, 10-shot, US and DS are not at odds across head weight decay in any of 8 settings" in text
    assert "the best checkpoint per task" in text
    written = pd.read_csv(tmp_path / "axes.csv")
    odds = pd.read_csv(tmp_path / "axes-at-odds.csv")
    assert len(odds) == 16 and odds.loc[odds["task"] == "far", "at_odds"].all()
    # the CSV is the API's table on the same points
    table = axis_points(hp_study, shots=10)
    ref = same_curve_test(table.points, table.axes, by=["task", "shots"], strata=["family"], n_permutations=499,
                          stop_after=20)  # the command stops at the 20th hit by default
    assert written["p_value"].tolist() == pytest.approx(ref["p_value"].tolist())
    far = written[(written["task"] == "far") & (written["axis"] == "head_weight_decay")].iloc[0]
    assert far["adds_information"] and str(far["high_level"]) == "10" and far["effect"] == pytest.approx(6.0, abs=1.5)


def test_options_select_shots_axes_and_the_protocol(hp_study):
    every = _invoke(hp_study, "--all-shots", "--axis", "head_weight_decay", "--permutations", 99)
    assert every.exit_code == 0, every.output
    assert "On far, 5-shot" in every.output and "On far, 10-shot" in every.output
    ft = _invoke(hp_study, "--protocol", "finetune", "--permutations", 99)
    assert ft.exit_code == 0, ft.output
    assert "finetune: 32 runs, 1 tasks" in ft.output and "On near," in ft.output


@pytest.mark.parametrize("args, words", [
    (["--shots", 7], "no few-shot result at 7 shots; the study has [5, 10]"),
    (["--axis", "head_decay"], "did you mean 'head_weight_decay'"),
    (["--within", "colour"], "--within 'colour' is not an axis"),
    (["--protocol", "scratch"], "protocol 'scratch'"),
    (["--protocol", "finetune", "--shots", 5], "fine-tuning has no shots"),
    (["--correction", "sidak"], "correction='sidak'"),
])
def test_bad_options_are_one_clear_error(hp_study, args, words):
    out = _invoke(hp_study, *args)
    assert out.exit_code == 2 and words in " ".join(out.output.split()) and "Traceback" not in out.output


def test_an_empty_directory_and_a_study_without_axes_are_clear_errors(tmp_path):
    out = _invoke(tmp_path / "nothing")
    assert out.exit_code == 2 and "error:" in out.output and "Traceback" not in out.output
    flat = tmp_path / "flat"
    with Store(flat) as store:  # pretrained models only: no axis of theirs varies
        for k in range(8):
            run = SimpleNamespace(key=f"p{k}", name=f"timm-{k}", kind="pretrained", family="timm", size=None,
                                  config={"source": "timm:x", "options": {"k": k}})
            store.mark_running(run, versions={})
            us = 0.5 + 0.05 * k
            store.commit_run(run.key, [Measurement("upstream_accuracy", "fractals", us),
                                       Measurement("fewshot_accuracy", "t", us - 0.1, 5, 0, -1, 1024.0)], [],
                             params=1, train_seconds=0, eval_seconds=0)
    out = _invoke(flat)
    assert out.exit_code == 2 and "no axis varies across this study's runs" in " ".join(out.output.split())
    out = _invoke(flat, "--protocol", "finetune")
    assert out.exit_code == 2 and "no finetune results" in out.output


def test_analyse_axes_stacks_the_at_odds_tables_of_each_hyper_parameter(hp_study):
    result = analyse_axes(axis_points(hp_study, shots=10), by=["task", "shots"], n_permutations=99)
    assert result.hyper_parameters == ["head_weight_decay"] and result.by == ["task", "shots"]
    # per task, one context per (family, size, steps, widths, embed_dim): 8, each with the 4 decays
    assert len(result.at_odds) == 16 and (result.at_odds["n_runs"] == 4).all()
    far = result.at_odds[result.at_odds["task"] == "far"]
    assert (far["rho_axis_us"] < 0).all() and (far["rho_axis_ds"] > 0).all() and (far["best_ds"] == "10").all()
    assert set(result.best["task"]) == {"near", "far"}


def test_axis_points_from_points_already_read_are_the_same(hp_study):
    from transferscale.analysis.tables import store_points

    read = axis_points(hp_study)
    given = axis_points(hp_study, points=store_points(hp_study, layers="final"))
    pd.testing.assert_frame_equal(read.points, given.points)
    assert (read.scale, read.shape, read.training) == (given.scale, given.shape, given.training)
