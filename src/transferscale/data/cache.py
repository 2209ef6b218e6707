"""A content-addressed on-disk cache of built datasets: one .npz per (name, options, version).

Each entry is written atomically (temp file, then os.replace) with its sha256 in a `.sha256` file beside
it. A load recomputes the hash; an entry that is missing, truncated, corrupted or unreadable is rebuilt,
never trusted.

Only image datasets are stored. Text inputs are object arrays of str, which npz can hold only as pickles
(and entries are read with allow_pickle=False); a text dataset handed to `cached` is returned as built and
nothing is written. Text builders are registered with cache=False so they do not reach here at all.

The cache only saves time: a cache directory that cannot be written (full, read-only, a shared cache of
another user's) costs the build, not the study. The dataset is used as built, a warning names the directory
and how to choose another (TRANSFERSCALE_CACHE, `run --cache-dir`), and no temporary file is left behind.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from transferscale.data.dataset import Dataset
from transferscale.files import file_sha256, replace, temp_beside, with_path

log = logging.getLogger(__name__)


def cache_key(name: str, options: dict, version: str) -> str:
    """A stable hash of what the data depend on; the order options were given in does not matter."""
    text = json.dumps({"name": name, "options": options, "version": version}, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def cached(cache_dir: str | os.PathLike | None, name: str, options: dict, version: str,
           build: Callable[[], Dataset]) -> Dataset:
    """The dataset from cache_dir when a valid entry exists; otherwise build() it and store it there."""
    if cache_dir is None:
        return build()
    path = Path(cache_dir) / f"{name}-{cache_key(name, options, version)}.npz"
    dataset = _read(path)
    if dataset is None:
        dataset = build()
        if dataset.modality == "image":
            try:
                _write(path, dataset)
            except OSError as err:
                log.warning("data cache: cannot write %s (%s); using %s as built, without caching it (set "
                            "TRANSFERSCALE_CACHE or `run --cache-dir` to a writable directory to keep it)",
                            err.filename or path, err.strerror or err, name)
    return dataset


def _sha256(path: Path) -> str:
    return file_sha256(path)


def _checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _read(path: Path) -> Dataset | None:
    try:
        expected = _checksum_path(path).read_text().split()[0]
        if _sha256(path) != expected:
            return None
        with np.load(path, allow_pickle=False) as z:
            return Dataset(str(z["name"]), z["x_train"], z["y_train"], z["x_test"], z["y_test"],
                           z["classes"].tolist())
    except (OSError, EOFError, IndexError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def _write(path: Path, dataset: Dataset) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise with_path(err, path.parent) from None
    arrays = dict(name=np.array(dataset.name), x_train=dataset.x_train, y_train=dataset.y_train,
                  x_test=dataset.x_test, y_test=dataset.y_test, classes=np.array(dataset.classes))
    # the checksum goes first: a crash between the two renames leaves a mismatch, which reads as "rebuild"
    npz_tmp = temp_beside(path, lambda f: np.savez(f, **arrays))
    try:
        digest = _sha256(npz_tmp)
        sha_tmp = temp_beside(_checksum_path(path), lambda f: f.write(f"{digest}  {path.name}\n".encode()))
        replace(sha_tmp, _checksum_path(path))
    except BaseException:
        npz_tmp.unlink(missing_ok=True)
        raise
    replace(npz_tmp, path)
