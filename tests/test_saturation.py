"""SaturationFit and fit_saturation: known answers, the hull's advantage, flags, errors, intervals."""
import numpy as np
import pandas as pd
import pytest
from scipy.optimize import curve_fit

from transferscale.analysis import SaturationFit, extrapolation_error, fit_saturation, simulate_frontier
from transferscale.errors import TransferscaleError

SETTINGS = [(0.8, 2.0, 0.10), (0.6, 1.5, 0.25), (1.0, 3.0, 0.05)]
GRID = np.linspace(0.3, 0.9, 61)  # the US range the synthetic models span


def frontier(truth, us):
    k, alpha, e_ir = truth
    return 1 - (k * (1 - us) ** alpha + e_ir)


@pytest.mark.parametrize("truth", [(0.8, 2.0, 0.1), (0.5, 1.5, 0.3), (1.2, 3.0, 0.05), (0.6, 0.7, 0.2)])
@pytest.mark.parametrize("loss", ["linear", "soft_l1"])
def test_noise_free_points_match_scipy_curve_fit(truth, loss):
    us = np.linspace(0.3, 0.9, 12)
    ds = frontier(truth, us)
    fit = SaturationFit(points="all", n_bootstrap=0, loss=loss).fit(us, ds)
    ref, _ = curve_fit(lambda x, k, a, e: k * x**a + e, 1 - us, 1 - ds, p0=[0.5, 1.0, 0.0],
                       bounds=([0, 0.05, 0], [np.inf, 10, 1]))
    np.testing.assert_allclose([fit.k_, fit.alpha_, fit.e_ir_], ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose([fit.k_, fit.alpha_, fit.e_ir_], truth, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("truth", SETTINGS)
def test_hull_fit_recovers_parameters_from_a_scattered_cloud(truth):
    # 200 models fall below the frontier by Exp(0.03) gaps with N(0, 0.002) noise (analysis.synthetic)
    for seed in range(4):
        us, ds = simulate_frontier(*truth, n=200, noise=0.002, random_state=seed)
        fit = SaturationFit(n_bootstrap=0).fit(us, ds)
        assert abs(fit.e_ir_ - truth[2]) <= 0.015
        assert abs(fit.alpha_ - truth[1]) <= 0.35
        assert abs(fit.k_ - truth[0]) <= 0.2
        assert np.abs(fit.predict(GRID) - frontier(truth, GRID)).mean() <= 0.005
        # (alpha=3 reaches e_IR within 0.001 of the best model's error: e_ir_at_bound is a fair flag there)
        assert not {"too_few_points", "alpha_below_one", "alpha_at_bound"} & set(fit.flags_)


@pytest.mark.parametrize("truth", SETTINGS)
def test_all_points_fit_is_biased_below_the_frontier(truth):
    gap_hull, gap_all = [], []
    for seed in range(4):
        us, ds = simulate_frontier(*truth, n=200, noise=0.002, random_state=seed)
        gap_hull.append(frontier(truth, GRID) - SaturationFit(n_bootstrap=0).fit(us, ds).predict(GRID))
        gap_all.append(frontier(truth, GRID) - SaturationFit("all", n_bootstrap=0).fit(us, ds).predict(GRID))
    assert abs(np.mean(gap_hull)) < 0.004
    assert np.mean(gap_all) > 0.015  # the scatter below pulls the all-points curve ~2 points down


def test_extrapolation_favours_the_hull_fit():
    us, ds = simulate_frontier(0.8, 2.0, 0.1, n=200, noise=0.002, random_state=0)
    hull = extrapolation_error(us, ds, holdout_quantile=0.9)
    every = extrapolation_error(us, ds, holdout_quantile=0.9, points="all")
    assert hull["n_train"] == 180 and hull["n_holdout"] == 20
    assert hull["rmse_frontier"] < 0.01 < every["rmse_frontier"]


def test_alpha_below_one_is_flagged_not_hidden():
    # the frontier is convex in accuracy space: the hull keeps its ends only
    for seed in range(5):
        us, ds = simulate_frontier(0.6, 0.6, 0.15, random_state=seed)
        row = fit_saturation(pd.DataFrame({"us": us, "ds": ds}), us="us", ds="ds", n_bootstrap=0).iloc[0]
        assert "alpha_below_one" in row["flags"]


def test_intervals_are_deterministic_and_hold_the_estimate():
    us, ds = simulate_frontier(0.8, 2.0, 0.1, random_state=3)
    a = SaturationFit(n_bootstrap=300, random_state=7).fit(us, ds)
    b = SaturationFit(n_bootstrap=300, random_state=7).fit(us, ds)
    assert a.ci_ == b.ci_
    for name, est in (("k", a.k_), ("alpha", a.alpha_), ("e_ir", a.e_ir_)):
        lo, hi = a.ci_[name]
        assert lo <= est <= hi and hi > lo
    assert a.n_points_ == len(a.points_) and a.boot_.shape == (300, 3)
    assert a.predict([0.5]).shape == (1,) and abs(a.saturation_ - (1 - a.e_ir_)) < 1e-12


def test_e_ir_interval_is_symmetric_and_covers_basic_and_percentile():
    """e_IR's interval is e_hat +- the longer bootstrap tail: it holds both the basic and the percentile
    interval, so it does not depend on which way the resamples' bias points (see analysis.bootstrap)."""
    us, ds = simulate_frontier(0.8, 2.0, 0.1, random_state=5)
    fit = SaturationFit(n_bootstrap=400, random_state=1).fit(us, ds)
    lo, hi = fit.ci_["e_ir"]
    q_lo, q_hi = np.nanquantile(fit.boot_[:, 2], [0.025, 0.975])
    e = fit.e_ir_
    if lo > 0:  # not clipped at 0
        assert abs((e - lo) - (hi - e)) < 1e-12
    assert lo <= min(q_lo, 2 * e - q_hi) + 1e-12 and hi >= max(q_hi, 2 * e - q_lo) - 1e-12


def test_n_points_counts_hull_vertices_not_models():
    us = np.array([0.3, 0.5, 0.7, 0.9, 0.5, 0.6, 0.9])
    ds = frontier((0.8, 2.0, 0.1), us) - np.array([0, 0, 0, 0, 0.05, 0.05, 0.2])
    fit = SaturationFit(n_bootstrap=0).fit(us, ds)
    assert fit.n_points_ == 4 and "too_few_points" in fit.flags_
    assert SaturationFit("all", n_bootstrap=0).fit(us, ds).n_points_ == 7


@pytest.mark.parametrize("us, ds, says", [
    ([0.5, np.nan, 0.7], [0.3, 0.4, 0.5], "NaN"),
    ([50, 60, 70], [0.3, 0.4, 0.5], "percent"),
    ([0.5, 0.5, 0.5], [0.3, 0.4, 0.5], "equal"),
    ([0.5, 0.6], [0.3, 0.4], "fewer than"),
    ([0.5, 0.6, 0.7], [0.3, 0.4], "same length"),
])
def test_degenerate_input_raises_a_clear_error(us, ds, says):
    with pytest.raises(TransferscaleError, match=says):
        SaturationFit(n_bootstrap=0).fit(us, ds)


def test_bad_parameters_say_what_is_valid():
    with pytest.raises(TransferscaleError, match="upper_hull"):
        SaturationFit(points="hull").fit([0.1, 0.2, 0.3], [0.1, 0.2, 0.3])
    with pytest.raises(TransferscaleError, match="not fitted"):
        SaturationFit().predict([0.5])


def test_fit_saturation_gives_one_tidy_row_per_group():
    frames = []
    for task, truth in (("near", (0.8, 2.0, 0.1)), ("far", (0.6, 1.5, 0.25))):
        us, ds = simulate_frontier(*truth, n=80, random_state=len(task))
        frames.append(pd.DataFrame({"task": task, "shots": 10, "us": us, "ds": ds}))
    frames.append(pd.DataFrame({"task": "tiny", "shots": 10, "us": [0.5, 0.6], "ds": [0.4, 0.5]}))
    out = fit_saturation(pd.concat(frames), us="us", ds="ds", by=["task", "shots"], n_bootstrap=200)
    assert list(out["task"]) == ["far", "near", "tiny"]
    assert {"k", "alpha", "e_ir", "e_ir_low", "e_ir_high", "saturation", "n_points", "flags"} <= set(out.columns)
    near = out.set_index("task").loc["near"]
    assert near.e_ir_low <= near.e_ir <= near.e_ir_high
    assert near.saturation == pytest.approx(1 - near.e_ir)
    tiny = out.set_index("task").loc["tiny"]
    assert np.isnan(tiny.k) and tiny["flags"] == "too_few_points" and tiny.n_points == 2


def test_fit_saturation_names_a_missing_column_and_bad_values():
    df = pd.DataFrame({"us": [0.1, 0.2, 0.3], "ds": [0.1, 0.2, np.nan]})
    with pytest.raises(TransferscaleError, match="did you mean 'us'"):
        fit_saturation(df, us="uss", ds="ds")
    with pytest.raises(TransferscaleError, match="NaN"):
        fit_saturation(df, us="us", ds="ds")
