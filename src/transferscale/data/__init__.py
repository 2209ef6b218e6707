"""Datasets for transfer studies: generated fractals upstream, offline digits and clothes downstream.

    >>> from transferscale.data import load_dataset, list_datasets
    >>> upstream = load_dataset("fractals", cache_dir=".cache/data")       # 100 classes x (300 + 60)
    >>> near = load_dataset("fractals_heldout", cache_dir=".cache/data")   # the 10 classes held out
    >>> far = load_dataset("fashion_mnist_inverted", seed=1)

Every dataset is 28x28 single-channel uint8 (0 = background) with int64 labels. numpy / scipy / scikit-learn
only: no torch here.
"""
from transferscale.data import catalog as _catalog  # noqa: F401  (registers the datasets)
from transferscale.data.dataset import Dataset
from transferscale.data.fractals import generate_fractals
from transferscale.data.registry import (DATA_VERSION, dataset_options, describe, list_datasets, load_dataset,
                                         register_dataset)
from transferscale.data.sources import load_fashion_mnist, load_opencv_digits, load_sklearn_digits, read_idx
from transferscale.data.transforms import affine, invert, random_affine

__all__ = [
    "DATA_VERSION", "Dataset", "affine", "dataset_options", "describe", "generate_fractals", "invert",
    "list_datasets", "load_dataset", "load_fashion_mnist", "load_opencv_digits", "load_sklearn_digits",
    "random_affine", "read_idx", "register_dataset",
]
