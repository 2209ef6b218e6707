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


# ---- parameter counts and shapes matched to a parameter budget ---------------------------------------------

# The field `match` solves for, per family, when a group does not name one: the network's width.
WIDTH_FIELDS = {"vit": "embed_dim", "mixer": "embed_dim", "resnet": "widths"}


def param_count(family: str, shape, *, img_size: tuple[int, int] = (28, 28), in_chans: int = 1,
                num_classes: int = 0) -> int:
    """The number of parameters of the grid network `models.grid.build_model` builds, in closed form (no torch).

    With D the width, L the depth, N = (H // p) * (W // p) patches of p x p pixels and C input channels:

    - ViT (no class token, average pooling): patch embedding D(C p^2 + 1), position embedding N D, per block
      two LayerNorms 4D, qkv 3D^2 + 3D, projection D^2 + D, MLP 2 D h + h + D with h = floor(r D); a final
      LayerNorm 2D.
    - MLP-Mixer: stem D(C p^2 + 1), per block two LayerNorms 4D, a token MLP 2 N t + t + N with
      t = floor(r_t D), a channel MLP 2 D c + c + D with c = floor(r_c D); a final LayerNorm 2D.
    - ResNet (deep stem, basic blocks): stem convolutions 9(C s + s^2 + 2 s^2) with BatchNorms 2s + 2s + 4s
      (stem width s, 2s channels out), then per block two 3x3 convolutions and BatchNorms, plus a 1x1
      convolution and BatchNorm where the block changes width or stride.

    The head adds num_classes (D + 1) when num_classes > 0. `tests/test_shapes_match.py` checks every formula
    against the built timm module.
    """
    s = shape_dict(shape) if not isinstance(shape, dict) else shape
    h, w = img_size
    if family == "vit":
        d, p = s["embed_dim"], s["patch_size"]
        n = (h // p) * (w // p)
        hidden = int(d * s["mlp_ratio"])
        block = 4 * d + 3 * d * d + 3 * d + d * d + d + 2 * d * hidden + hidden + d
        body = d * (in_chans * p * p + 1) + n * d + s["depth"] * block + 2 * d
    elif family == "mixer":
        d, p = s["embed_dim"], s["patch_size"]
        n = (h // p) * (w // p)
        t, c = int(s["mlp_ratio_tokens"] * d), int(s["mlp_ratio_channels"] * d)
        block = 4 * d + 2 * n * t + t + n + 2 * d * c + c + d
        body = d * (in_chans * p * p + 1) + s["num_blocks"] * block + 2 * d
    elif family == "resnet":
        sw = s["stem_width"]
        body = 9 * (in_chans * sw + sw * sw + sw * 2 * sw) + 2 * sw + 2 * sw + 2 * (2 * sw)
        inplanes = 2 * sw
        for stage, (blocks, planes) in enumerate(zip(s["layers"], s["widths"], strict=True)):
            for b in range(blocks):
                body += 9 * inplanes * planes + 2 * planes + 9 * planes * planes + 2 * planes
                if b == 0 and (stage > 0 or inplanes != planes):
                    body += inplanes * planes + 2 * planes
                inplanes = planes
        d = s["widths"][-1]
    else:
        raise unknown("model family", family, FAMILIES)
    return int(body + (num_classes * (d + 1) if num_classes > 0 else 0))


def _with_width(family: str, base: dict, field: str, value: int) -> dict | None:
    """`base` with its width field set from the integer `value`, or None when that width is not valid."""
    if field == "widths" and family == "resnet":
        scale = value / max(base["widths"])  # the widest stage anchors the scale: the finest steps
        widths = [max(1, round(w * scale)) for w in base["widths"]]
        return {**base, "widths": widths, "stem_width": max(1, round(base["stem_width"] * scale))}
    out = {**base, field: value}
    if family == "vit" and field == "embed_dim" and value % base["num_heads"]:
        return None  # attention splits the width evenly across heads
    if family == "mixer" and field == "embed_dim" and (int(base["mlp_ratio_tokens"] * value) < 1
                                                        or int(base["mlp_ratio_channels"] * value) < 1):
        return None
    return out


def match_params(family: str, shape: dict, target: int, *, field: str | None = None, tolerance: float = 0.1,
                 img_size: tuple[int, int] = (28, 28), in_chans: int = 1, max_width: int = 4096) -> dict:
    """`shape` with its width field (`WIDTH_FIELDS` by default) set so that the network's parameters, head
    excluded, come closest to `target`: the width w minimising |P(w) - target| over the valid integers up
    to max_width (for ResNet, the widest stage's width, with every stage and the stem scaled alike and rounded). Fails
    unless the best is within `tolerance` of the target: |P(w) - target| <= tolerance * target.
    """
    field = field or WIDTH_FIELDS[family]
    if field not in shape:
        raise TransferscaleError(f"match: {field!r} is not a shape field of family {family!r}; "
                                 f"valid: {sorted(shape)}")
    if not isinstance(shape[field], int) and not (field == "widths" and family == "resnet"):
        raise TransferscaleError(f"match: {family} field {field!r} is not an integer width")
    best, best_gap = None, None
    for value in range(1, max_width + 1):
        candidate = _with_width(family, shape, field, value)
        if candidate is None:
            continue
        gap = abs(param_count(family, candidate, img_size=img_size, in_chans=in_chans) - target)
        if best_gap is None or gap < best_gap:
            best, best_gap = candidate, gap
    params = param_count(family, best, img_size=img_size, in_chans=in_chans)
    if best_gap > tolerance * target:
        fixed = {k: v for k, v in shape.items() if k != field}
        raise TransferscaleError(
            f"no {field} gives {family} {fixed} within {tolerance:.0%} of {target:,} parameters: the closest, "
            f"{field} = {best[field]}, has {params:,} ({(params - target) / target:+.0%}); raise match.tolerance, "
            "change the target, or sweep another depth")
    return best
