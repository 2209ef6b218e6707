"""Bounded robust least squares for e_DS = k * e_US^alpha + e_IR, many small problems at once.

A bootstrap needs ~1,000 fits of 5-100 points each; one scipy call per fit spends most of its time in
Python overhead. Here every problem is a row of a (B, n) array (padding has weight 0) and all rows take
their Levenberg-Marquardt steps together, so 1,000 fits cost about as much as a few dozen numpy calls.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_E_US_FLOOR = 1e-9  # e_US = 0 (100% US accuracy) would put log(0) in the Jacobian
_STARTS = np.array([0.0, 0.3, 0.6, 0.8, 0.9, 0.95, 0.99])  # e_IR as a fraction of its upper bound
_N_REFINED = 2  # best profiled starts refined by Levenberg-Marquardt; the lower final loss wins


@dataclass(frozen=True)
class Problem:
    """B problems: errors x = e_US, y = e_DS, weights w (0 marks padding), all of shape (B, n)."""

    x: np.ndarray
    y: np.ndarray
    w: np.ndarray


@dataclass(frozen=True)
class Solution:
    """Fitted k, alpha, e_IR, the robust loss, and each problem's e_IR upper bound (all shape (B,))."""

    k: np.ndarray
    alpha: np.ndarray
    e_ir: np.ndarray
    loss: np.ndarray
    e_ir_max: np.ndarray


def pack(xs: list[np.ndarray], ys: list[np.ndarray]) -> Problem:
    """Stack ragged point sets into one padded problem; padding sits at (0.5, 0.5) with weight 0."""
    n = max(len(x) for x in xs)
    x = np.full((len(xs), n), 0.5)
    y = np.full((len(xs), n), 0.5)
    w = np.zeros((len(xs), n))
    for i, (xi, yi) in enumerate(zip(xs, ys)):
        x[i, : len(xi)], y[i, : len(yi)], w[i, : len(xi)] = xi, yi, 1.0
    return Problem(np.maximum(x, _E_US_FLOOR), y, w)


def solve(prob: Problem, alpha_bounds: tuple[float, float], loss: str, f_scale: float) -> Solution:
    """Fit every row: profile e_IR on a grid for starting points, then refine the best few with LM.

    Bounds: log k in [-50, 50] (k > 0), alpha in alpha_bounds, 0 <= e_IR <= (1 - 1e-6) * min e_DS, the
    strict e_IR < min e_DS of the law (the best observed point must sit above the asymptote).
    """
    e_ir_max = (1 - 1e-6) * np.min(np.where(prob.w > 0, prob.y, np.inf), axis=1)
    lo = np.column_stack([np.full_like(e_ir_max, -50.0), np.full_like(e_ir_max, alpha_bounds[0]),
                          np.zeros_like(e_ir_max)])
    hi = np.column_stack([np.full_like(e_ir_max, 50.0), np.full_like(e_ir_max, alpha_bounds[1]),
                          e_ir_max])
    starts = _profile_starts(prob, lo, hi, loss, f_scale)  # (B, S, 3), best first
    best_p, best_l = None, None
    for s in range(_N_REFINED):
        p, l_ = _levenberg_marquardt(prob, starts[:, s], lo, hi, loss, f_scale)
        if best_p is None:
            best_p, best_l = p, l_
        else:
            better = l_ < best_l
            best_p, best_l = np.where(better[:, None], p, best_p), np.where(better, l_, best_l)
    return Solution(np.exp(best_p[:, 0]), best_p[:, 1], best_p[:, 2], best_l, e_ir_max)


def robust_loss(r: np.ndarray, w: np.ndarray, loss: str, f_scale: float) -> np.ndarray:
    """Sum over points of rho(r): 'linear' rho = r^2; 'soft_l1' rho = 2 s^2 (sqrt(1 + (r/s)^2) - 1).

    soft_l1 is quadratic for |r| << s and linear beyond, so a model far below the frontier (a hull vertex
    that is only a corner of the cloud) pulls the curve with a bounded force, as in scipy's least_squares.
    """
    if loss == "linear":
        return np.sum(w * r**2, axis=-1)
    return np.sum(w * 2 * f_scale**2 * (np.sqrt(1 + (r / f_scale) ** 2) - 1), axis=-1)


def _profile_starts(prob: Problem, lo, hi, loss: str, f_scale: float) -> np.ndarray:
    """Starting points from e_IR profiled on a grid, best (lowest robust loss) first.

    For a fixed e_IR the law is linear in logs: log(e_DS - e_IR) = log k + alpha * log e_US, a weighted
    line fit in closed form. Trying e_IR over the whole feasible range means the answer does not hang on
    one initial guess: the refined fit starts in the basin of the best profile point.
    """
    e0 = hi[:, 2, None] * _STARTS  # (B, S)
    t = np.log(prob.x)[:, None, :]
    z = np.log(np.maximum(prob.y[:, None, :] - e0[..., None], 1e-12))
    w = prob.w[:, None, :]
    sw = w.sum(-1)
    tm, zm = (w * t).sum(-1) / sw, (w * z).sum(-1) / sw
    var = (w * (t - tm[..., None]) ** 2).sum(-1)
    cov = (w * (t - tm[..., None]) * (z - zm[..., None])).sum(-1)
    alpha = np.clip(np.where(var > 0, cov / np.where(var > 0, var, 1.0), 1.0), lo[:, 1, None], hi[:, 1, None])
    logk = np.clip(zm - alpha * tm, -50, 50)
    p = np.stack([logk, alpha, e0], axis=-1)  # (B, S, 3)
    r = np.exp(logk)[..., None] * prob.x[:, None, :] ** alpha[..., None] + e0[..., None] - prob.y[:, None, :]
    order = np.argsort(robust_loss(r, w, loss, f_scale), axis=1, kind="stable")
    return np.take_along_axis(p, order[..., None], axis=1)


def _residuals(prob: Problem, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """r = k x^alpha + e_IR - y and its Jacobian in (log k, alpha, e_IR): [k x^a, k x^a log x, 1]."""
    kx = np.exp(p[:, 0, None]) * prob.x ** p[:, 1, None]
    jac = np.stack([kx, kx * np.log(prob.x), np.ones_like(kx)], axis=-1)
    return kx + p[:, 2, None] - prob.y, jac


def _levenberg_marquardt(prob: Problem, p, lo, hi, loss: str, f_scale: float, max_iter: int = 200):
    """Projected Levenberg-Marquardt with iteratively reweighted robust loss, all rows at once.

    The step solves (J' W J + lam diag(J' W J)) d = -J' W r with W = rho'(r^2) (1 / sqrt(1 + (r/s)^2) for
    soft_l1), whose fixed point is a stationary point of the robust loss. A parameter on a bound whose
    gradient points outward is held there (active set), so the others still move; a step is kept only
    if it lowers the loss. Rows that have converged drop out of the batch.
    """
    p = p.copy()
    cur = robust_loss(_residuals(prob, p)[0], prob.w, loss, f_scale)
    lam = np.full(len(p), 1e-3)
    todo = np.arange(len(p))
    for _ in range(max_iter):
        sub = Problem(prob.x[todo], prob.y[todo], prob.w[todo])
        p_new = _lm_step(sub, p[todo], lo[todo], hi[todo], lam[todo], loss, f_scale)
        new = robust_loss(_residuals(sub, p_new)[0], sub.w, loss, f_scale)
        old = cur[todo]
        better = new < old
        p[todo[better]], cur[todo[better]] = p_new[better], new[better]
        lam[todo] = np.where(better, lam[todo] / 3, lam[todo] * 4)
        done = np.where(better, old - new <= 1e-12 * old + 1e-30, lam[todo] > 1e6)
        todo = todo[~done]
        if not len(todo):
            break
    return p, cur


def _lm_step(prob: Problem, p, lo, hi, lam, loss: str, f_scale: float) -> np.ndarray:
    """One damped, bound-projected Gauss-Newton step for every row."""
    r, jac = _residuals(prob, p)
    om = prob.w if loss == "linear" else prob.w / np.sqrt(1 + (r / f_scale) ** 2)
    jw = jac * om[..., None]
    g = np.matmul((r[:, None, :]), jw)[:, 0]  # J' W r, (B, 3)
    h = np.matmul(jw.transpose(0, 2, 1), jac)  # J' W J, (B, 3, 3)
    free = ~(((p <= lo) & (g > 0)) | ((p >= hi) & (g < 0)))
    h = h * free[:, :, None] * free[:, None, :]
    d = np.diagonal(h, axis1=1, axis2=2)
    a = h + (lam[:, None] * (d + 1e-12) + ~free)[:, :, None] * np.eye(3)
    step = -np.linalg.solve(a, (g * free)[..., None])[..., 0]
    return np.clip(p + step, lo, hi)
