"""A disk cache of extracted features: every layer of one (checkpoint, dataset, split) in one `.npz` file.

Keyed by what determines the features: the checkpoint's identity, the dataset's name and options, the split,
and PREPROCESSING_VERSION. The key, as canonical JSON, is hashed (sha256) into the file name, so one key has
one file and a changed key is a miss, never a stale hit. Each file carries its key and a sha256 of its
arrays; loading re-hashes the arrays, and a file that is truncated, altered or unreadable is deleted and
recomputed, never trusted. Files are written to a temporary name in the same folder and moved into place
with os.replace, so a reader sees either no file or a complete one, even when a writer is killed midway.

numpy only: the caller's compute function runs the model.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from transferscale.errors import TransferscaleError
from transferscale.files import atomic_write, file_sha256, with_path

# Bump when the features `extract_layers` gives for the same checkpoint and images change (preprocessing,
# pooling, layer numbering): every file keyed with an older version becomes a miss.
PREPROCESSING_VERSION = 1
REQUIRED = ("checkpoint", "dataset", "split")
_TMP_PREFIX = ".tmp-"
_STALE_S = 3600  # a temporary file this old was left by a killed writer (a save takes seconds)

log = logging.getLogger(__name__)

Layers = dict[int, np.ndarray]


def feature_key(checkpoint: str, dataset: str, options: Mapping | None = None, split: str = "train",
                preprocessing: int = PREPROCESSING_VERSION) -> dict:
    """The cache key of one (checkpoint, dataset, split): `checkpoint` must identify the weights (a run key,
    or `checkpoint_identity(path)`), `options` the dataset's options exactly as they build it."""
    return {"checkpoint": checkpoint, "dataset": dataset, "options": dict(options or {}), "split": split,
            "preprocessing": preprocessing}


def checkpoint_identity(path: str | os.PathLike) -> str:
    """sha256 of a checkpoint file's bytes: identifies the weights whatever the file is called."""
    return "sha256:" + file_sha256(path)


def canonical_key(key: Mapping) -> str:
    """The key as canonical JSON (sorted keys, no spaces), PREPROCESSING_VERSION and empty options filled in."""
    missing = [name for name in REQUIRED if name not in key]
    if missing:
        raise TransferscaleError(f"feature cache key {dict(key)!r} lacks {missing}; build it with feature_key()")
    full = {"options": {}, "preprocessing": PREPROCESSING_VERSION, **key}
    try:
        return json.dumps(full, sort_keys=True, separators=(",", ":"), default=_plain)
    except (TypeError, ValueError) as e:
        raise TransferscaleError(f"feature cache key {dict(key)!r} is not plain data: {e}") from None


def _plain(value):
    """numpy scalars and arrays, tuples and paths as JSON; anything else is not a key's business."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} {value!r}")


def layers_sha256(layers: Layers) -> str:
    """sha256 over every layer's number, dtype, shape and bytes, in layer order."""
    digest = hashlib.sha256()
    for layer in sorted(layers):
        arr = np.ascontiguousarray(layers[layer])
        digest.update(f"{layer}:{arr.dtype.str}:{arr.shape};".encode())
        digest.update(memoryview(arr).cast("B"))
    return digest.hexdigest()


class FeatureCache:
    """Features on disk under `root`, one file per key: `get_or_compute(key, compute)` -> {layer: float32 [N, D]}."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, key: Mapping) -> Path:
        return self.root / (hashlib.sha256(canonical_key(key).encode()).hexdigest() + ".npz")

    def get_or_compute(self, key: Mapping, compute: Callable[[], Layers]) -> Layers:
        """The cached layers of `key`; on a miss (or a file that fails its checks) `compute()` and store them."""
        cached = self.load(key)
        if cached is not None:
            return cached
        layers = _as_layers(compute())
        self.save(key, layers)
        return layers

    def load(self, key: Mapping) -> Layers | None:
        """The layers stored for `key`, or None if there is no file or it failed a check (then it is deleted)."""
        path, text = self.path(key), canonical_key(key)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as f:
                stored_key, stored_sum = str(f["__key__"]), str(f["__sha256__"])
                layers = {int(name[len("layer_"):]): f[name] for name in f.files if name.startswith("layer_")}
            problem = ("it holds another key" if stored_key != text else
                       "its checksum does not match" if layers_sha256(layers) != stored_sum else None)
        except Exception as e:  # noqa: BLE001 -- whatever a damaged file raises, the answer is to recompute
            problem = f"it cannot be read ({type(e).__name__}: {e})"
        if problem is None:
            return layers
        log.warning("feature cache: discarding %s: %s; recomputing", path, problem)
        try:
            path.unlink(missing_ok=True)
        except OSError:  # a directory that cannot be written: saving the recomputed file will say so
            pass
        return None

    def save(self, key: Mapping, layers: Layers) -> Path:
        """Store `layers` for `key` atomically (temporary file in the same folder, then os.replace). A write
        the disk refuses (full, read-only) leaves no temporary file and raises an OSError naming the file."""
        layers = _as_layers(layers)
        path, text = self.path(key), canonical_key(key)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise with_path(err, self.root) from None
        self._remove_stale_temporaries()
        arrays = {f"layer_{layer}": arr for layer, arr in layers.items()}
        atomic_write(path, lambda f: np.savez(f, __key__=np.array(text), __sha256__=np.array(layers_sha256(layers)),
                                              **arrays), mode=0o600, prefix=_TMP_PREFIX)
        return path

    def _remove_stale_temporaries(self) -> None:
        now = time.time()
        for tmp in self.root.glob(_TMP_PREFIX + "*"):
            try:
                if now - tmp.stat().st_mtime > _STALE_S:
                    tmp.unlink()
            except FileNotFoundError:  # another process cleaned it first
                pass


def _as_layers(layers) -> Layers:
    """Validate what a compute function returned: {int layer: 2-D array}, stored as float32."""
    if not isinstance(layers, Mapping) or not layers:
        raise TransferscaleError(f"feature compute function must return {{layer: array}}, got {type(layers).__name__}")
    out = {}
    for layer, arr in layers.items():
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if arr.ndim != 2:
            raise TransferscaleError(f"layer {layer}: features must be [N, D], got shape {arr.shape}")
        out[int(layer)] = arr
    return out


def layer_depth(layer: int, n_layers: int) -> float:
    """A probed layer's position in its network as a number in (0, 1], the store's `depth` column.

    depth = (i + 1) / L for layer i (0-based) of a network with L intermediate layers, so the last block is 1;
    the final representation (layer -1, the pooled pre-logits features) is 1.0 as well. Models of different
    depth then share one axis. (The one definition: the analysis layer re-exports it as relative_depth.)
    """
    if layer == -1:
        return 1.0
    if not 0 <= layer < n_layers:
        raise TransferscaleError(f"layer {layer} is not one of the {n_layers} layers 0..{n_layers - 1} (or -1)")
    return (layer + 1) / n_layers
