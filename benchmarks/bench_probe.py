"""The few-shot probe engine against the usual ways of doing the same sweep, on one thread, as ratios.

Sweep: shots (1, 5, 10, 25) x seeds (0, 1, 2) x 12 l2 values, 10 classes, 384-dim features, 10,000 test
examples. Compared, each with the same few-shot subsets (fewshot_indices) and the same standardisation
(the k-shot set's mean and std, a bias column):
  - ours: transferscale.probe.fewshot_probe (one eigh per (shots, seed), the k-shot standardisation folded
    into the weights, one float32 scoring pass for the whole sweep);
  - solve loop: numpy, one float64 `solve` of the normal equations per l2, then the test product per l2;
  - RidgeClassifier (scikit-learn), one fit per l2, on the bias-augmented features with fit_intercept=False:
    the same model as ours (+-1 targets, bias regularised), so its accuracies are checked too;
  - LogisticRegression (scikit-learn, lbfgs, max_iter=1000), one fit per l2 with C = 1 / l2: another model,
    its accuracy printed for context only;
  - floor: one bare float32 product of the test features by all l2's weights per (shots, seed).
Prints times (best of --repeats, the sides taking turns in each repeat) and ratios, the largest accuracy difference
to the solve loop, and whether the targets hold (>= 20x LogisticRegression, >= 3x the solve loop, accuracies within
0.001 of the solve loop's).

    python benchmarks/bench_probe.py [--repeats 5] [--quick]
"""
from __future__ import annotations

import argparse
import warnings

import numpy as np
from _timing import best_times
from threadpoolctl import threadpool_limits

from transferscale.probe import _standardise, fewshot_indices, fewshot_probe

SHOTS, SEEDS, L2 = (1, 5, 10, 25), (0, 1, 2), tuple(2.0 ** np.arange(-6, 18, 2))
VAL_PER_CLASS = 10


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
    """Every (shots, seed) subset in fewshot_probe's row order: seeds outer, shots inner."""
    return [(k, s, fewshot_indices(y, k, s)) for s in SEEDS for k in SHOTS]


def solve_loop(x_tr, y_tr, x_te, y_te):
    classes = np.unique(y_tr)
    out = []
    for _k, _s, idx in _subsets(y_tr):
        xtr, xte = _standardise(x_tr[idx].astype(np.float64), x_te)
        xte = xte.astype(np.float64)
        targets = 2.0 * (y_tr[idx][:, None] == classes[None]) - 1.0
        gram, rhs = xtr.T @ xtr, xtr.T @ targets
        for lam in L2:
            w = np.linalg.solve(gram + lam * np.eye(len(gram)), rhs)
            out.append((classes[(xte @ w).argmax(1)] == y_te).mean())
    return np.array(out)


def sklearn_loop(model_for, x_tr, y_tr, x_te, y_te, bias_column):
    """One fit per (shots, seed, l2); `bias_column` keeps the appended constant column (for a model with
    fit_intercept=False), else it is dropped and the model fits its own intercept."""
    from sklearn.linear_model import LogisticRegression

    cols = slice(None) if bias_column else slice(None, -1)
    out, capped = [], 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # non-convergence is counted below instead
        for _k, _s, idx in _subsets(y_tr):
            xtr, xte = _standardise(x_tr[idx].astype(np.float64), x_te)
            for lam in L2:
                model = model_for(lam).fit(xtr[:, cols], y_tr[idx])
                out.append(model.score(xte[:, cols], y_te))
                if isinstance(model, LogisticRegression):
                    capped += int(np.max(model.n_iter_) >= model.max_iter)
    return np.array(out), capped


def floor(x_tr, y_tr, x_te, y_te):
    w = np.random.default_rng(0).normal(size=(x_te.shape[1] + 1, len(L2) * 10)).astype(np.float32)
    xte = np.hstack([x_te, np.ones((len(x_te), 1), np.float32)])
    for _ in range(len(SHOTS) * len(SEEDS)):
        xte @ w


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="skip LogisticRegression (the slow reference)")
    args = parser.parse_args()
    from sklearn.linear_model import LogisticRegression, RidgeClassifier

    data = make_features()
    x_tr, y_tr, x_te, y_te = data
    r = args.repeats
    sides = {
        "ours": lambda: fewshot_probe(x_tr, y_tr, x_te, y_te, SHOTS, SEEDS, L2),
        "select": lambda: fewshot_probe(x_tr, y_tr, x_te, y_te, SHOTS, SEEDS, L2, select_l2=True,
                                        val_per_class=VAL_PER_CLASS),
        "solve": lambda: solve_loop(*data),
        "floor": lambda: floor(*data),
        "ridge": lambda: sklearn_loop(lambda lam: RidgeClassifier(alpha=lam, fit_intercept=False), *data, True),
    }
    if not args.quick:
        sides["logreg"] = lambda: sklearn_loop(lambda lam: LogisticRegression(C=1.0 / lam, max_iter=1000), *data,
                                               False)
    with threadpool_limits(1):
        t, out = best_times(sides, r)
    t_ours, t_sel, t_solve, t_floor, t_ridge = (t[k] for k in ("ours", "select", "solve", "floor", "ridge"))
    ours, solved, (ridged, _) = out["ours"], out["solve"], out["ridge"]
    t_logreg = t.get("logreg")
    if t_logreg is not None:
        logreg, capped = out["logreg"]
    ours_acc = ours.accuracy.to_numpy()
    diff = np.abs(ours_acc - solved).max()
    diff_ridge = np.abs(ridged - solved).max()
    print(f"sweep: {len(SHOTS)} shots x {len(SEEDS)} seeds x {len(L2)} l2, 10 classes, 384 dims, 10,000 test; "
          f"1 thread, best of {r}")
    print(f"  ours                {t_ours:8.3f} s")
    print(f"  ours + l2 on val    {t_sel:8.3f} s   ({VAL_PER_CLASS} validation examples per class; "
          f"{t_sel / t_ours:4.2f}x ours)")
    print(f"  solve loop          {t_solve:8.3f} s   ours is {t_solve / t_ours:5.1f}x faster   "
          f"(target >= 3x: {_verdict(t_solve / t_ours >= 3)})")
    print(f"  RidgeClassifier     {t_ridge:8.3f} s   ours is {t_ridge / t_ours:5.1f}x faster")
    if t_logreg is not None:
        print(f"  LogisticRegression  {t_logreg:8.3f} s   ours is {t_logreg / t_ours:5.1f}x faster   "
              f"(target >= 20x: {_verdict(t_logreg / t_ours >= 20)}; {capped} of {len(logreg)} fits hit max_iter)")
    print(f"  floor (bare product){t_floor:8.3f} s   ours takes {t_ours / t_floor:5.2f}x the floor")
    print(f"  max |accuracy(ours) - accuracy(solve loop)|            = {diff:.5f}   "
          f"(target <= 0.001: {_verdict(diff <= 0.001)})")
    print(f"  max |accuracy(RidgeClassifier) - accuracy(solve loop)| = {diff_ridge:.5f}   (the same model)")
    if t_logreg is not None:
        print(f"  mean accuracy over the sweep: ridge {ours_acc.mean():.4f}, logistic {logreg.mean():.4f} "
              "(another model: context, not a check)")

if __name__ == "__main__":
    main()
