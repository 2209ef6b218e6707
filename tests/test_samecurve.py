"""The same-curve test (analysis/samecurve.py) against known answers: simulated sets where the axes only move
US accuracy (its false-positive rate, family-wise after Holm, must stay at alpha) and where an axis moves DS
at equal US (it must be found, with the right effect size); p-values against every permutation enumerated;
the corrections against hand-computed values; the isotonic fit against scikit-learn's."""
import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import false_discovery_control
from sklearn.isotonic import IsotonicRegression

from transferscale.analysis.samecurve import (
    adjust_pvalues,
    joint_offsets,
    monotone_fit,
    same_curve_sentences,
    same_curve_test,
)
from transferscale.errors import TransferscaleError

AXES = ["size", "steps", "data_fraction"]


def simulated(n_sets: int, n: int = 40, seed: int = 0, delta: float = 0.0) -> pd.DataFrame:
    """`n_sets` studies of `n` models: size, steps and data fraction each raise US accuracy (with noise, so
    the levels overlap in US); DS = f(US) + noise (sd 0.01), plus `delta` for the long runs (steps 300)."""
    rng = np.random.default_rng(seed)
    m = n_sets * n
    size, steps, frac = rng.integers(0, 3, m), rng.integers(0, 2, m), rng.integers(0, 4, m)
    us = 0.5 + 0.08 * size + 0.05 * steps + 0.03 * frac + rng.normal(0, 0.03, m)
    ds = 0.9 - 0.6 * (1 - us) ** 1.5 + rng.normal(0, 0.01, m) + delta * steps
    return pd.DataFrame({"sim": np.repeat(np.arange(n_sets), n), "size": np.array(["s", "m", "l"])[size],
                         "steps": 100 * (1 + 2 * steps), "data_fraction": (frac + 1) / 4, "us_acc": us,
                         "ds_acc": ds})


def test_axes_that_only_move_us_add_no_information_at_the_stated_rate():
    alpha = 0.05
    out = same_curve_test(simulated(200), AXES, by=["sim"], n_permutations=199, alpha=alpha, family="group")
    assert len(out) == 600 and out["p_value"].notna().all() and (out["permutations"] == 199).all()
    family_wise = out.groupby("sim")["adds_information"].any().mean()
    # measured: 0.035 here (0.027 over 3,000 sets): at or under alpha, family-wise after Holm
    assert family_wise <= alpha
    assert (out["p_adjusted"] >= out["p_value"]).all()


def test_an_axis_unrelated_to_anything_is_rejected_at_about_alpha_uncorrected():
    """Not conservative to uselessness: an axis independent of US and DS is rejected at rate ~alpha."""
    df = simulated(300, seed=11)
    df["batch"] = np.random.default_rng(1).integers(0, 3, len(df))
    out = same_curve_test(df, ["batch"], by=["sim"], n_permutations=199, correction="none")
    rate = float((out["p_value"] <= 0.05).mean())  # measured: 0.07 (0.03 and 0.05 at other seeds)
    assert 0.01 <= rate <= 0.1  # 300 tests: the binomial's standard error is 0.013


def test_an_axis_that_moves_ds_at_equal_us_is_found_with_its_effect():
    out = same_curve_test(simulated(6, n=60, delta=0.03, seed=1), AXES, by=["sim"], n_permutations=999)
    steps = out[out["axis"] == "steps"]
    assert steps["adds_information"].all()
    assert (steps["high_level"] == "300").all() and (steps["low_level"] == "100").all()
    # the joint fit recovers the 3-point gap at equal US (the blind residuals would show about half)
    assert steps["effect"].mean() == pytest.approx(3.0, abs=0.5)
    assert not out.loc[out["axis"] != "steps", "adds_information"].any()
    words = same_curve_sentences(out)
    assert len(words) == 6
    assert words["sentence"].iloc[0].startswith("On 0, steps adds information beyond US (p=")
    assert "after Holm" in words["sentence"].iloc[0] and "300 over 100 at equal US" in words["sentence"].iloc[0]
    assert "size, data fraction: no information beyond US" in words["sentence"].iloc[0]


def test_holm_bonferroni_and_bh_against_hand_computed_values():
    p = [0.01, 0.04, 0.03, 0.005]
    # Holm: sorted 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> running max 0.06
    assert adjust_pvalues(p, "holm") == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert adjust_pvalues(p, "bonferroni") == pytest.approx([0.04, 0.16, 0.12, 0.02])
    # BH: 0.005*4/1 = .02, .01*4/2 = .02, .03*4/3 = .04, .04*4/4 = .04 -> running min from the top
    assert adjust_pvalues(p, "bh") == pytest.approx([0.02, 0.04, 0.04, 0.02])
    rng = np.random.default_rng(0)
    q = rng.uniform(0, 0.2, 30)
    assert adjust_pvalues(q, "bh") == pytest.approx(false_discovery_control(q, method="bh"))
    assert adjust_pvalues([0.6, 0.9], "holm") == pytest.approx([1.0, 1.0])  # capped at 1
    assert adjust_pvalues([], "holm").size == 0 and adjust_pvalues(p, "none") == pytest.approx(p)


def test_the_table_is_corrected_over_the_family_it_names():
    df = simulated(3, seed=4)
    one = same_curve_test(df, AXES, by=["sim"], n_permutations=99, family="all")
    per = same_curve_test(df, AXES, by=["sim"], n_permutations=99, family="group")
    assert one["p_value"].tolist() == per["p_value"].tolist()
    m = len(one)

    def holm(p):  # the textbook loop
        order = sorted(range(len(p)), key=lambda i: p[i])
        out, running = [0.0] * len(p), 0.0
        for rank, i in enumerate(order):
            running = max(running, min(1.0, (len(p) - rank) * p[i]))
            out[i] = running
        return out

    assert one["p_adjusted"].tolist() == pytest.approx(holm(one["p_value"].tolist()))
    for _, g in per.groupby("sim"):
        assert g["p_adjusted"].tolist() == pytest.approx(holm(g["p_value"].tolist()))
    assert one.attrs["n_tests"] == m and one.attrs["correction"] == "holm"


def _eta2_reference(r: np.ndarray, labels) -> float:
    """eta^2 by the definition, with pandas: between-level over total sum of squares."""
    frame = pd.DataFrame({"r": r, "a": list(labels)})
    grand = frame["r"].mean()
    between = frame.groupby("a")["r"].agg(lambda s: len(s) * (s.mean() - grand) ** 2).sum()
    return between / ((frame["r"] - grand) ** 2).sum()


@pytest.mark.parametrize("labels", [list("aaabbb"), list("aabbcc"), list("aaaab")])
def test_the_p_value_is_exact_against_every_permutation(labels):
    rng = np.random.default_rng(len(set(labels)))
    n = len(labels)
    us = rng.uniform(0.4, 0.9, n)
    ds = 0.5 + 0.05 * us + rng.normal(0, 0.05, n) + np.where(np.array(labels) == "a", 0.02, 0.0)
    df = pd.DataFrame({"us_acc": us, "ds_acc": ds, "axis": labels})
    out = same_curve_test(df, ["axis"], by=(), n_permutations=1000, min_points=5).iloc[0]
    assert out["statistic"] > 0 and out["reason"] != "every point lies on the curve"  # some points pooled
    resid = ds - IsotonicRegression().fit(us, ds).predict(us)  # the reference curve: scikit-learn's
    observed = _eta2_reference(resid, labels)
    every = [_eta2_reference(resid, perm) for perm in itertools.permutations(labels)]  # all n! orderings
    expected = np.mean(np.array(every) >= observed - 1e-12)
    assert bool(out["exact"]) and out["permutations"] == math.factorial(n) // math.prod(
        math.factorial(labels.count(v)) for v in set(labels))
    assert out["statistic"] == pytest.approx(observed)
    assert out["p_value"] == pytest.approx(expected)


def test_monte_carlo_p_values_approach_the_exact_one():
    rng = np.random.default_rng(5)
    labels = list("aaaaaabbbbbb")  # 924 distinct relabellings
    us = rng.uniform(0.4, 0.9, 12)
    ds = 0.3 + 0.5 * us + rng.normal(0, 0.02, 12) + np.where(np.array(labels) == "a", 0.01, 0.0)
    df = pd.DataFrame({"us_acc": us, "ds_acc": ds, "axis": labels})
    exact = same_curve_test(df, ["axis"], by=(), n_permutations=924).iloc[0]
    sampled = same_curve_test(df, ["axis"], by=(), n_permutations=900).iloc[0]
    assert bool(exact["exact"]) and not bool(sampled["exact"])
    p = exact["p_value"]
    assert abs(sampled["p_value"] - p) <= 4 * math.sqrt(p * (1 - p) / 900) + 1 / 901


def test_the_isotonic_fit_is_scikit_learns_with_ties_pooled():
    rng = np.random.default_rng(2)
    us = np.round(rng.uniform(0.3, 0.9, 60), 2)  # many equal US values
    ds = 0.2 + 0.6 * us + rng.normal(0, 0.05, 60)
    ours = monotone_fit(us, ds)
    ref = IsotonicRegression().fit(us, ds).predict(us)
    assert ours == pytest.approx(ref, abs=1e-12)
    assert np.all(np.diff(ours[np.argsort(us)]) >= -1e-15)
    law = monotone_fit(us, ds, "saturation")
    assert np.all(np.diff(law[np.argsort(us)]) >= -1e-12) and np.mean((ds - law) ** 2) < 0.005


def test_joint_offsets_recover_known_level_gaps():
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 3, 300)
    us = rng.uniform(0.4, 0.9, 300) + 0.05 * codes
    gaps = np.array([0.0, 0.02, -0.01])
    ds = 0.9 - 0.6 * (1 - np.minimum(us, 1)) ** 1.5 + gaps[codes] + rng.normal(0, 0.005, 300)
    beta = joint_offsets(us, ds, codes)
    assert beta - beta[0] == pytest.approx(gaps, abs=0.003)


def test_a_groups_result_does_not_depend_on_the_other_groups_or_axes():
    df = simulated(4, seed=7)
    full = same_curve_test(df, AXES, by=["sim"], n_permutations=199, correction="none")
    alone = same_curve_test(df[df["sim"] == 2].sample(frac=1, random_state=0), ["steps"], by=["sim"],
                            n_permutations=199, correction="none")
    row = full[(full["sim"] == 2) & (full["axis"] == "steps")]
    assert row["p_value"].tolist() == alone["p_value"].tolist()
    assert row["statistic"].tolist() == pytest.approx(alone["statistic"].tolist())
    again = same_curve_test(df.iloc[::-1], AXES[::-1], by=["sim"], n_permutations=199, correction="none")
    merged = full.merge(again, on=["sim", "axis"], suffixes=("", "_again"))
    assert (merged["p_value"] == merged["p_value_again"]).all()


def test_strata_keep_a_confounded_axis_from_borrowing_another_axis_effect():
    """Family B sits 4 points above family A at equal US; most long runs are B's. Permuting steps across
    families credits steps with family's effect; permuting it within each family does not."""
    rng = np.random.default_rng(8)
    n = 80
    family = np.where(np.arange(n) < n // 2, "A", "B")
    steps = np.where(rng.uniform(size=n) < np.where(family == "B", 0.85, 0.15), 300, 100)
    us = rng.uniform(0.5, 0.85, n)
    ds = 0.9 - 0.6 * (1 - us) ** 1.5 + 0.04 * (family == "B") + rng.normal(0, 0.01, n)
    df = pd.DataFrame({"us_acc": us, "ds_acc": ds, "family": family, "steps": steps})
    plain = same_curve_test(df, ["steps"], by=(), n_permutations=499).iloc[0]
    within = same_curve_test(df, ["steps"], by=(), strata=["family"], n_permutations=499).iloc[0]
    assert plain["adds_information"] and plain["p_value"] < 0.01
    assert not within["adds_information"] and within["p_value"] > 0.05


def test_groups_and_axes_that_cannot_be_tested_say_why():
    rng = np.random.default_rng(9)
    us = rng.uniform(0.5, 0.9, 12)
    df = pd.DataFrame({"task": ["a"] * 10 + ["b"] * 2, "us_acc": us, "ds_acc": 0.5 * us + 0.3,
                       "one": "x", "own": [f"m{i}" for i in range(12)],
                       "gappy": [1.0, 2.0, np.nan, np.nan, np.nan, np.nan, np.nan, 1.0, 2.0, 1.0, 1.0, 2.0],
                       "steps": [100] * 5 + [300] * 7})
    df.loc[3, "ds_acc"] = np.nan  # dropped before anything
    out = same_curve_test(df, ["one", "own", "gappy", "steps"], n_permutations=99).set_index(["task", "axis"])
    assert out.loc[("a", "one"), "reason"] == "one level (x)" and out.loc[("a", "one"), "levels"] == 1
    assert out.loc[("a", "own"), "reason"] == "every row is its own level"
    assert out.loc[("a", "gappy"), "reason"].startswith("too few points with a value (5 < 6)")
    assert out.loc[("b", "steps"), "reason"] == "too few points (2 < 6)"
    assert out.loc[("a", "steps"), "n"] == 9 and np.isfinite(out.loc[("a", "steps"), "p_value"])
    assert out.loc[("a", "steps"), "reason"] == "every point lies on the curve"  # DS is a line in US here
    untested = out[out["p_value"].isna()]
    assert not untested["adds_information"].any() and untested["p_adjusted"].isna().all()
    words = same_curve_sentences(out.reset_index())
    assert "one not tested (one level (x))" in words.set_index("task").loc["a", "sentence"]


def test_levels_apart_in_us_are_flagged_and_many_numeric_values_are_binned():
    rng = np.random.default_rng(10)
    us = np.concatenate([rng.uniform(0.4, 0.5, 10), rng.uniform(0.7, 0.8, 10)])
    ds = us + rng.normal(0, 0.01, 20) + 0.05 * (us > 0.6)
    df = pd.DataFrame({"us_acc": us, "ds_acc": ds, "apart": np.where(us > 0.6, "big", "small"),
                       "lr": np.round(rng.uniform(1e-4, 1e-2, 20), 6)})
    out = same_curve_test(df, ["apart", "lr"], by=(), n_permutations=99, max_levels=4).set_index("axis")
    assert out.loc["apart", "us_overlap"] == 0 and "do not overlap in US" in out.loc["apart", "reason"]
    assert out.loc["lr", "levels"] == 4 and "-" in out.loc["lr", "high_level"]


def test_bad_arguments_are_one_clear_error():
    df = simulated(1)
    for kwargs, words in ((dict(fit="spline"), "fit='spline'"), (dict(correction="sidak"), "correction="),
                          (dict(alpha=1.5), "alpha=1.5"), (dict(n_permutations=0), "n_permutations=0"),
                          (dict(family="task"), "family="), (dict(by=["sim", "size"]), "both group")):
        with pytest.raises(TransferscaleError, match=words):
            same_curve_test(df, AXES, **{"by": ["sim"], **kwargs})
    with pytest.raises(TransferscaleError, match="no column"):
        same_curve_test(df, ["depth"], by=["sim"])
    with pytest.raises(TransferscaleError, match="no axis"):
        same_curve_test(df, [], by=["sim"])


def test_an_axis_that_splits_the_runs_as_an_earlier_one_is_not_tested_twice():
    pts = simulated(1, n=60, seed=3, delta=0.03)
    pts["lr"] = np.where(pts["steps"] == 300, 0.006, 0.002)  # set with the steps, as a per-family lr is
    both = same_curve_test(pts, ["steps", "lr", "size"], by=["sim"], n_permutations=199)
    alone = same_curve_test(pts, ["steps", "size"], by=["sim"], n_permutations=199)
    lr = both.set_index("axis").loc["lr"]
    assert np.isnan(lr["p_value"]) and lr["reason"] == "the same split of the runs as steps"
    assert both.attrs["n_tests"] == alone.attrs["n_tests"] == 2
    assert both.set_index("axis").loc["steps", "p_adjusted"] == alone.set_index("axis").loc["steps", "p_adjusted"]


def test_the_sequential_stop_keeps_the_rate_and_the_findings_and_draws_less():
    alpha = 0.05
    null = same_curve_test(simulated(200), AXES, by=["sim"], n_permutations=999, stop_after=20, alpha=alpha,
                           family="group")
    family_wise = null.groupby("sim")["adds_information"].any().mean()
    assert family_wise <= alpha  # Besag-Clifford p-values are valid: measured 0.035 here, as at fixed N
    stopped = null["permutations"] < 999
    assert stopped.mean() > 0.8  # most null tests stop early
    # a stopped test's p is h / l, with l the draws made
    assert np.allclose(null.loc[stopped, "p_value"], 20 / null.loc[stopped, "permutations"].astype(float))
    found = simulated(6, n=60, delta=0.03, seed=1)
    fixed = same_curve_test(found, AXES, by=["sim"], n_permutations=999)
    seq = same_curve_test(found, AXES, by=["sim"], n_permutations=999, stop_after=20)
    steps = (fixed["axis"] == "steps").to_numpy()
    # an axis that adds information never reaches 20 hits: the same draws, the same p, to the bit
    assert (seq.loc[steps, "p_value"].to_numpy() == fixed.loc[steps, "p_value"].to_numpy()).all()
    assert seq.loc[steps, "adds_information"].all()
    with pytest.raises(TransferscaleError, match="stop_after"):
        same_curve_test(found, AXES, by=["sim"], stop_after=0)
