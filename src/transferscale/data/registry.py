"""Datasets found by name, in the style of timm's `@register_model` / `list_models`.

A builder is a function whose keyword arguments, all with defaults and `seed` among them, are the
dataset's options; it returns a `Dataset`. `load_dataset(name, cache_dir=..., **options)` checks the
options, fills in defaults and, given a cache_dir, caches the result there keyed by (name, options,
DATA_VERSION). A builder that takes a `cache_dir` argument itself manages its caching (the two fractal
sets share one generation that way) and is handed cache_dir instead. A builder registered with
`cache=False` (the text sets: strings have no safe, compact npz form, and reading them is quick) is
always built, and cache_dir is ignored for it.
"""
from __future__ import annotations

import inspect
import numbers
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from transferscale.data.cache import cached
from transferscale.data.dataset import Dataset
from transferscale.errors import TransferscaleError, did_you_mean
from transferscale.registry import Registry

# Bump when any builder's output changes for the same options: old cache entries then stop matching.
DATA_VERSION = "data-1"

Builder = Callable[..., Dataset]


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    builder: Builder
    description: str
    options: dict[str, Any]  # option -> default; seed included, cache_dir not
    nullable: frozenset[str]  # options annotated `... | None`: None is a valid value
    caches_itself: bool
    cacheable: bool = True  # False: load_dataset never stores or reads this dataset in a cache_dir
    modality: str | Callable[[dict], str] = "image"  # or a function of the options that says
    geometry: tuple[int, int, int] | None = None  # (H, W, C) of every image, when known without building


DATASETS: Registry[DatasetEntry] = Registry("dataset", DatasetEntry)


def register_dataset(name: str, description: str | None = None, *, cache: bool = True,
                     modality: str | Callable[[dict], str] = "image",
                     geometry: tuple[int, int, int] | None = None) -> Callable[[Builder], Builder]:
    """Decorator: register `builder` under `name`; the description defaults to its docstring's first line.

    cache=False keeps load_dataset from caching the dataset on disk (for text, or anything cheap to read).
    modality: "image" or "text", or a function of the options (as the spec gives them) that returns one, so
    a study's plan knows which models can read the task without loading it.
    geometry: (height, width, channels) of the images whatever the options, when fixed, so a plan can size
    networks (e.g. match a parameter budget) without building the data.
    """

    def decorate(builder: Builder) -> Builder:
        params = inspect.signature(builder).parameters
        options = {p.name: p.default for p in params.values() if p.name != "cache_dir"}
        if "seed" not in options or any(d is inspect.Parameter.empty for d in options.values()):
            raise TypeError(f"builder of {name!r}: every option needs a default, and seed must be one")
        text = description or (builder.__doc__ or name).strip().splitlines()[0]
        nullable = frozenset(o for o in options if "None" in str(params[o].annotation))
        if not cache and "cache_dir" in params:
            raise TypeError(f"builder of {name!r}: cache=False and a cache_dir argument contradict each other")
        DATASETS.register(name, DatasetEntry(name, builder, text, options, nullable, "cache_dir" in params,
                                             cache, modality, geometry))
        return builder

    return decorate


def dataset_modality(name: str, options: dict | None = None) -> str:
    """The modality ("image" or "text") of dataset `name` built with `options`, without building it."""
    declared = _entry(name).modality
    return declared({**_entry(name).options, **(options or {})}) if callable(declared) else declared


def dataset_geometry(name: str, options: dict | None = None, cache_dir: str | os.PathLike | None = None
                     ) -> tuple[int, int, int]:
    """(height, width, channels) of dataset `name`'s images: as registered, else read from the built dataset."""
    declared = _entry(name).geometry
    if declared is not None:
        return declared
    spec = load_dataset(name, cache_dir=cache_dir, **(options or {})).input_spec
    if spec.modality != "image":
        raise TransferscaleError(f"dataset {name!r} holds {spec.describe()}, not images")
    return (spec.size[0], spec.size[1], spec.channels)


def list_datasets(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style pattern, sorted: list_datasets('*_shifted')."""
    return DATASETS.list(pattern)


def _entry(name: str) -> DatasetEntry:
    return DATASETS.get(name)


def dataset_options(name: str) -> dict[str, Any]:
    """Each option of dataset `name` with its default (cache_dir, accepted by every dataset, not listed)."""
    return dict(_entry(name).options)


def describe(name: str) -> str:
    """One line saying what dataset `name` is."""
    return _entry(name).description


def load_dataset(name: str, cache_dir: str | os.PathLike | None = None, **options: Any) -> Dataset:
    """Build (or read from cache_dir) dataset `name` with `options` over its defaults."""
    entry = _entry(name)
    for option, value in options.items():
        if option not in entry.options:
            raise TransferscaleError(
                f"dataset {name!r} has no option {option!r}; {did_you_mean(option, entry.options)} "
                f"(its options: {', '.join(entry.options)})")
        default = entry.options[option]
        if value is None and option not in entry.nullable:
            raise TransferscaleError(f"dataset {name!r}: option {option} cannot be None; "
                                     f"pass a {type(default).__name__} like its default {default!r}")
        if value is not None and default is not None and not _same_kind(value, default):
            raise TransferscaleError(f"dataset {name!r}: option {option}={value!r} should be a "
                                     f"{type(default).__name__}, like its default {default!r}")
    resolved = {**entry.options, **{k: _plain(v) for k, v in options.items()}}
    if resolved["seed"] < 0:
        raise TransferscaleError(f"dataset {name!r}: seed={resolved['seed']}; seeds are integers >= 0")
    if entry.caches_itself:
        return entry.builder(**resolved, cache_dir=cache_dir)
    if not entry.cacheable:
        return entry.builder(**resolved)
    return cached(cache_dir, name, resolved, DATA_VERSION, lambda: entry.builder(**resolved))


def _same_kind(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, int):
        return isinstance(value, numbers.Integral)
    if isinstance(default, float):
        return isinstance(value, numbers.Real)
    return isinstance(value, type(default))


def _plain(value: Any) -> Any:
    """numpy scalars as Python ones, so that 5 and np.int64(5) build (and cache) the same dataset."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value
