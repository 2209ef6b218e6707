"""One registry type for everything a user extends: datasets, model sources, protocols, executors.

    DATASETS = Registry("dataset")
    @DATASETS.register("my_set")                      # an object, found by name
    def my_set(seed: int = 0) -> Dataset: ...
    DATASETS.register_lazy("big_set", "my_pkg.sets:big_set")   # imported on first `get`
    DATASETS.get("my_sett")   # TransferscaleError: unknown dataset 'my_sett'; did you mean 'my_set'?
    DATASETS.list("*_set")

A registry may name a base class; entries that are not subclasses (or instances) of it are refused when
they are registered (or, for lazy entries, when first loaded), so a mistake shows where it was made.
Lazy entries keep heavy imports (torch, transformers) out of code that only lists or validates names.
"""
from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Iterator
from typing import Generic, TypeVar

from transferscale.errors import TransferscaleError, unknown

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> entry, with did-you-mean errors, shell-pattern listing and optional lazy imports."""

    def __init__(self, kind: str, base: type | None = None):
        self.kind = kind
        self.base = base
        self._entries: dict[str, T] = {}
        self._lazy: dict[str, str] = {}

    def register(self, name: str, obj: T | None = None, *, replace: bool = False):
        """Register `obj` under `name`; without `obj`, return a decorator that registers what it decorates."""
        if obj is None:
            def decorate(target: T) -> T:
                self.register(name, target, replace=replace)
                return target

            return decorate
        if not replace and name in self:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._check(name, obj)
        self._lazy.pop(name, None)
        self._entries[name] = obj
        return obj

    def register_lazy(self, name: str, target: str, *, replace: bool = False) -> None:
        """Register `"module.path:attribute"`, imported the first time `name` is asked for."""
        if not replace and name in self:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        if ":" not in target:
            raise ValueError(f"lazy {self.kind} {name!r}: target {target!r} must look like 'module.path:attribute'")
        self._entries.pop(name, None)
        self._lazy[name] = target

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)
        self._lazy.pop(name, None)

    def get(self, name: str) -> T:
        if name in self._entries:
            return self._entries[name]
        if name in self._lazy:
            module, attr = self._lazy[name].split(":", 1)
            obj = getattr(importlib.import_module(module), attr)
            self._check(name, obj)
            self._entries[name] = obj
            del self._lazy[name]
            return obj
        raise unknown(self.kind, name, self.list())

    def list(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell-style pattern, sorted."""
        return sorted(n for n in (*self._entries, *self._lazy) if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self._entries) + len(self._lazy)

    def _check(self, name: str, obj: object) -> None:
        if self.base is None:
            return
        ok = isinstance(obj, self.base) or (isinstance(obj, type) and issubclass(obj, self.base))
        if not ok:
            raise TransferscaleError(
                f"{self.kind} {name!r} must be a {self.base.__name__} (a subclass or an instance), "
                f"got {obj!r}")

