"""Model shapes: the named sizes of each family, as plain dataclasses (no torch here).

A shape says everything that determines a network's architecture at a given input size. The spec validates
names against this registry before any work; `transferscale.models` turns a shape into a timm module.
Sizes are small on purpose: they are what a 2-core CPU trains in a minute or two, on 28x28 grey images.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from transferscale.errors import TransferscaleError, unknown


@dataclass(frozen=True)
class ViTShape:
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 2.0
    patch_size: int = 7


@dataclass(frozen=True)
class MixerShape:
    embed_dim: int
    num_blocks: int
    mlp_ratio_tokens: float = 0.5
    mlp_ratio_channels: float = 2.0
    patch_size: int = 7


@dataclass(frozen=True)
class ResNetShape:
    layers: tuple[int, ...] = (1, 1, 1, 1)
    widths: tuple[int, ...] = (16, 32, 64, 128)
    stem_width: int = 16


FAMILIES: dict[str, type] = {"vit": ViTShape, "mixer": MixerShape, "resnet": ResNetShape}

# Named sizes per family, smallest first. ViT and Mixer cut 28x28 images into 4x4 = 16 patches of 7x7: with
# 4x4 patches (49 tokens) they train 2-3x slower per image and learn no faster per step at this scale.
SIZES: dict[str, dict[str, object]] = {
    "vit": {
        "s": ViTShape(embed_dim=32, depth=2, num_heads=2),
        "m": ViTShape(embed_dim=48, depth=3, num_heads=3),
        "l": ViTShape(embed_dim=64, depth=4, num_heads=4),
    },
    "mixer": {
        "s": MixerShape(embed_dim=48, num_blocks=2),
        "m": MixerShape(embed_dim=64, num_blocks=3),
        "l": MixerShape(embed_dim=96, num_blocks=4),
    },
    "resnet": {
        "s": ResNetShape(widths=(8, 16, 32, 64), stem_width=8),
        "m": ResNetShape(widths=(16, 32, 64, 128), stem_width=16),
        "l": ResNetShape(widths=(24, 48, 96, 192), stem_width=24),
    },
}


def resolve_shape(family: str, size: str, overrides: dict | None = None):
    """The shape for (family, size), with field overrides applied; unknown names fail with a hint."""
    if family not in FAMILIES:
        raise unknown("model family", family, FAMILIES)
    if size not in SIZES[family]:
        raise unknown(f"size of family {family!r}", size, SIZES[family])
    shape = SIZES[family][size]
    if not overrides:
        return shape
    fields = {f.name for f in dataclasses.fields(shape)}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise TransferscaleError(
            f"unknown shape field(s) {bad} for family {family!r}; valid: {sorted(fields)}"
        )
    clean = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    return dataclasses.replace(shape, **clean)


def shape_dict(shape) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(shape).items()}
