"""The saturation law of Abnar et al. 2021, e_DS = k * e_US^alpha + e_IR, fitted on the upper hull
(or on all points, or as a quantile frontier: analysis.quantile).

Errors are 1 - accuracy. e_IR is the irreducible downstream error as e_US -> 0 and 1 - e_IR the DS
accuracy where gains saturate. In accuracy space the law reads DS = 1 - e_IR - k (1 - US)^alpha, whose
second derivative -k alpha (alpha - 1) (1 - US)^(alpha - 2) is negative only for alpha > 1: only then is
the frontier concave and equal to the upper convex hull of the scatter.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from transferscale.analysis import bootstrap, quantile
from transferscale.analysis.hull import records, upper_hull
from transferscale.analysis.lsq import pack, solve
from transferscale.errors import TransferscaleError, did_you_mean

POINT_SETS = ("upper_hull", "all", "quantile")
DEFAULT_QUANTILE = 0.9  # the quantile frontier's share of models below it, when points="quantile" names none
LOSSES = ("soft_l1", "linear")
_MIN_POINTS = 3  # the law has three parameters
_FEW_POINTS = 5  # fewer distinct points than this leave at most one degree of freedom: flag it
_AT_BOUND = 1e-3  # relative distance to a bound that counts as sitting on it


class TooFewPointsError(TransferscaleError):
    """The chosen point set has fewer distinct points than the law has parameters."""


class SaturationFit:
    """Fit e_DS = k * e_US^alpha + e_IR with bounded parameters, a robust loss and bootstrap intervals.

    Parameters
    ----------
    points : "upper_hull" fits the rising part of the upper convex hull of (US, DS) accuracy (see
        `upper_hull`); "all" fits every point; "quantile" fits the quantile frontier, the curve below which
        a share `quantile` of the models lie at every US accuracy, by quantile regression on every model
        (see `analysis.quantile`): it minimises sum_i rho_tau(e_DS,i - k e_US,i^alpha - e_IR) with
        tau = 1 - quantile and the check loss rho_tau(u) = u (tau - 1[u < 0]).
    n_bootstrap : resamples for the intervals (hull and all: frontier-gap bootstrap, see
        `analysis.bootstrap`; quantile: the bootstrap over models, see `quantile.pairs_bootstrap`);
        0 skips them (ci_ holds NaN).
    random_state : seed (int or None) of the bootstrap; the fit itself is deterministic.
    confidence : level of the intervals in ci_.
    loss : "soft_l1" (robust, default) or "linear" (plain least squares); hull and all only (the quantile
        fit's check loss weighs a model by its side of the curve, not its distance).
    f_scale : residual scale of soft_l1 in accuracy units: residuals well below it count quadratically,
        larger ones linearly.
    alpha_bounds : (low, high) for alpha; k > 0 and 0 <= e_IR < min observed e_DS always hold (for the
        quantile frontier 0 <= e_IR <= 1: a share 1 - q of the models lie above it and may beat its e_IR).
    wide_interval : flag "wide_interval" when the e_IR interval is wider than this (accuracy units).
    quantile : points="quantile" only: the share q of models below the frontier, in (0, 1); None means
        0.9. Higher q traces the frontier's edge more closely and rests on fewer models (about (1 - q) n
        lie above the curve).

    Fitted attributes: k_, alpha_, e_ir_, ci_ ({"k", "alpha", "e_ir"} -> (low, high)), n_points_ (the
    points that carry the fit: hull vertices, every point, or for the quantile frontier the models on or
    above it, about (1 - q) n, whose lower edge it is), points_ (their indices into the input), flags_
    (list of str), boot_ ((n_bootstrap, 3) resampled k, alpha, e_IR).

    Flags: too_few_points (fewer than 5 points), e_ir_at_bound, alpha_at_bound, k_at_bound (quantile:
    k = 0, a flat frontier, DS does not rise with US and alpha is undetermined), wide_interval,
    alpha_below_one (hull only: the frontier bends the other way; the hull keeps only its ends and no hull
    fit can recover the curve), bootstrap_failed (over 10% of resamples could not be fitted).
    """

    def __init__(self, points="upper_hull", n_bootstrap=1000, random_state=None, confidence=0.95,
                 loss="soft_l1", f_scale=0.01, alpha_bounds=(0.05, 10.0), wide_interval=0.1, quantile=None):
        self.points = points
        self.n_bootstrap = n_bootstrap
        self.random_state = random_state
        self.confidence = confidence
        self.loss = loss
        self.f_scale = f_scale
        self.alpha_bounds = alpha_bounds
        self.wide_interval = wide_interval
        self.quantile = quantile

    def fit(self, us_acc, ds_acc) -> SaturationFit:
        """Fit on accuracies in [0, 1]; returns self."""
        self._check_params()
        us, ds = check_accuracies(us_acc, ds_acc)
        if self.points == "quantile":
            return self._fit_quantile(us, ds)
        self.points_ = self._select(us, ds)
        self.n_points_ = len(self.points_)
        if self.n_points_ < _MIN_POINTS:
            raise TooFewPointsError(
                f"the {self.points} point set has {self.n_points_} distinct points, fewer than the law's 3 "
                "parameters; add models, or use points='all' if the hull is what is short")
        x, y = 1 - us, 1 - ds
        sol = solve(pack([x[self.points_]], [y[self.points_]]), **self._solver_kw())
        self.k_, self.alpha_, self.e_ir_ = float(sol.k[0]), float(sol.alpha[0]), float(sol.e_ir[0])
        self._e_ir_max = float(sol.e_ir_max[0])
        self._bootstrap(x, y)
        self.flags_ = self._flags(us, ds)
        return self

    def predict(self, us_acc) -> np.ndarray:
        """DS accuracy on the fitted law: 1 - (k (1 - US)^alpha + e_IR)."""
        if not hasattr(self, "k_"):
            raise TransferscaleError("this SaturationFit is not fitted yet; call .fit(us_acc, ds_acc) first")
        e_us = 1 - np.asarray(us_acc, dtype=float)
        return 1 - (self.k_ * np.maximum(e_us, 0.0) ** self.alpha_ + self.e_ir_)

    @property
    def saturation_(self) -> float:
        """1 - e_IR: the DS accuracy the law saturates at."""
        return 1 - self.e_ir_

    def _check_params(self) -> None:
        if self.points not in POINT_SETS:
            raise TransferscaleError(f"points={self.points!r} is not a point set; use one of {POINT_SETS}")
        if self.loss not in LOSSES:
            raise TransferscaleError(f"loss={self.loss!r} is not supported; use one of {LOSSES}")
        lo, hi = self.alpha_bounds
        if not 0 < lo < hi:
            raise TransferscaleError(f"alpha_bounds={self.alpha_bounds!r} must satisfy 0 < low < high")
        if not 0 < self.confidence < 1:
            raise TransferscaleError(f"confidence={self.confidence!r} must be between 0 and 1, e.g. 0.95")
        self._check_quantile()

    def _check_quantile(self) -> None:
        q = self.quantile
        if q is not None and self.points != "quantile":
            raise TransferscaleError(f"quantile={q!r} applies only to points='quantile' (got points="
                                     f"{self.points!r}); set points='quantile' or drop quantile")
        if q is None:
            return
        if isinstance(q, bool) or not isinstance(q, int | float | np.integer | np.floating) or not 0 < q < 1:
            raise TransferscaleError(f"quantile={q!r} must be a number strictly between 0 and 1: the share of "
                                     f"models below the frontier, e.g. quantile={DEFAULT_QUANTILE}")

    @property
    def quantile_(self) -> float:
        """The quantile the frontier is fitted at (the default where quantile=None)."""
        return DEFAULT_QUANTILE if self.quantile is None else float(self.quantile)

    def _fit_quantile(self, us, ds) -> SaturationFit:
        """The quantile frontier: check loss over every model, then the bootstrap over models."""
        distinct = np.unique(np.column_stack([us, ds]), axis=0, return_index=True)[1]
        if len(distinct) < _MIN_POINTS:
            self.points_, self.n_points_ = np.sort(distinct), len(distinct)
            raise TooFewPointsError(
                f"the quantile fit has {len(distinct)} distinct models, fewer than the law's 3 parameters; "
                "add models")
        x, y = 1 - us, 1 - ds
        tau = 1 - self.quantile_
        ones = np.ones(len(x))
        sol = quantile.solve_quantile(x, y, ones, tau, tuple(self.alpha_bounds))
        self.k_, self.alpha_, self.e_ir_ = float(sol.k[0]), float(sol.alpha[0]), float(sol.e_ir[0])
        self._e_ir_max = float(y.min())  # the scale e_IR's lower bound is judged on: e_IR_q may exceed it
        self.points_ = quantile.frontier_side(x, y, self.k_, self.alpha_, self.e_ir_)
        self.n_points_ = len(self.points_)
        self.n_boot_failed_ = 0
        if self.n_bootstrap:
            rng = np.random.default_rng(self.random_state)
            order = np.lexsort((y, x))  # resample in a canonical order: the rows' order changes nothing
            self.boot_ = quantile.pairs_bootstrap(x[order], y[order], tau, self.n_bootstrap, rng,
                                                  tuple(self.alpha_bounds))
            self.n_boot_failed_ = int(np.sum(~np.isfinite(self.boot_).all(axis=1)))
            self.ci_ = quantile.percentile_ci((self.k_, self.alpha_, self.e_ir_), self.boot_, self.confidence)
        else:
            self.boot_ = np.empty((0, 3))
            self.ci_ = {name: (np.nan, np.nan) for name in bootstrap.PARAMS}
        self.flags_ = self._flags(us, ds)
        return self

    def _solver_kw(self) -> dict:
        return {"alpha_bounds": tuple(self.alpha_bounds), "loss": self.loss, "f_scale": self.f_scale}

    def _select(self, us, ds) -> np.ndarray:
        return upper_hull(us, ds) if self.points == "upper_hull" else np.arange(len(us))

    def _bootstrap(self, x, y) -> None:
        """Frontier-gap bootstrap with the point set recomputed per resample (see analysis.bootstrap)."""
        self.n_boot_failed_ = 0
        if not self.n_bootstrap:
            self.boot_ = np.empty((0, 3))
            self.ci_ = {name: (np.nan, np.nan) for name in bootstrap.PARAMS}
            return
        rng = np.random.default_rng(self.random_state)
        params = (self.k_, self.alpha_, self.e_ir_)
        gaps = bootstrap.frontier_gaps(x, y, params, self.points_, self._solver_kw())
        y_sets = bootstrap.frontier_resamples(x, y, params, self.n_bootstrap, rng, gaps)
        select = upper_hull if self.points == "upper_hull" else self._select  # the hull: all resamples at once
        xs, ys = bootstrap.select_sets(x, y_sets, select)
        self.boot_, self.n_boot_failed_ = bootstrap.fit_resamples(xs, ys, self._solver_kw())
        estimate = (self.k_, self.alpha_, self.e_ir_)
        self.ci_ = bootstrap.basic_interval(estimate, self.boot_, self.confidence, self.alpha_bounds)

    def _flags(self, us, ds) -> list[str]:
        flags = []
        if self.n_points_ < _FEW_POINTS:
            flags.append("too_few_points")
        at_top = self.points != "quantile" and self.e_ir_ >= (1 - _AT_BOUND) * self._e_ir_max
        if self.e_ir_ <= _AT_BOUND * self._e_ir_max or at_top:
            flags.append("e_ir_at_bound")
        if self.points == "quantile" and self.k_ <= 0:  # the hull's log k cannot reach 0; the quantile's k can
            flags.append("k_at_bound")
        lo, hi = self.alpha_bounds
        if self.alpha_ <= lo * (1 + _AT_BOUND) or self.alpha_ >= hi * (1 - _AT_BOUND):
            flags.append("alpha_at_bound")
        low, high = self.ci_["e_ir"]
        if self.n_bootstrap and not high - low <= self.wide_interval:
            flags.append("wide_interval")
        if self.points == "upper_hull" and (self.alpha_ < 1 or frontier_convex(us, ds, self._solver_kw())):
            flags.append("alpha_below_one")
        if self.n_bootstrap and self.n_boot_failed_ > 0.1 * self.n_bootstrap:
            flags.append("bootstrap_failed")
        return flags


def frontier_convex(us, ds, solver_kw: dict) -> bool:
    """Does the frontier bend the other way (alpha < 1)? The hull cannot tell, so ask the records.

    A record is a model whose DS beats every model with lower US (`hull.records`): the records trace the
    frontier whatever its curvature, where the convex hull keeps only the corners of a convex one. Fit the
    law on them (no bootstrap) and report whether alpha < 1. On synthetic clouds (benchmarks'
    simulate_frontier, 20 draws each) it flagged every draw at alpha = 0.5, 0.7, 0.85 and none at 1.2-2.
    """
    rec = records(us, ds)
    if len(rec) < _FEW_POINTS:
        return False
    return bool(solve(pack([1 - us[rec]], [1 - ds[rec]]), **solver_kw).alpha[0] < 1)


def check_accuracies(us_acc, ds_acc) -> tuple[np.ndarray, np.ndarray]:
    """1-D float arrays of equal length, finite, in [0, 1], with at least two distinct US accuracies."""
    us, ds = np.asarray(us_acc, dtype=float), np.asarray(ds_acc, dtype=float)
    if us.ndim != 1 or us.shape != ds.shape:
        raise TransferscaleError(
            f"us_acc and ds_acc must be 1-D and the same length; got shapes {us.shape} and {ds.shape}")
    check_values("us_acc", us)
    check_values("ds_acc", ds)
    if us.size and np.ptp(us) == 0:
        raise TransferscaleError(f"all {us.size} US accuracies are equal ({us[0]:g}); the law needs models "
                                 "that differ in upstream accuracy")
    return us, ds


def check_values(name: str, v: np.ndarray) -> None:
    """Accuracies must be finite and in [0, 1]; say which and how to fix it."""
    if not np.all(np.isfinite(v)):
        raise TransferscaleError(f"{name} has {int(np.sum(~np.isfinite(v)))} NaN or infinite values; "
                                 "drop those models before fitting")
    if v.size and (v.min() < 0 or v.max() > 1):
        hint = " (they look like percent: divide by 100)" if v.max() <= 100 else ""
        raise TransferscaleError(f"{name} must be accuracies in [0, 1]; got values in "
                                 f"[{v.min():g}, {v.max():g}]{hint}")


RESULT_COLUMNS = ["k", "k_low", "k_high", "alpha", "alpha_low", "alpha_high", "e_ir", "e_ir_low", "e_ir_high",
                  "saturation", "saturation_low", "saturation_high", "n_points", "n_models", "flags"]


def fit_saturation(df, us="us_acc", ds="ds_acc", by=(), points="upper_hull", n_bootstrap=1000,
                   random_state=0, jobs: int | None = 1, **fit_params):
    """Fit e_DS = k * e_US^alpha + e_IR per group of a tidy table; one row per group.

    Columns: the group keys, k, alpha, e_ir with their interval bounds (*_low, *_high), saturation = 1 - e_IR
    (its bounds are 1 - the e_IR bounds), n_points (distinct points fitted), n_models (rows in the group),
    flags (";"-joined). A group the law cannot be fitted on (fewer than 3 points on its hull) gets NaN
    parameters and the flag too_few_points rather than stopping the other groups; bad values (NaN,
    outside [0, 1]) stop the whole call with a message naming the column.

    points and the SaturationFit parameters in fit_params (e.g. points="quantile", quantile=0.9) are
    checked once, before any group is fitted.

    Each group is bootstrapped with its own seed, drawn from random_state and the group's key values
    (`group_seed`), so a group's result depends neither on the other groups nor on their order, and
    `jobs` processes (None: one per core, at most one per group) give the same numbers as one.
    """
    by = [by] if isinstance(by, str) else list(by)
    # a bad parameter would fail in every group alike: say so once instead of flagging each group degenerate
    SaturationFit(points=points, n_bootstrap=n_bootstrap, **fit_params)._check_params()
    _check_columns(df, [us, ds, *by])
    for col in (us, ds):
        check_values(f"column {col!r}", df[col].to_numpy(float))
    groups = df.groupby(by, dropna=False, sort=True) if by else [((), df)]
    work = []
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        work.append((key, g[us].to_numpy(float), g[ds].to_numpy(float), group_seed(random_state, key),
                     points, n_bootstrap, fit_params))
    jobs = default_jobs(len(work)) if jobs is None else max(1, min(int(jobs), len(work)))
    if jobs > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # fork where there is one: workers start at once and need not re-import the caller's main script
        # (which spawn and forkserver do, so a script without a `__main__` guard would run again in each)
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        with ProcessPoolExecutor(jobs, mp_context=mp.get_context(method), initializer=_one_thread) as pool:
            fitted = list(pool.map(_fit_group, work, chunksize=max(1, len(work) // (4 * jobs))))
    else:
        fitted = [_fit_group(w) for w in work]
    rows = [{**dict(zip(by, w[0])), **row} for w, row in zip(work, fitted)]
    return pd.DataFrame(rows, columns=[*by, *RESULT_COLUMNS])


def group_seed(random_state, key: tuple) -> list[int] | None:
    """The bootstrap seed of the group with these key values: random_state followed by four 32-bit words of
    a sha256 of the key, written canonically (an integral float as an int, any missing value as None), so
    the same group gets the same resamples in any table, order or process. None stays None (unseeded)."""
    if random_state is None:
        return None
    import hashlib
    import json

    def plain(v):
        if v is None or (not isinstance(v, str) and pd.isna(v)):
            return None
        if isinstance(v, bool | np.bool_):
            return bool(v)
        if isinstance(v, int | np.integer):
            return int(v)
        if isinstance(v, float | np.floating):
            return int(v) if float(v).is_integer() else float(v)
        return str(v)

    digest = hashlib.sha256(json.dumps([plain(v) for v in key]).encode()).digest()
    return [int(random_state), *(int.from_bytes(digest[i:i + 4], "little") for i in range(0, 16, 4))]


def default_jobs(n_groups: int) -> int:
    """One process per core this process may use, and no more than there are groups."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, n_groups))


_LIMITS = None  # a worker's thread limits, held for its lifetime


def _one_thread() -> None:
    """Worker start: one BLAS / OpenMP thread each, since the processes already fill the cores."""
    from threadpoolctl import threadpool_limits

    global _LIMITS
    _LIMITS = threadpool_limits(1)


def _fit_group(work) -> dict:
    _key, us, ds, seed, points, n_bootstrap, fit_params = work
    fit = SaturationFit(points=points, n_bootstrap=n_bootstrap, random_state=seed, **fit_params)
    return _fit_row(fit, us, ds)


def _fit_row(fit: SaturationFit, us, ds) -> dict:
    """One result row; a group that cannot be fitted becomes NaNs with a flag saying why."""
    row = dict.fromkeys(RESULT_COLUMNS, np.nan)
    row["n_models"] = len(us)
    try:
        fit.fit(us, ds)
    except TooFewPointsError:
        convex = fit.points == "upper_hull" and frontier_convex(us, ds, fit._solver_kw())
        row.update(n_points=len(fit.points_), flags="too_few_points" + (";alpha_below_one" if convex else ""))
        return row
    except TransferscaleError:  # every US accuracy equal: no slope to fit
        row.update(n_points=0, flags="degenerate")
        return row
    for name, value in (("k", fit.k_), ("alpha", fit.alpha_), ("e_ir", fit.e_ir_)):
        row[name], (row[f"{name}_low"], row[f"{name}_high"]) = value, map(float, fit.ci_[name])
    row.update(saturation=1 - fit.e_ir_, saturation_low=1 - row["e_ir_high"],
               saturation_high=1 - row["e_ir_low"], n_points=fit.n_points_, flags=";".join(fit.flags_))
    return row


def extrapolation_error(us_acc, ds_acc, holdout_quantile=0.9, points="upper_hull", **fit_params) -> dict:
    """Fit on the runs below a US-accuracy quantile, predict the held-out strongest runs.

    The paper's check of hull fits against all-points fits: a law that describes the frontier should
    predict where the best models land. Returns n_fit, n_holdout, and the prediction error
    (predicted - observed DS accuracy) on two targets: the held-out runs on the upper hull of all runs
    (rmse_frontier, bias_frontier: the frontier the law is meant to trace) and every held-out run
    (rmse_all). A hull fit should win on the first; an all-points fit is pulled toward the second.
    """
    us, ds = check_accuracies(us_acc, ds_acc)
    cut = np.quantile(us, holdout_quantile)
    train, held = us < cut, us >= cut
    if held.sum() == 0 or train.sum() < _MIN_POINTS:
        raise TransferscaleError(f"holdout_quantile={holdout_quantile} leaves {int(train.sum())} runs to fit "
                                 f"and {int(held.sum())} to predict; choose a quantile that leaves both")
    fit_params.setdefault("n_bootstrap", 0)
    fit = SaturationFit(points=points, **fit_params).fit(us[train], ds[train])
    front = np.intersect1d(upper_hull(us, ds), np.flatnonzero(held))
    err_front = fit.predict(us[front]) - ds[front]
    err_all = fit.predict(us[held]) - ds[held]
    return {"points": points, "n_fit": fit.n_points_, "n_train": int(train.sum()), "n_holdout": int(held.sum()),
            "n_frontier": len(front), "rmse_frontier": float(np.sqrt(np.mean(err_front**2))),
            "bias_frontier": float(np.mean(err_front)), "rmse_all": float(np.sqrt(np.mean(err_all**2))),
            "flags": fit.flags_}


def _check_columns(df, cols) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise TransferscaleError(f"column {missing[0]!r} is not in the table; "
                                 f"{did_you_mean(missing[0], map(str, df.columns))}")
