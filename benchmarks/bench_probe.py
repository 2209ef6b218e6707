"""The few-shot probe engine against the usual ways of doing the same sweep, on one thread, as ratios.

Sweep: shots (1, 5, 10, 25) x seeds (0, 1, 2) x 12 l2 values, 10 classes, 384-dim features, 10,000 test
examples. Compared, each with the same few-shot subsets and the same standardisation:
  - ours: transferscale.probe.fewshot_probe (one eigh per (shots, seed), one float32 test product);
  - solve loop: numpy, one float64 `solve` of the normal equations per l2, then the test product per l2;
  - RidgeClassifier (scikit-learn), one fit per l2;
  - LogisticRegression (scikit-learn, lbfgs), one fit per l2 with C = 1 / l2;
  - floor: one bare float32 product of the test features by all l2's weights per (shots, seed).
Prints times (best of --repeats) and ratios, and the largest accuracy difference to the solve loop.

    python benchmarks/bench_probe.py [--repeats 3] [--quick]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from transferscale.probe import _standardise, fewshot_indices, fewshot_probe

SHOTS, SEEDS, L2 = (1, 5, 10, 25), (0, 1, 2), tuple(2.0 ** np.arange(-6, 18, 2))


def make_features(n_train_per_class=50, n_test=10_000, d=384, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, d)) * 0.4
    mix = rng.normal(size=(d, d)) / np.sqrt(d)  # correlated features, as a network's are
    y_tr = np.repeat(np.arange(classes), n_train_per_class)
    y_te = rng.integers(0, classes, n_test)
    x_tr = (centres[y_tr] + rng.normal(size=(len(y_tr), d))) @ mix + 3.0
    x_te = (centres[y_te] + rng.normal(size=(n_test, d))) @ mix + 3.0
    return x_tr.astype(np.float32), y_tr, x_te.astype(np.float32), y_te


def _subsets(y):
    return [(k, s, fewshot_indices(y, k, s)) for s in SEEDS for k in SHOTS]


def solve_loop(x_tr, y_tr, x_te, y_te):
    out = []
    for k, s, idx in _subsets(y_tr):
        xtr, xte = _standardise(x_tr[idx].astype(np.float64), x_te)
        xte = xte.astype(np.float64)
        targets = 2.0 * (y_tr[idx][:, None] == np.arange(10)[None]) - 1.0
        gram, rhs = xtr.T @ xtr, xtr.T @ targets
        for lam in L2:
            w = np.linalg.solve(gram + lam * np.eye(len(gram)), rhs)
            out.append(((xte @ w).argmax(1) == y_te).mean())
    return np.array(out)


def sklearn_loop(model_for, x_tr, y_tr, x_te, y_te):
    out = []
    for k, s, idx in _subsets(y_tr):
        xtr, xte = _standardise(x_tr[idx].astype(np.float64), x_te)
        for lam in L2:
            model = model_for(lam).fit(xtr[:, :-1], y_tr[idx])
            out.append(model.score(xte[:, :-1], y_te))
    return np.array(out)


def floor(x_tr, y_tr, x_te, y_te):
    w = np.random.default_rng(0).normal(size=(x_te.shape[1] + 1, len(L2) * 10)).astype(np.float32)
    xte = np.hstack([x_te, np.ones((len(x_te), 1), np.float32)])
    for _ in range(len(SHOTS) * len(SEEDS)):
        xte @ w


def best_time(fn, repeats):
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="skip LogisticRegression (the slow reference)")
    args = parser.parse_args()
    from sklearn.linear_model import LogisticRegression, RidgeClassifier

    data = make_features()
    x_tr, y_tr, x_te, y_te = data
    with threadpool_limits(1):
        t_ours, ours = best_time(lambda: fewshot_probe(x_tr, y_tr, x_te, y_te, SHOTS, SEEDS, L2), args.repeats)
        t_solve, solved = best_time(lambda: solve_loop(*data), args.repeats)
        t_floor, _ = best_time(lambda: floor(*data), args.repeats)
        t_ridge, _ = best_time(lambda: sklearn_loop(lambda lam: RidgeClassifier(alpha=lam), *data), 1)
        t_logreg = None
        if not args.quick:
            t_logreg, _ = best_time(
                lambda: sklearn_loop(lambda lam: LogisticRegression(C=1.0 / lam, max_iter=200), *data), 1)
    # fewshot_probe's rows are (seed, shots, l2) in that nesting, the same order as solve_loop's
    diff = np.abs(ours.accuracy.to_numpy() - solved).max()
    print(f"sweep: {len(SHOTS)} shots x {len(SEEDS)} seeds x {len(L2)} l2, 10 classes, 384 dims, 10,000 test; "
          "1 thread, best of", args.repeats)
    print(f"  ours                {t_ours:8.3f} s")
    print(f"  solve loop          {t_solve:8.3f} s   ours is {t_solve / t_ours:5.1f}x faster")
    print(f"  RidgeClassifier     {t_ridge:8.3f} s   ours is {t_ridge / t_ours:5.1f}x faster")
    if t_logreg is not None:
        print(f"  LogisticRegression  {t_logreg:8.3f} s   ours is {t_logreg / t_ours:5.1f}x faster")
    print(f"  floor (bare product){t_floor:8.3f} s   ours takes {t_ours / t_floor:5.2f}x the floor")
    print(f"  max |accuracy(ours) - accuracy(solve loop)| = {diff:.5f}")


if __name__ == "__main__":
    main()
