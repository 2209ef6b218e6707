"""Offline image sources, each as uint8 (N, 28, 28) arrays with int64 labels, 0 = background.

Each loader returns (x_train, y_train, x_test, y_test). Sets without a split of their own (OpenCV digits,
scikit-learn digits) get a fixed stratified one (split_seed), so their test population does not move when a
study's seed does.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from transferscale.data.dataset import stratified_split
from transferscale.errors import TransferscaleError

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
OPENCV_DIGITS_ROOT = "/usr/share/doc/opencv-doc/examples/data"
DIGIT_CLASSES = [str(d) for d in range(10)]

_IDX_DTYPES = {0x08: np.uint8}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX array (the MNIST file format), gzip-compressed or not.

    Header: two zero bytes, a type byte (0x08 = unsigned byte), a byte giving the number of dimensions,
    then each dimension as a big-endian uint32; the data follow in C order.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise TransferscaleError(f"{path} is not an unsigned-byte IDX file; replace it with the original download")
    ndim = data[3]
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(shape)):
        raise TransferscaleError(f"{path} is truncated ({len(data) - offset} bytes for shape {shape}); "
                                 "replace it with the original download")
    return np.frombuffer(data, _IDX_DTYPES[data[2]], offset=offset).reshape(shape).copy()


def load_fashion_mnist(root: str | os.PathLike | None = None) -> Arrays:
    """Fashion-MNIST, 60,000 train / 10,000 test, from the four IDX gzip files in `root`."""
    root = Path(root or FASHION_MNIST_ROOT)
    names = {split: (f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz")
             for split, prefix in (("train", "train"), ("test", "t10k"))}
    missing = [n for pair in names.values() for n in pair if not (root / n).is_file()]
    if missing:
        raise TransferscaleError(
            f"Fashion-MNIST not found: {root} lacks {', '.join(missing)}. Install it with "
            "`apt-get install dataset-fashion-mnist`, or pass root= a folder holding the four IDX gzip files")
    out = []
    for images, labels in names.values():
        out += [read_idx(root / images), read_idx(root / labels).astype(np.int64)]
    return tuple(out)


def load_opencv_digits(root: str | os.PathLike | None = None, split_seed: int = 0,
                       test_fraction: float = 0.5) -> Arrays:
    """OpenCV's digits.png: 5,000 handwritten digits, 20x20 each, padded to 28x28 like MNIST.

    The sheet is 2000 x 1000 px, 100 digits per row, 500 of each digit 0..9 in order (5 rows per digit).
    """
    path = Path(root or OPENCV_DIGITS_ROOT) / "digits.png"
    if not path.is_file():
        raise TransferscaleError(
            f"OpenCV digits not found: {path} does not exist. Install it with `apt-get install opencv-doc`, "
            "or pass root= the folder holding digits.png")
    sheet = _read_grey_png(path)
    if sheet.shape != (1000, 2000):
        raise TransferscaleError(f"{path} is {sheet.shape[1]}x{sheet.shape[0]} px, not OpenCV's 2000x1000 "
                                 "digits sheet; reinstall opencv-doc")
    digits = sheet.reshape(50, 20, 100, 20).transpose(0, 2, 1, 3).reshape(5000, 20, 20)
    labels = np.repeat(np.arange(10, dtype=np.int64), 500)
    return _split(_pad_to_28(digits), labels, split_seed, test_fraction)


def load_sklearn_digits(split_seed: int = 0, test_fraction: float = 0.6) -> Arrays:
    """scikit-learn's 1,797 8x8 digits (values 0-16): bilinear to 20x20, scaled to 0-255, padded to 28x28."""
    from scipy.ndimage import zoom
    from sklearn.datasets import load_digits

    bunch = load_digits()
    big = zoom(bunch.images.astype(np.float64), (1, 20 / 8, 20 / 8), order=1)
    digits = np.clip(np.rint(big * (255 / 16)), 0, 255).astype(np.uint8)
    return _split(_pad_to_28(digits), bunch.target.astype(np.int64), split_seed, test_fraction)


def _read_grey_png(path: Path) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:  # matplotlib reads PNG without Pillow
        import matplotlib.image

        return np.rint(matplotlib.image.imread(path) * 255).astype(np.uint8)
    with Image.open(path) as im:
        return np.asarray(im.convert("L"), dtype=np.uint8)


def _pad_to_28(x: np.ndarray) -> np.ndarray:
    n, h, w = x.shape
    out = np.zeros((n, 28, 28), np.uint8)
    top, left = (28 - h) // 2, (28 - w) // 2
    out[:, top:top + h, left:left + w] = x
    return out


def _split(x: np.ndarray, y: np.ndarray, split_seed: int, test_fraction: float) -> Arrays:
    train, test = stratified_split(y, test_fraction, split_seed)
    return x[train], y[train], x[test], y[test]
