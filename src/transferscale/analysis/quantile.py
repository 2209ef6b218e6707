"""The quantile frontier: the saturation law fitted as a conditional quantile of DS accuracy.

The upper hull keeps the corners of the (US, DS) scatter only (2-3 of timm's ~1,550 models on four of its
five shifted test sets) and no more than the ends of a frontier that is convex in accuracy space
(alpha < 1). The quantile frontier is instead the curve below which a share q of the models lie at every
US accuracy:

    P(DS < 1 - k (1 - US)^alpha - e_IR | US) = q,

fitted by quantile regression (Koenker & Bassett 1978) on every model. In errors x = e_US, y = e_DS, with
tau = 1 - q and u_i = y_i - k x_i^alpha - e_IR (u > 0: the model lies below the curve in accuracy), it
minimises the check loss

    L(k, alpha, e_IR) = sum_i w_i rho_tau(u_i),   rho_tau(u) = u (tau - 1[u < 0]).

The one-sided derivatives of L in e_IR give the quantile property: wherever e_IR is off its bounds, the
weight strictly above the curve is at most tau and the weight on or above it at least tau of the total
(the curve passes through ~3 models). A model enters through the side of the curve it lies on, not its
distance, so one far below the frontier pulls no harder than one just below it. What it estimates: if
models fall below a frontier f by gaps g whose distribution does not depend on US accuracy, the q-quantile
curve is f lowered by Q_g(tau), the tau-quantile of the gaps: the same k and alpha, and e_IR + Q_g(tau)
for e_IR (Q_g(0.1) = 0.003 for exponential gaps of mean 0.03). q -> 1 closes that offset and leaves the
fit resting on fewer models.

How it is solved, for many problems at once (a bootstrap's resamples are rows of a weight matrix):
- the check loss's kink is rounded over a window of width 2h: rho_h(u) = u^2 / 4h on
  [-2 (1 - tau) h, 2 tau h] and rho_tau(u) - h tau^2 or - h (1 - tau)^2 beyond it, so that
  rho_h'(u) = psi(u) = clip(u / 2h, tau - 1, tau) and rho_h(u) = u psi - h psi^2 everywhere. psi(0) = 0,
  so models lying on the law stay on the fitted curve. h falls from 0.01 to 1e-6 (accuracy units) with
  warm starts; at 1e-6 the loss is within ~1e-6 of an exact linear-programming solution
  (tests/test_quantile.py);
- alpha's start: for fixed alpha the law is linear in (e_IR, k), a convex linear quantile regression of y
  on t = x^alpha; it is solved at 9 log-spaced alpha values over alpha_bounds (h = 0.01), and the best
  one starts the fit of all three parameters (damped Newton, `_newton`) as h falls.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

H_FINAL = 1e-6  # the final smoothing width; a model within 2 h of the curve counts as on it
_H_GRID = 1e-2  # alpha held at each grid value, from a least-squares start
_H_POLISH = (1e-3, 1e-4, 1e-5, H_FINAL)  # then all three parameters together
_GRID = 9  # log-spaced alpha values; the best one starts the three-parameter fit
_BLOCK = 256  # rows solved together: temporaries stay a few tens of MB at 1,500 models
_E_US_FLOOR = 1e-9  # e_US = 0 (100% US accuracy) would put log(0) into x^alpha


@dataclass(frozen=True)
class QuantileSolution:
    """Fitted k, alpha, e_IR and the (unsmoothed) check loss, each of shape (B,)."""

    k: np.ndarray
    alpha: np.ndarray
    e_ir: np.ndarray
    loss: np.ndarray


def check_loss(u: np.ndarray, tau: float, h: float = 0.0) -> np.ndarray:
    """rho_tau(u) elementwise, or (h > 0) its smoothed rho_h = u psi - h psi^2, psi = clip(u / 2h, tau - 1, tau)."""
    if h <= 0:
        return u * (tau - (u < 0))
    psi = np.clip(u / (2 * h), tau - 1, tau)
    return u * psi - h * psi**2


def solve_quantile(x_err, y_err, weights, tau: float, alpha_bounds: tuple[float, float]) -> QuantileSolution:
    """Minimise sum_i w_bi rho_tau(y_i - k x_i^alpha - e_IR) for every row b of `weights` (shape (B, n) or
    (n,)), over k >= 0, alpha in alpha_bounds, 0 <= e_IR <= 1; x, y: the n models' e_US, e_DS.

    e_IR is not held below the best model's error, as the hull's is: a share 1 - q of the models lie above
    the quantile frontier, so some may beat its asymptote."""
    x = np.maximum(np.asarray(x_err, dtype=float), _E_US_FLOOR)
    y = np.asarray(y_err, dtype=float)
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    parts = [_solve_block(np.log(x), y, w[i:i + _BLOCK], tau, alpha_bounds)
             for i in range(0, len(w), _BLOCK)]
    k, alpha, e_ir = (np.concatenate([p[j] for p in parts]) for j in range(3))
    u = y[None, :] - k[:, None] * x[None, :] ** alpha[:, None] - e_ir[:, None]
    return QuantileSolution(k, alpha, e_ir, np.sum(w * check_loss(u, tau), axis=1))


def _solve_block(logx, y, w, tau, alpha_bounds):
    """Best of a grid over alpha (alpha held, smoothing coarse), then all three parameters from there."""
    lo = np.array([0.0, 0.0, np.log(alpha_bounds[0])])
    hi = np.array([1.0, np.inf, np.log(alpha_bounds[1])])
    p, best = None, None
    for beta in np.linspace(lo[2], hi[2], _GRID):
        start = _least_squares_start(np.exp(np.exp(beta) * logx), y, w, tau, hi[0], beta)
        p_grid, loss = _newton(logx, y, w, tau, start, _H_GRID, lo, hi, fit_alpha=False)
        if p is None:
            p, best = p_grid, loss
        else:
            better = loss < best
            p, best = np.where(better[:, None], p_grid, p), np.where(better, loss, best)
    for h in _H_POLISH:
        p, _ = _newton(logx, y, w, tau, p, h, lo, hi, fit_alpha=True)
    return p[:, 1], np.exp(p[:, 2]), p[:, 0]


def _least_squares_start(t, y, w, tau, e_hi, beta):
    """(e, k, log alpha) where Newton starts: the weighted least-squares slope k >= 0, and e_IR at the
    tau-quantile of y - k t; where that e_IR is out of bounds, e_IR on the bound and k at the tau-quantile
    of (y - e_IR) / t instead. Quantiles over the models a row weights, unweighted: it is a start only."""
    sw = w.sum(axis=1)
    tm, ym = (w @ t) / sw, (w @ y) / sw
    var = w @ t**2 / sw - tm**2
    cov = w @ (t * y) / sw - tm * ym
    k = np.maximum(np.where(var > 1e-15, cov / np.maximum(var, 1e-15), 0.0), 0.0)
    used = w > 0
    e = np.nanquantile(np.where(used, y - k[:, None] * t, np.nan), tau, axis=1)
    out = (e < 0) | (e > e_hi)
    if out.any():
        e = np.clip(e, 0.0, e_hi)
        ratio = np.where(used[out], (y - e[out, None]) / t, np.nan)
        k[out] = np.maximum(np.nanquantile(ratio, tau, axis=1), 0.0)
    return np.column_stack([e, k, np.full(len(w), beta)])


def _newton(logx, y, w, tau, p, h, lo, hi, fit_alpha: bool, max_iter: int = 60):
    """Minimise sum_i w_i rho_h(y_i - e - k x_i^alpha) over p = (e, k, log alpha), all rows at once.

    Damped Newton (Levenberg-Marquardt) on the exact Hessian of the smoothed loss,
        H = sum_i w_i rho_h''(u_i) J_i J_i' - sum_i w_i rho_h'(u_i) d2f_i,   J_i = df_i / dp,
    with rho_h'' = 1 / 2h inside the window and 0 outside, damped by lam times the diagonal of
    sum_i w_i J_i J_i' / 2h over all points (so a row with no point in the window takes a scaled gradient
    step). With alpha held (fit_alpha False) the problem is convex and piecewise quadratic in (e, k), and
    the step is exact once the set of points in the window stops changing. A parameter on a bound whose
    gradient points outward is held there; a step is kept only if it lowers the loss.
    """
    free_alpha = np.array([True, True, fit_alpha])
    lam = np.full(len(w), 1e-3)
    todo = np.arange(len(w))
    p = p.copy()
    loss, grad, hess, damp = _local(logx, y, w, tau, p, h)
    for _ in range(max_iter):
        pt, lt, g = p[todo], lam[todo], grad[todo]
        free = free_alpha & ~(((pt <= lo) & (g > 0)) | ((pt >= hi) & (g < 0)))
        free[:, 2] &= pt[:, 1] > 0  # with k = 0 the curve is flat and alpha does not enter
        both = free[:, :, None] & free[:, None, :]
        ridge = lt[:, None] * damp[todo] + 1e-12 * damp[todo].max(axis=1, keepdims=True)
        a = np.where(both, hess[todo], 0.0) + np.eye(3) * np.where(free, ridge, 1.0)[:, None, :]
        step = -np.linalg.solve(a, (g * free)[..., None])[..., 0]
        p_new = np.clip(pt + step, lo, hi)
        trial = _local(logx, y, w[todo], tau, p_new, h)
        old = loss[todo]
        better = trial[0] < old
        keep = todo[better]
        p[keep] = p_new[better]
        for s, s_new in zip((loss, grad, hess, damp), trial):
            s[keep] = s_new[better]
        lam[todo] = np.where(better, lt / 3, lt * 4)
        gain = old - trial[0]
        promised = -np.sum(g * (p_new - pt), axis=1)  # the first-order decrease the step aims for
        done = (gain <= 1e-13 * old + 1e-16) & (better | (promised <= 1e-12 * old + 1e-16)) | (lt > 1e8)
        todo = todo[~done]
        if not len(todo):
            break
    return p, loss


def _local(logx, y, w, tau, p, h):
    """Loss, gradient (B, 3), Hessian (B, 3, 3) and damping scale (B, 3) of the smoothed loss at p.

    With psi = rho_h'(u) = clip(u / 2h, tau - 1, tau), rho_h(u) = u psi - h psi^2 on both sides of the
    window and inside it (u^2 / 4h), so one expression serves. J = (1, t, k dt), dt = d t / d log alpha.
    """
    e, k, alpha = p[:, 0, None], p[:, 1, None], np.exp(p[:, 2, None])
    alog = alpha * logx
    t = np.exp(alog)
    dt = t * alog
    kdt = k * dt
    u = y - e - k * t
    psi = np.clip(u * (1 / (2 * h)), tau - 1, tau)
    m = np.where((psi > tau - 1) & (psi < tau), w, 0.0) * (1 / (2 * h))  # rho_h'' = 1 / 2h in the window
    wpsi = w * psi
    dot = _rowdot
    mt, mk = m * t, m * kdt
    hess = np.empty((len(w), 3, 3))
    hess[:, 0, 0], hess[:, 0, 1], hess[:, 0, 2] = m.sum(axis=1), mt.sum(axis=1), mk.sum(axis=1)
    hess[:, 1, 1], hess[:, 1, 2], hess[:, 2, 2] = dot(mt, t), dot(mt, kdt), dot(mk, kdt)
    # minus sum w psi d2f: d2f / dk dlog alpha = dt, d2f / dlog alpha^2 = k dt (1 + alpha log x)
    hess[:, 1, 2] -= dot(wpsi, dt)
    hess[:, 2, 2] -= dot(wpsi * kdt, 1 + alog)
    hess[:, 1, 0], hess[:, 2, 0], hess[:, 2, 1] = hess[:, 0, 1], hess[:, 0, 2], hess[:, 1, 2]
    grad = -np.column_stack([wpsi.sum(axis=1), dot(wpsi, t), dot(wpsi, kdt)])
    damp = np.column_stack([w.sum(axis=1), dot(w * t, t), dot(w * kdt, kdt)]) * (1 / (2 * h))
    return dot(wpsi, u - h * psi), grad, hess, damp


def _rowdot(a, b):
    """sum over the last axis of a * b, per row, without the product's temporary."""
    return np.einsum("bn,bn->b", a, b)


def frontier_side(x_err, y_err, k: float, alpha: float, e_ir: float) -> np.ndarray:
    """Indices of the models on or above the fitted curve in accuracy (u <= 2 h: those it passes through
    count), ordered by US accuracy: the top 1 - q share whose lower edge the quantile frontier is."""
    x = np.maximum(np.asarray(x_err, dtype=float), _E_US_FLOOR)
    u = np.asarray(y_err, dtype=float) - (k * x**alpha + e_ir)
    above = np.flatnonzero(u <= 2 * H_FINAL)
    return above[np.argsort(-x[above], kind="stable")]


def percentile_ci(estimate, samples, level: float) -> dict[str, tuple[float, float]]:
    """Percentile intervals [q_(1-level)/2, q_(1+level)/2] of the resampled k, alpha, e_IR, widened to hold
    the estimate. Percentile rather than basic: at 95% nominal, on 3 frontiers x 100 draws of 100 models at
    q = 0.9 and 0.95, the percentile intervals held the quantile frontier's k, alpha, e_IR 93-99% of the
    time, the basic ones 80-93% (benchmarks/coverage_saturation.py). The e_IR interval was 0.011-0.028
    wide, about half the hull's (0.029-0.054); it held the frontier's own e_IR, which lies Q_g(tau) below
    the target, 71-94% of the time."""
    tail = (1 - level) / 2
    q = np.nanquantile(samples, [tail, 1 - tail], axis=0)
    return {name: (float(min(q[0, j], estimate[j])), float(max(q[1, j], estimate[j])))
            for j, name in enumerate(("k", "alpha", "e_ir"))}


def pairs_bootstrap(x_err, y_err, tau: float, n_boot: int, rng: np.random.Generator,
                    alpha_bounds: tuple[float, float]) -> np.ndarray:
    """(n_boot, 3) k, alpha, e_IR refitted on resamples of the models drawn with replacement.

    A resample is a row of counts (how often each model was drawn), the weights of its check loss, so all
    resamples share the models' positions and are solved together. Why this plain bootstrap serves here
    when it failed the hull (analysis.bootstrap): the hull is an extreme of the scatter, made of a few models
    that a resample keeps only ~63% of the time, so every resample's hull sits lower; the quantile curve
    is set by the shares of all models on either side of it, which a resample keeps on average (a model
    drawn twice counts twice). Coverage: `percentile_ci`.
    """
    n = len(x_err)
    out = []
    for start in range(0, n_boot, _BLOCK):
        rows = min(_BLOCK, n_boot - start)
        draws = rng.integers(n, size=(rows, n)) + n * np.arange(rows)[:, None]
        counts = np.bincount(draws.ravel(), minlength=rows * n).reshape(rows, n).astype(float)
        sol = solve_quantile(x_err, y_err, counts, tau, alpha_bounds)
        out.append(np.column_stack([sol.k, sol.alpha, sol.e_ir]))
    return np.concatenate(out) if out else np.empty((0, 3))
