"""Few-shot linear probes in closed form, as big_vision's `fewshot_lsr` evaluator does them (numpy only).

For a k-shot training set X (n x d) with labels y over C classes:
  1. standardise every feature with the mean and standard deviation of the k-shot set (not of the test set);
  2. append a constant column of value `bias` (default 1.0), so the intercept is fitted with the weights;
  3. targets Y = 2 * onehot(y) - 1, an n x C matrix of +-1;
  4. ridge regression W = argmin |XW - Y|^2 + l2 |W|^2 for every l2 in the grid from ONE eigendecomposition:
       primal (n >= d):  X^T X = V diag(s) V^T,  W = V diag(1 / (s + l2)) V^T X^T Y
       dual   (n <  d):  X X^T = U diag(s) U^T,  W = X^T U diag(1 / (s + l2)) U^T Y
     and the test scores X_test W share every factor but the diagonal, so each extra l2 costs one product;
  5. predict argmax over classes; report accuracy.
The decomposition and the weights are float64 (1-shot Gram matrices are rank-deficient and features may be
of any scale); the one product with the test features, which dominates the cost, is float32.

`fewshot_probe` scores the whole sweep (shots x seeds x l2) in one float32 pass over the test split: the
k-shot standardisation is affine, so it is folded into each probe's weights (`_shot_probes`) and the test
features are standardised once, not once per (shots, seed); a small k-shot set's probes are scored through
their shared rank-n basis, fewer flops than through their weights. Optionally l2 is chosen per (shots, seed) on
validation examples drawn from the training pool; the test split never selects anything.
`logistic_probe` is the iterative alternative a user may compare with (scikit-learn, C = 1 / l2).

The bias column. With a constant column of value c, the intercept is b = c * w_b and its penalty is
l2 * w_b^2 = (l2 / c^2) * b^2: c = 1 (the default here) penalises the intercept like any weight, while
big_vision appends c = 100 (BIAS_CONSTANT, "large so it's almost unregularized": l2 / 10^4). Because the
k-shot features are centred on their own mean, the constant column is orthogonal to them, the problem
splits, and the weights do not depend on c; the intercept of class j is b_j = n c^2 / (n c^2 + l2) * mean_i Y_ij.
A k-shot set has exactly k examples of every class, so mean_i Y_ij = 2 / C - 1 is the same for every class:
the intercept shifts every class's score equally and no prediction changes, whatever c. `bias` therefore
matters only for `ridge_probe` / `ridge_scores` on class-imbalanced training sets (and for the scores
themselves); in `fewshot_probe` the two choices differ by float round-off alone.

Degenerate features. `feature_problem` says when a feature matrix cannot be probed meaningfully (non-finite
values, constant, or most examples sharing one feature vector) and `fewshot_probe` raises
`DegenerateFeatures` with that reason rather than reporting a chance-level accuracy as a measurement.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from transferscale.errors import TransferscaleError

METHODS = ("ridge", "logistic")
_ROWS = 2048  # examples scored per product: a fixed shape, so rounding never depends on the rest of the sweep
BIAS = 1.0  # the appended constant column; big_vision's fewshot_lsr uses 100 (see the module docstring)
FEATURE_RTOL = 1e-6  # spreads at or below this fraction of the features' scale count as no spread
MAX_SHARED = 0.5  # more than this share of examples with one feature vector: the features have collapsed


class DegenerateFeatures(TransferscaleError):
    """Features a probe cannot read: non-finite, constant across examples, or collapsed onto one vector.

    `reason` says which (the text of `feature_problem`); a caller can record it in place of an accuracy.
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def feature_problem(x, rtol: float = FEATURE_RTOL, max_shared: float = MAX_SHARED) -> str | None:
    """Why the feature matrix x (n examples x d features) cannot be probed, or None when it can.

    With M = max_ij |x_ij| (the features' scale) and spread_j = max_i x_ij - min_i x_ij:
      non-finite  any entry is NaN or +-inf;
      constant    n >= 2 and spread_j <= rtol * M for every column j (all zero counts: M = 0), i.e. every
                  example has the same features up to round-off; a probe on them predicts one class;
      collapsed   n >= 2 and more than `max_shared` (at least 1/2) of the examples share one feature vector, rows being
                  equal when they agree to within rtol * M in every column (compared after rounding to
                  multiples of rtol * M). Those examples are indistinguishable to any probe, which must
                  give them all one label: e.g. a randomly initialised ResNet whose final features see
                  only the image's (blank) top-left corner.
    Single columns that are constant are normal (a dead unit) and not a problem; the probe ignores them.
    """
    x = np.asarray(x)
    if x.ndim != 2:
        return f"features must be a 2-d matrix (examples x features), got shape {x.shape}"
    n, d = x.shape
    if n == 0 or d == 0:
        return None
    top, bottom = x.max(0), x.min(0)  # NaN and inf show here too, so a clean matrix is read twice, not thrice
    if not (np.isfinite(top).all() and np.isfinite(bottom).all()):
        n_nan = int(np.isnan(x).sum())
        return (f"non-finite features: {n_nan} NaN and {int((~np.isfinite(x)).sum()) - n_nan} infinite values "
                f"among {n} x {d}")
    if n < 2:
        return None
    scale = float(max(np.abs(top).max(), np.abs(bottom).max()))
    spread = float((top.astype(np.float64) - bottom).max())
    if spread <= rtol * scale:
        return (f"constant features: all {n} examples have the same {d} features (largest spread {spread:.3g}, "
                f"at most {rtol:g} x the features' scale {scale:.3g})")
    shared = _majority_rows(x, rtol * scale)
    if shared > max(max_shared, 0.5) * n:
        return (f"collapsed features: {shared} of {n} examples ({shared / n:.1%}) share one feature vector, "
                "so no probe can tell them apart")
    return None


def _majority_rows(x: np.ndarray, quantum: float, block: int = 32) -> int:
    """How many rows equal the column-wise median row after rounding to multiples of `quantum`, if they are
    more than half the rows; otherwise some number at most half.

    A vector shared by more than half the rows is, in every column, that column's rank-n//2 value, so it can
    only be the median row; rows are matched to it a block of columns at a time, and the search stops as
    soon as half the rows or fewer still match (for features that vary, after the first block).
    """
    n = len(x)
    match = np.ones(n, dtype=bool)
    for j in range(0, x.shape[1], block):
        q = np.rint(x[:, j:j + block].astype(np.float64) / quantum)
        middle = np.partition(q, n // 2, axis=0)[n // 2]
        match &= (q == middle).all(axis=1)
        if 2 * int(match.sum()) <= n:
            break
    return int(match.sum())


def _check_features(x, where: str) -> None:
    problem = feature_problem(x)
    if problem is not None:
        raise DegenerateFeatures(f"{where}: {problem}")


def _check_bias(bias: float) -> float:
    bias = float(bias)
    if not (np.isfinite(bias) and bias > 0):
        raise TransferscaleError(f"bias (the constant column's value) must be a finite number > 0, got {bias}")
    return bias


def _class_orders(y: np.ndarray, seed: int):
    """Each class's training indices in its seeded random order: (class, indices) per class, sorted by class."""
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        yield c, np.random.default_rng([int(seed), int(c)]).permutation(idx)


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
    for c, perm in _class_orders(y, seed):
        if len(perm) < shots:
            raise TransferscaleError(
                f"class {c} has only {len(perm)} training examples, fewer than the {shots} shots asked for; "
                f"lower the shots or give the task a larger train_per_class"
            )
        picked.append(perm[:shots])
    return np.sort(np.concatenate(picked))


def validation_indices(y: np.ndarray, per_class: int, seed: int, shots: int) -> np.ndarray:
    """Indices of `per_class` validation examples of every class, disjoint from `fewshot_indices(y, k, seed)`
    for every k <= `shots`, sorted.

    They are the LAST `per_class` of each class's seeded order (the k-shot examples are the first k), so one
    seed validates every shot count on the same examples.
    """
    y = np.asarray(y)
    if per_class < 1:
        raise TransferscaleError(f"val_per_class must be at least 1, got {per_class}")
    picked = []
    for c, perm in _class_orders(y, seed):
        if len(perm) < shots + per_class:
            raise TransferscaleError(
                f"class {c} has only {len(perm)} training examples, fewer than the {shots} shots plus "
                f"{per_class} validation examples that choosing l2 needs; lower the shots or val_per_class, "
                f"or give the task a larger train_per_class"
            )
        picked.append(perm[len(perm) - per_class:])
    return np.sort(np.concatenate(picked))


def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(0)
    std = x.std(0)
    std[std < 1e-12] = 1.0  # a constant feature carries nothing; leave it at zero rather than divide by 0
    return mean, std


def _augment(x: np.ndarray, mean: np.ndarray, std: np.ndarray, dtype=np.float64, bias: float = BIAS) -> np.ndarray:
    """(x - mean) / std with the constant bias column (every entry `bias`) appended."""
    out = np.empty((len(x), x.shape[1] + 1), dtype=dtype)
    np.subtract(x, mean.astype(dtype), out=out[:, :-1])
    out[:, :-1] /= std.astype(dtype)
    out[:, -1] = bias
    return out


def _standardise(x_train: np.ndarray, x_test: np.ndarray, bias: float = BIAS) -> tuple[np.ndarray, np.ndarray]:
    """Standardise with the k-shot set's statistics and append the bias column: float64 train, float32 test."""
    mean, std = _moments(x_train)
    return _augment(x_train, mean, std, bias=bias), _augment(x_test, mean, std, np.float32, bias=bias)


def _eigen_ridge(xtr: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(basis, s, proj) with the ridge weights W(l2) = basis @ diag(1 / (s + l2)) @ proj for every l2."""
    n, d = xtr.shape
    if n >= d:
        s, v = np.linalg.eigh(xtr.T @ xtr)
        basis, proj = v, v.T @ (xtr.T @ targets)  # d x d, d x C
    else:
        s, u = np.linalg.eigh(xtr @ xtr.T)
        basis, proj = xtr.T @ u, u.T @ targets  # d x n, n x C
    return basis, np.clip(s, 0.0, None), proj  # round-off can make a PSD matrix's eigenvalues slightly < 0


def ridge_weights(xtr: np.ndarray, targets: np.ndarray, l2: Sequence[float]) -> np.ndarray:
    """Ridge weights (len(l2) x (d+1) x C) for standardised, bias-augmented features, from one eigh."""
    basis, s, proj = _eigen_ridge(xtr, targets)
    return np.stack([basis @ (proj / (s + lam)[:, None]) for lam in l2])


def _targets(y: np.ndarray, classes: np.ndarray) -> np.ndarray:
    return 2.0 * (np.asarray(y)[:, None] == classes[None, :]) - 1.0


def ridge_scores(x_train, y_train, x_test, l2: Sequence[float], classes: np.ndarray | None = None, *,
                 bias: float = BIAS):
    """Test scores (len(l2) x m x C) of the regularised least-squares probe, one eigh for all l2 values.

    The weights of every l2 are solved first (cheap: d x C each) and the test features meet them in one
    float32 product, m x d x (len(l2) * C), the least work any probe scoring m examples can do.
    bias: the value of the appended constant column; the intercept's penalty is l2 / bias^2 (module docstring).
    """
    x_train = np.asarray(x_train, dtype=np.float64)
    classes = np.unique(y_train) if classes is None else classes
    xtr, xte = _standardise(x_train, np.asarray(x_test, dtype=np.float32), _check_bias(bias))
    w = ridge_weights(xtr, _targets(y_train, classes), l2)  # L x d x C
    n_l2, d, c = w.shape
    flat = w.transpose(1, 0, 2).reshape(d, n_l2 * c).astype(np.float32)
    return (xte @ flat).reshape(len(xte), n_l2, c).transpose(1, 0, 2), classes


def _grid(l2) -> list[float]:
    grid = [float(l2)] if np.isscalar(l2) else [float(v) for v in l2]
    if not grid or any(not v > 0 for v in grid):
        raise TransferscaleError(f"l2 values must be > 0, got {grid}")
    return grid


def ridge_probe(x_train, y_train, x_test, y_test, l2: float | Sequence[float] = 2.0**10, *,
                bias: float = BIAS) -> np.ndarray:
    """Test accuracy of the closed-form ridge probe for each l2 value (an array, one entry per l2).

    bias: the appended constant column's value (1.0 here, 100 in big_vision): see the module docstring.
    """
    scores, classes = ridge_scores(x_train, y_train, x_test, _grid(l2), bias=bias)
    pred = classes[scores.argmax(-1)]
    return (pred == np.asarray(y_test)[None, :]).mean(1)


def logistic_probe(x_train, y_train, x_test, y_test, l2: float | Sequence[float] = 2.0**10, *,
                   max_iter: int = 1000) -> np.ndarray:
    """Test accuracy of a multinomial logistic-regression probe for each l2 value (an array, one per l2).

    The comparison a user may want against the closed-form ridge probe: scikit-learn's LogisticRegression
    (lbfgs) on the same features, standardised with the k-shot set's statistics, with C = 1 / l2, i.e. it
    minimises  sum_i log-loss_i + (l2 / 2) |W|^2 ; the intercept is fitted and not penalised. Slow next to
    the ridge probe: one iterative fit per l2 value.
    """
    return _logistic_accuracies(x_train, y_train, [(x_test, y_test)], _grid(l2), max_iter)[0]


def _logistic_accuracies(x_train, y_train, evals, grid, max_iter=1000) -> list[np.ndarray]:
    """Accuracy on each (x, y) of `evals` of the logistic probe at every l2 of `grid`: one array per eval set."""
    from sklearn.linear_model import LogisticRegression

    x_train = np.asarray(x_train, dtype=np.float64)
    mean, std = _moments(x_train)
    xtr = (x_train - mean) / std
    xs = [(np.asarray(x, dtype=np.float64) - mean) / std for x, _ in evals]
    accs = np.zeros((len(evals), len(grid)))
    for j, lam in enumerate(grid):
        model = LogisticRegression(C=1.0 / lam, max_iter=max_iter).fit(xtr, y_train)
        for e, (x, (_, y)) in enumerate(zip(xs, evals)):
            accs[e, j] = (model.predict(x) == np.asarray(y)).mean()
    return list(accs)


def _shot_probes(x_shot: np.ndarray, y_shot: np.ndarray, classes: np.ndarray, grid: list[float],
                 centre: np.ndarray, scale: np.ndarray, bias: float = BIAS) -> tuple[np.ndarray | None, np.ndarray]:
    """The ridge probes of one k-shot set at every l2, acting on features z standardised ONCE with
    (centre, scale): (basis, coef) whose test scores are z @ basis @ coef, or (None, weights): z @ weights.

    Fold: z = (x - centre) / scale makes the k-shot standardisation (x - mean_k) / std_k the affine map
    z * (scale / std_k) + (centre - mean_k) / std_k, so weights W (rows) and bias b solved on the k-shot
    features give the same scores from z with W' = diag(scale / std_k) W, b' = b + ((centre - mean_k) / std_k) W / c,
    where b is the weight of the constant column, whose value c (`bias`) z carries too.
    It is linear in W, so it is applied to the eigen basis, in float64.
    Factor: every l2's weights share basis (d+1 x r, r = n when n < d+1): scoring through it costs
    m r (d+1 + C L) instead of m (d+1) C L, fewer flops when the k-shot set is small; the cheaper is kept.
    coef's columns are class-major: column c * L + j is class c at grid[j].
    """
    mean, std = _moments(x_shot)
    basis, s, proj = _eigen_ridge(_augment(x_shot, mean, std, bias=bias), _targets(y_shot, classes))
    folded = np.empty_like(basis)
    folded[:-1] = basis[:-1] * (scale / std)[:, None]
    folded[-1] = basis[-1] + ((centre - mean) / std) @ basis[:-1] / bias
    coef = (proj[:, :, None] / (s[:, None, None] + np.asarray(grid)[None, None, :])).reshape(len(s), -1)
    d1, r = folded.shape
    if r * (d1 + coef.shape[1]) < d1 * coef.shape[1]:
        return folded, coef
    return None, folded @ coef


def _n_correct(scores: np.ndarray, label: int) -> np.ndarray:
    """How many rows of scores (rows x C x G) have argmax over C equal to `label`, for each of G probes.

    argmax takes the first maximum, so `label` wins iff it beats every earlier class and ties no later one.
    A running elementwise maximum over the class slices is several times cheaper than numpy's argmax or
    max over that short middle axis.
    """
    right = scores[:, label]
    ok = np.ones(right.shape, dtype=bool)
    for lo, hi, beats in ((0, label, np.greater), (label + 1, scores.shape[1], np.greater_equal)):
        if lo < hi:
            best = scores[:, lo].copy()
            for c in range(lo + 1, hi):
                np.maximum(best, scores[:, c], out=best)
            ok &= beats(right, best)
    return ok.sum(0)


def _accuracies(x: np.ndarray, y: np.ndarray, probes: list, classes: np.ndarray, n_l2: int,
                centre: np.ndarray, scale: np.ndarray, bias: float = BIAS, device=None) -> np.ndarray:
    """Accuracy (len(probes) x n_l2) of every probe from `_shot_probes` on examples (x, y), in float32.

    The examples are grouped by label, so each block of rows is scored against one known class.
    Invariance: a float32 product's rounding depends on the shapes it is computed at (a BLAS kernel sums in
    another order when the number of rows or columns changes), so fusing several probes into one product would
    make a probe's accuracy depend on what else is in the sweep. Each (probe, l2) is therefore scored by its own
    products, over row chunks of a fixed size `_ROWS` within each label block: its result depends only on its
    own weights and the examples, never on the other shots, seeds or l2 values of the sweep.
    `device` (a torch device) computes the same products there, in the same chunks, with torch (argmax takes
    the first maximum, as `_n_correct` does); None keeps them in numpy.
    """
    n_c = len(classes)
    parts = []  # per probe: (basis or None, [weights or coef of each l2], float32)
    for basis, w in probes:
        cols = w.reshape(-1, n_c, n_l2) if basis is None else w.reshape(len(w), n_c, n_l2)
        per_l2 = [np.ascontiguousarray(cols[:, :, j], dtype=np.float32) for j in range(n_l2)]
        parts.append((None if basis is None else np.ascontiguousarray(basis, dtype=np.float32), per_l2))

    y = np.asarray(y)
    label = np.searchsorted(classes, y).clip(0, n_c - 1)
    seen = classes[label] == y  # a label the probe never saw counts as wrong
    order = np.argsort(np.where(seen, label, -1), kind="stable")
    first = np.searchsorted(np.where(seen, label, -1)[order], np.arange(n_c + 1))
    z = _augment(np.asarray(x)[order[first[0]:]], centre, scale, np.float32, bias=bias)
    correct = np.zeros((len(probes), n_l2), dtype=np.int64)
    if device is not None:
        return _torch_correct(z, first, parts, device, correct) / len(y)
    for c in range(n_c):
        for i in range(first[c] - first[0], first[c + 1] - first[0], _ROWS):
            rows = z[i:min(i + _ROWS, first[c + 1] - first[0])]
            for p, (basis, per_l2) in enumerate(parts):
                k = rows if basis is None else rows @ basis
                for j, w in enumerate(per_l2):
                    correct[p, j] += _n_correct((k @ w)[:, :, None], c)[0]
    return correct / len(y)


def _torch_correct(z: np.ndarray, first: np.ndarray, parts: list, device, correct: np.ndarray) -> np.ndarray:
    """`_accuracies`' counts with every product on a torch device (the features move there once)."""
    import torch

    zt = torch.from_numpy(np.ascontiguousarray(z)).to(device)
    moved = [(None if b is None else torch.from_numpy(b).to(device), [torch.from_numpy(w).to(device) for w in ws])
             for b, ws in parts]
    counts = torch.zeros(correct.shape, dtype=torch.int64, device=device)
    for c in range(len(first) - 1):
        for i in range(first[c] - first[0], first[c + 1] - first[0], _ROWS):
            rows = zt[i:min(i + _ROWS, first[c + 1] - first[0])]
            for p, (basis, per_l2) in enumerate(moved):
                k = rows if basis is None else rows @ basis
                for j, w in enumerate(per_l2):
                    counts[p, j] += ((k @ w).argmax(1) == c).sum()
    return correct + counts.cpu().numpy()


def _ridge_sweep(x_train, y_train, x_test, y_test, shots, seeds, grid, val_per_class, bias=BIAS, device=None):
    """Test (and validation) accuracy, arrays [seed, shots, l2], of the ridge probe over the whole sweep."""
    classes = np.unique(y_train)
    centre, scale = _moments(x_train.astype(np.float64))  # the training pool's: conditions the float32 product
    probes, val_acc = [], np.full((len(seeds), len(shots), len(grid)), np.nan)
    for a, seed in enumerate(seeds):
        seed_probes = []
        for k in shots:
            idx = fewshot_indices(y_train, k, seed)
            seed_probes.append(_shot_probes(x_train[idx].astype(np.float64), y_train[idx], classes, grid,
                                            centre, scale, bias))
        probes += seed_probes
        if val_per_class is not None:
            val = validation_indices(y_train, val_per_class, seed, max(shots))
            val_acc[a] = _accuracies(x_train[val], y_train[val], seed_probes, classes, len(grid), centre, scale,
                                     bias, device)
    test_acc = _accuracies(x_test, y_test, probes, classes, len(grid), centre, scale, bias, device)
    return test_acc.reshape(len(seeds), len(shots), len(grid)), val_acc


def _logistic_sweep(x_train, y_train, x_test, y_test, shots, seeds, grid, val_per_class, bias=None, device=None):
    """As _ridge_sweep for the logistic probe; `bias` is unused (its intercept is never penalised)."""
    test_acc = np.zeros((len(seeds), len(shots), len(grid)))
    val_acc = np.full_like(test_acc, np.nan)
    for a, seed in enumerate(seeds):
        val = None if val_per_class is None else validation_indices(y_train, val_per_class, seed, max(shots))
        for b, k in enumerate(shots):
            idx = fewshot_indices(y_train, k, seed)
            evals = [(x_test, y_test)] + ([] if val is None else [(x_train[val], y_train[val])])
            accs = _logistic_accuracies(x_train[idx], y_train[idx], evals, grid)
            test_acc[a, b] = accs[0]
            if val is not None:
                val_acc[a, b] = accs[1]
    return test_acc, val_acc


def select_on_validation(val_accuracy: np.ndarray, grid: Sequence[float]) -> np.ndarray:
    """Index of the chosen l2 along the last axis: the best validation accuracy; among ties, the largest l2
    (the most regularised of equally good probes, whatever the grid's order)."""
    best = val_accuracy == val_accuracy.max(-1, keepdims=True)
    return np.where(best, np.asarray(grid, dtype=np.float64), -np.inf).argmax(-1)


def fewshot_probe(x_train, y_train, x_test, y_test, shots: Sequence[int] = (1, 5, 10, 25),
                  seeds: Sequence[int] = (0, 1, 2), l2: Sequence[float] = (2.0**10,), *,
                  method: str = "ridge", select_l2: bool = False, val_per_class: int = 10, bias: float = BIAS,
                  check_features: bool = True, device=None):
    """A tidy DataFrame (shots, seed, l2, accuracy): the probe at every shot count, seed and l2 value.

    method: "ridge" (closed form, the default) or "logistic" (`logistic_probe`, C = 1 / l2).
    bias: the ridge probe's constant column (1.0; big_vision uses 100). On these class-balanced k-shot sets
      it changes no prediction, only round-off (module docstring); the logistic probe ignores it.
    Raises DegenerateFeatures (a TransferscaleError whose `reason` says why) when the training pool or the
    test split fails `feature_problem`: non-finite, constant, or collapsed features have no accuracy to
    report, and the caller should record the reason instead. check_features=False skips that check (for a
    caller that ran `feature_problem` itself).
    select_l2: also choose l2 per (shots, seed) on `val_per_class` validation examples of every class from
      the training pool (`validation_indices`: disjoint from that seed's k-shot examples, never from the
      test split). The table then has two more columns: val_accuracy, and selected (True on the one row
      per (shots, seed) whose l2 was chosen; its accuracy is the test accuracy to report).
    device: a torch device (e.g. "cuda") for the ridge probe's scoring products, the sweep's largest cost;
      None (the default) computes them in numpy. The decompositions stay float64 on the CPU.
    """
    import pandas as pd

    if method not in METHODS:
        raise TransferscaleError(f"unknown probe method {method!r}; valid: {', '.join(map(repr, METHODS))}")
    grid, shots, seeds = _grid(l2), [int(k) for k in shots], [int(s) for s in seeds]
    bias = _check_bias(bias)
    x_train, y_train = np.asarray(x_train), np.asarray(y_train)
    if check_features:
        _check_features(x_train, "the training pool")
        _check_features(x_test, "the test split")
    sweep = _ridge_sweep if method == "ridge" else _logistic_sweep
    test_acc, val_acc = sweep(x_train, y_train, x_test, y_test, shots, seeds, grid,
                              val_per_class if select_l2 else None, bias, device)
    columns = ["shots", "seed", "l2", "accuracy"] + (["val_accuracy", "selected"] if select_l2 else [])
    chosen = select_on_validation(val_acc, grid) if select_l2 else None
    rows = []
    for a, seed in enumerate(seeds):
        for b, k in enumerate(shots):
            for j, lam in enumerate(grid):
                row = [k, seed, lam, float(test_acc[a, b, j])]
                if select_l2:
                    row += [float(val_acc[a, b, j]), bool(chosen[a, b] == j)]
                rows.append(row)
    return pd.DataFrame(rows, columns=columns)
