"""The few-shot probe against independent references: numpy's lstsq on the same standardised features."""
import numpy as np
import pytest

from transferscale.errors import TransferscaleError
from transferscale.probe import fewshot_indices, fewshot_probe, ridge_probe


def _reference_accuracy(x_train, y_train, x_test, y_test, l2):
    """Ridge by lstsq on the augmented system [X; sqrt(l2) I] W = [Y; 0], with no eigendecomposition."""
    mean, std = x_train.mean(0), x_train.std(0)
    std[std < 1e-12] = 1.0
    xtr = np.hstack([(x_train - mean) / std, np.ones((len(x_train), 1))])
    xte = np.hstack([(x_test - mean) / std, np.ones((len(x_test), 1))])
    classes = np.unique(y_train)
    y = 2.0 * (y_train[:, None] == classes[None]) - 1.0
    d = xtr.shape[1]
    a = np.vstack([xtr, np.sqrt(l2) * np.eye(d)])
    b = np.vstack([y, np.zeros((d, len(classes)))])
    w = np.linalg.lstsq(a, b, rcond=None)[0]
    return float((classes[(xte @ w).argmax(1)] == y_test).mean())


def _blobs(n_per_class, n_classes, d, seed, scale=1.0):
    centres = np.random.default_rng(1000 + d).normal(size=(n_classes, d)) * 1.5  # shared by train and test
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n_per_class)
    x = (centres[y] + rng.normal(size=(len(y), d))) * scale
    return x, y


@pytest.mark.parametrize("n_per_class,d", [(1, 40), (5, 40), (30, 20), (25, 300)])
@pytest.mark.parametrize("l2", [1e-3, 1.0, 1024.0])
def test_ridge_probe_matches_lstsq(n_per_class, d, l2):
    # primal (n >= d) and dual (n < d) paths, tiny and large l2
    x_train, y_train = _blobs(n_per_class, 6, d, seed=1)
    x_test, y_test = _blobs(50, 6, d, seed=2)
    ours = ridge_probe(x_train, y_train, x_test, y_test, [l2])[0]
    assert ours == pytest.approx(_reference_accuracy(x_train, y_train, x_test, y_test, l2), abs=1e-9)


def test_ridge_probe_scale_invariant():
    # standardisation on the k-shot set makes the probe blind to the features' scale
    x_train, y_train = _blobs(5, 4, 30, seed=3)
    x_test, y_test = _blobs(40, 4, 30, seed=4)
    a = ridge_probe(x_train, y_train, x_test, y_test, [1.0, 1024.0])
    b = ridge_probe(x_train * 1e6, y_train, x_test * 1e6, y_test, [1.0, 1024.0])
    np.testing.assert_array_equal(a, b)


def test_constant_feature_does_not_break_the_probe():
    x_train, y_train = _blobs(5, 3, 10, seed=5)
    x_test, y_test = _blobs(20, 3, 10, seed=6)
    x_train[:, 0] = 7.0
    x_test[:, 0] = 7.0
    acc = ridge_probe(x_train, y_train, x_test, y_test, 1.0)
    assert np.isfinite(acc).all() and acc[0] > 0.8


def test_fewshot_indices_exact_nested_and_stable():
    y = np.repeat(np.arange(5), 30)
    for seed in (0, 1):
        prev = set()
        for k in (1, 5, 10, 25):
            idx = fewshot_indices(y, k, seed)
            assert np.bincount(y[idx]).tolist() == [k] * 5
            assert prev <= set(idx.tolist())
            prev = set(idx.tolist())
    assert not np.array_equal(fewshot_indices(y, 5, 0), fewshot_indices(y, 5, 1))
    # the draw for a class is the same whichever other classes are present
    idx_all = fewshot_indices(y, 3, 0)
    keep = y != 4
    idx_sub = np.flatnonzero(keep)[fewshot_indices(y[keep], 3, 0)]
    assert set(idx_sub.tolist()) <= set(idx_all.tolist())


def test_too_many_shots_names_the_class_and_count():
    y = np.array([0] * 10 + [1] * 3)
    with pytest.raises(TransferscaleError, match=r"class 1 has only 3 .*5 shots"):
        fewshot_indices(y, 5, 0)


def test_fewshot_probe_table():
    x_train, y_train = _blobs(30, 4, 12, seed=7)
    x_test, y_test = _blobs(30, 4, 12, seed=8)
    df = fewshot_probe(x_train, y_train, x_test, y_test, shots=(1, 5), seeds=(0, 1), l2=(1.0, 1024.0))
    assert list(df.columns) == ["shots", "seed", "l2", "accuracy"]
    assert len(df) == 2 * 2 * 2
    row = df[(df.shots == 5) & (df.seed == 1) & (df.l2 == 1.0)].accuracy.item()
    idx = fewshot_indices(y_train, 5, 1)
    assert row == pytest.approx(_reference_accuracy(x_train[idx], y_train[idx], x_test, y_test, 1.0), abs=1e-9)
