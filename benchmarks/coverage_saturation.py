"""Measured coverage of the saturation fit's 95% intervals over many synthetic draws.

Each draw scatters models below a known frontier e_DS = k e_US^alpha + e_IR (analysis.synthetic), fits
the upper hull, and builds intervals: the plain bootstrap over models (hull recomputed per resample) with
percentile or basic intervals; the frontier-gap bootstrap with the plain gaps (percentile, basic: the
method before, symmetric e_IR); the frontier-gap bootstrap with leave-one-out gaps at the hull vertices
(basic; and symmetric e_IR, which is SaturationFit's ci_, see analysis.bootstrap). It prints,
per setting and method, how often each interval held the truth.

The quantile frontier (points="quantile", analysis.quantile) is scored after them, per quantile q in
--quantiles: its percentile intervals from the bootstrap over models (SaturationFit's ci_) and, for
comparison, basic intervals from the same resamples. Its target is the q-quantile curve, which for these
clouds is the frontier lowered by the tau = 1 - q quantile of the gaps (Exp(0.03) + N(0, 0.003)): the same
k and alpha, e_IR + Q_g(tau). It also says how often its e_IR interval held the frontier's own e_IR.

    PYTHONPATH=src python benchmarks/coverage_saturation.py            # 3 settings x 100 draws, B=500
    PYTHONPATH=src python benchmarks/coverage_saturation.py --draws 30 --n-boot 300   # quick look
    PYTHONPATH=src python benchmarks/coverage_saturation.py --quick      # same, 30 draws x 300
    PYTHONPATH=src python benchmarks/coverage_saturation.py --quantiles 0.8 0.9 0.95
    PYTHONPATH=src python benchmarks/coverage_saturation.py --at-bound   # only the saturated frontiers below

--at-bound scores SaturationFit's intervals on frontiers that are already flat at the strongest models
(SATURATED: a steep law and US up to 0.95-0.97, so k e_US^alpha is below 0.001 there), where the hull fit's
e_IR often rests on its upper bound, the lowest DS error observed (flag e_ir_at_bound; the verdicts call
that "saturation reached within the data"). It prints the coverage separately for the fits at that bound
and the others: resamples pinned to the same bound could make that interval too narrow.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.stats import exponnorm
from threadpoolctl import threadpool_limits

from transferscale.analysis import bootstrap
from transferscale.analysis.hull import upper_hull
from transferscale.analysis.saturation import SaturationFit
from transferscale.analysis.synthetic import simulate_frontier

SETTINGS = [(0.8, 2.0, 0.10), (0.6, 1.5, 0.25), (1.0, 3.0, 0.05)]
GAP_SCALE, NOISE = 0.03, 0.003  # simulate_frontier's defaults, which the draws use
METHODS = ["pairs/percentile", "pairs/basic", "frontier/percentile", "frontier/basic (before)",
           "frontier/symmetric", "frontier-loo/basic", "frontier-loo/symm (ours)"]


def pairs_samples(us, ds, n_boot, rng, solver_kw):
    """The plain bootstrap over models: resample models with replacement, recompute the hull, refit."""
    xs, ys = [], []
    for idx in rng.integers(len(us), size=(n_boot, len(us))):
        h = idx[upper_hull(us[idx], ds[idx])]
        xs.append(1 - us[h])
        ys.append(1 - ds[h])
    return bootstrap.fit_resamples(xs, ys, solver_kw)[0]


def frontier_samples(fit, us, ds, n_boot, rng, solver_kw):
    """The frontier-gap bootstrap with the plain gaps from the fitted curve (the method before the
    leave-one-out gaps of bootstrap.frontier_gaps)."""
    x, y = 1 - us, 1 - ds
    y_sets = bootstrap.frontier_resamples(x, y, (fit.k_, fit.alpha_, fit.e_ir_), n_boot, rng)
    xs, ys = bootstrap.select_sets(x, y_sets, fit._select)
    return bootstrap.fit_resamples(xs, ys, solver_kw)[0]


def intervals(fit, us, ds, n_boot, rng, level=0.95):
    """The intervals for one fitted draw; the last is SaturationFit's own ci_."""
    est = (fit.k_, fit.alpha_, fit.e_ir_)
    kw = fit._solver_kw()
    pairs = pairs_samples(us, ds, n_boot, rng, kw)
    plain = frontier_samples(fit, us, ds, n_boot, rng, kw)
    loo = fit.boot_  # frontier-gap bootstrap, leave-one-out gaps at the hull vertices
    basic = dict(level=level, alpha_bounds=fit.alpha_bounds, symmetric_e_ir=False)
    symm = dict(basic, symmetric_e_ir=True)
    return {
        METHODS[0]: bootstrap.percentile_interval(pairs, level),
        METHODS[1]: bootstrap.basic_interval(est, pairs, **basic),
        METHODS[2]: bootstrap.percentile_interval(plain, level),
        METHODS[3]: bootstrap.basic_interval(est, plain, **basic),
        METHODS[4]: bootstrap.basic_interval(est, plain, **symm),
        METHODS[5]: bootstrap.basic_interval(est, loo, **basic),
        METHODS[6]: fit.ci_,
    }


def run_setting(truth, draws, n_boot, n):
    hits = {m: np.zeros(3) for m in METHODS}
    widths = {m: np.zeros(3) for m in METHODS}
    rng = np.random.default_rng(12345)
    for d in range(draws):
        us, ds = simulate_frontier(*truth, n=n, random_state=1000 + d)
        fit = SaturationFit(n_bootstrap=n_boot, random_state=d).fit(us, ds)
        for m, ci in intervals(fit, us, ds, n_boot, rng).items():
            for j, name in enumerate(bootstrap.PARAMS):
                lo, hi = ci[name]
                hits[m][j] += lo <= truth[j] <= hi
                widths[m][j] += hi - lo
    return {m: (hits[m] / draws, widths[m] / draws) for m in METHODS}


SATURATED = [((1.0, 4.0, 0.10), (0.3, 0.95)), ((0.8, 3.0, 0.05), (0.4, 0.97)), ((0.5, 5.0, 0.20), (0.3, 0.95))]


def run_at_bound(truth, us_range, draws, n_boot, n):
    """SaturationFit's e_IR interval on a saturated frontier, split by whether the fit's e_IR rests on its
    upper bound: per group, (fits, coverage, mean width, mean e_IR - truth)."""
    groups = {"at the upper bound": [], "elsewhere": []}
    for d in range(draws):
        us, ds = simulate_frontier(*truth, n=n, us_range=us_range, random_state=1000 + d)
        fit = SaturationFit(n_bootstrap=n_boot, random_state=d).fit(us, ds)
        top = "e_ir_at_bound" in fit.flags_ and fit.e_ir_ > 0.5 * (1 - ds).min()
        lo, hi = fit.ci_["e_ir"]
        groups["at the upper bound" if top else "elsewhere"].append((lo <= truth[2] <= hi, hi - lo,
                                                                     fit.e_ir_ - truth[2]))
    return {name: (len(r), *np.mean(r, axis=0)) if r else (0, np.nan, np.nan, np.nan)
            for name, r in groups.items()}


def quantile_target(truth, q):
    """(k, alpha, e_IR) of the q-quantile curve of simulate_frontier's cloud: the frontier lowered by the
    (1 - q)-quantile of its gaps in error, Exp(GAP_SCALE) + N(0, NOISE) (exponnorm)."""
    shift = exponnorm(GAP_SCALE / NOISE, scale=NOISE).ppf(1 - q)
    return np.array([truth[0], truth[1], truth[2] + shift])


def run_quantile(truth, q, draws, n_boot, n):
    """Coverage and mean width of the quantile fit's intervals (percentile: its ci_; basic: the same
    resamples reflected about the estimate), and how often its e_IR interval held the frontier's e_IR."""
    target = quantile_target(truth, q)
    res = {m: [np.zeros(3), np.zeros(3)] for m in ("percentile (ours)", "basic")}
    true_hits, errors = 0, []
    for d in range(draws):
        us, ds = simulate_frontier(*truth, n=n, random_state=1000 + d)
        fit = SaturationFit(points="quantile", quantile=q, n_bootstrap=n_boot, random_state=d).fit(us, ds)
        est = np.array([fit.k_, fit.alpha_, fit.e_ir_])
        errors.append(est - target)
        q_lo, q_hi = np.nanquantile(fit.boot_, [0.025, 0.975], axis=0)
        cis = {"percentile (ours)": np.array([fit.ci_[name] for name in bootstrap.PARAMS]).T,
               "basic": np.array([2 * est - q_hi, 2 * est - q_lo])}
        for m, (lo, hi) in cis.items():
            res[m][0] += (lo <= target) & (target <= hi)
            res[m][1] += hi - lo
        true_hits += fit.ci_["e_ir"][0] <= truth[2] <= fit.ci_["e_ir"][1]
    errors = np.array(errors)
    return ({m: (h / draws, w / draws) for m, (h, w) in res.items()}, true_hits / draws, target,
            errors.mean(axis=0), errors.std(axis=0))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draws", type=int, default=100)
    ap.add_argument("--n-boot", type=int, default=500)
    ap.add_argument("--n", type=int, default=100, help="models per draw")
    ap.add_argument("--quick", action="store_true", help="30 draws, 300 resamples: a rough look")
    ap.add_argument("--quantiles", type=float, nargs="*", default=[0.9],
                    help="quantile frontiers to score after the hull's intervals (none: skip them)")
    ap.add_argument("--at-bound", action="store_true", help="only the saturated frontiers (SATURATED)")
    args = ap.parse_args()
    if args.quick:
        args.draws, args.n_boot = 30, 300
    if args.at_bound:
        return print_at_bound(args)
    print(f"nominal 95%; {args.draws} draws per setting, {args.n_boot} resamples, {args.n} models per draw")
    print("models: US ~ U(0.3, 0.9), gap below frontier ~ Exp(0.03), noise N(0, 0.003)\n")
    t0 = time.perf_counter()
    with threadpool_limits(1):
        for truth in SETTINGS:
            res = run_setting(truth, args.draws, args.n_boot, args.n)
            print(f"k={truth[0]}, alpha={truth[1]}, e_IR={truth[2]}:   coverage k / alpha / e_IR"
                  "   (mean width)")
            for m, (cov, wid) in res.items():
                print(f"  {m:26s} {cov[0]:5.0%} {cov[1]:5.0%} {cov[2]:5.0%}"
                      f"   ({wid[0]:.3f} {wid[1]:.3f} {wid[2]:.4f})")
            for q in args.quantiles:
                qres, true_cov, target, bias, sd = run_quantile(truth, q, args.draws, args.n_boot, args.n)
                print(f"  quantile frontier q={q}: target k={target[0]}, alpha={target[1]}, "
                      f"e_IR={target[2]:.4f}; estimate bias {bias[0]:+.4f} {bias[1]:+.4f} {bias[2]:+.4f}, "
                      f"sd {sd[0]:.4f} {sd[1]:.4f} {sd[2]:.4f}")
                for m, (cov, wid) in qres.items():
                    print(f"    {m:24s} {cov[0]:5.0%} {cov[1]:5.0%} {cov[2]:5.0%}"
                          f"   ({wid[0]:.3f} {wid[1]:.3f} {wid[2]:.4f})")
                print(f"    its e_IR interval held the frontier's own e_IR={truth[2]} in {true_cov:.0%}")
            print()
    print(f"{time.perf_counter() - t0:.0f} s")


def print_at_bound(args) -> None:
    print(f"nominal 95%; {args.draws} draws per setting, {args.n_boot} resamples, {args.n} models per draw; "
          "SaturationFit's own e_IR interval (ci_)\n")
    t0 = time.perf_counter()
    with threadpool_limits(1):
        for truth, us_range in SATURATED:
            print(f"k={truth[0]}, alpha={truth[1]}, e_IR={truth[2]}, US ~ U{us_range}:")
            for name, (n, cov, width, bias) in run_at_bound(truth, us_range, args.draws, args.n_boot, args.n).items():
                print(f"  e_IR {name:20s} {n:4d} fits   coverage {cov:5.0%}   mean width {width:.4f}   "
                      f"mean bias {bias:+.4f}")
    print(f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
