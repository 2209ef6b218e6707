"""Bootstrap intervals for saturation fits, with the point set (upper hull) recomputed in every resample.

Why not the plain bootstrap over models: a resample holds ~63% of the distinct models, and a duplicated
model adds no hull vertex, so every resample has fewer frontier points than the data; its hull sits lower
and its fits drift away from the estimate. Percentile intervals of that drift covered the true e_IR only
20-36% of the time at nominal 95% (benchmarks/coverage_saturation.py).

What we do instead, the frontier-gap bootstrap: a model's position relative to the law is its gap
g_i = e_DS,i - f(e_US,i) from the fitted curve f (g ~ 0 on the frontier, g > 0 below it). A resample keeps
every model's US accuracy and gives it a gap drawn with replacement from all n gaps:
    e_DS*_i = f_hat(e_US,i) + g*_i.
A gap drawn twice lands at two different US accuracies, so a resample has as many near-frontier models as
the data, spread along the curve as in the data; the hull is recomputed and refitted, and the spread of
theta* around theta_hat mimics the spread of theta_hat around the truth, including the hull's bias (the
hull's vertices are the models with the smallest gaps, in the data as in the resample). Hence the basic
(reverse percentile) interval [2 theta_hat - q_hi, 2 theta_hat - q_lo], which turns that bias around,
rather than the percentile interval, which would repeat it. k and alpha are positive and skewed, so their
interval is formed on the log scale: [theta_hat^2 / q_hi, theta_hat^2 / q_lo].
It assumes the spread below the frontier does not depend on US accuracy (gaps are exchangeable).

With the plain gaps (measured: benchmarks/coverage_saturation.py, 3 frontiers x 100 draws of 100 models,
nominal 95%) k covered 97-99%, alpha 94-96%, but e_IR only 79-82%, against 24-57% / 26-71% / 26-57% for
the plain bootstrap. Two things were wrong with the e_IR interval, and two changes fix them:

1. The fitted curve passes through the hull's vertices, so their gaps from it are shrunk toward 0 (the
   leverage of 3 parameters on ~10 points) and the resamples put their near-frontier models exactly on
   f_hat, while the real ones scatter around f with noise: the resamples saw about half of the hull's
   bias on e_IR (0.002 vs 0.0045, 0.006 vs 0.009, -0.001 vs +0.001 on the three frontiers) and less of
   its spread. `frontier_gaps` gives each vertex its leave-one-out gap instead (see there).
2. The basic interval moves the range by the bias the resamples see, and for e_IR that bias is not only
   too small but, draw by draw, points the wrong way: the resamples' mean shift and the estimate's actual
   error correlated at -0.05 to -0.53 (30 draws per frontier). The e_IR interval is therefore symmetric,
   e_hat +- max(q_hi - e_hat, e_hat - q_lo), the union of the basic and percentile intervals: it does not
   bet on the bias's direction and covers an error of either sign up to the longer tail. k and alpha keep
   the log-scale basic interval, whose coverage was already 94-99%.
Measured, e_IR: 82/79/81% before; 92/87/95% with (2) alone; 87/87/84% with (1) alone; 95/94/99% with
both, at about twice the width of before (k and alpha intervals 25-35% wider, coverage 97-99%). A milder
version of (1), the vertices' gaps divided by sqrt(1 - h) with h from the Jacobian (Davison & Hinkley's
modified residuals) gave 93/88/97% at 1.5x the width: short on the second frontier. Also tried and not
enough: smoothing the gaps with the true noise sd (+2-3 points); a second-level bootstrap bias
correction (its resamples see the same bias as the first level's, so 2 b1 - b2 ~ b1).
The upper end of the e_IR interval is not clipped at the smallest observed error: the law says
e_IR < min e_DS, but measured accuracies carry noise, and in 12% of draws at (k, alpha, e_IR) =
(1, 3, 0.05) the true e_IR lay above it.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from transferscale.analysis.hull import upper_hull, upper_hulls
from transferscale.analysis.lsq import Solution, pack, solve

PARAMS = ("k", "alpha", "e_ir")


def frontier_gaps(x_err, y_err, params, fitted, fit_kw: dict) -> np.ndarray:
    """Every model's gap below the fitted curve; the fitted points' gaps are leave-one-out gaps.

    The curve was fitted through the fitted points (the hull's vertices), so their gaps from it are shrunk
    toward 0, as fitted residuals are in any regression (var r_i = sigma^2 (1 - h_i), h_i the leverage:
    3 parameters on ~10 vertices, h ~ 0.3 on average and more at the hull's ends, which pin the
    extrapolation to e_IR). Resampling those shrunken gaps puts the near-frontier models of every resample
    exactly on f_hat. Vertex i's gap is instead taken from the curve fitted on the other vertices,
    y_i - f_(-i)(x_i) (= r_i / (1 - h_i) for linear least squares): it scatters around 0 as the real
    near-frontier models scatter around the true frontier. Models off the hull carry no weight in the fit
    and keep their gaps. With fewer than 5 fitted points a leave-one-out fit rests on 3 points and
    interpolates them, so the plain gaps are kept. Cost: one batched solve of len(fitted) small problems.
    """
    k, alpha, e_ir = params
    gaps = y_err - (k * x_err**alpha + e_ir)
    fitted = np.asarray(fitted)
    if len(fitted) >= 5:
        xf, yf = x_err[fitted], y_err[fitted]
        keep = ~np.eye(len(fitted), dtype=bool)
        sol = solve(pack([xf[m] for m in keep], [yf[m] for m in keep]), **fit_kw)
        gaps[fitted] = yf - (sol.k * np.maximum(xf, 1e-9) ** sol.alpha + sol.e_ir)
    return gaps


def frontier_resamples(x_err, y_err, params, n_boot: int, rng: np.random.Generator,
                       gaps=None) -> np.ndarray:
    """(n_boot, n) resampled e_DS: the fitted curve at every model's e_US plus a gap drawn with replacement
    (from `gaps` where given, e.g. `frontier_gaps`; else the plain gaps from the curve)."""
    k, alpha, e_ir = params
    curve = k * x_err**alpha + e_ir
    gaps = y_err - curve if gaps is None else gaps
    return np.clip(curve[None, :] + gaps[rng.integers(len(gaps), size=(n_boot, len(gaps)))], 0.0, 1.0)


def fit_resamples(x_sets, y_sets, fit_kw: dict) -> tuple[np.ndarray, int]:
    """Fit every resampled point set; (n, 3) parameters with NaN rows where a set had < 3 points."""
    ok = [i for i, x in enumerate(x_sets) if len(x) >= 3]
    out = np.full((len(x_sets), 3), np.nan)
    if ok:
        sol: Solution = solve(pack([x_sets[i] for i in ok], [y_sets[i] for i in ok]), **fit_kw)
        out[ok] = np.column_stack([sol.k, sol.alpha, sol.e_ir])
    return out, len(x_sets) - len(ok)


def select_sets(x_err, y_sets, select: Callable) -> tuple[list, list]:
    """Apply the point selection (hull or all) to each resample, in error space.

    The upper hull (`hull.upper_hull`) is taken for all resamples at once (`hull.upper_hulls`: the same
    points, one sort for all of them, as every resample keeps the models' US accuracies)."""
    if select is upper_hull:
        idx_sets = upper_hulls(1 - x_err, 1 - np.asarray(y_sets))
        return [x_err[idx] for idx in idx_sets], [y[idx] for y, idx in zip(y_sets, idx_sets)]
    xs, ys = [], []
    for y in y_sets:
        idx = select(1 - x_err, 1 - y)
        xs.append(x_err[idx])
        ys.append(y[idx])
    return xs, ys


def basic_interval(estimate, samples, level: float, alpha_bounds,
                   symmetric_e_ir: bool = True) -> dict[str, tuple[float, float]]:
    """Basic (reverse percentile) intervals, k and alpha on the log scale, clipped to the bounds.

    e_IR: with symmetric_e_ir (what SaturationFit uses), e_hat +- max(q_hi - e_hat, e_hat - q_lo), the
    union of the basic and percentile intervals (see the module docstring for why); otherwise the plain
    basic interval (kept for the coverage benchmark's comparison). Clipped to [0, 1] only: the law's
    e_IR < min e_DS does not bind the truth once accuracies carry measurement noise.
    """
    tail = (1 - level) / 2
    q = np.nanquantile(samples, [tail, 1 - tail], axis=0)  # (2, 3)
    ci = {}
    for j, name in enumerate(PARAMS):
        if name == "e_ir":
            if symmetric_e_ir:
                reach = max(q[1, j] - estimate[j], estimate[j] - q[0, j])
                lo, hi = estimate[j] - reach, estimate[j] + reach
            else:
                lo, hi = 2 * estimate[j] - q[1, j], 2 * estimate[j] - q[0, j]
            ci[name] = (max(lo, 0.0), min(hi, 1.0))
        else:
            ci[name] = (estimate[j] ** 2 / q[1, j], estimate[j] ** 2 / q[0, j])
    ci["alpha"] = tuple(np.clip(v, *alpha_bounds) for v in ci["alpha"])
    # Where the resampled fits all fall on one side of the estimate (a fit resting on 3-4 points), the
    # basic interval can exclude the estimate itself; widen it to include it rather than print a range
    # that disagrees with the number next to it.
    return {name: (float(min(lo, estimate[j])), float(max(hi, estimate[j])))
            for j, (name, (lo, hi)) in enumerate(ci.items())}


def percentile_interval(samples, level: float) -> dict[str, tuple[float, float]]:
    """Plain percentile intervals (used by the coverage benchmark as the reference it beats)."""
    tail = (1 - level) / 2
    q = np.nanquantile(samples, [tail, 1 - tail], axis=0)
    return {name: (q[0, j], q[1, j]) for j, name in enumerate(PARAMS)}

