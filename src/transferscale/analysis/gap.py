"""The pretrained-versus-scratch gap against downstream data size (Wang, Khabsa, Ma 2020), and its law.

Write g(n) = acc_pretrained(n) - acc_scratch(n) for the accuracy gap (in accuracy units: 0.01 is one point)
when both are trained on the same n downstream examples. The law fitted here is

    g(n) = a * n^(-b) + c,        a >= 0, b in [b_min, b_max] (b > 0), c free,

a gap that shrinks as a power of the data towards a floor c (c < 0: scratch ends up ahead; c = 0: the gap
closes). The data size where the gap falls to a threshold t (one point, t = 0.01) is, when c < t and a > 0,

    n* = (a / (t - c))^(1 / b);

when c >= t the law never gets there (n* = inf); when a = 0 the gap is flat: n* = 0 if c < t, else inf.

Fitting. Least squares over the points, S(a, b, c) = sum_i (g_i - a n_i^-b - c)^2 (several points at one size,
e.g. one per seed, weigh that size by their number). For a fixed b the model is linear in (a, c): with
x_i = (n_i / n_min)^-b and x-bar, g-bar the means,
A = sum w (x - x-bar)(g - g-bar) / sum w (x - x-bar)^2 and c = g-bar - A x-bar, or A = 0, c = g-bar when that A
is negative (the constrained optimum then lies on a = 0); a = A n_min^b. So S is profiled over b on a log-spaced
grid, zoomed three times around the best value, for every fit at once (all the bootstrap resamples in one
numpy computation), and the point estimate is polished by scipy's bounded least squares from there (kept
only if it lowers S). Scaling n by n_min keeps x in (0, 1] whatever the data sizes.

Intervals (percentile bootstrap, `n_bootstrap` resamples, level `confidence`), one of:
- "groups", when every data size has two or more points (e.g. one per seed): the k gaps at each size are
  resampled with replacement within that size, so a resample keeps every size and the measured spread
  between seeds; their deviations from the size's mean are first inflated by sqrt(k / (k - 1)), since the
  mean of k draws from k values varies (k - 1) / k times as much as the mean of k fresh seeds would;
- "residuals", otherwise: g*_i = g-hat(n_i) + r*_i with r* drawn with replacement from the residuals,
  centred and inflated by sqrt(m / (m - 3)) (m points, 3 parameters: least squares leaves residuals smaller
  than the noise). Needs m > 3.
The interval of n* is the percentile interval of the resamples' n* (inf included: an upper end of inf says
that some resamples never reach the threshold). With few sizes (Wang's 7) the intervals are wide: they say
so rather than hide it. Measured coverage of the nominal 95% intervals (150 simulated studies, g = 1.5 n^-0.5
- 0.02 at Wang's 7 fractions of 4,500 examples, n* = 2,500): "residuals", one point per size, noise sd 0.01:
a 93%, b 92%, c 93%, n* 88%; "groups", 3 seeds per size, sd 0.015: a 85%, b 87%, c 90%, n* 95%. Read them
as somewhat narrow.

A second, law-free reading (Hernandez, Kaplan, Henighan, McCandlish 2021, "Scaling laws for transfer"):
the effective data transferred D_T(n) = D_E(n) - n, where D_E(n) is the number of examples the scratch model
needs to match the pretrained model's accuracy at n, read off the scratch curve by interpolating its accuracy
linearly in log n (`effective_data`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from transferscale.errors import TransferscaleError

THRESHOLD = 0.01  # one accuracy point
_GRID = 240  # b values in the first profile grid (log-spaced)
_ZOOM = 3  # zoom rounds, each 41 values across the neighbours of the best b
_MIN_SIZES = 3  # three parameters
PARAMS = ("a", "b", "c")


@dataclass(frozen=True)
class GapLaw:
    """a, b, c of g(n) = a n^-b + c."""

    a: float
    b: float
    c: float

    def predict(self, n) -> np.ndarray:
        return self.a * np.asarray(n, dtype=float) ** -self.b + self.c

    def crossing(self, threshold: float = THRESHOLD) -> float:
        return crossing_size(self.a, self.b, self.c, threshold)


def crossing_size(a, b, c, threshold: float = THRESHOLD):
    """n* where a n^-b + c falls to `threshold`: (a / (threshold - c))^(1/b) when c < threshold and a > 0; inf
    when c >= threshold; 0 when a = 0 and c < threshold. Works elementwise on arrays."""
    a, b, c = (np.asarray(v, dtype=float) for v in (a, b, c))
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        room = threshold - c
        n = np.where(a > 0, (a / np.where(room > 0, room, 1.0)) ** (1.0 / b), 0.0)
        n = np.where(room > 0, n, np.inf)
    return float(n) if n.ndim == 0 else n


class GapFit:
    """Fit g(n) = a n^-b + c to (data size, gap) points, with bootstrap intervals and the crossing size n*.

    Parameters
    ----------
    threshold : the gap n* is the data size of (accuracy units; 0.01 is one point).
    n_bootstrap : resamples for the intervals (module docstring); 0 skips them (ci_ holds NaN).
    random_state : seed of the bootstrap; the fit itself is deterministic.
    confidence : level of the intervals.
    b_bounds : (low, high) for b; low > 0.
    resample : "auto" ("groups" when every size has >= 2 points, else "residuals"), "groups" or "residuals".

    Fitted attributes: a_, b_, c_, n_star_ (inf: never), ci_ ({"a", "b", "c", "n_star"} -> (low, high)),
    verdict_ ("within the data", "below the data", "beyond the data" or "never"), resample_ (the bootstrap
    used), boot_ ((n_bootstrap, 4): a, b, c, n* per resample), n_range_ ((min n, max n)), flags_ (list of
    str: "few_sizes" for 3 sizes, no degree of freedom; "b_at_bound"; "flat" when a = 0, the gap does not
    shrink with n).
    """

    def __init__(self, threshold: float = THRESHOLD, n_bootstrap: int = 1000, random_state: int | None = None,
                 confidence: float = 0.95, b_bounds: tuple[float, float] = (0.01, 4.0), resample: str = "auto"):
        self.threshold = threshold
        self.n_bootstrap = n_bootstrap
        self.random_state = random_state
        self.confidence = confidence
        self.b_bounds = b_bounds
        self.resample = resample

    def fit(self, n, gap) -> GapFit:
        n, gap = _check_points(n, gap)
        lo, hi = self.b_bounds
        if not 0 < lo < hi or not 0 < self.confidence < 1 or self.resample not in ("auto", "groups", "residuals"):
            raise TransferscaleError(f"GapFit needs 0 < b_bounds[0] < b_bounds[1], 0 < confidence < 1 and resample "
                                     f"in ('auto', 'groups', 'residuals'); got b_bounds={self.b_bounds}, "
                                     f"confidence={self.confidence}, resample={self.resample!r}")
        sizes, counts = np.unique(n, return_counts=True)
        self.n_range_ = (float(sizes[0]), float(sizes[-1]))
        law = fit_law(n, gap, self.b_bounds)
        self.a_, self.b_, self.c_ = law.a, law.b, law.c
        self.n_star_ = law.crossing(self.threshold)
        self.verdict_ = verdict(self.n_star_, self.n_range_)
        self.resample_ = self._resampling(counts, len(n))
        self._bootstrap(n, gap, law)
        self.flags_ = self._flags(len(sizes))
        return self

    def predict(self, n) -> np.ndarray:
        return GapLaw(self.a_, self.b_, self.c_).predict(n)

    def summary(self) -> str:
        """One line: the law, n* with its interval, and the verdict."""
        lo, hi = self.ci_["n_star"]
        return (f"gap(n) = {self.a_:.3g} n^-{self.b_:.3g} {self.c_:+.3g}; gap < {self.threshold:g} from n* = "
                f"{_size(self.n_star_)} [{_size(lo)}, {_size(hi)}] ({self.verdict_}; data {self.n_range_[0]:g} to "
                f"{self.n_range_[1]:g})")

    def _resampling(self, counts: np.ndarray, m: int) -> str:
        if self.resample != "auto":
            if self.resample == "groups" and counts.min() < 2:
                raise TransferscaleError("resample='groups' needs two or more gaps at every data size (e.g. one per "
                                         "seed); use 'residuals' or 'auto'")
            return self.resample
        return "groups" if counts.min() >= 2 else "residuals"

    def _bootstrap(self, n: np.ndarray, gap: np.ndarray, law: GapLaw) -> None:
        names = (*PARAMS, "n_star")
        if self.n_bootstrap == 0 or (self.resample_ == "residuals" and len(n) <= len(PARAMS)):
            self.boot_ = np.empty((0, 4))
            self.ci_ = {k: (np.nan, np.nan) for k in names}
            return
        rng = np.random.default_rng(self.random_state)
        if self.resample_ == "groups":
            g = np.empty((self.n_bootstrap, len(n)))
            for size in np.unique(n):
                at = np.flatnonzero(n == size)
                mean, k = gap[at].mean(), len(at)
                spread = mean + (gap[at] - mean) * np.sqrt(k / (k - 1))
                g[:, at] = spread[rng.integers(0, k, size=(self.n_bootstrap, k))]
        else:
            fitted = law.predict(n)
            r = gap - fitted
            r = (r - r.mean()) * np.sqrt(len(n) / (len(n) - len(PARAMS)))
            g = fitted + r[rng.integers(0, len(n), size=(self.n_bootstrap, len(n)))]
        a, b, c = profile_fit(n, g, self.b_bounds)
        self.boot_ = np.column_stack([a, b, c, crossing_size(a, b, c, self.threshold)])
        tail = (1 - self.confidence) / 2
        self.ci_ = {k: tuple(float(v) for v in np.quantile(self.boot_[:, i], [tail, 1 - tail],
                                                              method="inverted_cdf"))
                    for i, k in enumerate(names)}

    def _flags(self, n_sizes: int) -> list[str]:
        flags = []
        if n_sizes == _MIN_SIZES:
            flags.append("few_sizes")
        lo, hi = self.b_bounds
        if self.a_ > 0 and (self.b_ <= lo * 1.001 or self.b_ >= hi / 1.001):
            flags.append("b_at_bound")
        if self.a_ == 0:
            flags.append("flat")
        return flags


def _size(n: float) -> str:
    return "inf" if not np.isfinite(n) else f"{n:.3g}"


def verdict(n_star: float, n_range: tuple[float, float]) -> str:
    """Where n* lies against the data sizes measured: "never" (inf), "below the data" (under the smallest),
    "within the data", or "beyond the data" (past the largest: an extrapolation of the law)."""
    if not np.isfinite(n_star):
        return "never"
    if n_star < n_range[0]:
        return "below the data"
    return "within the data" if n_star <= n_range[1] else "beyond the data"


def _check_points(n, gap) -> tuple[np.ndarray, np.ndarray]:
    n, gap = np.asarray(n, dtype=float).ravel(), np.asarray(gap, dtype=float).ravel()
    if len(n) != len(gap):
        raise TransferscaleError(f"n and gap differ in length ({len(n)} and {len(gap)})")
    if not (np.isfinite(n).all() and np.isfinite(gap).all()) or (n <= 0).any():
        raise TransferscaleError("data sizes must be finite and > 0 and gaps finite; drop the rows that are not")
    if len(np.unique(n)) < _MIN_SIZES:
        raise TransferscaleError(f"the gap law has 3 parameters and needs >= {_MIN_SIZES} distinct data sizes; got "
                                 f"{len(np.unique(n))}")
    return n, gap


def _profile(log_s: np.ndarray, g: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each row of g (B, m) and each b of its row of b (B, G): the least-squares A >= 0 and c of
    g = A x + c, x = exp(-b log_s) = (n / n_min)^-b, and the sum of squares left (all (B, G))."""
    x = np.exp(-b[..., None] * log_s)  # (B, G, m)
    dx = x - x.mean(-1, keepdims=True)
    gm = g.mean(-1)
    dg = (g - gm[:, None])[:, None, :]  # (B, 1, m)
    sxx = (dx**2).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(sxx > 1e-300, (dx * dg).sum(-1) / sxx, 0.0)
    slope = np.maximum(slope, 0.0)
    c = gm[:, None] - slope * x.mean(-1)
    sse = ((dg - slope[..., None] * dx) ** 2).sum(-1)
    return slope, c, sse


def profile_fit(n, g, b_bounds: tuple[float, float] = (0.01, 4.0)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """a, b, c (each (B,)) minimising sum_i (g_i - a n_i^-b - c)^2 for every row of g (B, m), b profiled on a
    log grid over `b_bounds` and zoomed `_ZOOM` times around the best."""
    n = np.asarray(n, dtype=float)
    g = np.atleast_2d(np.asarray(g, dtype=float))
    n_min = n.min()
    log_s = np.log(n / n_min)
    lo, hi = np.log(b_bounds[0]), np.log(b_bounds[1])
    grid = np.linspace(lo, hi, _GRID)
    log_b = np.broadcast_to(grid, (len(g), _GRID))
    step = grid[1] - grid[0]
    for _ in range(_ZOOM + 1):
        _, _, sse = _profile(log_s, g, np.exp(log_b))
        best = log_b[np.arange(len(g)), sse.argmin(1)]
        log_b = np.clip(best[:, None] + np.linspace(-step, step, 41)[None], lo, hi)
        step /= 20
    b = np.exp(best)
    slope, c, _ = _profile(log_s, g, b[:, None])
    return slope[:, 0] * n_min ** b, b, c[:, 0]


def fit_law(n, gap, b_bounds: tuple[float, float] = (0.01, 4.0)) -> GapLaw:
    """The least-squares g(n) = a n^-b + c (a >= 0, b in b_bounds): the profile fit, polished by scipy's
    bounded least squares on (A, b, c) with A = a n_min^-b; the polish is kept only if it lowers the loss."""
    from scipy.optimize import least_squares

    n, gap = _check_points(n, gap)
    a, b, c = (float(v[0]) for v in profile_fit(n, gap, b_bounds))
    n_min = n.min()
    s = n / n_min

    def resid(p):
        return p[0] * s ** -p[1] + p[2] - gap

    start = np.array([a * n_min ** -b, b, c])
    lo, hi = [0.0, b_bounds[0], -np.inf], [np.inf, b_bounds[1], np.inf]
    start = np.clip(start, np.array(lo) + [0, 1e-12, 0], np.array(hi) - [0, 1e-12, 0])
    res = least_squares(resid, start, bounds=(lo, hi), method="trf", x_scale="jac")
    if res.success and np.sum(res.fun**2) < np.sum(resid(start) ** 2):
        A, b, c = (float(v) for v in res.x)
        a = A * n_min**b
    return GapLaw(a, b, c)


def gap_points(results: pd.DataFrame, *, task: str, pretrained: str, scratch: str,
               pretrained_metric: str = "finetune_accuracy", scratch_metric: str = "scratch_accuracy",
               classes: int | None = None, pair: str = "seed") -> pd.DataFrame:
    """The gap at every data size from a tidy results table (the store's `read_results` columns).

    `pretrained` and `scratch` are run names (the `name` column; the same run may serve both with different
    metrics). `shots` is the data size n of a fine-tuning or scratch row (training examples, all classes);
    a probe's (`fewshot_accuracy`) shots count examples per class, so give the task's number of `classes` to
    put them in n = shots * classes (its final layer, layer -1, is used). pair="seed" subtracts the arms seed by
    seed (the same seed draws the same examples for fine-tuning and scratch training); pair="mean" subtracts
    their means over seeds at each n. Returns columns n, seed (NA for "mean"), pretrained, scratch, gap,
    sorted by n.
    """
    arms = []
    for name, metric in ((pretrained, pretrained_metric), (scratch, scratch_metric)):
        rows = results[(results["name"] == name) & (results["metric"] == metric) & (results["task"] == task)]
        if metric == "fewshot_accuracy":
            if classes is None:
                raise TransferscaleError("fewshot_accuracy rows count shots per class: pass classes= (the task's "
                                         "number of classes) so they convert to data sizes n")
            rows = rows[rows["layer"] == -1]
            if "l2" in rows.columns and rows["l2"].nunique() > 1:
                raise TransferscaleError(f"run {name!r} has probes at several l2 values on {task!r}; keep one "
                                         "before computing the gap")
            rows = rows.assign(shots=rows["shots"] * classes)
        rows = rows.dropna(subset=["shots"])
        if rows.empty:
            raise TransferscaleError(f"no {metric} rows with a data size for run {name!r} on task {task!r}; a "
                                     "size axis needs [finetune] fractions (or per_class), or a [scratch] table")
        arms.append(rows.assign(n=rows["shots"].astype(float), seed=rows["seed"].astype("Int64"))
                    [["n", "seed", "value"]])
    pre, scr = arms
    if pair == "seed":
        out = pre.merge(scr, on=["n", "seed"], suffixes=("_pre", "_scr"))
    elif pair == "mean":
        out = pre.groupby("n", as_index=False)["value"].mean().merge(
            scr.groupby("n", as_index=False)["value"].mean(), on="n", suffixes=("_pre", "_scr"))
        out["seed"] = pd.array([pd.NA] * len(out), dtype="Int64")
    else:
        raise TransferscaleError(f"pair must be 'seed' or 'mean', got {pair!r}")
    if out.empty:
        raise TransferscaleError(f"runs {pretrained!r} and {scratch!r} share no (data size, seed) on {task!r}; use "
                                 "pair='mean', or measure both at the same sizes and seeds")
    out = out.rename(columns={"value_pre": "pretrained", "value_scr": "scratch"})
    out["gap"] = out["pretrained"] - out["scratch"]
    return out[["n", "seed", "pretrained", "scratch", "gap"]].sort_values(["n", "seed"]).reset_index(drop=True)


def effective_data(n, pretrained, scratch_n, scratch_acc) -> pd.DataFrame:
    """Hernandez et al.'s effective data transferred, read off the measured scratch curve.

    For each pretrained point (n_j, p_j): D_E = the data size where the scratch curve reaches p_j, the curve
    taken as its running maximum over increasing n (so it can be inverted) and interpolated linearly in log n;
    D_T = D_E - n_j. Where p_j is above every scratch accuracy, D_E lies beyond the data (NaN, status
    "beyond the data"); below the smallest n's scratch accuracy, D_E < min n ("below the data", NaN).
    Returns columns n, pretrained, effective_n (D_E), transferred (D_T), status.
    """
    n, pretrained = np.asarray(n, dtype=float), np.asarray(pretrained, dtype=float)
    order = np.argsort(np.asarray(scratch_n, dtype=float))
    sn = np.asarray(scratch_n, dtype=float)[order]
    sa = np.maximum.accumulate(np.asarray(scratch_acc, dtype=float)[order])
    eff, status = np.full(len(n), np.nan), []
    for j, p in enumerate(pretrained):
        if p > sa[-1]:
            status.append("beyond the data")
        elif p < sa[0]:
            status.append("below the data")
        else:
            k = int(np.searchsorted(sa, p, side="left"))  # the first size whose scratch accuracy reaches p
            if k == 0 or sa[k] == p:
                eff[j] = sn[k]
            else:
                t = (p - sa[k - 1]) / (sa[k] - sa[k - 1])
                eff[j] = float(np.exp(np.log(sn[k - 1]) + t * (np.log(sn[k]) - np.log(sn[k - 1]))))
            status.append("within the data")
    return pd.DataFrame({"n": n, "pretrained": pretrained, "effective_n": eff, "transferred": eff - n,
                         "status": status})

