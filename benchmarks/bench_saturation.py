"""Speed of one saturation fit with 1,000 bootstrap resamples (100 models) against a scipy loop.

Both sides do the same work: hull, point fit, then for each of the same 1,000 frontier-gap resamples the
hull again and a bounded fit. The reference calls scipy.optimize.curve_fit (trust-region reflective,
bounded, plain least squares, started at the point estimate) once per resample; ours fits all resamples
in one batched Levenberg-Marquardt (analysis.lsq) with a robust loss and profiled starts. Threads are
pinned to 1 on both sides; best of --repeats.

    PYTHONPATH=src python benchmarks/bench_saturation.py
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit
from threadpoolctl import threadpool_limits

from transferscale.analysis import bootstrap
from transferscale.analysis.hull import upper_hull
from transferscale.analysis.saturation import SaturationFit
from transferscale.analysis.synthetic import simulate_frontier


def law(x, k, alpha, e_ir):
    return k * x**alpha + e_ir


def scipy_loop(us, ds, n_boot, seed):
    """Reference: curve_fit on the hull, then once per resample on the recomputed hull."""
    x, y = 1 - us, 1 - ds
    h = upper_hull(us, ds)
    bounds = ([1e-12, 0.05, 0.0], [np.inf, 10.0, (1 - 1e-6) * y[h].min()])
    p0 = [0.5, 1.5, 0.5 * y[h].min()]
    est, _ = curve_fit(law, x[h], y[h], p0=p0, bounds=bounds)
    y_sets = bootstrap.frontier_resamples(x, y, est, n_boot, np.random.default_rng(seed))
    out = np.full((n_boot, 3), np.nan)
    for b, yb in enumerate(y_sets):
        hb = upper_hull(us, 1 - yb)
        if len(hb) < 3:
            continue
        hi = (1 - 1e-6) * yb[hb].min()
        start = np.minimum(est, [np.inf, 10.0, 0.99 * hi])
        try:
            out[b] = curve_fit(law, x[hb], yb[hb], p0=start, bounds=(bounds[0], [np.inf, 10.0, hi]))[0]
        except RuntimeError:
            pass
    return est, out


def best_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100, help="models in the group")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    us, ds = simulate_frontier(0.8, 2.0, 0.1, n=args.n, random_state=0)
    warnings.simplefilter("ignore", OptimizeWarning)
    with threadpool_limits(1):
        ours = best_time(lambda: SaturationFit(n_bootstrap=args.n_boot, random_state=0).fit(us, ds),
                         args.repeats)
        ref = best_time(lambda: scipy_loop(us, ds, args.n_boot, 0), max(1, args.repeats // 2))
    print(f"{args.n} models, {args.n_boot} resamples, 1 thread, best of {args.repeats}")
    print(f"  transferscale SaturationFit : {ours:7.3f} s")
    print(f"  scipy curve_fit loop        : {ref:7.3f} s")
    print(f"  speed-up                    : {ref / ours:7.1f}x")


if __name__ == "__main__":
    main()
