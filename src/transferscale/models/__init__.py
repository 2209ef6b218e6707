"""Models under study: backbones (every layer's pooled features from one pass) and the sources they come from.

- `backbone.py`: the `Backbone` interface;
- `grid.py`: the small timm ViT / MLP-Mixer / ResNet networks a study trains (`build_model`, `TimmBackbone`);
- `pixels.py`: the raw-input baseline;
- `source.py`: `ModelSource` and the `SOURCES` registry (`timm:`, `hf:`, `file:` and any a user adds).

Importing this package does not import torch; the names below load their module on first use.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "Backbone": "backbone", "masked_mean": "backbone",
    "TimmBackbone": "grid", "build_model": "grid", "build_named": "grid", "num_params": "grid",
    "pooled_features": "grid", "to_tensor": "grid",
    "PixelBackbone": "pixels",
    "SOURCES": "source", "ModelSource": "source", "make_source": "source", "split_ref": "source",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'transferscale.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"transferscale.models.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
