"""The one shape every dataset takes, and the seeded stratified selections that cut them to size."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transferscale.errors import TransferscaleError

IMAGE_SHAPE = (28, 28)


@dataclass(eq=False, repr=False)
class Dataset:
    """Single-channel 28x28 uint8 images (0 = background) with int64 labels 0 .. n_classes - 1."""

    name: str
    x_train: np.ndarray  # (N, 28, 28) uint8
    y_train: np.ndarray  # (N,) int64
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]

    def __post_init__(self) -> None:
        self.classes = [str(c) for c in self.classes]
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.dtype != np.uint8 or x.shape[1:] != IMAGE_SHAPE or x.ndim != 3:
                raise ValueError(f"{self.name}: x_{split} must be uint8 (N, 28, 28), got {x.dtype} {x.shape}")
            if y.dtype != np.int64 or y.shape != (len(x),):
                raise ValueError(f"{self.name}: y_{split} must be int64 ({len(x)},), got {y.dtype} {y.shape}")
            if len(y) and (y.min() < 0 or y.max() >= len(self.classes)):
                raise ValueError(f"{self.name}: y_{split} labels must lie in 0 .. {len(self.classes) - 1}")

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={len(self.x_train)}, test={len(self.x_test)}, "
                f"n_classes={self.n_classes})")


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices (each sorted) putting round(test_fraction * n_c) of every class c in test."""
    rng = np.random.default_rng([seed, 0x5911])
    train, test = [], []
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        n_test = int(round(test_fraction * len(members)))
        test.append(members[:n_test])
        train.append(members[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def per_class_subset(y: np.ndarray, per_class: int | None, rng: np.random.Generator, what: str) -> np.ndarray:
    """Sorted indices of `per_class` random members of every class (all of them when None)."""
    if per_class is None:
        return np.arange(len(y))
    counts = np.bincount(y)
    if per_class < 1 or per_class > counts.min():
        raise TransferscaleError(
            f"{what}: train_per_class={per_class} is out of range; pass 1 .. {counts.min()} "
            "(the smallest class's train pool) or None for all")
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False)
                                   for c in range(len(counts))]))


def stratified_subset(y: np.ndarray, size: int | None, rng: np.random.Generator, what: str) -> np.ndarray:
    """Sorted indices of `size` random examples, each class in proportion to its share of y.

    Class shares are rounded by largest remainder, so the sizes sum to `size` exactly.
    """
    if size is None:
        return np.arange(len(y))
    if size < 1 or size > len(y):
        raise TransferscaleError(
            f"{what}: test_size={size} is out of range; pass 1 .. {len(y)} (the test split) or None for all")
    counts = np.bincount(y)
    share = counts * size / len(y)
    take = np.floor(share).astype(int)
    by_remainder = np.argsort(-(share - take), kind="stable")
    take[by_remainder[:size - take.sum()]] += 1
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), k, replace=False)
                                   for c, k in enumerate(take)]))
