"""The extrapolation check per group (hull against all points), and the saturation verdicts in words, on
constructed tables whose answers are known."""
import numpy as np
import pandas as pd
import pytest

from transferscale.analysis import (
    count_sentence,
    extrapolation_error,
    extrapolation_table,
    extrapolation_verdicts,
    saturation_verdicts,
    task_sentences,
)
from transferscale.errors import TransferscaleError


def law(us, k=0.8, alpha=2.0, e_ir=0.2):
    return 1 - (k * (1 - us) ** alpha + e_ir)


def frontier_and_cloud(n=40, seed=0):
    """Every other model exactly on the law, the rest 0.08-0.2 below it: the hull is the law itself."""
    rng = np.random.default_rng(seed)
    us = np.linspace(0.3, 0.9, n)
    ds = law(us) - np.where(np.arange(n) % 2 == 0, 0.0, rng.uniform(0.08, 0.2, n))
    return us, ds


def test_the_hull_fit_predicts_the_frontier_and_all_points_fall_short():
    us, ds = frontier_and_cloud()
    df = pd.concat([pd.DataFrame({"task": "t", "shots": s, "us_acc": us, "ds_acc": ds}) for s in (5, 1)])
    table = extrapolation_table(df, by=["task", "shots"])
    assert list(table["shots"]) == [1, 1, 5, 5] and list(table["points"]) == ["upper_hull", "all"] * 2
    hull, every = table[table.points == "upper_hull"].iloc[0], table[table.points == "all"].iloc[0]
    assert hull.n_models == 40 and hull.n_train == 36 and hull.n_holdout == 4 and hull.n_frontier == 2
    assert hull.rmse_frontier < 1e-3 and abs(hull.bias_frontier) < 1e-3  # the law, predicted exactly
    assert every.rmse_frontier > 0.03 and every.bias_frontier < -0.03  # pulled down into the cloud
    assert hull.us_cut == pytest.approx(np.quantile(us, 0.9)) and hull.reason == ""
    verdict = extrapolation_verdicts(table, ["task", "shots"]).iloc[0]
    assert verdict.n_compared == 2 and verdict.n_hull_better == 2
    assert verdict.sentence.startswith("t: the hull fit predicts the strongest runs better than the all-points fit "
                                       "in 2 of 2 shot counts (median error: hull 0.000, all points 0.")


def test_each_group_gives_what_extrapolation_error_gives_and_depends_on_nothing_else():
    rows = []
    for task, alpha in (("b", 1.6), ("a", 2.5)):
        us, ds = frontier_and_cloud(seed=3)
        rows.append(pd.DataFrame({"task": task, "us": us, "ds": law(us, alpha=alpha) - (law(us) - ds)}))
    df = pd.concat(rows, ignore_index=True)
    table = extrapolation_table(df, us="us", ds="ds", by="task", holdout_quantile=0.8)
    for (task, points), row in table.set_index(["task", "points"]).iterrows():
        g = df[df.task == task]
        ref = extrapolation_error(g.us, g.ds, holdout_quantile=0.8, points=points)
        for col in ("n_fit", "n_train", "n_holdout", "n_frontier", "rmse_frontier", "bias_frontier", "rmse_all"):
            assert row[col] == ref[col], (task, points, col)
        assert row["flags"] == ";".join(ref["flags"])
    alone = extrapolation_table(df[df.task == "a"].iloc[::-1], us="us", ds="ds", by="task", holdout_quantile=0.8)
    pd.testing.assert_frame_equal(alone, table[table.task == "a"].reset_index(drop=True))


def test_groups_that_cannot_be_checked_get_nan_and_a_reason():
    us, ds = frontier_and_cloud()
    df = pd.concat([
        pd.DataFrame({"task": "fine", "us_acc": us, "ds_acc": ds}),
        pd.DataFrame({"task": "flat", "us_acc": [0.5] * 5, "ds_acc": [0.3, 0.4, 0.2, 0.35, 0.3]}),
        pd.DataFrame({"task": "one", "us_acc": [0.5], "ds_acc": [0.3]}),
        pd.DataFrame({"task": "few", "us_acc": [0.4, 0.5, 0.6], "ds_acc": [0.2, 0.3, 0.35]}),
        # the weakest run is the best downstream: no held-out run is on the frontier
        pd.DataFrame({"task": "upside", "us_acc": np.linspace(0.3, 0.9, 12),
                      "ds_acc": [0.9, *law(np.linspace(0.3, 0.9, 12))[1:]]}),
    ])
    table = extrapolation_table(df, by="task").set_index(["task", "points"])
    reasons = table["reason"].to_dict()
    assert reasons[("flat", "all")] == "all US accuracies equal" and reasons[("one", "upper_hull")] == "one model"
    assert reasons[("few", "all")] == "2 runs below the cut, 1 at or above it: too few to fit and predict"
    assert "has fewer than 3 points" in reasons[("upside", "upper_hull")]
    assert reasons[("upside", "all")] == "no held-out run is on the frontier (a weaker run has the best DS accuracy)"
    assert np.isnan(table.loc[("flat", "all"), "rmse_frontier"]) and table.loc[("fine", "all"), "reason"] == ""
    verdicts = extrapolation_verdicts(table.reset_index(), ["task"]).set_index("task")
    assert verdicts.loc["flat", "sentence"] == "flat: cannot compare the fits: all US accuracies equal"
    with pytest.raises(TransferscaleError, match="between 0 and 1"):
        extrapolation_table(df, by="task", holdout_quantile=1.0)
    with pytest.raises(TransferscaleError, match="did you mean 'task'"):
        extrapolation_table(df, by="tsk")


def _long(rows):
    """An extrapolation_table by hand: (shots, hull error, all error, hull bias, all bias, reason)."""
    out = []
    for shots, he, ae, hb, ab, reason in rows:
        for points, e, b in (("upper_hull", he, hb), ("all", ae, ab)):
            out.append({"task": "x", "shots": shots, "points": points, "rmse_frontier": e, "bias_frontier": b,
                        "reason": reason if np.isnan(e) else ""})
    return pd.DataFrame(out)


def test_the_verdict_counts_the_groups_and_takes_medians():
    table = _long([(1, 0.01, 0.05, -0.01, 0.05, ""), (5, 0.02, 0.03, -0.02, 0.01, ""),
                   (10, 0.06, 0.04, 0.06, -0.04, ""), (25, np.nan, 0.02, np.nan, 0.0, "too few")])
    v = extrapolation_verdicts(table, ["task", "shots"]).iloc[0]
    assert (v.n_groups, v.n_compared, v.n_hull_better) == (4, 3, 2)
    assert v.hull_median_error == pytest.approx(0.02) and v.all_median_error == pytest.approx(0.04)
    assert v.hull_median_bias == pytest.approx(-0.01) and v.all_median_bias == pytest.approx(0.01)
    assert v.sentence == ("x: the hull fit predicts the strongest runs better than the all-points fit in 2 of 3 shot "
                          "counts (median error: hull 0.020, all points 0.040; median bias: hull -0.010, all points "
                          "+0.010); 1 of 4 shot counts not compared (too few)")
    even = extrapolation_verdicts(_long([(1, 0.01, 0.05, 0, 0, ""), (5, 0.05, 0.01, 0, 0, "")]), ["task", "shots"])
    assert even.sentence[0].startswith("x: neither fit predicts the strongest runs better: the hull fit wins in 1 of 2")
    worse = extrapolation_verdicts(_long([(1, 0.05, 0.01, 0, 0, "")]), ["task", "shots"])
    assert worse.sentence[0].startswith("x: the all-points fit predicts the strongest runs better than the hull fit (")


def fits_table():
    """fit_saturation-shaped rows, one per case, each with a known verdict."""
    nan = np.nan
    cases = [  # shots, e_ir_low, e_ir_high, flags, n_models
        (1, 0.10, 0.15, "", 20),  # supports
        (5, 0.0, 0.05, "", 20),  # the interval reaches 0
        (10, 0.10, 0.30, "wide_interval", 20),
        (25, 0.10, 0.30, "wide_interval;alpha_at_bound", 20),
        (50, nan, nan, "too_few_points;alpha_below_one", 20),
        (100, nan, nan, "degenerate", 20),
        (200, nan, nan, "", 20),  # no bootstrap
        (400, nan, nan, "too_few_points", 1),
        (800, 0.10, 0.12, "quantile_sparse", 20),  # a flag this module does not know
        (1600, 0.20, 0.22, nan, 20),  # no flags, read back from a CSV as NaN: supports
    ]
    rows = [{"task": "near" if s < 50 else "far", "shots": s, "e_ir_low": lo, "e_ir_high": hi,
             "e_ir": (lo + hi) / 2, "saturation": 1 - (lo + hi) / 2, "saturation_low": 1 - hi,
             "saturation_high": 1 - lo, "flags": f, "n_models": n} for s, lo, hi, f, n in cases]
    return pd.DataFrame(rows)


def test_saturation_verdicts_say_why_in_words():
    v = saturation_verdicts(fits_table()).set_index("shots")
    assert list(v["verdict"]) == ["supports", *["cannot tell"] * 8, "supports"]
    assert v.loc[5, "why"] == "interval reaches 0" and v.loc[10, "why"] == "wide interval"
    assert v.loc[25, "why"] == "alpha at bound, wide interval" and v.loc[25, "main_reason"] == "alpha at bound"
    assert v.loc[50, "why"] == "too few points on the hull, frontier bends the wrong way"
    assert v.loc[100, "why"] == "all US accuracies equal" and v.loc[200, "why"] == "no interval (no bootstrap)"
    assert v.loc[400, "why"] == "fewer than 3 models" and v.loc[800, "why"] == "quantile sparse"
    assert v.loc[1, "why"] == "" and v.loc[1, "main_reason"] == ""
    assert saturation_verdicts(fits_table().assign(e_ir_high=0.22)).loc[0, "why"] == "wide interval"  # width 0.12


def test_the_count_files_each_fit_under_its_main_reason():
    assert count_sentence(saturation_verdicts(fits_table())) == (
        "2 of 10 fits support saturation; 8 cannot tell: 1 fewer than 3 models, 1 all US accuracies equal, "
        "1 too few points on the hull, 1 alpha at bound, 1 wide interval, 1 no interval (no bootstrap), "
        "1 interval reaches 0, 1 quantile sparse")
    wide = fits_table().iloc[[0, 2, 2, 3]]
    assert count_sentence(saturation_verdicts(wide)) == ("1 of 4 fits support saturation; 3 cannot tell: "
                                                         "2 wide interval, 1 alpha at bound")
    assert count_sentence(saturation_verdicts(fits_table().iloc[[0]])) == "1 of 1 fit supports saturation"


def test_one_sentence_per_task():
    v = saturation_verdicts(fits_table())
    lines = task_sentences(v).set_index("task")["sentence"]
    assert lines["near"] == ("near: supports saturation at 1 of 4 shot counts (1-shot: 1 − e_IR 0.875 [0.850, "
                             "0.900]); cannot tell at 5-shot: interval reaches 0; 10-shot: wide interval; 25-shot: "
                             "alpha at bound")
    assert lines["far"].startswith("far: supports saturation at 1 of 6 shot counts (1600-shot: 1 − e_IR 0.790")
    supported = task_sentences(v.iloc[[0, 9]].assign(task="t"))
    assert supported.sentence[0] == "t: supports saturation at all 2 shot counts (1 − e_IR from 0.790 to 0.875)"
    none = task_sentences(v.iloc[[2, 3]])
    assert none.sentence[0] == ("near: cannot tell at any of its 2 shot counts (10-shot: wide interval; 25-shot: "
                                "alpha at bound)")
    single = task_sentences(v.iloc[[3]], over=None)
    assert single.sentence[0] == "near: cannot tell: alpha at bound, wide interval"


def test_e_ir_on_its_upper_bound_is_saturation_reached_on_zero_it_is_not():
    """e_ir_at_bound is read by which bound e_IR rests on: the lowest observed error (a frontier already flat
    at the strongest runs) supports saturation when the interval passes; 0 (no ceiling) cannot tell."""
    rows = pd.DataFrame([
        {"shots": 1, "e_ir": 0.30, "e_ir_low": 0.28, "e_ir_high": 0.31, "flags": "e_ir_at_bound"},
        {"shots": 5, "e_ir": 0.0, "e_ir_low": 0.0, "e_ir_high": 0.02, "flags": "e_ir_at_bound"},
        {"shots": 10, "e_ir": 0.30, "e_ir_low": 0.15, "e_ir_high": 0.31, "flags": "e_ir_at_bound;wide_interval"},
    ]).assign(task="t", n_models=30, saturation=lambda d: 1 - d.e_ir, saturation_low=lambda d: 1 - d.e_ir_high,
              saturation_high=lambda d: 1 - d.e_ir_low)
    v = saturation_verdicts(rows).set_index("shots")
    assert list(v["verdict"]) == ["supports", "cannot tell", "cannot tell"]
    assert v.loc[1, "why"] == "reached within the data"
    assert v.loc[5, "why"] == "e_IR at 0, interval reaches 0" and v.loc[5, "main_reason"] == "e_IR at 0"
    assert v.loc[10, "main_reason"] == "wide interval"
    assert v.loc[10, "why"] == "wide interval, flat at the strongest runs"
    assert count_sentence(v.reset_index()) == (
        "1 of 3 fits support saturation (1 reached within the data: downstream accuracy flat at the strongest "
        "runs); 2 cannot tell: 1 e_IR at 0, 1 wide interval")
    line = task_sentences(v.reset_index()).sentence[0]
    assert line.startswith("t: supports saturation at 1 of 3 shot counts (1-shot: 1 − e_IR 0.700 [0.690, 0.720], "
                           "reached within the data)")
