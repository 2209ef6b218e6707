"""Few-shot linear probes in closed form, as big_vision's `fewshot_lsr` evaluator does them (numpy only).

For a k-shot training set X (n x d) with labels y over C classes:
  1. standardise every feature with the mean and standard deviation of the k-shot set (not of the test set);
  2. append a constant 1 column, so the bias is fitted (and regularised) with the weights;
  3. targets Y = 2 * onehot(y) - 1, an n x C matrix of +-1;
  4. ridge regression W = argmin |XW - Y|^2 + l2 |W|^2 for every l2 in the grid from ONE eigendecomposition:
       primal (n >= d):  X^T X = V diag(s) V^T,  W = V diag(1 / (s + l2)) V^T X^T Y
       dual   (n <  d):  X X^T = U diag(s) U^T,  W = X^T U diag(1 / (s + l2)) U^T Y
     and the test scores X_test W share every factor but the diagonal, so each extra l2 costs one product;
  5. predict argmax over classes; report accuracy.
The decomposition and the weights are float64 (1-shot Gram matrices are rank-deficient and features may be
of any scale); the one product with the test features, which dominates the cost, is float32.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from transferscale.errors import TransferscaleError


def fewshot_indices(y: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """Indices of exactly `shots` examples of every class, sorted.

    Each class's examples are shuffled by a generator seeded with (seed, class label) and the first `shots`
    are taken, so for one seed the 5-shot set contains the 1-shot set, and the choice for a class does not
    depend on the other classes or the machine.
    """
    y = np.asarray(y)
    if shots < 1:
        raise TransferscaleError(f"shots must be at least 1, got {shots}")
    picked = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        if len(idx) < shots:
            raise TransferscaleError(
                f"class {c} has only {len(idx)} training examples, fewer than the {shots} shots asked for; "
                f"lower the shots or give the task a larger train_per_class"
            )
        perm = np.random.default_rng([int(seed), int(c)]).permutation(idx)
        picked.append(perm[:shots])
    return np.sort(np.concatenate(picked))


def _standardise(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Standardise with the k-shot set's statistics and append the bias column: float64 train, float32 test."""
    mean = x_train.mean(0)
    std = x_train.std(0)
    std[std < 1e-12] = 1.0  # a constant feature carries nothing; leave it at zero rather than divide by 0
    xtr = np.empty((len(x_train), x_train.shape[1] + 1))
    xtr[:, :-1] = (x_train - mean) / std
    xtr[:, -1] = 1.0
    xte = np.empty((len(x_test), x_test.shape[1] + 1), dtype=np.float32)
    xte[:, :-1] = (x_test - mean.astype(np.float32)) / std.astype(np.float32)
    xte[:, -1] = 1.0
    return xtr, xte


def ridge_weights(xtr: np.ndarray, targets: np.ndarray, l2: Sequence[float]) -> np.ndarray:
    """Ridge weights (len(l2) x (d+1) x C) for standardised, bias-augmented features, from one eigh."""
    n, d = xtr.shape
    if n >= d:
        s, v = np.linalg.eigh(xtr.T @ xtr)
        proj = v.T @ (xtr.T @ targets)  # d x C
    else:
        s, u = np.linalg.eigh(xtr @ xtr.T)
        proj = u.T @ targets  # n x C
    s = np.clip(s, 0.0, None)  # round-off can make the smallest eigenvalues of a PSD matrix slightly negative
    if n >= d:
        return np.stack([v @ (proj / (s + lam)[:, None]) for lam in l2])
    return np.stack([xtr.T @ (u @ (proj / (s + lam)[:, None])) for lam in l2])


def ridge_scores(x_train, y_train, x_test, l2: Sequence[float], classes: np.ndarray | None = None):
    """Test scores (len(l2) x m x C) of the regularised least-squares probe, one eigh for all l2 values.

    The weights of every l2 are solved first (cheap: d x C each) and the test features meet them in one
    float32 product, m x d x (len(l2) * C), the least work any probe scoring m examples can do.
    """
    x_train = np.asarray(x_train, dtype=np.float64)
    classes = np.unique(y_train) if classes is None else classes
    targets = 2.0 * (np.asarray(y_train)[:, None] == classes[None, :]) - 1.0
    xtr, xte = _standardise(x_train, np.asarray(x_test, dtype=np.float32))
    w = ridge_weights(xtr, targets, l2)  # L x d x C
    n_l2, d, c = w.shape
    flat = w.transpose(1, 0, 2).reshape(d, n_l2 * c).astype(np.float32)
    return (xte @ flat).reshape(len(xte), n_l2, c).transpose(1, 0, 2), classes


def ridge_probe(x_train, y_train, x_test, y_test, l2: float | Sequence[float] = 2.0**10) -> np.ndarray:
    """Test accuracy of the closed-form ridge probe for each l2 value (an array, one entry per l2)."""
    grid = [float(l2)] if np.isscalar(l2) else [float(v) for v in l2]
    if any(v <= 0 for v in grid):
        raise TransferscaleError(f"l2 values must be > 0, got {grid}")
    scores, classes = ridge_scores(x_train, y_train, x_test, grid)
    pred = classes[scores.argmax(-1)]
    return (pred == np.asarray(y_test)[None, :]).mean(1)


def fewshot_probe(x_train, y_train, x_test, y_test, shots: Sequence[int] = (1, 5, 10, 25),
                  seeds: Sequence[int] = (0, 1, 2), l2: Sequence[float] = (2.0**10,)):
    """A tidy DataFrame (shots, seed, l2, accuracy): the probe at every shot count, seed and l2 value."""
    import pandas as pd

    x_train = np.asarray(x_train)
    y_train = np.asarray(y_train)
    rows = []
    for seed in seeds:
        for k in shots:
            idx = fewshot_indices(y_train, k, seed)
            acc = ridge_probe(x_train[idx], y_train[idx], x_test, y_test, l2)
            rows += [{"shots": int(k), "seed": int(seed), "l2": float(lam), "accuracy": float(a)}
                     for lam, a in zip(l2, acc)]
    return pd.DataFrame(rows, columns=["shots", "seed", "l2", "accuracy"])
