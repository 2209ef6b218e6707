"""study_points, CSV tables and joins, correlations, and the `fit` CLI command on temporary and real files."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from transferscale.analysis import (
    correlations,
    finetune_points,
    load_fit_table,
    relative_depth,
    simulate_frontier,
    study_points,
)
from transferscale.analysis.tables import read_csv_table, to_fraction
from transferscale.cli.fit import fit_command
from transferscale.errors import TransferscaleError

TIMM = Path(__file__).resolve().parents[2] / "shared" / "data" / "external" / "timm"


def results_frame():
    """The store's tidy format: two trained runs, a raw-pixel baseline, two seeds, a layer and a final layer."""
    rows = []
    for run, us in (("r1", 0.6), ("r2", 0.8)):
        rows.append(dict(run=run, name=f"vit-{run}", kind="trained", family="vit", metric="upstream_accuracy",
                         task="fractals", shots=np.nan, seed=np.nan, layer=np.nan, value=us))
        for seed, noise in ((0, 0.01), (1, -0.01)):
            for layer in (-1, 2):
                rows.append(dict(run=run, name=f"vit-{run}", kind="trained", family="vit",
                                 metric="fewshot_accuracy", task="digits", shots=10, seed=seed, layer=layer,
                                 value=us - 0.1 + noise + 0.01 * layer))
    rows.append(dict(run="px", name="pixels", kind="baseline", family="pixels", metric="fewshot_accuracy",
                     task="digits", shots=10, seed=0, layer=-1, value=0.5))
    return pd.DataFrame(rows)


def test_study_points_one_row_per_run_task_shots_layer():
    pts = study_points(results_frame())
    assert list(pts.columns) == ["run", "name", "family", "upstream", "us_acc", "task", "shots", "layer", "ds_acc"]
    assert len(pts) == 4 and "px" not in set(pts["run"])  # the pixel baseline has no upstream accuracy
    r2 = pts[(pts.run == "r2") & (pts.layer == -1)].iloc[0]
    assert r2.us_acc == 0.8 and r2.ds_acc == pytest.approx(0.69) and r2.upstream == "fractals"


def test_study_points_says_what_format_it_needs():
    with pytest.raises(TransferscaleError, match="read_results"):
        study_points(pd.DataFrame({"run": ["a"]}))


def _with_finetune():
    """results_frame plus a 25-shot probe, fine-tuning rows (two seeds for r2, one for r1), a random-init run."""
    rows = [dict(run="r2", name="vit-r2", kind="trained", family="vit", metric="fewshot_accuracy", task="digits",
                 shots=25, seed=s, layer=layer, value=v) for s, v in ((0, 0.74), (1, 0.76)) for layer in (-1, 2)]
    rows += [dict(run="r2", name="vit-r2", kind="trained", family="vit", metric="finetune_accuracy", task="digits",
                  shots=np.nan, seed=s, layer=np.nan, value=v) for s, v in ((0, 0.9), (1, 0.92))]
    rows += [dict(run="r1", name="vit-r1", kind="trained", family="vit", metric="finetune_accuracy", task="digits",
                  shots=np.nan, seed=0, layer=np.nan, value=0.8)]
    rows += [dict(run="rnd", name="vit-random", kind="baseline", run_kind="random_init", family="vit",
                  metric=m, task=t, shots=sh, seed=0, layer=ly, value=v)
             for m, t, sh, ly, v in (("upstream_accuracy", "fractals", np.nan, np.nan, 0.01),
                                     ("fewshot_accuracy", "digits", 25, -1, 0.3),
                                     ("finetune_accuracy", "digits", np.nan, np.nan, 0.6))]
    return pd.concat([results_frame(), pd.DataFrame(rows)], ignore_index=True)


def test_finetune_points_join_us_and_the_largest_shot_final_layer_probe():
    ft = finetune_points(_with_finetune()).set_index("run")
    assert list(ft.index) == ["r2", "r1", "rnd"] and set(ft["task"]) == {"digits"}
    r2 = ft.loc["r2"]
    assert r2.ft_acc == pytest.approx(0.91) and r2.n_seeds == 2 and r2.us_acc == 0.8 and r2.upstream == "fractals"
    assert r2.fewshot_shots == 25 and r2.fewshot_acc == pytest.approx(0.75)  # layer -1 at 25 shots, seed mean
    r1 = ft.loc["r1"]  # probed at 10 shots only: no value at the task's largest shot count
    assert r1.ft_acc == 0.8 and r1.n_seeds == 1 and r1.fewshot_shots == 25 and np.isnan(r1.fewshot_acc)
    rnd = ft.loc["rnd"]  # baselines stay, labelled, for the caller to draw as references
    assert rnd.kind == "baseline" and rnd.run_kind == "random_init" and rnd.ft_acc == 0.6 and rnd.fewshot_acc == 0.3


def test_finetune_points_empty_without_fine_tuning_rows():
    ft = finetune_points(results_frame())
    assert ft.empty and {"run", "task", "ft_acc", "us_acc", "fewshot_acc"} <= set(ft.columns)


def test_relative_depth_is_i_plus_one_over_L_and_one_for_the_final_layer():
    assert [relative_depth(i, 4) for i in (0, 1, 2, 3, -1)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    with pytest.raises(TransferscaleError):
        relative_depth(4, 4)


def test_load_fit_table_melts_joins_and_reads_percent(tmp_path):
    pd.DataFrame({"model": ["a", "b", "c"], "top1": [70.0, 80.0, None]}).to_csv(tmp_path / "u.csv", index=False)
    pd.DataFrame({"model": ["a", "b", "c"], "top1": [50.0, 60.0, 65.0], "top5": [80.0, 90.0, 95.0]}).to_csv(
        tmp_path / "d.csv", index=False)
    table, by, notes, out = load_fit_table(csv=tmp_path / "u.csv", us="top1", ds=["top1", "top5"],
                                           join=tmp_path / "d.csv", on=["model"])
    assert by == ["ds"] and out.name == "saturation_fits.csv"
    assert sorted(table["ds"].unique()) == ["top1", "top5"] and len(table) == 4  # model c has no US value
    assert table.loc[table["ds"] == "top1", "ds_acc"].tolist() == [0.5, 0.6]  # the joined file's top1
    assert table.loc[table["ds"] == "top1", "us_acc"].tolist() == [0.7, 0.8]
    assert any("dropped 2 rows" in n for n in notes) and any("percent" in n for n in notes)
    with pytest.raises(TransferscaleError, match="either STUDY_DIR or --csv"):
        load_fit_table()


def test_join_needs_unique_keys(tmp_path):
    a = tmp_path / "a.csv"
    b = tmp_path / "b.csv"
    pd.DataFrame({"model": ["m", "m", "n"], "img_size": [224, 384, 224], "top1": [80, 81, 70]}).to_csv(a)
    pd.DataFrame({"model": ["m", "m", "n"], "img_size": [224, 384, 224], "top1": [60, 62, 50]}).to_csv(b)
    with pytest.raises(TransferscaleError, match="--on img_size"):
        read_csv_table(a, b, ["model"])
    joined = read_csv_table(a, b, ["model", "img_size"])
    assert len(joined) == 3 and {"top1", "top1_join"} <= set(joined.columns)


def test_percent_is_detected_and_said():
    df, note = to_fraction(pd.DataFrame({"a": [50.0, 90.0]}), ["a"], None)
    assert df["a"].tolist() == [0.5, 0.9] and "percent" in note
    df, note = to_fraction(pd.DataFrame({"a": [0.5, 0.9]}), ["a"], None)
    assert df["a"].tolist() == [0.5, 0.9] and note == ""


def test_correlations_with_us_between_tasks_and_with_shots():
    rows = []
    for shots, (k, e_ir) in ((1, (1.0, 0.3)), (10, (0.8, 0.2)), (25, (0.6, 0.15))):
        for task, alpha in (("near", 2.0), ("far", 1.5)):
            us, ds = simulate_frontier(k, alpha, e_ir, n=60, random_state=shots)
            rows.append(pd.DataFrame({"run": range(60), "task": task, "shots": shots, "us_acc": us, "ds_acc": ds}))
    out = correlations(pd.concat(rows))
    assert len(out.with_us) == 6 and (out.with_us.spearman > 0.7).all()
    assert set(out.between_tasks.columns) >= {"shots", "task_a", "task_b", "spearman", "n"}
    trend = out.shots_trend.set_index(["task", "param"])
    assert trend.loc[("near", "e_ir"), "spearman"] < 0 and trend.loc[("near", "k"), "spearman"] < 0


@pytest.fixture
def cli():
    app = typer.Typer()
    app.command("fit")(fit_command)
    app.command("noop")(lambda: None)  # a second command keeps `fit` a subcommand, as in the real app
    return app


def test_cli_fits_a_csv_with_groups(cli, tmp_path):
    frames = [pd.DataFrame({"task": t, "us": simulate_frontier(0.8, a, 0.1, n=60, random_state=1)[0]})
              for t, a in (("a", 2.0), ("b", 3.0))]
    df = pd.concat(frames)
    df["ds"] = 1 - (0.8 * (1 - df["us"]) ** 2 + 0.1) - np.random.default_rng(0).exponential(0.02, len(df))
    df.to_csv(tmp_path / "t.csv", index=False)
    out = tmp_path / "fits.csv"
    res = CliRunner().invoke(cli, ["fit", "--csv", str(tmp_path / "t.csv"), "--us", "us", "--ds", "ds",
                                   "--by", "task", "--n-bootstrap", "100", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "saturation" in res.output and "wrote" in res.output
    fits = pd.read_csv(out)
    assert list(fits["task"]) == ["a", "b"] and fits["saturation"].between(0.85, 0.95).all()


def test_cli_errors_say_what_to_change(cli, tmp_path):
    pd.DataFrame({"us": [0.1, 0.2], "ds": [0.1, 0.2]}).to_csv(tmp_path / "t.csv", index=False)
    res = CliRunner().invoke(cli, ["fit", "--csv", str(tmp_path / "t.csv"), "--us", "uss", "--ds", "ds"])
    assert res.exit_code == 2 and "did you mean 'us'" in res.output
    res = CliRunner().invoke(cli, ["fit"])
    assert res.exit_code == 2 and "STUDY_DIR or --csv" in res.output
    res = CliRunner().invoke(cli, ["fit", "--csv", str(tmp_path / "t.csv"), "--us", "us", "--ds", "ds",
                                   "--points", "hull"])
    assert res.exit_code == 2 and "upper_hull" in res.output


@pytest.mark.skipif(not TIMM.is_dir(), reason="shared timm results not present")
@pytest.mark.parametrize("upstream, shifted", [
    ("results-imagenet.csv", "results-imagenet-real.csv"),
    ("results-imagenet-a-clean.csv", "results-imagenet-a.csv"),
])
def test_cli_on_timm_joins_on_model_and_size_and_reads_percent(cli, tmp_path, upstream, shifted):
    out = tmp_path / "fits.csv"
    res = CliRunner().invoke(cli, ["fit", "--csv", str(TIMM / upstream), "--us", "top1",
                                   "--join", str(TIMM / shifted), "--ds", "top1", "--on", "model",
                                   "--on", "img_size", "--n-bootstrap", "100", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "read as percent" in res.output
    row = pd.read_csv(out).iloc[0]
    assert row.n_models > 1500
    if shifted.endswith("real.csv"):  # a well-populated hull: a sane, unflagged saturation
        assert row.n_points >= 10 and 0.9 < row.saturation < 1 and pd.isna(row["flags"])
    else:  # ImageNet-A's hull has two vertices: no number, a flag
        assert np.isnan(row.k) and "too_few_points" in row["flags"]
