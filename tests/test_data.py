"""The data layer as a study uses it: named datasets, seeded and cached, and the fractal generator's spec."""
from __future__ import annotations

import gzip
import hashlib
import math
import sys

import numpy as np
import pytest

from transferscale.data import (
    Dataset,
    affine,
    catalog,
    dataset_options,
    describe,
    fractals,
    generate_fractals,
    invert,
    list_datasets,
    load_dataset,
    load_fashion_mnist,
    random_affine,
    read_idx,
    sources,
)
from transferscale.errors import TransferscaleError

SMALL_FRACTALS = dict(classes=6, heldout=3, train_per_class=20, test_per_class=8)
SMALL = {"fractals": SMALL_FRACTALS, "fractals_heldout": SMALL_FRACTALS}

REGISTERED = ["bbc_news", "fashion_mnist", "fashion_mnist_inverted", "fashion_mnist_shifted", "fractals",
              "fractals_heldout", "hf_disk", "image_folder", "opencv_digits", "opencv_digits_shifted",
              "sklearn_digits", "sklearn_digits_shifted", "twitter_sentiment"]


def digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


# ---- the registry ---------------------------------------------------------------------------------------


def test_every_dataset_is_registered_and_described():
    assert list_datasets() == REGISTERED
    assert list_datasets("*_shifted") == ["fashion_mnist_shifted", "opencv_digits_shifted", "sklearn_digits_shifted"]
    for name in REGISTERED:
        assert describe(name) and "\n" not in describe(name)
        assert dataset_options(name)["seed"] == 0
    assert dataset_options("fractals") == dict(classes=100, heldout=10, train_per_class=300, test_per_class=60,
                                               seed=0)
    assert dataset_options("opencv_digits") == dict(train_per_class=50, test_size=1000, seed=0, root=None)


# the 28x28 grey sets of the default study (the folder, Hugging Face and text sets: tests/test_data_sources.py)
GREY_28 = [n for n in REGISTERED if n not in ("bbc_news", "hf_disk", "image_folder", "twitter_sentiment")]


@pytest.mark.parametrize("name", GREY_28)
def test_each_dataset_has_the_common_shape(name):
    d = load_dataset(name, **SMALL.get(name, {}))
    assert isinstance(d, Dataset) and d.name == name
    for x, y in ((d.x_train, d.y_train), (d.x_test, d.y_test)):
        assert x.dtype == np.uint8 and x.ndim == 3 and x.shape[1:] == (28, 28)
        assert y.dtype == np.int64 and y.shape == (len(x),)
        assert set(np.unique(y)) == set(range(d.n_classes))
    if name.startswith("fractals"):
        n = 6 if name == "fractals" else 3
        assert d.n_classes == n and len(d.y_train) == 20 * n and len(d.y_test) == 8 * n
    else:
        assert d.n_classes == 10 and len(d.classes) == 10
        assert np.all(np.bincount(d.y_train) == 50) and len(d.y_test) == 1000
        assert np.bincount(d.y_test).min() >= 90  # stratified
    border = np.concatenate([d.x_train[:, 0], d.x_train[:, -1]]).mean()  # top and bottom rows
    assert border > 200 if name.endswith("inverted") else border < 40


def test_unknown_dataset_suggests_the_closest_name():
    with pytest.raises(TransferscaleError, match="did you mean 'fractals'"):
        load_dataset("fractal")
    with pytest.raises(TransferscaleError, match="unknown dataset"):
        describe("imagenet")


def test_unknown_or_mistyped_option_names_the_valid_ones():
    with pytest.raises(TransferscaleError, match=r"no option 'clases'; did you mean 'classes'"):
        load_dataset("fractals", clases=5)
    with pytest.raises(TransferscaleError, match="classes='5' should be a int"):
        load_dataset("fractals", classes="5")
    with pytest.raises(TransferscaleError, match="train_per_class=1000 is out of range"):
        load_dataset("opencv_digits", train_per_class=1000)
    with pytest.raises(TransferscaleError, match="test_size=5000 is out of range"):
        load_dataset("sklearn_digits", test_size=5000)
    with pytest.raises(TransferscaleError, match="seed cannot be None"):
        load_dataset("sklearn_digits", seed=None)
    with pytest.raises(TransferscaleError, match="seeds are integers >= 0"):
        load_dataset("sklearn_digits", seed=-1)
    everything = load_dataset("sklearn_digits", train_per_class=None, test_size=None)  # None: the whole split
    assert len(everything.y_train) + len(everything.y_test) == 1797


def test_missing_packages_name_the_install_command(tmp_path):
    with pytest.raises(TransferscaleError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path)
    with pytest.raises(TransferscaleError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion_mnist_shifted", root=str(tmp_path))
    with pytest.raises(TransferscaleError, match="apt-get install opencv-doc"):
        load_dataset("opencv_digits", root=tmp_path)


def test_the_data_layer_does_not_import_torch():
    import subprocess

    code = "import sys, transferscale.data as d; d.load_dataset('opencv_digits'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---- determinism -----------------------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_bytes():
    a, b = generate_fractals(4, 30, seed=3), generate_fractals(4, 30, seed=3)
    assert digest(*a) == digest(*b)
    assert not np.array_equal(a[0], generate_fractals(4, 30, seed=4)[0])
    s1, s2 = load_dataset("opencv_digits_shifted", seed=1), load_dataset("opencv_digits_shifted", seed=1)
    assert digest(s1.x_train, s1.x_test) == digest(s2.x_train, s2.x_test)
    assert not np.array_equal(s1.x_train, load_dataset("opencv_digits_shifted", seed=2).x_train)


def test_fractal_bytes_are_pinned():
    # Same seed -> same bytes on any machine. A change here means every cached and published fractal set
    # changed: bump fractals.GENERATOR_VERSION and update the digest on purpose.
    x, y = generate_fractals(3, 16, seed=0)
    assert digest(x, y)[:16] == PINNED_FRACTALS


PINNED_FRACTALS = "15cd3d0280a9077a"


def test_classes_do_not_depend_on_how_many_were_asked():
    x5, _ = generate_fractals(5, 40, seed=0)
    x3, _ = generate_fractals(3, 40, seed=0)
    x_offset, _ = generate_fractals(2, 40, seed=0, first_class=3)
    x_short, _ = generate_fractals(5, 25, seed=0)
    assert np.array_equal(x5[:120], x3)
    assert np.array_equal(x5[120:], x_offset)
    assert np.array_equal(x5.reshape(5, 40, 28, 28)[:, :25], x_short.reshape(5, 25, 28, 28))


def test_aligned_and_shifted_twins_hold_the_same_examples():
    aligned, shifted = load_dataset("sklearn_digits", seed=5), load_dataset("sklearn_digits_shifted", seed=5)
    assert np.array_equal(aligned.y_train, shifted.y_train) and np.array_equal(aligned.y_test, shifted.y_test)
    assert not np.array_equal(aligned.x_train, shifted.x_train)
    inverted, plain = load_dataset("fashion_mnist_inverted", seed=2), load_dataset("fashion_mnist", seed=2)
    assert np.array_equal(inverted.x_test, 255 - plain.x_test)


# ---- the fractal spec --------------------------------------------------------------------------------


def test_fractal_classes_follow_the_spec():
    for index in range(24):
        fc = fractals.fractal_class(seed=0, index=index)
        assert 2 <= len(fc.maps) <= 4
        for row in fc.maps:
            singular = np.linalg.svd(row[:4].reshape(2, 2), compute_uv=False)
            assert np.all((singular >= 0.35 - 1e-9) & (singular <= 0.85 + 1e-9))
        dets = np.abs([np.linalg.det(r[:4].reshape(2, 2)) for r in fc.maps])
        np.testing.assert_allclose(fc.probs, (dets + 0.02) / (dets + 0.02).sum())


def test_fractal_fill_is_within_the_spec():
    x, y = generate_fractals(24, 64, seed=0)
    lit = (x > 0).reshape(24, 64, -1)
    fill = lit.mean(axis=(1, 2))
    assert fill.min() >= 0.12  # the acceptance test: mean fill of the class's first 64 images
    assert lit.mean(axis=2).min() > 0.02  # no image is (nearly) empty
    assert 0.15 < fill.mean() < 0.45
    # 64 chains x 16 kept iterations: ~1,000 points per image, most of them on the canvas
    assert x.max() == 255


def test_held_out_classes_are_disjoint_from_upstream():
    up, held = load_dataset("fractals", **SMALL_FRACTALS), load_dataset("fractals_heldout", **SMALL_FRACTALS)
    assert not set(up.classes) & set(held.classes)
    seen = {img.tobytes() for img in np.concatenate([up.x_train, up.x_test])}
    assert not any(img.tobytes() in seen for img in np.concatenate([held.x_train, held.x_test]))
    upstream_maps = [fractals.fractal_class(0, c).maps for c in range(6)]
    for c in range(6, 9):
        maps = fractals.fractal_class(0, c).maps
        assert not any(m.shape == maps.shape and np.allclose(m, maps) for m in upstream_maps)
    # held-out class c is generated class 6 + c: the same images as asking for it directly
    x, _ = generate_fractals(3, 28, seed=0, first_class=6)
    np.testing.assert_array_equal(held.x_train[:20], x[:20])
    np.testing.assert_array_equal(held.x_test[:8], x[20:28])


# ---- transforms --------------------------------------------------------------------------------------


def test_identity_warp_returns_the_input():
    x = np.random.default_rng(0).integers(0, 256, size=(64, 28, 28), dtype=np.uint8)
    np.testing.assert_array_equal(affine(x, 0.0, 1.0, 0.0), x)
    rng = np.random.default_rng(1)
    np.testing.assert_array_equal(random_affine(x, rng, max_rotate_deg=0, zoom=(1, 1), max_shift=0), x)


def test_known_shift_and_rotation_move_a_pixel_where_expected():
    x = np.zeros((2, 28, 28), np.uint8)
    x[:, 5, 7] = 200
    moved = affine(x, rotate_deg=[0, 90], zoom=1, shift=[[3, 2], [0, 0]])
    assert np.argwhere(moved[0]).tolist() == [[7, 10]]  # 3 columns right, 2 rows down
    assert moved[0, 7, 10] == 200
    # 90 degrees counter-clockwise about (13.5, 13.5): (row 5, col 7) -> (row 20, col 5)
    assert np.argwhere(moved[1]).tolist() == [[20, 5]]
    half = affine(x[:1], 0, 1, [[0.5, 0]])
    assert half[0, 5, 7] == 100 and half[0, 5, 8] == 100


def test_random_affine_gives_each_image_its_own_warp():
    x = np.repeat(load_dataset("opencv_digits").x_train[:1], 8, axis=0)
    warped = random_affine(x, np.random.default_rng(0))
    assert len({w.tobytes() for w in warped}) == 8
    assert np.array_equal(invert(invert(x)), x)
    with pytest.raises(TransferscaleError):
        random_affine(x.astype(float), np.random.default_rng(0))


# ---- sources -------------------------------------------------------------------------------------------


def test_idx_round_trip_and_truncation(tmp_path):
    data = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 0x08, 3]) + np.array(data.shape, ">u4").tobytes()
    (tmp_path / "ok.gz").write_bytes(gzip.compress(header + data.tobytes()))
    np.testing.assert_array_equal(read_idx(tmp_path / "ok.gz"), data)
    (tmp_path / "short.gz").write_bytes(gzip.compress(header + data.tobytes()[:-1]))
    with pytest.raises(TransferscaleError, match="truncated"):
        read_idx(tmp_path / "short.gz")


def test_fixed_splits_are_stratified_and_disjoint():
    x_tr, y_tr, x_te, y_te = sources.load_opencv_digits()
    assert np.all(np.bincount(y_tr) == 250) and np.all(np.bincount(y_te) == 250)
    assert not {i.tobytes() for i in x_tr} & {i.tobytes() for i in x_te}
    _, y_tr, _, y_te = sources.load_sklearn_digits()
    assert len(y_tr) + len(y_te) == 1797 and len(y_te) >= 1000


# ---- the cache ---------------------------------------------------------------------------------------


def test_cache_round_trip_and_corrupt_entry_rebuilds(tmp_path, monkeypatch):
    first = load_dataset("opencv_digits_shifted", seed=3, cache_dir=tmp_path)
    entries = list(tmp_path.glob("*.npz"))
    assert len(entries) == 1 and entries[0].with_name(entries[0].name + ".sha256").exists()

    def no_source(*args, **kwargs):
        raise AssertionError("rebuilt instead of reading the cache")

    monkeypatch.setattr(sources, "load_opencv_digits", no_source)
    again = load_dataset("opencv_digits_shifted", seed=3, cache_dir=tmp_path)
    assert digest(again.x_train, again.y_train, again.x_test, again.y_test) == \
        digest(first.x_train, first.y_train, first.x_test, first.y_test)
    assert again.classes == first.classes
    with pytest.raises(AssertionError, match="rebuilt"):  # other options, other entry
        load_dataset("opencv_digits_shifted", seed=4, cache_dir=tmp_path)
    monkeypatch.undo()

    for corrupt in (lambda b: b[: len(b) // 2], lambda b: b[:100] + bytes([b[100] ^ 1]) + b[101:]):
        entries[0].write_bytes(corrupt(entries[0].read_bytes()))
        rebuilt = load_dataset("opencv_digits_shifted", seed=3, cache_dir=tmp_path)
        assert digest(rebuilt.x_train, rebuilt.x_test) == digest(first.x_train, first.x_test)
        assert load_dataset("opencv_digits_shifted", seed=3, cache_dir=tmp_path) is not None
    assert not list(tmp_path.glob(".*tmp"))


def test_upstream_and_held_out_fractals_share_one_generation(tmp_path, monkeypatch):
    catalog._generate_pool.cache_clear()
    up = load_dataset("fractals", cache_dir=tmp_path, **SMALL_FRACTALS)
    assert len(list(tmp_path.glob("*.npz"))) == 1

    def no_generation(*args, **kwargs):
        raise AssertionError("generated twice")

    catalog._generate_pool.cache_clear()
    monkeypatch.setattr(catalog, "generate_fractals", no_generation)
    held = load_dataset("fractals_heldout", cache_dir=tmp_path, **SMALL_FRACTALS)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    assert held.n_classes == 3 and up.n_classes == 6
    up.x_train[0] = 0  # callers get their own arrays
    assert load_dataset("fractals", cache_dir=tmp_path, **SMALL_FRACTALS).x_train[0].any()


def test_fractal_exposure_table_is_libm_stable():
    # the grey values of 1..63 hits sit far from rounding boundaries, so libm's last bit cannot move them
    distance_to_boundary = [abs(255 * (1 - math.exp(-h / 2)) % 1 - 0.5) for h in range(64)]
    assert min(distance_to_boundary) > 1e-6
    assert fractals._EXPOSURE[0] == 0 and fractals._EXPOSURE[1] == 100 and fractals._EXPOSURE[-1] == 255
