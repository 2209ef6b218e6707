"""Datasets for transfer studies: generated fractals upstream, offline digits and clothes downstream,
and readers for data brought along: image folders, saved Hugging Face datasets, packaged text corpora.

    >>> from transferscale.data import load_dataset, list_datasets
    >>> upstream = load_dataset("fractals", cache_dir=".cache/data")       # 100 classes x (300 + 60)
    >>> near = load_dataset("fractals_heldout", cache_dir=".cache/data")   # the 10 classes held out
    >>> far = load_dataset("fashion_mnist_inverted", seed=1)

    >>> pets = load_dataset("image_folder", root="/data/pets", size=64)          # root/CLASS/*.jpg
    >>> news = load_dataset("bbc_news", train_per_class=50, max_chars=2000)     # text

The catalog's sets are 28x28 single-channel uint8 (0 = background); image_folder and hf_disk give uint8
(N, H, W) or (N, H, W, 3) of any size, the text sets a 1-D array of str. Labels are int64. numpy / scipy /
scikit-learn / Pillow only, `datasets` imported when hf_disk runs: no torch here.
"""
from transferscale.data import catalog as _catalog  # noqa: F401  (these imports register the datasets)
from transferscale.data import folders as _folders  # noqa: F401
from transferscale.data import hf as _hf  # noqa: F401
from transferscale.data import text as _text  # noqa: F401
from transferscale.data.dataset import Dataset
from transferscale.data.fractals import generate_fractals
from transferscale.data.registry import (
    DATA_VERSION,
    dataset_options,
    describe,
    list_datasets,
    load_dataset,
    register_dataset,
)
from transferscale.data.sources import load_fashion_mnist, load_opencv_digits, load_sklearn_digits, read_idx
from transferscale.data.transforms import affine, invert, random_affine

__all__ = [
    "DATA_VERSION", "Dataset", "affine", "dataset_options", "describe", "generate_fractals", "invert",
    "list_datasets", "load_dataset", "load_fashion_mnist", "load_opencv_digits", "load_sklearn_digits",
    "random_affine", "read_idx", "register_dataset",
]
