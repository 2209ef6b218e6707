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


def test_finetune_points_compare_at_the_largest_data_size():
    """With a data-size axis ([finetune] fractions: `shots` = training examples), fine-tuned accuracy is taken
    at the largest size, not averaged over sizes."""
    base = _with_finetune()
    sized = [dict(run="r1", name="vit-r1", kind="trained", family="vit", metric="finetune_accuracy", task="digits",
                  shots=n, seed=s, layer=np.nan, value=v) for n, s, v in ((30, 0, 0.2), (30, 1, 0.3), (300, 0, 0.7),
                                                                         (300, 1, 0.9))]
    table = pd.concat([base[~((base.run == "r1") & (base.metric == "finetune_accuracy"))], pd.DataFrame(sized)],
                      ignore_index=True)
    r1 = finetune_points(table).set_index("run").loc["r1"]
    assert r1.ft_acc == pytest.approx(0.8) and r1.n_seeds == 2
    assert finetune_points(_with_finetune()).set_index("run").loc["r2"].ft_acc == pytest.approx(0.91)  # no sizes


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
    # percent is no longer guessed from the values: the table says --percent (test_percent_needs_to_be_asked_for)
    table, by, notes, out = load_fit_table(csv=tmp_path / "u.csv", us="top1", ds=["top1", "top5"],
                                           join=tmp_path / "d.csv", on=["model"], percent=True)
    assert by == ["ds"] and out.name == "saturation_fits.csv"
    assert sorted(table["ds"].unique()) == ["top1", "top5"] and len(table) == 4  # model c has no US value
    assert table.loc[table["ds"] == "top1", "ds_acc"].tolist() == [0.5, 0.6]  # the joined file's top1
    assert table.loc[table["ds"] == "top1", "us_acc"].tolist() == [0.7, 0.8]
    assert any("dropped 2 rows" in n for n in notes)
    assert any("divided by 100 'top1' (US), 'top1' (DS, d.csv), 'top5' (DS)" in n for n in notes), notes
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


def test_percent_needs_to_be_asked_for():
    # The old rule divided any table with a value above 1 (and none above 100) by 100 and said so in a note;
    # now no number is divided unless --percent asks, and a column that looks like percent is an error.
    with pytest.raises(TransferscaleError, match=r"'a' \(values up to 90\) looks like percent: pass --percent"):
        to_fraction(pd.DataFrame({"a": [50.0, 90.0]}), ["a"], None)
    df, note = to_fraction(pd.DataFrame({"a": [50.0, 90.0]}), ["a"], True)
    assert df["a"].tolist() == [0.5, 0.9] and "divided by 100 'a'" in note
    df, note = to_fraction(pd.DataFrame({"a": [0.5, 0.9]}), ["a"], None)
    assert df["a"].tolist() == [0.5, 0.9] and note == ""


def test_a_stray_value_in_a_fraction_column_is_named_not_divided():
    frame = pd.DataFrame({"a": [0.5, 0.6, 1.2, 0.7, 0.8]})
    with pytest.raises(TransferscaleError, match=r"'a' holds fractions but 1.2 at row 2 is above 1: fix that value"):
        to_fraction(frame, ["a"], None)
    with pytest.raises(TransferscaleError, match="--fraction says"):
        to_fraction(frame, ["a"], False)


def test_a_percent_column_beside_a_fraction_column():
    frame = pd.DataFrame({"us": [50.0, 70.0, 90.0], "ds": [0.4, 0.5, 0.55]})
    with pytest.raises(TransferscaleError, match=r"'us' \(values up to 90\) looks like percent: pass --percent to "
                       r"divide it by 100 \('ds', within \[0, 1\], would stay fractions\)"):
        to_fraction(frame, ["us", "ds"], None)
    df, note = to_fraction(frame, ["us", "ds"], True)  # only the percent column is divided, and the note says so
    assert df["us"].tolist() == [0.5, 0.7, 0.9] and df["ds"].tolist() == [0.4, 0.5, 0.55]
    assert note == "--percent: divided by 100 'us'; kept as fractions (all within [0, 1]) 'ds'"
    with pytest.raises(TransferscaleError, match="from -3 to 90"):  # not an accuracy in either unit
        to_fraction(pd.DataFrame({"a": [-3.0, 90.0]}), ["a"], True)


def _write(path, text: str):
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, message", [
    ("", "is empty: a CSV file needs a header row"),
    ("us,ds\n", "no row has both a US and a DS value"),
    ("us,ds\n0.5,0.4\n", "1 model row with values; the law"),
    ("us,ds\n0.5,0.4\n0.5,0.6\n0.5,0.3\n", "every row has the same US accuracy in 'us' (0.5)"),
    ("us,ds\n0.5,0.4\nabc,0.6\n0.7,0.3\n", "'us' (US) holds values that are not numbers: 'abc' at line 3 of t.csv"),
    ("us,ds\n0.5,0.4\n0.6,0.45\n0.7,1.3\n0.8,0.5\n", "'ds' (DS) holds fractions but 1.3 at line 4 of t.csv"),
])
def test_tables_nothing_can_be_fitted_on_are_one_clear_error(cli, tmp_path, text, message):
    csv = _write(tmp_path / "t.csv", text)
    res = CliRunner().invoke(cli, ["fit", "--csv", str(csv), "--us", "us", "--ds", "ds", "-o", str(tmp_path / "f.csv")])
    assert res.exit_code == 2 and message in " ".join(res.output.split()), res.output
    assert "Traceback" not in res.output and not (tmp_path / "f.csv").exists()


def test_a_group_that_cannot_be_fitted_says_why_in_words(cli, tmp_path):
    us, ds = simulate_frontier(0.8, 2.0, 0.1, n=30, random_state=0)
    rows = [pd.DataFrame({"task": "a", "us": us, "ds": ds}),
            pd.DataFrame({"task": "flat", "us": [0.6] * 4, "ds": [0.3, 0.4, 0.5, 0.35]}),
            pd.DataFrame({"task": "one", "us": [0.7], "ds": [0.5]})]
    csv = tmp_path / "t.csv"
    pd.concat(rows).to_csv(csv, index=False)
    out = tmp_path / "fits.csv"
    res = CliRunner().invoke(cli, ["fit", "--csv", str(csv), "--us", "us", "--ds", "ds", "--by", "task",
                                   "--n-bootstrap", "50", "-o", str(out)], terminal_width=200)
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "no fit" in text and "cannot tell: all US accuracies equal" in text
    assert "cannot tell: fewer than 3 models" in text
    fits = pd.read_csv(out).set_index("task")
    assert fits.loc["flat", "why"] == "all US accuracies equal" and fits.loc["one", "why"] == "fewer than 3 models"
    assert fits.loc["flat", "verdict"] == fits.loc["one", "verdict"] == "cannot tell"
    assert "of 3 fits support saturation; " in text


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


def test_cli_errors_say_what_to_change(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pd.DataFrame({"us": [0.1, 0.2], "ds": [0.1, 0.2]}).to_csv(tmp_path / "t.csv", index=False)
    res = CliRunner().invoke(cli, ["fit", "--csv", str(tmp_path / "t.csv"), "--us", "uss", "--ds", "ds"])
    assert res.exit_code == 2 and "did you mean 'us'" in res.output
    res = CliRunner().invoke(cli, ["fit"])  # no study in this directory (the fixture chdirs to tmp_path)
    assert res.exit_code == 2 and "pass a study's directory (STUDY_DIR) or fit a results table with --csv FILE" in \
        " ".join(res.output.split())
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
    args = ["fit", "--csv", str(TIMM / upstream), "--us", "top1", "--join", str(TIMM / shifted), "--ds", "top1",
            "--on", "model", "--on", "img_size", "--n-bootstrap", "100", "-o", str(out)]
    # percent used to be guessed with a note; now the table must say --percent, and without it the error says so
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code == 2 and "pass --percent" in " ".join(refused.output.split()) and not out.exists()
    res = CliRunner().invoke(cli, [*args, "--percent"])
    assert res.exit_code == 0, res.output
    assert "divided by 100 'top1' (US), 'top1' (DS, " in " ".join(res.output.split())
    row = pd.read_csv(out).iloc[0]
    assert row.n_models > 1500
    if shifted.endswith("real.csv"):  # a well-populated hull: a sane, unflagged saturation
        assert row.n_points >= 10 and 0.9 < row.saturation < 1 and pd.isna(row["flags"])
    else:  # ImageNet-A's hull has two vertices: no number, a flag
        assert np.isnan(row.k) and "too_few_points" in row["flags"]


def test_cli_extrapolation_on_a_csv_table(cli, tmp_path):
    us, ds = simulate_frontier(0.8, 2.0, 0.1, n=80, random_state=2)
    pd.DataFrame({"us": us, "a": ds, "b": np.clip(ds - 0.05, 0, 1)}).to_csv(tmp_path / "t.csv", index=False)
    out = tmp_path / "fits.csv"
    res = CliRunner().invoke(cli, ["fit", "--csv", str(tmp_path / "t.csv"), "--us", "us", "--ds", "a", "--ds", "b",
                                   "--n-bootstrap", "20", "-o", str(out), "--extrapolation", "--holdout-quantile",
                                   "0.8"], terminal_width=200)
    assert res.exit_code == 0, res.output
    table = pd.read_csv(tmp_path / "fits-extrapolation.csv")
    assert list(table["ds"]) == ["a", "a", "b", "b"] and (table["n_holdout"] == 16).all()
    text = " ".join(res.output.split())
    assert "a: the " in text and "b: the " in text and "fitted below the 0.8 quantile" in text
    bad = CliRunner().invoke(cli, ["fit", "--csv", str(tmp_path / "t.csv"), "--us", "us", "--ds", "a",
                                   "--extrapolation", "--holdout-quantile", "1"])
    assert bad.exit_code == 2 and "between 0 and 1" in bad.output


def test_cli_fits_the_quantile_frontier_and_checks_its_quantile(cli, tmp_path):
    """--points quantile --quantile q reaches fit_saturation: the CSV equals the API's table; a bad q fails."""
    from transferscale.analysis.saturation import fit_saturation

    us, ds = simulate_frontier(0.8, 2.0, 0.1, n=80, random_state=3)
    pd.DataFrame({"us": us, "ds": ds}).to_csv(tmp_path / "t.csv", index=False)
    out = tmp_path / "fits.csv"
    args = ["fit", "--csv", str(tmp_path / "t.csv"), "--us", "us", "--ds", "ds", "--points", "quantile",
            "--n-bootstrap", "50", "-o", str(out)]
    res = CliRunner().invoke(cli, [*args, "--quantile", "0.8"])
    assert res.exit_code == 0, res.output
    want = fit_saturation(pd.DataFrame({"us_acc": us, "ds_acc": ds}), points="quantile", quantile=0.8,
                          n_bootstrap=50, random_state=0)
    got = pd.read_csv(out)
    np.testing.assert_allclose(got["e_ir"], want["e_ir"], rtol=1e-9)
    assert int(got["n_points"].iloc[0]) == int(want["n_points"].iloc[0])
    res = CliRunner().invoke(cli, [*args, "--quantile", "1.5"])
    assert res.exit_code == 2 and "strictly between 0 and 1" in " ".join(res.output.split())
