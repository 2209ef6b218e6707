"""`image_folder`: any folder of images laid out like torchvision's ImageFolder, read with Pillow.

    root/CLASS/xxx.png                          one pool: a fixed stratified split (test_fraction, split_seed)
    root/train/CLASS/... and root/test/CLASS/   the folder's own split (root/val/ stands in for a missing test/)

Classes are the sorted sub-folder names (of train/ in the split layout; test/ may not name others). Every
file below a class folder whose name ends in one of IMAGE_EXTENSIONS (any case) is an example, found
recursively and taken in sorted path order; names starting with "." (hidden folders, macOS "._x.jpg"
files) are skipped. Images become uint8 (N, H, W) grey (channels=1) or (N, H, W, 3) RGB (channels=3,
the default, as torchvision's loader does). size=S resizes every image to S x S (bilinear, aspect ratio
not kept); size=None keeps the native size, which then has to be the same for every image used.

Only the examples a study uses are decoded: the train_per_class / test_size subsets are drawn from the
file labels first. Given a cache_dir, the decoded set is cached keyed by its options and by a fingerprint
of the listed files (path, size, mtime), so changing the folder's contents invalidates the entry.

This module also holds the split and subset helpers that the other file-based sets (hf.py, text.py) share.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from transferscale.data.cache import cached
from transferscale.data.dataset import Dataset, per_class_subset, stratified_split, stratified_subset
from transferscale.data.registry import DATA_VERSION, register_dataset
from transferscale.errors import TransferscaleError

# the extensions torchvision's ImageFolder accepts
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

# ---- helpers shared by the file-based datasets ---------------------------------------------------------


def check_split_options(test_fraction: float, split_seed: int, what: str) -> None:
    if not 0 < test_fraction < 1:
        raise TransferscaleError(f"{what}: test_fraction={test_fraction}; pass a fraction strictly between 0 and 1")
    if split_seed < 0:
        raise TransferscaleError(f"{what}: split_seed={split_seed}; seeds are integers >= 0")


def fixed_split(y: np.ndarray, test_fraction: float, split_seed: int,
                what: str) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices of a set without a split of its own; they depend on split_seed only."""
    check_split_options(test_fraction, split_seed, what)
    return stratified_split(y, test_fraction, split_seed)


def pick(y_train: np.ndarray, y_test: np.ndarray, train_per_class: int | None, test_size: int | None,
         seed: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Indices into each split: train_per_class of every class, and a stratified test_size (None = all).

    Draws the way the catalog's downstream sets do, so one seed means the same thing everywhere.
    """
    if len(y_train) == 0 or len(y_test) == 0:
        empty = "train" if len(y_train) == 0 else "test"
        raise TransferscaleError(f"{what}: the {empty} split is empty; it needs examples in both splits "
                                 "(with a fixed split, raise test_fraction or add examples)")
    rng = np.random.default_rng([seed, 1])
    return (per_class_subset(y_train, train_per_class, rng, what),
            stratified_subset(y_test, test_size, rng, what))


def check_image_options(size: int | None, channels: int, what: str) -> None:
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
        raise TransferscaleError(f"{what}: size={size!r}; pass a side length in pixels >= 1, or None for "
                                 "the images' native size")
    if channels not in (1, 3):
        raise TransferscaleError(f"{what}: channels={channels!r}; pass 1 (grey) or 3 (RGB)")


def images_to_array(images: Iterable, names: Sequence[str], size: int | None, channels: int,
                    what: str) -> np.ndarray:
    """uint8 (N, H, W) for channels=1 or (N, H, W, 3) for channels=3 from PIL images, paths or arrays.

    Each item is a path or open binary file (read with Pillow), a PIL image, or an integer array (H, W) /
    (H, W, C) of values 0..255; names[i] says where item i came from, for error messages.
    """
    from PIL import Image, UnidentifiedImageError

    mode = "L" if channels == 1 else "RGB"
    out, first = [], None
    for item, name in zip(images, names, strict=True):
        try:
            if isinstance(item, (str, os.PathLike)) or hasattr(item, "read"):
                with Image.open(item) as im:
                    im = im.convert(mode)
            else:
                im = item if isinstance(item, Image.Image) else Image.fromarray(_as_uint8(item, name, what))
                im = im.convert(mode)
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise TransferscaleError(f"{what}: cannot read image {name}: {e}") from None
        if size is not None:
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
        elif first is None:
            first = (name, im.size)
        elif im.size != first[1]:
            (w0, h0), (w, h) = first[1], im.size
            raise TransferscaleError(
                f"{what}: images differ in size ({first[0]} is {w0}x{h0} px, {name} is {w}x{h} px); pass "
                "size=N to resize every image to N x N")
        out.append(np.asarray(im, dtype=np.uint8))
    if not out:
        raise TransferscaleError(f"{what}: no images to read")
    return np.stack(out)


def _as_uint8(item, name: str, what: str) -> np.ndarray:
    a = np.asarray(item)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise TransferscaleError(f"{what}: {name} is an array of shape {a.shape}, not an image (H, W[, C])")
    if a.dtype != np.uint8:
        if a.size and (np.nanmin(a) < 0 or np.nanmax(a) > 255 or not np.all(np.mod(a, 1) == 0)):
            raise TransferscaleError(f"{what}: {name} holds {a.dtype} values outside the integers 0..255; "
                                     "store images as uint8 (or as image files)")
        a = a.astype(np.uint8)
    return a


def fingerprint(files: Iterable[Path], base: Path) -> str:
    """A hash of each file's path (relative to base), size and modification time."""
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(base).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


# ---- image_folder ----------------------------------------------------------------------------------------


def _visible_dirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    found = []
    for here, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(here, f) for f in files
                  if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _list_split(folder: Path, classes: list[str], what: str) -> tuple[list[Path], np.ndarray]:
    files, labels, empty = [], [], []
    for c, name in enumerate(classes):
        found = _image_files(folder / name) if (folder / name).is_dir() else []
        if not found:
            empty.append(name)
        files += found
        labels += [c] * len(found)
    if empty:
        raise TransferscaleError(
            f"{what}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in class folder(s) "
            f"{', '.join(repr(e) for e in empty)} of {folder}; remove them or add images")
    return files, np.array(labels, dtype=np.int64)


def list_image_folder(root: Path, what: str = "image_folder"):
    """(classes, train files, train labels, test files or None, test labels or None) of an ImageFolder tree."""
    if not root.is_dir():
        raise TransferscaleError(f"{what}: root={str(root)!r} is not a folder; pass root= a folder holding "
                                 "one sub-folder of images per class (or train/ and test/ holding those)")
    tops = _visible_dirs(root)
    test_name = "test" if "test" in tops else "val" if "val" in tops else None
    if "train" in tops and test_name:
        classes = _visible_dirs(root / "train")
        extra = sorted(set(_visible_dirs(root / test_name)) - set(classes))
        if extra:
            raise TransferscaleError(f"{what}: {root / test_name} has class folder(s) {extra} that "
                                     f"{root / 'train'} lacks; train/ must hold every class")
        if not classes:
            raise TransferscaleError(f"{what}: {root / 'train'} has no class sub-folders")
        train_files, y_train = _list_split(root / "train", classes, what)
        test_files, y_test = [], []
        for name in _visible_dirs(root / test_name):
            found = _image_files(root / test_name / name)
            test_files += found
            y_test += [classes.index(name)] * len(found)
        return classes, train_files, y_train, test_files, np.array(y_test, dtype=np.int64)
    if "train" in tops or "test" in tops:
        half = "train" if "train" in tops else "test"
        other = "test/ (or val/)" if half == "train" else "train/"
        raise TransferscaleError(f"{what}: {root} has {half}/ but no {other}; give it both split folders, or "
                                 "put the class folders directly under root for a fixed split")
    if not tops:
        raise TransferscaleError(f"{what}: {root} has no sub-folders; put each class's images in root/CLASS/")
    files, labels = _list_split(root, tops, what)
    return tops, files, labels, None, None


@register_dataset("image_folder", "images in class folders (torchvision ImageFolder layout), read with Pillow")
def image_folder(root: str | None = None, size: int | None = None, channels: int = 3,
                 train_per_class: int | None = None, test_size: int | None = None, test_fraction: float = 0.2,
                 split_seed: int = 0, seed: int = 0, cache_dir: str | None = None) -> Dataset:
    what = "image_folder"
    if root is None:
        raise TransferscaleError(f"{what} needs root=: a folder holding one sub-folder of images per class "
                                 "(root/CLASS/*.png), or train/ and test/ folders laid out that way")
    check_image_options(size, channels, what)
    base = Path(root).expanduser()
    classes, train_files, y_train, test_files, y_test = list_image_folder(base, what)
    if test_files is None:
        files, labels = train_files, y_train
        train, test = fixed_split(labels, test_fraction, split_seed, what)
        train_files, y_train = [files[i] for i in train], labels[train]
        test_files, y_test = [files[i] for i in test], labels[test]
        split = dict(test_fraction=float(test_fraction), split_seed=split_seed)
    else:
        split = dict(layout="train/test")  # the folder's own split: test_fraction and split_seed unused
    tr, te = pick(y_train, y_test, train_per_class, test_size, seed, what)
    chosen = [train_files[i] for i in tr] + [test_files[i] for i in te]

    def build() -> Dataset:
        x = images_to_array(chosen, [str(f.relative_to(base)) for f in chosen], size, channels, what)
        return Dataset(what, x[:len(tr)], y_train[tr], x[len(tr):], y_test[te], classes)

    if cache_dir is None:
        return build()
    options = dict(root=str(base.resolve()), size=size, channels=channels, train_per_class=train_per_class,
                   test_size=test_size, seed=seed, **split,
                   files=fingerprint([*train_files, *test_files], base))
    return cached(cache_dir, what, options, DATA_VERSION, build)
