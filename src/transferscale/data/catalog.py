"""The registered datasets: the fractal upstream and the downstream tasks, from near to far.

Downstream sets are cut to a study's size: `train_per_class` random examples of each class form the pool
few-shot subsets are drawn from (at most 25 shots are used), and a stratified `test_size` subset of the test
split is scored. `seed` picks both subsets and the random transforms; an aligned set and its `_shifted`
twin with the same seed hold the same examples, before and after the warp.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from transferscale.data import sources
from transferscale.data.cache import cached
from transferscale.data.dataset import Dataset, per_class_subset, stratified_subset
from transferscale.data.fractals import GENERATOR_VERSION, SIZE, generate_fractals
from transferscale.data.registry import register_dataset
from transferscale.data.transforms import invert, random_affine
from transferscale.errors import TransferscaleError

# ---- fractals: upstream and held-out classes come from one generation --------------------------------


@register_dataset("fractals", "FractalDB-style IFS fractals: the upstream pre-training classes",
                  geometry=(SIZE, SIZE, 1))
def fractals(classes: int = 100, heldout: int = 10, train_per_class: int = 300, test_per_class: int = 60,
             seed: int = 0, cache_dir: str | None = None) -> Dataset:
    pool = fractal_pool(classes, heldout, train_per_class, test_per_class, seed, cache_dir)
    return _select_classes(pool, 0, classes, "fractals")


@register_dataset("fractals_heldout", "fractal classes unseen in pre-training (near downstream task)",
                  geometry=(SIZE, SIZE, 1))
def fractals_heldout(classes: int = 100, heldout: int = 10, train_per_class: int = 300,
                     test_per_class: int = 60, seed: int = 0, cache_dir: str | None = None) -> Dataset:
    if heldout < 1:
        raise TransferscaleError(f"fractals_heldout: heldout={heldout}; it needs heldout >= 1 classes")
    pool = fractal_pool(classes, heldout, train_per_class, test_per_class, seed, cache_dir)
    return _select_classes(pool, classes, classes + heldout, "fractals_heldout")


def fractal_pool(classes: int, heldout: int, train_per_class: int, test_per_class: int, seed: int,
                 cache_dir: str | None = None) -> Dataset:
    """All classes + heldout classes of one generation; cached once on disk and kept once in memory."""
    options = dict(classes=classes, heldout=heldout, train_per_class=train_per_class,
                   test_per_class=test_per_class, seed=seed)
    return cached(cache_dir, "fractal_pool", options, GENERATOR_VERSION,
                  lambda: _generate_pool(classes, heldout, train_per_class, test_per_class, seed))


@lru_cache(maxsize=1)
def _generate_pool(classes: int, heldout: int, train_per_class: int, test_per_class: int, seed: int) -> Dataset:
    if min(classes, train_per_class, test_per_class) < 1 or heldout < 0:
        raise TransferscaleError(
            "fractals: need classes, train_per_class and test_per_class >= 1 and heldout >= 0; got "
            f"classes={classes}, heldout={heldout}, train_per_class={train_per_class}, "
            f"test_per_class={test_per_class}")
    n, per_class = classes + heldout, train_per_class + test_per_class
    x, y = generate_fractals(n, per_class, seed)
    is_train = np.tile(np.arange(per_class) < train_per_class, n)
    pool = Dataset("fractal_pool", x[is_train], y[is_train], x[~is_train], y[~is_train],
                   [f"fractal_{c:03d}" for c in range(n)])
    for a in (pool.x_train, pool.y_train, pool.x_test, pool.y_test):
        a.flags.writeable = False  # shared by every caller in this process
    return pool


def _select_classes(pool: Dataset, first: int, stop: int, name: str) -> Dataset:
    """Classes first .. stop - 1 of the pool, relabelled from 0, as fresh (writeable) arrays."""
    keep_train = (pool.y_train >= first) & (pool.y_train < stop)
    keep_test = (pool.y_test >= first) & (pool.y_test < stop)
    return Dataset(name, pool.x_train[keep_train], pool.y_train[keep_train] - first,
                   pool.x_test[keep_test], pool.y_test[keep_test] - first, pool.classes[first:stop])


# ---- downstream: real digits and clothes, aligned, shifted, inverted ----------------------------------


def _downstream(name: str, arrays: sources.Arrays, classes: list[str], train_per_class: int | None,
                test_size: int | None, seed: int, variant: str = "aligned") -> Dataset:
    x_train, y_train, x_test, y_test = arrays
    pick = np.random.default_rng([seed, 1])
    train = per_class_subset(y_train, train_per_class, pick, name)
    test = stratified_subset(y_test, test_size, pick, name)
    x_train, y_train, x_test, y_test = x_train[train], y_train[train], x_test[test], y_test[test]
    if variant == "shifted":
        warp = np.random.default_rng([seed, 2])
        x_train, x_test = random_affine(x_train, warp), random_affine(x_test, warp)
    elif variant == "inverted":
        x_train, x_test = invert(x_train), invert(x_test)
    return Dataset(name, x_train, y_train, x_test, y_test, classes)


@register_dataset("opencv_digits", "OpenCV's 5,000 handwritten digits, aligned and centred (far task)")
def opencv_digits(train_per_class: int | None = 50, test_size: int | None = 1000, seed: int = 0,
                  root: str | None = None):
    return _downstream("opencv_digits", sources.load_opencv_digits(root), sources.DIGIT_CLASSES,
                       train_per_class, test_size, seed)


@register_dataset("opencv_digits_shifted",
                  "OpenCV digits, each rotated +-15 deg, zoomed 0.85-1.15, shifted +-3.5 px (mid task)")
def opencv_digits_shifted(train_per_class: int | None = 50, test_size: int | None = 1000, seed: int = 0,
                          root: str | None = None):
    return _downstream("opencv_digits_shifted", sources.load_opencv_digits(root), sources.DIGIT_CLASSES,
                       train_per_class, test_size, seed, "shifted")


@register_dataset("sklearn_digits", "scikit-learn's 1,797 8x8 digits, upscaled to 20x20 and centred (far task)")
def sklearn_digits(train_per_class: int | None = 50, test_size: int | None = 1000, seed: int = 0):
    return _downstream("sklearn_digits", sources.load_sklearn_digits(), sources.DIGIT_CLASSES,
                       train_per_class, test_size, seed)


@register_dataset("sklearn_digits_shifted",
                  "scikit-learn digits, each rotated +-15 deg, zoomed 0.85-1.15, shifted +-3.5 px (mid task)")
def sklearn_digits_shifted(train_per_class: int | None = 50, test_size: int | None = 1000, seed: int = 0):
    return _downstream("sklearn_digits_shifted", sources.load_sklearn_digits(), sources.DIGIT_CLASSES,
                       train_per_class, test_size, seed, "shifted")


@register_dataset("fashion_mnist", "Fashion-MNIST clothes, aligned (far task)")
def fashion_mnist(train_per_class: int | None = 50, test_size: int | None = 1000, seed: int = 0,
                  root: str | None = None):
    return _downstream("fashion_mnist", sources.load_fashion_mnist(root), sources.FASHION_MNIST_CLASSES,
                       train_per_class, test_size, seed)


@register_dataset("fashion_mnist_shifted",
                  "Fashion-MNIST, each rotated +-15 deg, zoomed 0.85-1.15, shifted +-3.5 px (mid task)")
def fashion_mnist_shifted(train_per_class: int | None = 50, test_size: int | None = 1000, seed: int = 0,
                          root: str | None = None):
    return _downstream("fashion_mnist_shifted", sources.load_fashion_mnist(root), sources.FASHION_MNIST_CLASSES,
                       train_per_class, test_size, seed, "shifted")


@register_dataset("fashion_mnist_inverted", "Fashion-MNIST with inverted intensities, white background (far task)")
def fashion_mnist_inverted(train_per_class: int | None = 50, test_size: int | None = 1000, seed: int = 0,
                           root: str | None = None):
    return _downstream("fashion_mnist_inverted", sources.load_fashion_mnist(root), sources.FASHION_MNIST_CLASSES,
                       train_per_class, test_size, seed, "inverted")
