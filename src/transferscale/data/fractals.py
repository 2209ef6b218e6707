"""FractalDB-style procedural images (Kataoka et al. 2020): every class is one iterated function system.

A class is 2-4 random affine maps p -> A p + b in the plane. Each A = R(t1) diag(s1, +-s2) R(t2) contracts
by singular values s1, s2 in [0.35, 0.85]; b is uniform in [-1, 1]^2; map k is chosen with probability
proportional to |det A_k| + 0.02 (so every map shows, big ones most). The chaos game draws points of the
attractor: 64 chains x 24 iterations per image, the first 8 discarded, 64 x 16 = 1,024 points per image.

The class's own attractor (unjittered maps) is normalised to the canvas once, by conjugating the maps with
the affine frame that takes its bounding box to [-0.9, 0.9]^2, so every image of the class fills the canvas
and the jitter below means the same for a small attractor as for a big one. Each image then varies: its
canvas-frame maps jittered (Gaussian, sigma 0.05 on every entry of A and b), its
point cloud flipped left-right (p = 0.5), rotated by +-0.3 rad, scaled by 0.75-1 and shifted by +-0.12 of
the canvas. Rendering accumulates hits per pixel and exposes them like film:
value = round(255 * (1 - exp(-hits / 2))), so one hit is grey (100), four are near white (220); no
anti-aliasing, the hit counts already vary smoothly. A class whose images light (value > 0) on average
under 12% of the canvas is rejected and its maps drawn again.

Determinism: class c draws everything from ``default_rng([seed, c, attempt, ...])``, so class c is the same
whatever number of classes is asked for, and images come in blocks of 64 seeded by their block index, so
the first n images of a class are the same whatever number is asked for. The acceptance test looks at the
first block only, so it does not depend on the counts either. Only IEEE-exact operations (+, *, floor) and
libm's sin / cos / exp on a few scalars touch the numbers, so the bytes are the same on any machine with
the same numpy random streams.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from transferscale.errors import TransferscaleError

GENERATOR_VERSION = "fractals-1"

SIZE = 28
N_MAPS = (2, 4)
SINGULAR = (0.35, 0.85)
DET_FLOOR = 0.02
MIN_FILL = 0.12
CHAINS, ITERATIONS, BURN_IN = 64, 24, 8
JITTER, MAX_ROTATE, FLIP_P, SCALE, MAX_SHIFT = 0.05, 0.3, 0.5, (0.75, 1.0), 0.12
BLOCK = 64
MAX_ATTEMPTS = 100
# The class attractor is mapped to [-MARGIN, MARGIN]: a little room for rotation and jitter.
MARGIN = 0.9
# hits -> grey value; exposure with a time constant of 2 hits, computed once with libm.
_EXPOSURE = np.array([round(255 * (1 - math.exp(-h / 2))) for h in range(64)], dtype=np.uint8)


@dataclass(frozen=True)
class FractalClass:
    """One class: its maps as rows (a11, a12, a21, a22, b1, b2), their probabilities, and its canvas frame."""

    maps: np.ndarray  # (M, 6) float64, as drawn
    probs: np.ndarray  # (M,) float64, sums to 1
    canvas_maps: np.ndarray  # (M, 6) the same system in the canvas frame: attractor in [-0.9, 0.9]^2
    attempts: int  # how many map sets were drawn before one passed the fill test


def _draw_maps(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n_maps = int(rng.integers(N_MAPS[0], N_MAPS[1] + 1))
    maps = np.empty((n_maps, 6))
    dets = np.empty(n_maps)
    for k in range(n_maps):
        t1, t2 = (float(t) for t in rng.uniform(-math.pi, math.pi, size=2))
        s1, s2 = (float(s) for s in rng.uniform(*SINGULAR, size=2))
        if rng.random() < 0.5:
            s2 = -s2  # a reflection
        # A = R(t1) diag(s1, s2) R(t2), in scalar arithmetic: BLAS may round a 2x2 product differently
        c1, n1, c2, n2 = math.cos(t1), math.sin(t1), math.cos(t2), math.sin(t2)
        maps[k, :4] = (c1 * s1 * c2 - n1 * s2 * n2, -c1 * s1 * n2 - n1 * s2 * c2,
                       n1 * s1 * c2 + c1 * s2 * n2, -n1 * s1 * n2 + c1 * s2 * c2)
        maps[k, 4:] = rng.uniform(-1.0, 1.0, size=2)
        dets[k] = s1 * abs(s2)
    weights = dets + DET_FLOOR
    return maps, weights / weights.sum()


def _chaos_game(maps: np.ndarray, probs: np.ndarray, start: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Run chains of the chaos game; every image has its own (jittered) maps.

    maps: (n_img, M, 6); start: (n_img, chains, 2); u: (n_img, iterations, chains) uniforms choosing the
    map at each step. Returns the kept points, (n_img, (iterations - BURN_IN) * chains, 2).
    """
    n_img, n_maps, _ = maps.shape
    iterations = u.shape[1]
    choice = np.searchsorted(np.cumsum(probs)[:-1], u, side="right")  # (n_img, iters, chains)
    flat_maps = maps.reshape(n_img * n_maps, 6)
    base = (np.arange(n_img) * n_maps)[:, None]
    x, y = start[..., 0].copy(), start[..., 1].copy()
    kept = np.empty((n_img, iterations - BURN_IN, u.shape[2], 2))
    for i in range(iterations):
        m = flat_maps[base + choice[:, i]]  # (n_img, chains, 6)
        x, y = m[..., 0] * x + m[..., 1] * y + m[..., 4], m[..., 2] * x + m[..., 3] * y + m[..., 5]
        if i >= BURN_IN:
            kept[:, i - BURN_IN, :, 0] = x
            kept[:, i - BURN_IN, :, 1] = y
    return kept.reshape(n_img, -1, 2)


def _to_canvas(maps: np.ndarray, probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The maps conjugated by N(p) = D (p - c), which takes the attractor's bounding box to [-0.9, 0.9]^2.

    N A N^-1 is  p -> D A D^-1 p + D (A c + b - c): the same attractor, stretched to the canvas, so that
    per-image jitter and pose act on every class at the canvas's scale, whatever the attractor's size.
    """
    chains, iterations = 512, 40
    start = rng.uniform(-1, 1, size=(1, chains, 2))
    u = rng.random((1, iterations, chains))
    points = _chaos_game(maps[None], probs, start, u)[0]
    lo, hi = points.min(axis=0), points.max(axis=0)
    c = (lo + hi) / 2
    d = MARGIN / np.maximum((hi - lo) / 2, 1e-6)
    a11, a12, a21, a22, b1, b2 = maps.T
    return np.stack([a11, a12 * (d[0] / d[1]), a21 * (d[1] / d[0]), a22,
                     d[0] * (a11 * c[0] + a12 * c[1] + b1 - c[0]),
                     d[1] * (a21 * c[0] + a22 * c[1] + b2 - c[1])], axis=1)


def _render_block(fc: FractalClass, rng: np.random.Generator, n_img: int) -> np.ndarray:
    """n_img images of one class, each with its own jittered maps and pose."""
    n_maps = fc.canvas_maps.shape[0]
    jittered = fc.canvas_maps[None] + JITTER * rng.standard_normal((n_img, n_maps, 6))
    start = rng.uniform(-MARGIN, MARGIN, size=(n_img, CHAINS, 2))
    u = rng.random((n_img, ITERATIONS, CHAINS))
    flip = rng.random(n_img) < FLIP_P
    angle = rng.uniform(-MAX_ROTATE, MAX_ROTATE, size=n_img)
    scale = rng.uniform(*SCALE, size=n_img)
    shift = rng.uniform(-MAX_SHIFT, MAX_SHIFT, size=(n_img, 2)) * 2  # canvas is [-1, 1]: width 2
    points = _chaos_game(jittered, fc.probs, start, u)

    # pose, in canvas coordinates ([-1, 1], y up): flip, rotate, scale, shift
    px = np.where(flip[:, None], -points[..., 0], points[..., 0])
    py = points[..., 1]
    cos = np.array([math.cos(a) for a in angle])[:, None] * scale[:, None]
    sin = np.array([math.sin(a) for a in angle])[:, None] * scale[:, None]
    qx = cos * px - sin * py + shift[:, :1]
    qy = sin * px + cos * py + shift[:, 1:]

    # y up in the plane, row 0 at the top of the image
    col = np.floor((qx + 1) * (SIZE / 2)).astype(np.int64)
    row = np.floor((1 - qy) * (SIZE / 2)).astype(np.int64)
    inside = (col >= 0) & (col < SIZE) & (row >= 0) & (row < SIZE)
    image = np.broadcast_to(np.arange(n_img)[:, None], col.shape)
    flat = (image * SIZE + row) * SIZE + col
    hits = np.bincount(flat[inside], minlength=n_img * SIZE * SIZE)
    return _EXPOSURE[np.minimum(hits, _EXPOSURE.size - 1)].reshape(n_img, SIZE, SIZE)


def _block(fc: FractalClass, seed: int, index: int, b: int) -> np.ndarray:
    # always a whole block: its random draws must not depend on how many images are asked for
    return _render_block(fc, np.random.default_rng([seed, index, fc.attempts, 1, b]), BLOCK)


def _accepted_class(seed: int, index: int) -> tuple[FractalClass, np.ndarray]:
    """The first map set drawn from (seed, index) whose first block of images fills >= 12%, and that block."""
    for attempt in range(MAX_ATTEMPTS):
        rng = np.random.default_rng([seed, index, attempt, 0])
        maps, probs = _draw_maps(rng)
        fc = FractalClass(maps, probs, _to_canvas(maps, probs, rng), attempt)
        first = _block(fc, seed, index, 0)
        if (first > 0).mean() >= MIN_FILL:
            return fc, first
    raise AssertionError(f"no fractal map set passed the fill test in {MAX_ATTEMPTS} tries")  # pragma: no cover


def fractal_class(seed: int, index: int) -> FractalClass:
    """The maps of class ``index`` under ``seed``."""
    return _accepted_class(seed, index)[0]


def generate_fractals(n_classes: int, per_class: int, seed: int = 0,
                      first_class: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of classes first_class .. first_class + n_classes - 1, class-major order.

    Returns x (n_classes * per_class, 28, 28) uint8 and y (int64, 0 .. n_classes - 1). Class c's images
    depend only on (seed, first_class + c) and per_class, and the first k of them not even on per_class.
    """
    checks = (("n_classes", n_classes, 1), ("per_class", per_class, 1), ("seed", seed, 0),
              ("first_class", first_class, 0))
    for option, value, low in checks:
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise TransferscaleError(f"fractal option {option} must be an integer >= {low}, got {value!r}")
    x = np.empty((n_classes * per_class, SIZE, SIZE), np.uint8)
    for c in range(n_classes):
        index = first_class + c
        fc, first = _accepted_class(seed, index)
        blocks = [first] + [_block(fc, seed, index, b) for b in range(1, -(-per_class // BLOCK))]
        x[c * per_class:(c + 1) * per_class] = np.concatenate(blocks)[:per_class]
    y = np.repeat(np.arange(n_classes, dtype=np.int64), per_class)
    return x, y
