"""The one container every dataset fills (images of any size, or text), and the seeded stratified selections
that cut datasets to size."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from transferscale.errors import TransferscaleError

MODALITIES = ("image", "text")


@dataclass(frozen=True)
class InputSpec:
    """What a dataset's inputs are, so a model source can say whether (and how) it reads them.

    image: uint8 arrays (N, H, W) for one channel or (N, H, W, C), 0 = background for the generated and
    digit sets; `size` = (H, W), `channels` = C. text: a 1-D array of Python strings; size and channels None.
    """

    modality: str
    size: tuple[int, int] | None = None
    channels: int | None = None

    def describe(self) -> str:
        if self.modality == "text":
            return "text"
        return f"{self.size[0]}x{self.size[1]} images with {self.channels} channel(s)"


def input_spec_of(x: np.ndarray) -> InputSpec:
    """The InputSpec of an array of inputs; raises ValueError for anything that is neither images nor text."""
    if x.dtype == np.uint8 and x.ndim in (3, 4):
        channels = 1 if x.ndim == 3 else x.shape[3]
        if channels not in (1, 2, 3, 4):
            raise ValueError(f"images must be (N, H, W) or (N, H, W, C) with C <= 4, got shape {x.shape}")
        return InputSpec("image", (int(x.shape[1]), int(x.shape[2])), int(channels))
    if x.ndim == 1 and (x.dtype.kind == "U" or (x.dtype == object and all(isinstance(t, str) for t in x))):
        return InputSpec("text")
    raise ValueError(f"inputs must be uint8 images (N, H, W[, C]) or a 1-D array of strings, got {x.dtype} {x.shape}")


@dataclass(eq=False, repr=False)
class Dataset:
    """Inputs (uint8 images of any size and channel count, or strings) with int64 labels 0 .. n_classes - 1.

    Train and test inputs share one InputSpec (same modality, image size and channels).
    """

    name: str
    x_train: np.ndarray  # (N, H, W) or (N, H, W, C) uint8, or (N,) strings
    y_train: np.ndarray  # (N,) int64
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]

    def __post_init__(self) -> None:
        self.classes = [str(c) for c in self.classes]
        specs = []
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            try:
                specs.append(input_spec_of(x))
            except ValueError as e:
                raise ValueError(f"{self.name}: x_{split}: {e}") from None
            if y.dtype != np.int64 or y.shape != (len(x),):
                raise ValueError(f"{self.name}: y_{split} must be int64 ({len(x)},), got {y.dtype} {y.shape}")
            if len(y) and (y.min() < 0 or y.max() >= len(self.classes)):
                raise ValueError(f"{self.name}: y_{split} labels must lie in 0 .. {len(self.classes) - 1}")
        if specs[0] != specs[1]:
            raise ValueError(f"{self.name}: train inputs are {specs[0].describe()} but test inputs are "
                             f"{specs[1].describe()}")

    @property
    def input_spec(self) -> InputSpec:
        return input_spec_of(self.x_train)

    @property
    def modality(self) -> str:
        return self.input_spec.modality

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, {self.input_spec.describe()}, train={len(self.x_train)}, "
                f"test={len(self.x_test)}, n_classes={self.n_classes})")


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
