"""Image transforms on uint8 batches (N, H, W): per-image affine warps and inversion. numpy only."""
from __future__ import annotations

import math

import numpy as np

from transferscale.errors import TransferscaleError

CHUNK = 2048  # images warped at once: bounds the float64 temporaries to ~100 MB


def affine(x: np.ndarray, rotate_deg, zoom, shift) -> np.ndarray:
    """Warp every image by its own rotation, zoom and shift about the image centre; bilinear, fill 0.

    rotate_deg (N,) turns the content counter-clockwise as displayed; zoom (N,) > 1 enlarges it;
    shift (N, 2) moves it by (columns right, rows down) in pixels. Scalars broadcast to every image.
    Output pixel o samples the input at  c + R(-theta) (o - c - shift) / zoom,  c the centre,
    in (column, row-up) coordinates, so zero rotation, zoom 1 and shift 0 return x exactly.
    """
    x = _check_images(x)
    n = len(x)
    theta = np.deg2rad(np.broadcast_to(np.asarray(rotate_deg, float), (n,)))
    zoom = np.broadcast_to(np.asarray(zoom, float), (n,))
    shift = np.broadcast_to(np.asarray(shift, float), (n, 2))
    if np.any(zoom <= 0):
        raise TransferscaleError("affine: every zoom must be > 0")
    out = np.empty_like(x)
    for lo in range(0, n, CHUNK):
        sl = slice(lo, lo + CHUNK)
        out[sl] = _warp(x[sl], theta[sl], zoom[sl], shift[sl])
    return out


def _warp(x: np.ndarray, theta: np.ndarray, zoom: np.ndarray, shift: np.ndarray) -> np.ndarray:
    n, h, w = x.shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    # output offsets from the centre, y pointing up so that positive angles turn counter-clockwise
    u = (np.arange(w) - cx)[None, None, :] - shift[:, 0, None, None]
    v = (cy - np.arange(h))[None, :, None] + shift[:, 1, None, None]
    # libm per image, not numpy's SIMD cos / sin, whose last bit may differ between machines
    cos = (np.array([math.cos(t) for t in theta]) / zoom)[:, None, None]
    sin = (np.array([math.sin(t) for t in theta]) / zoom)[:, None, None]
    src_col = cx + cos * u + sin * v
    src_row = cy - (-sin * u + cos * v)
    return _bilinear(x, src_row, src_col)


def _bilinear(x: np.ndarray, row: np.ndarray, col: np.ndarray) -> np.ndarray:
    """Sample every image at its own (row, col) grid; neighbours outside the image count as 0."""
    n, h, w = x.shape
    padded = np.zeros((n, h + 2, w + 2), np.float64)  # a ring of zeros serves every outside neighbour
    padded[:, 1:-1, 1:-1] = x
    r0, c0 = np.floor(row), np.floor(col)
    fr, fc = row - r0, col - c0
    # padded index = image index + 1; anything past the ring clips onto it, where the value is 0
    r0, c0 = r0.astype(np.int64) + 1, c0.astype(np.int64) + 1
    r1, c1 = np.clip(r0 + 1, 0, h + 1), np.clip(c0 + 1, 0, w + 1)
    r0, c0 = np.clip(r0, 0, h + 1), np.clip(c0, 0, w + 1)
    base = (np.arange(n) * (h + 2) * (w + 2))[:, None, None]
    flat = padded.ravel()
    top = flat[base + r0 * (w + 2) + c0] * (1 - fc) + flat[base + r0 * (w + 2) + c1] * fc
    bottom = flat[base + r1 * (w + 2) + c0] * (1 - fc) + flat[base + r1 * (w + 2) + c1] * fc
    value = top * (1 - fr) + bottom * fr
    return np.clip(np.rint(value), 0, 255).astype(np.uint8)


def random_affine(x: np.ndarray, rng: np.random.Generator, max_rotate_deg: float = 15.0,
                  zoom: tuple[float, float] = (0.85, 1.15), max_shift: float = 3.5) -> np.ndarray:
    """Each image gets its own rotation in +-max_rotate_deg, zoom in [zoom[0], zoom[1]] and shift of
    up to +-max_shift pixels along each axis, all uniform; see `affine` for the conventions."""
    x = _check_images(x)
    if max_rotate_deg < 0 or max_shift < 0 or not 0 < zoom[0] <= zoom[1]:
        raise TransferscaleError(
            "random_affine: need max_rotate_deg >= 0, max_shift >= 0 and 0 < zoom[0] <= zoom[1], "
            f"got {max_rotate_deg}, {max_shift}, {zoom}")
    n = len(x)
    rotate = rng.uniform(-max_rotate_deg, max_rotate_deg, size=n)
    scale = rng.uniform(zoom[0], zoom[1], size=n)
    shift = rng.uniform(-max_shift, max_shift, size=(n, 2))
    return affine(x, rotate, scale, shift)


def invert(x: np.ndarray) -> np.ndarray:
    """255 - x: white background, dark strokes."""
    return 255 - _check_images(x)


def _check_images(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.uint8 or x.ndim != 3:
        raise TransferscaleError(f"expected a uint8 batch of images (N, H, W), got {x.dtype} {x.shape}")
    return x
