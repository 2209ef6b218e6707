"""The quantile frontier (points="quantile"): exact answers, a known frontier, the quantile property, what the
hull misses, intervals, fit_saturation's processes and groups, and the errors a user can cause."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import linprog, minimize_scalar
from scipy.stats import exponnorm

from transferscale.analysis import SaturationFit, fit_saturation, simulate_frontier, upper_hull
from transferscale.analysis.quantile import check_loss, solve_quantile
from transferscale.errors import TransferscaleError

SETTINGS = [(0.8, 2.0, 0.10), (0.6, 1.5, 0.25), (1.0, 3.0, 0.05)]
GRID = np.linspace(0.3, 0.9, 61)  # the US range simulate_frontier spans
TIMM = Path(__file__).resolve().parents[2] / "shared" / "data" / "external" / "timm"


def frontier(truth, us):
    k, alpha, e_ir = truth
    return 1 - (k * (1 - us) ** alpha + e_ir)


def gap_quantile(tau, gap_scale=0.03, noise=0.003):
    """Q_g(tau) of simulate_frontier's gaps below the frontier in error, Exp(gap_scale) + N(0, noise): the
    q-quantile frontier is the true one lowered by this (quantile.py's docstring)."""
    return exponnorm(gap_scale / noise, scale=noise).ppf(tau)


def exact_fit(x, y, tau):
    """Reference: for fixed alpha an exact linear program (HiGHS) for e_IR, k; alpha by a grid, then
    scipy's bounded scalar search on the profiled loss. Returns (loss, k, alpha, e_IR)."""
    n = len(x)

    def at(alpha):
        # y = e + k t + u+ - u-, minimise sum tau u+ + (1 - tau) u-
        a_eq = np.hstack([np.ones((n, 1)), (x**alpha)[:, None], np.eye(n), -np.eye(n)])
        cost = np.r_[0.0, 0.0, np.full(n, tau), np.full(n, 1 - tau)]
        res = linprog(cost, A_eq=a_eq, b_eq=y, bounds=[(0, 1), (0, None)] + [(0, None)] * (2 * n), method="highs")
        return res.fun, res.x[1], res.x[0]

    grid = np.linspace(np.log(0.05), np.log(10), 30)
    j = int(np.argmin([at(np.exp(b))[0] for b in grid]))
    best = minimize_scalar(lambda b: at(np.exp(b))[0], bounds=(grid[max(j - 1, 0)], grid[min(j + 1, 29)]),
                           method="bounded", options={"xatol": 1e-7})
    loss, k, e_ir = at(np.exp(best.x))
    return loss, k, float(np.exp(best.x)), e_ir


@pytest.mark.parametrize("truth", [(0.8, 2.0, 0.1), (0.6, 0.6, 0.2), (1.2, 3.0, 0.05)])
@pytest.mark.parametrize("q", [0.5, 0.9])
def test_points_on_the_law_are_fitted_exactly(truth, q):
    us = np.linspace(0.3, 0.9, 15)
    fit = SaturationFit(points="quantile", quantile=q, n_bootstrap=0).fit(us, frontier(truth, us))
    np.testing.assert_allclose([fit.k_, fit.alpha_, fit.e_ir_], truth, rtol=1e-5, atol=1e-6)
    assert fit.n_points_ == 15  # every model lies on the curve


@pytest.mark.parametrize("truth, seed", [((0.8, 2.0, 0.1), 0), ((0.6, 0.6, 0.15), 1), ((1.0, 3.0, 0.05), 2)])
def test_check_loss_minimum_matches_an_exact_linear_program(truth, seed):
    us, ds = simulate_frontier(*truth, n=60, random_state=seed)
    x, y = 1 - us, 1 - ds
    loss, k, alpha, e_ir = exact_fit(x, y, 0.1)
    ours = solve_quantile(x, y, np.ones(len(x)), 0.1, (0.05, 10.0))
    assert ours.loss[0] <= loss * (1 + 1e-5) + 1e-9  # the global minimum, to the smoothing's ~1e-6
    np.testing.assert_allclose([ours.k[0], ours.alpha[0], ours.e_ir[0]], [k, alpha, e_ir], rtol=2e-3, atol=2e-4)
    assert ours.loss[0] == pytest.approx(np.sum(check_loss(y - ours.k[0] * x ** ours.alpha[0] - ours.e_ir[0], 0.1)))


@pytest.mark.parametrize("truth", SETTINGS)
def test_recovers_a_known_frontier_lowered_by_the_gaps_quantile(truth):
    """300 models below a known frontier by Exp(0.03) gaps and N(0, 0.003) noise: the 0.9-quantile frontier is
    that frontier lowered by Q_g(0.1) = 0.0030, so k and alpha are the truth's, e_IR the truth's + 0.0030.
    Tolerances (about 4 sd over 20 draws): k 0.15, alpha 0.25, e_IR 0.01 of that; and within 0.013 of the
    true frontier's own e_IR."""
    target = truth[2] + gap_quantile(0.1)
    for seed in range(4):
        us, ds = simulate_frontier(*truth, n=300, random_state=seed)
        fit = SaturationFit(points="quantile", quantile=0.9, n_bootstrap=0).fit(us, ds)
        assert abs(fit.k_ - truth[0]) <= 0.15 and abs(fit.alpha_ - truth[1]) <= 0.25
        assert abs(fit.e_ir_ - target) <= 0.01 and abs(fit.e_ir_ - truth[2]) <= 0.013
        lowered = frontier(truth, GRID) - gap_quantile(0.1)
        assert np.abs(fit.predict(GRID) - lowered).mean() <= 0.003
        assert not {"too_few_points", "alpha_at_bound", "e_ir_at_bound"} & set(fit.flags_)


@pytest.mark.parametrize("q", [0.5, 0.8, 0.9])
def test_a_share_q_of_models_lies_below_the_fitted_curve(q):
    us, ds = simulate_frontier(0.8, 2.0, 0.1, n=200, random_state=4)
    fit = SaturationFit(points="quantile", quantile=q, n_bootstrap=0).fit(us, ds)
    assert fit.e_ir_ > 0  # e_IR off its bound, where the property is exact
    gap = fit.predict(us) - ds  # > 0: below the curve
    strictly_above, on_or_above = np.sum(gap < -1e-5), np.sum(gap <= 1e-5)
    assert strictly_above <= (1 - q) * len(us) <= on_or_above <= strictly_above + 4  # ~3 models on the curve
    assert fit.n_points_ == on_or_above and sorted(fit.points_) == sorted(np.flatnonzero(gap <= 1e-5))
    assert np.all(np.diff(us[fit.points_]) >= 0)  # ordered by US accuracy, as the hull's
    higher = SaturationFit(points="quantile", quantile=q + 0.05, n_bootstrap=0).fit(us, ds)
    assert np.sum(higher.predict(us) - ds > 1e-5) > strictly_above + 0.04 * len(us)  # more models below it


def test_a_convex_frontier_leaves_the_hull_2_to_4_points_and_the_quantile_fit_many():
    """alpha = 0.5: in accuracy the frontier bends the other way and the hull keeps only its ends."""
    for seed in range(4):
        us, ds = simulate_frontier(0.6, 0.5, 0.15, n=100, random_state=seed)
        table = pd.DataFrame({"us": us, "ds": ds})
        hull = fit_saturation(table, us="us", ds="ds", n_bootstrap=0).iloc[0]
        quant = fit_saturation(table, us="us", ds="ds", n_bootstrap=0, points="quantile", quantile=0.9).iloc[0]
        assert hull.n_points <= 4 and "alpha_below_one" in hull["flags"]
        assert quant.n_points >= 10 and abs(quant.alpha - 0.5) <= 0.1
        assert not {"too_few_points", "alpha_below_one"} & set(str(quant["flags"]).split(";"))


@pytest.mark.skipif(not TIMM.is_dir(), reason="shared timm results not present")
@pytest.mark.parametrize("upstream, shifted", [("results-imagenet.csv", "results-sketch.csv"),
                                               ("results-imagenet-a-clean.csv", "results-imagenet-a.csv")])
def test_timm_shifts_where_the_hull_has_2_or_3_vertices(upstream, shifted):
    up, sh = (pd.read_csv(TIMM / f, thousands=",") for f in (upstream, shifted))
    joined = up.merge(sh, on=["model", "img_size"], suffixes=("_us", "_ds"))
    us, ds = joined["top1_us"].to_numpy() / 100, joined["top1_ds"].to_numpy() / 100
    assert len(upper_hull(us, ds)) <= 3
    fit = SaturationFit(points="quantile", quantile=0.9, n_bootstrap=0).fit(us, ds)
    assert fit.n_points_ >= 0.09 * len(us) and "too_few_points" not in fit.flags_
    # e_IR sits on 0 on both: then only one side of the quantile property holds, at least a share 1 - q of
    # the models on or above the curve
    assert "e_ir_at_bound" in fit.flags_
    assert 0.85 <= np.mean(fit.predict(us) - ds > 1e-5) <= 0.9


def test_intervals_are_seeded_hold_the_estimate_and_narrow_with_more_models():
    us, ds = simulate_frontier(0.8, 2.0, 0.1, n=150, random_state=3)
    a = SaturationFit(points="quantile", n_bootstrap=60, random_state=7).fit(us, ds)
    b = SaturationFit(points="quantile", n_bootstrap=60, random_state=7).fit(us, ds)
    c = SaturationFit(points="quantile", n_bootstrap=60, random_state=8).fit(us, ds)
    assert a.ci_ == b.ci_ and a.ci_ != c.ci_ and a.boot_.shape == (60, 3) and a.n_boot_failed_ == 0
    for name, est in (("k", a.k_), ("alpha", a.alpha_), ("e_ir", a.e_ir_)):
        lo, hi = a.ci_[name]
        assert lo <= est <= hi and hi > lo
    lo, hi = np.quantile(a.boot_[:, 2], [0.025, 0.975])  # percentile intervals (quantile.percentile_ci)
    assert a.ci_["e_ir"] == pytest.approx((min(lo, a.e_ir_), max(hi, a.e_ir_)), abs=1e-12)
    us4, ds4 = simulate_frontier(0.8, 2.0, 0.1, n=600, random_state=3)
    big = SaturationFit(points="quantile", n_bootstrap=60, random_state=7).fit(us4, ds4)
    assert np.diff(big.ci_["e_ir"])[0] < 0.75 * np.diff(a.ci_["e_ir"])[0]  # ~1/2 at 4x the models


def test_fit_saturation_is_the_same_in_two_processes_and_without_the_other_groups():
    frames = []
    for task, truth in (("a", (0.8, 2.0, 0.1)), ("b", (0.6, 1.5, 0.25)), ("c", (1.0, 3.0, 0.05))):
        us, ds = simulate_frontier(*truth, n=80, random_state=ord(task))
        frames.append(pd.DataFrame({"task": task, "us": us, "ds": ds}))
    table = pd.concat(frames)
    kw = dict(us="us", ds="ds", by="task", points="quantile", quantile=0.85, n_bootstrap=40, random_state=3)
    one = fit_saturation(table, jobs=1, **kw)
    two = fit_saturation(table, jobs=2, **kw)
    pd.testing.assert_frame_equal(one, two)
    alone = fit_saturation(table[table.task == "b"].iloc[::-1], jobs=1, **kw)  # alone, rows reversed
    pd.testing.assert_frame_equal(alone.reset_index(drop=True), one[one.task == "b"].reset_index(drop=True),
                                  check_exact=False, rtol=1e-9)
    assert one.e_ir_low.notna().all() and (one.n_points >= 8).all()


def test_few_models_are_flagged_or_stop_with_too_few_points():
    us, ds = simulate_frontier(0.8, 2.0, 0.1, n=30, random_state=0)
    fit = SaturationFit(points="quantile", quantile=0.9, n_bootstrap=0).fit(us, ds)
    assert fit.n_points_ < 5 and "too_few_points" in fit.flags_  # ~3 models above a 0.9 frontier of 30
    table = pd.DataFrame({"task": ["tiny"] * 2 + ["ok"] * 30, "us": [0.5, 0.6, *us], "ds": [0.4, 0.5, *ds]})
    out = fit_saturation(table, us="us", ds="ds", by="task", points="quantile", n_bootstrap=0).set_index("task")
    assert np.isnan(out.loc["tiny", "k"]) and out.loc["tiny", "flags"] == "too_few_points"
    assert out.loc["tiny", "n_points"] == 2 and np.isfinite(out.loc["ok", "k"])


def test_a_frontier_that_does_not_rise_is_flat_and_flagged():
    rng = np.random.default_rng(0)
    us = rng.uniform(0.3, 0.9, 60)
    ds = 0.9 - 0.5 * us + rng.normal(0, 0.01, 60)  # DS falls as US rises: the law's k > 0 cannot follow
    fit = SaturationFit(points="quantile", quantile=0.9, n_bootstrap=20, random_state=0).fit(us, ds)
    assert fit.k_ == 0 and "k_at_bound" in fit.flags_
    assert fit.e_ir_ == pytest.approx(1 - np.quantile(ds, 0.9), abs=0.01)  # a flat line at the 0.9-quantile
    assert np.mean(fit.predict(us) > ds) == pytest.approx(0.9, abs=1 / 60)


@pytest.mark.parametrize("kw, says", [
    (dict(points="quantile", quantile=1.5), "strictly between 0 and 1"),
    (dict(points="quantile", quantile=0), "strictly between 0 and 1"),
    (dict(points="quantile", quantile=1), "strictly between 0 and 1"),
    (dict(points="quantile", quantile=float("nan")), "strictly between 0 and 1"),
    (dict(points="quantile", quantile="0.9"), "strictly between 0 and 1"),
    (dict(points="quantile", quantile=True), "strictly between 0 and 1"),
    (dict(points="upper_hull", quantile=0.9), "points='quantile'"),
    (dict(points="all", quantile=0.5), "points='quantile'"),
])
def test_a_bad_quantile_says_what_to_change(kw, says):
    us, ds = simulate_frontier(0.8, 2.0, 0.1, n=40, random_state=0)
    with pytest.raises(TransferscaleError, match=says):
        SaturationFit(n_bootstrap=0, **kw).fit(us, ds)
    # fit_saturation says it once, before any group, rather than flagging every group degenerate
    with pytest.raises(TransferscaleError, match=says):
        fit_saturation(pd.DataFrame({"us": us, "ds": ds}), us="us", ds="ds", n_bootstrap=0, **kw)
