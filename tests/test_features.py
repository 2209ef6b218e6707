"""The feature cache: what a runner does with it (compute once, reuse), and what a damaged disk does to it."""
import logging
import os

import numpy as np
import pytest

from transferscale.errors import TransferscaleError
from transferscale.features import PREPROCESSING_VERSION, FeatureCache, checkpoint_identity, feature_key


def _layers(seed=0):
    rng = np.random.default_rng(seed)
    return {-1: rng.normal(size=(50, 8)).astype(np.float32), 0: rng.normal(size=(50, 4)).astype(np.float32),
            1: rng.normal(size=(50, 6)).astype(np.float32)}


class Counting:
    """A compute function that counts its calls."""

    def __init__(self, seed=0):
        self.calls, self.seed = 0, seed

    def __call__(self):
        self.calls += 1
        return _layers(self.seed)


KEY = feature_key("run-abc", "fashion_mnist", {"train_per_class": 100, "rotate": 15.0}, "train")


def _assert_same(a, b):
    assert sorted(a) == sorted(b)
    for layer in a:
        assert a[layer].dtype == np.float32
        np.testing.assert_array_equal(a[layer], b[layer])


def test_round_trip_computes_once(tmp_path):
    cache, compute = FeatureCache(tmp_path), Counting()
    first = cache.get_or_compute(KEY, compute)
    second = FeatureCache(tmp_path).get_or_compute(KEY, compute)  # a fresh process sees the same file
    assert compute.calls == 1
    _assert_same(first, _layers())
    _assert_same(second, _layers())
    assert [p.name for p in tmp_path.iterdir()] == [cache.path(KEY).name]


@pytest.mark.parametrize("change", [
    {"split": "test"},
    {"options": {"train_per_class": 100, "rotate": 10.0}},
    {"options": {"train_per_class": 100}},
    {"dataset": "sklearn_digits"},
    {"checkpoint": "run-abd"},
    {"preprocessing": PREPROCESSING_VERSION + 1},
])
def test_any_change_of_key_is_a_miss(tmp_path, change):
    cache = FeatureCache(tmp_path)
    cache.get_or_compute(KEY, Counting(0))
    other = Counting(1)
    got = cache.get_or_compute({**KEY, **change}, other)
    assert other.calls == 1
    _assert_same(got, _layers(1))
    _assert_same(cache.get_or_compute(KEY, Counting(2)), _layers(0))  # the first entry is untouched


def test_key_order_and_defaults_do_not_matter(tmp_path):
    cache = FeatureCache(tmp_path)
    shuffled = {"split": "train", "options": {"rotate": 15.0, "train_per_class": 100},
                "dataset": "fashion_mnist", "checkpoint": "run-abc"}  # no preprocessing: the current one
    assert cache.path(shuffled) == cache.path(KEY)
    assert cache.path({**shuffled, "options": {"rotate": np.float64(15.0), "train_per_class": np.int64(100)}}) \
        == cache.path(KEY)


def _corrupt_flip(path):
    data = bytearray(path.read_bytes())
    i = len(data) // 2  # inside the arrays' bytes
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _corrupt_truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _corrupt_empty(path):
    path.write_bytes(b"")


@pytest.mark.parametrize("corrupt", [_corrupt_flip, _corrupt_truncate, _corrupt_empty])
def test_damaged_file_is_detected_deleted_and_recomputed(tmp_path, corrupt, caplog):
    cache, compute = FeatureCache(tmp_path), Counting()
    cache.get_or_compute(KEY, compute)
    corrupt(cache.path(KEY))
    with caplog.at_level(logging.WARNING, logger="transferscale.features"):
        got = cache.get_or_compute(KEY, compute)
    assert compute.calls == 2
    _assert_same(got, _layers())
    assert "discarding" in caplog.text
    _assert_same(cache.load(KEY), _layers())  # the recomputed file is sound


def test_every_single_byte_flip_is_caught(tmp_path):
    # small arrays, so flip each byte of the file in turn: none may load as if it were sound
    cache = FeatureCache(tmp_path)
    small = {-1: np.arange(6, dtype=np.float32).reshape(3, 2)}
    cache.save(KEY, small)
    good = cache.path(KEY).read_bytes()
    for i in range(0, len(good), 7):
        data = bytearray(good)
        data[i] ^= 0x01
        cache.path(KEY).write_bytes(bytes(data))
        got = cache.load(KEY)
        assert got is None or (list(got) == [-1] and np.array_equal(got[-1], small[-1])), i


def test_a_file_holding_another_key_is_not_trusted(tmp_path):
    cache = FeatureCache(tmp_path)
    other = {**KEY, "split": "test"}
    cache.save(other, _layers(1))
    os.replace(cache.path(other), cache.path(KEY))  # e.g. copied by hand under the wrong name
    compute = Counting(0)
    _assert_same(cache.get_or_compute(KEY, compute), _layers(0))
    assert compute.calls == 1


def test_writes_leave_no_temporary_files(tmp_path, monkeypatch):
    cache = FeatureCache(tmp_path)
    cache.get_or_compute(KEY, Counting())
    assert [p.name for p in tmp_path.iterdir()] == [cache.path(KEY).name]

    # a writer that dies midway leaves neither a temporary file nor a partial entry
    real_savez = np.savez

    def dying_savez(f, **arrays):
        f.write(b"PK\x03\x04 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", dying_savez)
    other = {**KEY, "split": "test"}
    with pytest.raises(OSError, match="disk full"):
        cache.get_or_compute(other, Counting())
    monkeypatch.setattr(np, "savez", real_savez)
    assert [p.name for p in tmp_path.iterdir()] == [cache.path(KEY).name]
    assert cache.load(other) is None


def test_stale_temporaries_of_killed_writers_are_removed(tmp_path):
    stale = tmp_path / ".tmp-killed.npz"
    stale.write_bytes(b"partial")
    os.utime(stale, (0, 0))
    FeatureCache(tmp_path).get_or_compute(KEY, Counting())
    assert not stale.exists()


def test_compute_result_is_stored_as_float32(tmp_path):
    cache = FeatureCache(tmp_path)
    got = cache.get_or_compute(KEY, lambda: {-1: np.ones((3, 2), dtype=np.float64)})
    assert got[-1].dtype == np.float32
    assert cache.load(KEY)[-1].dtype == np.float32


def test_bad_keys_and_results_raise_our_error(tmp_path):
    cache = FeatureCache(tmp_path)
    with pytest.raises(TransferscaleError, match="lacks.*split"):
        cache.get_or_compute({"checkpoint": "x", "dataset": "d"}, Counting())
    with pytest.raises(TransferscaleError, match="not plain data"):
        cache.path({**KEY, "options": {"transform": object()}})
    with pytest.raises(TransferscaleError, match=r"\[N, D\]"):
        cache.get_or_compute(KEY, lambda: {-1: np.ones(3)})


def test_checkpoint_identity_follows_content_not_name(tmp_path):
    a, b, c = tmp_path / "a.pt", tmp_path / "b.pt", tmp_path / "c.pt"
    a.write_bytes(b"weights")
    b.write_bytes(b"weights")
    c.write_bytes(b"weightz")
    assert checkpoint_identity(a) == checkpoint_identity(b) != checkpoint_identity(c)


def test_features_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, transferscale.features; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
