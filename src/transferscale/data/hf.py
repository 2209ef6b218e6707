"""`hf_disk`: a Hugging Face `datasets` dataset, saved with `save_to_disk` and read back offline.

    # on a machine with internet:
    datasets.load_dataset("cifar10").save_to_disk("/data/cifar10")
    # here:
    load_dataset("hf_disk", path="/data/cifar10", input_column="img", size=32)

`path` holds either a DatasetDict (its "train" split, and its "test" split, or "validation" when there is
no "test") or one Dataset, which then gets a fixed stratified split (test_fraction, split_seed) like every
set without a split of its own. `hub_name` instead asks the Hub through `datasets.load_dataset`; offline
that fails with a message saying how to bring the data over.

The input column (default: "image" when there is one, else "text") holds images (an Image feature, or
arrays of 0..255) or strings; `size` and `channels` shape images as image_folder does, `max_chars` cuts
texts. Class names come from the label column's ClassLabel feature when it has one, else they are its
sorted distinct values. An image set read from `path` is cached (given a cache_dir) keyed by its options and
a fingerprint of the saved files; text and Hub sets are not cached.

`datasets` is imported only when the builder runs.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from transferscale.data.cache import cached
from transferscale.data.dataset import Dataset
from transferscale.data.folders import check_image_options, fingerprint, fixed_split, images_to_array, pick
from transferscale.data.registry import DATA_VERSION, register_dataset
from transferscale.errors import TransferscaleError

WHAT = "hf_disk"


def _import_datasets():
    try:
        import datasets
    except ImportError:
        raise TransferscaleError(f"{WHAT} needs the Hugging Face datasets package: `pip install datasets`") from None
    return datasets


def _open(path: str | None, hub_name: str | None):
    """(train split, test split or None, the saved folder or None) of the dataset at path or on the Hub."""
    datasets = _import_datasets()
    if (path is None) == (hub_name is None):
        raise TransferscaleError(
            f"{WHAT}: pass exactly one of path= (a folder written by save_to_disk) and hub_name= (a Hub id); "
            f"got path={path!r}, hub_name={hub_name!r}")
    if path is not None:
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise TransferscaleError(f"{WHAT}: path={path!r} is not a folder; pass the folder a dataset was "
                                     "saved to with Dataset.save_to_disk or DatasetDict.save_to_disk")
        try:
            loaded = datasets.load_from_disk(str(folder))
        except (FileNotFoundError, ValueError, KeyError, OSError) as e:
            raise TransferscaleError(f"{WHAT}: {folder} is not a dataset saved with save_to_disk "
                                     f"({type(e).__name__}: {e})") from None
    else:
        folder = None
        try:
            loaded = datasets.load_dataset(hub_name)
        except Exception as e:  # offline this is a connection or not-found error; any failure means the same
            raise TransferscaleError(
                f"{WHAT}: cannot load {hub_name!r} from the Hugging Face Hub ({type(e).__name__}: {e}). "
                f"Save it on a machine with internet access, `datasets.load_dataset({hub_name!r})"
                ".save_to_disk('DIR')`, copy DIR here and pass path='DIR' instead of hub_name") from e
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise TransferscaleError(f"{WHAT}: the saved DatasetDict has splits {list(loaded)} but no 'train'; "
                                     "save one with a 'train' split (and 'test'), or a single Dataset")
        test = loaded["test"] if "test" in loaded else loaded["validation"] if "validation" in loaded else None
        return loaded["train"], test, folder
    return loaded, None, folder


def _labels(splits, column: str, datasets) -> tuple[list[np.ndarray], list[str]]:
    """Labels 0 .. k-1 of each split, and the k class names."""
    feature = splits[0].features[column]
    values = [list(s[column]) for s in splits]
    if isinstance(feature, datasets.ClassLabel):
        for s in splits[1:]:
            if s.features[column] != feature:
                raise TransferscaleError(f"{WHAT}: the splits' {column!r} ClassLabels differ "
                                         f"({feature.names} vs {s.features[column].names})")
        ys = [np.asarray(v, dtype=np.int64) for v in values]
        for name, y in zip(("train", "test"), ys, strict=False):
            if len(y) and y.min() < 0:
                raise TransferscaleError(
                    f"{WHAT}: {int((y < 0).sum())} rows of the {name} split have no label (-1), as the "
                    "unlabelled test splits of benchmarks do; save a dataset whose splits are all labelled "
                    "(e.g. its validation split as 'test')")
        return ys, list(feature.names)
    if any(v is None for vs in values for v in vs):
        raise TransferscaleError(f"{WHAT}: column {column!r} has missing (None) labels; drop those rows first")
    try:
        distinct = sorted({v for vs in values for v in vs})
    except TypeError:
        raise TransferscaleError(f"{WHAT}: column {column!r} mixes label types; make them all str or all int") from None
    index = {v: i for i, v in enumerate(distinct)}
    return [np.array([index[v] for v in vs], dtype=np.int64) for vs in values], [str(v) for v in distinct]


def _modality(feature, datasets) -> str:
    if isinstance(feature, datasets.Image):
        return "image"
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        return "text"
    if isinstance(feature, datasets.Value):
        raise TransferscaleError(f"{WHAT}: the input column holds {feature.dtype} values, neither images nor "
                                 "text; pick another input_column")
    return "image"  # Array2D / Array3D / nested lists: pixel arrays


def _inputs(ds, rows: np.ndarray, column: str, modality: str, split: str, size: int | None, channels: int,
            max_chars: int | None) -> np.ndarray:
    items = list(ds.select(rows.tolist())[column]) if len(rows) else []
    names = [f"{split} row {r}" for r in rows]
    if modality == "text":
        bad = [n for n, t in zip(names, items, strict=True) if not isinstance(t, str)]
        if bad:
            raise TransferscaleError(f"{WHAT}: {bad[0]} of column {column!r} is not a string")
        out = np.empty(len(items), dtype=object)
        out[:] = [t[:max_chars] for t in items] if max_chars is not None else items
        return out
    items = [io.BytesIO(i["bytes"]) if isinstance(i, dict) and i.get("bytes") else
             i["path"] if isinstance(i, dict) else i for i in items]  # an Image feature with decode=False
    return images_to_array(items, names, size, channels, WHAT)


def _declared_modality(options: dict) -> str:
    """hf_disk's modality from its options: the input column's feature type, read from the saved dataset's
    metadata (nothing is decoded); "image" when that cannot be read yet (the build will say why)."""
    try:
        datasets = _import_datasets()
        train_ds, _, _ = _open(options.get("path"), options.get("hub_name"))
        column = options.get("input_column") or ("image" if "image" in train_ds.column_names else "text")
        return _modality(train_ds.features[column], datasets)
    except (TransferscaleError, KeyError, OSError, ValueError):
        return "image"


@register_dataset("hf_disk", "a Hugging Face datasets dataset saved with save_to_disk (images or text)",
                  modality=_declared_modality)
def hf_disk(path: str | None = None, hub_name: str | None = None, input_column: str | None = None,
            label_column: str = "label", size: int | None = None, channels: int = 3,
            max_chars: int | None = None, train_per_class: int | None = None, test_size: int | None = None,
            test_fraction: float = 0.2, split_seed: int = 0, seed: int = 0,
            cache_dir: str | None = None) -> Dataset:
    check_image_options(size, channels, WHAT)
    if max_chars is not None and max_chars < 1:
        raise TransferscaleError(f"{WHAT}: max_chars={max_chars}; pass a length >= 1, or None to keep whole texts")
    datasets = _import_datasets()
    train_ds, test_ds, folder = _open(path, hub_name)
    columns = train_ds.column_names
    if input_column is None:
        input_column = "image" if "image" in columns else "text" if "text" in columns else None
        if input_column is None:
            raise TransferscaleError(f"{WHAT}: no 'image' or 'text' column; pass input_column= one of {columns}")
    for role, column in (("input_column", input_column), ("label_column", label_column)):
        for split, ds in (("train", train_ds), ("test", test_ds)):
            if ds is not None and column not in ds.column_names:
                raise TransferscaleError(f"{WHAT}: {role}={column!r} is not a column of the {split} split; "
                                         f"its columns: {ds.column_names}")
    modality = _modality(train_ds.features[input_column], datasets)

    if test_ds is None:
        (y,), classes = _labels([train_ds], label_column, datasets)
        train_rows, test_rows = fixed_split(y, test_fraction, split_seed, WHAT)
        test_ds, y_train, y_test = train_ds, y[train_rows], y[test_rows]
        split = dict(test_fraction=float(test_fraction), split_seed=split_seed)
    else:
        (y_train, y_test), classes = _labels([train_ds, test_ds], label_column, datasets)
        train_rows, test_rows = np.arange(len(y_train)), np.arange(len(y_test))
        split = dict(layout="train/test")
    tr, te = pick(y_train, y_test, train_per_class, test_size, seed, WHAT)

    def build() -> Dataset:
        x_train = _inputs(train_ds, train_rows[tr], input_column, modality, "train", size, channels, max_chars)
        x_test = _inputs(test_ds, test_rows[te], input_column, modality, "test", size, channels, max_chars)
        return Dataset(WHAT, x_train, y_train[tr], x_test, y_test[te], classes)

    if cache_dir is None or modality == "text" or folder is None:
        return build()
    files = sorted((f for f in folder.rglob("*") if f.is_file()), key=lambda f: f.relative_to(folder).as_posix())
    options = dict(path=str(folder.resolve()), input_column=input_column, label_column=label_column, size=size,
                   channels=channels, train_per_class=train_per_class, test_size=test_size, seed=seed, **split,
                   files=fingerprint(files, folder))
    return cached(cache_dir, WHAT, options, DATA_VERSION, build)
