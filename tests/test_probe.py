"""The few-shot probe against independent references: numpy's lstsq on the same standardised features."""
import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from transferscale.errors import TransferscaleError
from transferscale.probe import (
    DegenerateFeatures,
    feature_problem,
    fewshot_indices,
    fewshot_probe,
    logistic_probe,
    ridge_probe,
    ridge_scores,
    select_on_validation,
    validation_indices,
)


@pytest.fixture(autouse=True)
def one_blas_thread():
    """One BLAS thread, as the runner probes: these small solves gain nothing from a second thread, and on a
    shared two-core machine threads that wait for a busy core make their time erratic."""
    with threadpool_limits(1):
        yield


def _reference_accuracy(x_train, y_train, x_test, y_test, l2, bias=1.0):
    """Ridge by lstsq on the augmented system [X; sqrt(l2) I] W = [Y; 0], with no eigendecomposition."""
    mean, std = x_train.mean(0), x_train.std(0)
    std[std < 1e-12] = 1.0
    xtr = np.hstack([(x_train - mean) / std, np.full((len(x_train), 1), bias)])
    xte = np.hstack([(x_test - mean) / std, np.full((len(x_test), 1), bias)])
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


def _awkward(x):
    """Features as a network might give them: large offsets, scales from 1e-3 to 1e3, a constant one."""
    d = x.shape[1]
    out = x * np.logspace(-3, 3, d) + np.linspace(-500, 2000, d)
    out[:, 1] = 42.0
    return out


@pytest.mark.parametrize("bias", [1.0, 100.0])  # ours, and big_vision's constant column
@pytest.mark.parametrize("d", [12, 60, 300])  # the sweep scores some probes through their basis, some not
def test_fewshot_probe_matches_reference_on_every_row(d, bias):
    x_train, y_train = _blobs(30, 5, d, seed=11)
    x_test, y_test = _blobs(40, 5, d, seed=12)
    x_train, x_test = _awkward(x_train), _awkward(x_test)
    grid = (1e-3, 1.0, 2.0**10)
    df = fewshot_probe(x_train, y_train, x_test, y_test, shots=(1, 3, 10, 25), seeds=(0, 1), l2=grid, bias=bias)
    assert len(df) == 4 * 2 * 3
    for r in df.itertuples():
        idx = fewshot_indices(y_train, r.shots, r.seed)
        ref = _reference_accuracy(x_train[idx], y_train[idx], x_test, y_test, r.l2, bias)
        assert r.accuracy == pytest.approx(ref, abs=1.01 / len(y_test)), r  # float32 scoring: one example at most


def test_fewshot_probe_counts_unseen_test_labels_as_wrong():
    x_train, y_train = _blobs(10, 3, 8, seed=13)
    x_test, y_test = _blobs(20, 4, 8, seed=14)  # class 3 has no training examples
    acc = fewshot_probe(x_train, y_train, x_test, y_test, shots=(5,), seeds=(0,)).accuracy.item()
    seen = y_test < 3
    idx = fewshot_indices(y_train, 5, 0)
    ref = _reference_accuracy(x_train[idx], y_train[idx], x_test[seen], y_test[seen], 2.0**10)
    assert acc == pytest.approx(ref * seen.mean(), abs=1e-9)


def test_validation_examples_are_disjoint_from_every_shot_set_and_shared_across_shots():
    y = np.repeat(np.arange(4), 20)
    for seed in (0, 1):
        val = validation_indices(y, 6, seed, shots=14)
        assert np.bincount(y[val]).tolist() == [6] * 4
        for k in (1, 5, 14):
            assert not set(val.tolist()) & set(fewshot_indices(y, k, seed).tolist())
    assert not np.array_equal(validation_indices(y, 6, 0, 14), validation_indices(y, 6, 1, 14))


def test_too_few_examples_for_shots_plus_validation():
    y = np.array([0] * 40 + [1] * 30)
    x = np.random.default_rng(0).normal(size=(len(y), 5))
    with pytest.raises(TransferscaleError, match=r"class 1 has only 30 .*25 shots plus 10 validation"):
        fewshot_probe(x, y, x, y, shots=(1, 25), select_l2=True, val_per_class=10)
    fewshot_probe(x, y, x, y, shots=(1, 20), select_l2=True, val_per_class=10)  # 30 = 20 + 10 is enough


def _selection_data():
    x_train, y_train = _blobs(40, 5, 30, seed=15)
    x_test, y_test = _blobs(40, 5, 30, seed=16)
    return x_train, y_train, x_test, y_test


GRID = (2.0**-4, 2.0**0, 2.0**4, 2.0**8, 2.0**12, 2.0**16)


def test_l2_is_chosen_on_validation_examples():
    x_train, y_train, x_test, y_test = _selection_data()
    df = fewshot_probe(x_train, y_train, x_test, y_test, shots=(1, 5), seeds=(0, 1), l2=GRID,
                       select_l2=True, val_per_class=8)
    assert list(df.columns) == ["shots", "seed", "l2", "accuracy", "val_accuracy", "selected"]
    assert (df.groupby(["shots", "seed"]).selected.sum() == 1).all()
    for (k, seed), group in df.groupby(["shots", "seed"]):
        idx, val = fewshot_indices(y_train, k, seed), validation_indices(y_train, 8, seed, 5)
        val_ref = [_reference_accuracy(x_train[idx], y_train[idx], x_train[val], y_train[val], lam) for lam in GRID]
        np.testing.assert_allclose(group.val_accuracy, val_ref, atol=1.01 / len(val))
        best = group.val_accuracy.max()
        chosen = group[group.selected].iloc[0]
        assert chosen.val_accuracy == best and chosen.l2 == group[group.val_accuracy == best].l2.max()
        assert chosen.accuracy == pytest.approx(
            _reference_accuracy(x_train[idx], y_train[idx], x_test, y_test, chosen.l2), abs=1.01 / len(y_test))


def test_ties_on_validation_choose_the_largest_l2_whatever_the_grid_order():
    val = np.array([[0.5, 0.9, 0.9, 0.7]])
    assert select_on_validation(val, [1.0, 4.0, 16.0, 64.0])[0] == 2
    assert select_on_validation(val, [64.0, 16.0, 4.0, 1.0])[0] == 1


@pytest.mark.parametrize("method", ["ridge", "logistic"])
def test_test_data_never_selects_anything(method):
    x_train, y_train, x_test, y_test = _selection_data()
    kw = dict(shots=(1, 5), seeds=(0, 1), l2=GRID if method == "ridge" else GRID[2:5], select_l2=True,
              val_per_class=8, method=method)
    a = fewshot_probe(x_train, y_train, x_test, y_test, **kw)
    rng = np.random.default_rng(0)
    b = fewshot_probe(x_train, y_train, x_test, rng.permutation(y_test), **kw)  # labels shuffled
    c = fewshot_probe(x_train, y_train, rng.normal(size=x_test.shape) * 50, y_test, **kw)  # features noise
    for other in (b, c):
        np.testing.assert_array_equal(a.selected, other.selected)
        np.testing.assert_array_equal(a.val_accuracy, other.val_accuracy)
    assert not np.array_equal(a.accuracy, b.accuracy)  # the test split did change


def _sklearn_logistic(x_train, y_train, x_test, y_test, l2):
    from sklearn.linear_model import LogisticRegression

    mean, std = x_train.mean(0), x_train.std(0)
    model = LogisticRegression(C=1.0 / l2, max_iter=1000).fit((x_train - mean) / std, y_train)
    return model.score((x_test - mean) / std, y_test)


def test_logistic_probe_is_sklearn_on_standardised_features():
    x_train, y_train = _blobs(5, 4, 20, seed=17, scale=300.0)
    x_test, y_test = _blobs(50, 4, 20, seed=18, scale=300.0)
    grid = [0.01, 1.0, 100.0]
    ours = logistic_probe(x_train, y_train, x_test, y_test, grid)
    assert ours.tolist() == [_sklearn_logistic(x_train, y_train, x_test, y_test, lam) for lam in grid]


def test_fewshot_probe_logistic_method():
    x_train, y_train = _blobs(20, 3, 10, seed=19)
    x_test, y_test = _blobs(30, 3, 10, seed=20)
    df = fewshot_probe(x_train, y_train, x_test, y_test, shots=(2, 5), seeds=(0,), l2=(1.0, 64.0), method="logistic")
    assert list(df.columns) == ["shots", "seed", "l2", "accuracy"]
    for r in df.itertuples():
        idx = fewshot_indices(y_train, r.shots, r.seed)
        assert r.accuracy == _sklearn_logistic(x_train[idx], y_train[idx], x_test, y_test, r.l2)


def test_bad_method_and_l2_raise_our_error():
    x, y = _blobs(5, 2, 4, seed=21)
    with pytest.raises(TransferscaleError, match="unknown probe method 'lasso'"):
        fewshot_probe(x, y, x, y, shots=(1,), method="lasso")
    with pytest.raises(TransferscaleError, match="l2 values must be > 0"):
        fewshot_probe(x, y, x, y, shots=(1,), l2=(0.0,))


# ---- the bias column ---------------------------------------------------------------------------------------


def _centred_ridge_scores(x_train, y_train, x_test, l2, shrink):
    """Closed form with a separate intercept: centred, scaled features Z; W = (Z'Z + l2 I)^-1 Z'Y; the intercept
    is shrink * mean(Y) (shrink = 1: unpenalised). Scores on the test features, standardised the same way."""
    mean, std = x_train.mean(0), x_train.std(0)
    z = (x_train - mean) / std
    classes = np.unique(y_train)
    y = 2.0 * (y_train[:, None] == classes[None]) - 1.0
    w = np.linalg.solve(z.T @ z + l2 * np.eye(z.shape[1]), z.T @ y)
    return ((x_test - mean) / std) @ w + shrink * y.mean(0)


def _unbalanced(seed):
    x, y = _blobs(12, 3, 15, seed=seed)
    keep = np.r_[0:12, 12:16, 24:26]  # 12, 4 and 2 examples: the intercept differs by class
    return x[keep], y[keep]


@pytest.mark.parametrize("l2", [1.0, 1024.0])
def test_a_huge_bias_leaves_the_intercept_unpenalised(l2):
    x_train, y_train = _unbalanced(22)
    x_test, _ = _blobs(30, 3, 15, seed=23)
    scores = ridge_scores(x_train, y_train, x_test, [l2], bias=1e4)[0][0]
    np.testing.assert_allclose(scores, _centred_ridge_scores(x_train, y_train, x_test, l2, 1.0), atol=2e-4)
    # a bias c penalises the intercept with l2 / c^2: with c = 1 it is shrunk by n / (n + l2)
    n = len(y_train)
    scores = ridge_scores(x_train, y_train, x_test, [l2])[0][0]
    np.testing.assert_allclose(scores, _centred_ridge_scores(x_train, y_train, x_test, l2, n / (n + l2)), atol=2e-4)


def test_bias_changes_predictions_only_when_classes_are_unbalanced():
    x_train, y_train = _unbalanced(24)
    x_test, y_test = _blobs(200, 3, 15, seed=25)
    # a strong l2 leaves mostly the intercept: unpenalised, it favours the common class; penalised, it does not
    assert ridge_probe(x_train, y_train, x_test, y_test, 2.0**16, bias=1e3)[0] != pytest.approx(
        ridge_probe(x_train, y_train, x_test, y_test, 2.0**16, bias=1.0)[0], abs=0.02)
    x_train, y_train = _blobs(10, 3, 15, seed=26)  # balanced: every class gets the same intercept
    for lam in (1.0, 2.0**10, 2.0**16):
        assert ridge_probe(x_train, y_train, x_test, y_test, lam, bias=100.0) == pytest.approx(
            ridge_probe(x_train, y_train, x_test, y_test, lam, bias=1.0), abs=1.01 / len(y_test))


def test_bias_must_be_positive():
    x, y = _blobs(5, 2, 4, seed=27)
    with pytest.raises(TransferscaleError, match="bias"):
        fewshot_probe(x, y, x, y, shots=(1,), bias=0.0)


# ---- degenerate features -----------------------------------------------------------------------------------


def test_constant_nan_and_near_constant_features_are_named():
    rng = np.random.default_rng(28)
    row = rng.normal(size=16)
    constant = np.tile(row, (40, 1))
    assert "constant" in feature_problem(constant)
    assert "constant" in feature_problem(np.zeros((40, 16)))
    near = constant + 1e-12 * rng.normal(size=constant.shape)  # equal up to round-off
    assert "constant" in feature_problem(near)
    with_nan = rng.normal(size=(40, 16))
    with_nan[3, 5] = np.nan
    assert "1 NaN" in feature_problem(with_nan)
    with_inf = rng.normal(size=(40, 16)).astype(np.float32)
    with_inf[0, 0] = -np.inf
    assert "1 infinite" in feature_problem(with_inf)


def test_collapsed_features_are_named():
    x = np.random.default_rng(29).normal(size=(100, 8))
    x[:60] = x[0] + 1e-12  # 60% of the examples on one vector, as a random ResNet's final features of a
    assert "60 of 100" in feature_problem(x)  # digit task, whose blank top-left corner is all they see
    x[:50] = np.random.default_rng(30).normal(size=(50, 8))
    assert feature_problem(x) is None  # 10 alike is nothing unusual


def test_normal_features_pass():
    x, _ = _blobs(20, 5, 30, seed=31)
    assert feature_problem(x) is None
    assert feature_problem(_awkward(x)) is None  # large offsets, scales from 1e-3 to 1e3, a constant column
    relu = np.maximum(x, 0)
    relu[:, :10] = 0.0  # dead units: constant columns beside live ones
    assert feature_problem(relu) is None
    assert feature_problem(x[:1]) is None  # one example: nothing to compare


@pytest.mark.parametrize("which", ["train", "test"])
def test_fewshot_probe_refuses_degenerate_features(which):
    x_train, y_train = _blobs(10, 3, 8, seed=32)
    x_test, y_test = _blobs(20, 3, 8, seed=33)
    if which == "train":
        x_train = np.full_like(x_train, 0.5)
    else:
        x_test[7, 2] = np.nan
    with pytest.raises(DegenerateFeatures) as err:
        fewshot_probe(x_train, y_train, x_test, y_test, shots=(1, 5), seeds=(0,))
    assert isinstance(err.value, TransferscaleError)
    expected = "the training pool: constant" if which == "train" else "the test split: non-finite"
    assert err.value.reason.startswith(expected)


@pytest.mark.slow
def test_a_probe_does_not_depend_on_the_rest_of_the_sweep(tmp_path, monkeypatch):
    """Adding shot counts, seeds or l2 values to a sweep leaves every other probe's accuracy bit-identical.

    On these features (a random-init ResNet-m's layers on inverted Fashion-MNIST: a wide dynamic range and
    many near-ties) the fused float32 scoring this replaced moved 3 rows of layer 4 and 3 of the final layer
    by up to 0.003 when shots, seeds and l2 values joined [1, 5, 10, 25]: a product's rounding depends on
    its shape.
    """
    monkeypatch.setenv("TRANSFERSCALE_CACHE", str(tmp_path / "cache"))
    from transferscale.engine.context import JobContext
    from transferscale.engine.job import build_backbone
    from transferscale.spec import load_spec

    ctx = JobContext(load_spec(None)[0], tmp_path / "study")
    run = next(r for r in ctx.plan.runs if r.name == "resnet-m-random")
    backbone, _ = build_backbone(run, ctx)
    ds = ctx.dataset(ctx.plan.task("fashion_mnist_inverted"))
    train, test = backbone.layers(ds.x_train), backbone.layers(ds.x_test)
    keys = ["shots", "seed", "l2"]
    assert sorted(train) == [-1, 0, 1, 2, 3, 4]
    for layer in train:
        base = fewshot_probe(train[layer], ds.y_train, test[layer], ds.y_test, shots=[1, 5, 10, 25],
                             seeds=[0, 1, 2], l2=[1024.0], check_features=False)
        more = fewshot_probe(train[layer], ds.y_train, test[layer], ds.y_test, shots=[1, 2, 5, 10, 25, 40],
                             seeds=[2, 0, 1, 7], l2=[3.0, 1024.0, 1e5], check_features=False)
        both = base.merge(more, on=keys, suffixes=("", "_more"))
        assert len(both) == len(base) == 12
        assert (both.accuracy == both.accuracy_more).all(), both[both.accuracy != both.accuracy_more]
