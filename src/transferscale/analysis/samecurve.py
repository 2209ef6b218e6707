"""The same-curve test: does an axis of a study say anything about DS accuracy that US accuracy does not?

Abnar et al. 2021 find that model size, upstream data and training steps move a model *along* one curve of
DS against US accuracy: at equal US accuracy they add no information about DS accuracy. This module tests
that claim per group (e.g. one task and shot count), one axis at a time.

Within a group of n points (u_i, d_i) (US and DS accuracy, fractions) and an axis a_i:

1. **Curve.** A monotone fit f^ of DS on US, fitted once per group, blind to every axis: "isotonic", the
   non-decreasing least-squares fit (points with the same US pooled first, weighted by their count, so tied
   US values get one fitted value); or "saturation", the law e_DS = k e_US^alpha + e_IR fitted on all
   points by least squares. Residuals r_i = d_i - f^(u_i).
2. **Levels.** The axis's distinct values. A numeric axis with more than `max_levels` distinct values is cut
   into at most `max_levels` bins of about equal counts (equal values always share a bin). Rows with no
   value of the axis (NaN: e.g. a pretrained model has no data fraction) leave that axis's test only.
3. **Statistic.** eta^2 = B / S with B = sum_l n_l (rbar_l - rbar)^2 (between-level sum of squares of the
   residuals) and S = sum_i (r_i - rbar)^2: the share of the residual variance the levels explain. S, the
   level sizes n_l and so the degrees of freedom are the same under every relabelling, so ordering
   relabellings by eta^2 is ordering them by the one-way ANOVA F = [B / (L-1)] / [(S - B) / (n - L)].
4. **Null and permutations.** H0: given US accuracy, the axis carries no information about DS: d is
   independent of a given u, so with the curve held fixed the labels are exchangeable with the residuals.
   Each relabelling pi permutes the axis labels across the group's rows (within each stratum of `strata`,
   when given: e.g. within each family, so a family that matters cannot make another axis look as if it
   did). With N Monte Carlo relabellings, p = (1 + #{pi: eta^2_pi >= eta^2_obs}) / (1 + N), never 0 and
   valid at every N. When the distinct relabellings (prod over strata of n! / prod_l n_l!) number at most
   `n_permutations`, all are enumerated and p = #{pi: eta^2_pi >= eta^2_obs} / #relabellings exactly.
   With `stop_after` = h (optional), the Monte Carlo draws stop at the h-th relabelling whose eta^2 reaches
   the observed one, after l draws, and p = h / l (Besag and Clifford 1991's sequential p-value, valid as the
   fixed-N one is); a test that never reaches h hits draws all N and has the fixed-N p above, to the bit.
   An axis that adds nothing stops after about h / p draws, so N can be large for the ones that might.
   (Relabellings count as ties within 1e-10 S, so rounding cannot split equal statistics.)
5. **Effect size**, in accuracy points: 100 (max_l beta_l - min_l beta_l), the spread of the per-level
   offsets beta of the joint fit d_i = f(u_i) + beta_{a_i} (`joint_offsets`): how far apart, at equal US
   accuracy, the best and worst level of the axis sit. `high_level` / `low_level` name them. (The spread of
   the per-level mean residuals of step 1 would understate it: the curve, fitted blind to the axis, takes up
   part of a difference between levels that also differ in US accuracy.)
6. **Multiple testing.** p-values are adjusted over a family of tests (`family`: "all", every (group, axis)
   tested in the table; or "group", each group's axes apart) by Holm's step-down method (default; the
   family-wise error rate is at most alpha under any dependence), Bonferroni, Benjamini-Hochberg (the false
   discovery rate instead), or none. An axis **adds information** when its adjusted p <= alpha.

What the test cannot see: a monotone curve absorbs any difference between levels that lie on disjoint ranges
of US accuracy (a jump between them is just a steeper stretch of the curve). `us_overlap` is the share of a
test's rows whose US accuracy lies within the US range of another level; at 0 the test has no power and says
so in `reason`. The isotonic fit also follows the noise a little (it has about n^(1/3) pieces), which shrinks
residuals and so makes the test conservative rather than liberal; the false-positive rate is measured in
tests/test_samecurve.py.

Torch-free: numpy, pandas, scipy.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from transferscale.analysis.saturation import group_seed
from transferscale.errors import TransferscaleError

FITS = ("isotonic", "saturation")
CORRECTIONS = ("holm", "bonferroni", "bh", "none")
CORRECTION_WORDS = {"holm": "Holm", "bonferroni": "Bonferroni", "bh": "Benjamini-Hochberg", "none": "no correction"}
FAMILIES = ("all", "group")
RESULT_COLUMNS = ["axis", "n", "levels", "statistic", "p_value", "p_adjusted", "effect", "high_level",
                  "low_level", "us_overlap", "permutations", "exact", "adds_information", "reason"]
MIN_POINTS = 6  # fewer rows in a group and no axis of it is tested
_CHUNK = 256  # relabellings evaluated at once


def same_curve_test(points: pd.DataFrame, axes: Sequence[str], *, us: str = "us_acc", ds: str = "ds_acc",
                    by: Sequence[str] = ("task",), strata: Sequence[str] = (), fit: str = "isotonic",
                    n_permutations: int = 1999, stop_after: int | None = None, alpha: float = 0.05,
                    correction: str = "holm",
                    family: str = "all", max_levels: int = 6, min_points: int = MIN_POINTS,
                    seed: int = 0) -> pd.DataFrame:
    """The same-curve test of each axis in each group of `by` (the maths: this module's docstring).

    One row per (group, axis), groups in sorted order and axes in the order given: the `by` columns, then
    RESULT_COLUMNS: n (rows tested), levels (distinct levels, after binning), statistic (eta^2), p_value (the
    permutation p-value), p_adjusted (after `correction` over `family`), effect (accuracy points), high_level
    and low_level (the levels with the highest and lowest mean residual), us_overlap, permutations (how many
    relabellings the p-value rests on), exact (True when they were all enumerated), adds_information
    (p_adjusted <= alpha), reason (why an axis was not tested, or a caution; "" otherwise). An axis that
    cannot be tested in a group (fewer than `min_points` rows, one level, every row its own level, or the same
    grouping of the rows as an axis listed before it, such as a learning rate set per family) gets NaN
    numbers, adds_information False and its reason, and takes no part in the correction.

    Rows missing US or DS are dropped. Each (group, axis) draws its relabellings from its own seed
    (`group_seed(seed, (*group key, axis))`), so its p-value does not depend on which other groups or axes
    the table holds, nor on their order.
    """
    by, axes, strata = list(by), list(axes), list(strata)
    if fit not in FITS:
        raise TransferscaleError(f"fit={fit!r}: use one of {FITS}")
    if correction not in CORRECTIONS:
        raise TransferscaleError(f"correction={correction!r}: use one of {CORRECTIONS}")
    if family not in FAMILIES:
        raise TransferscaleError(f"family={family!r}: use one of {FAMILIES}")
    if not 0 < alpha < 1:
        raise TransferscaleError(f"alpha={alpha!r} must lie in (0, 1)")
    if stop_after is not None and int(stop_after) < 1:
        raise TransferscaleError(f"stop_after={stop_after!r}: give a number of hits >= 1 (e.g. 50), or None")
    if int(n_permutations) < 1:
        raise TransferscaleError(f"n_permutations={n_permutations!r}: give at least 1 (999 or more for a p-value "
                                 "that can fall below 0.001)")
    if int(max_levels) < 2:
        raise TransferscaleError(f"max_levels={max_levels!r}: give at least 2")
    if not axes:
        raise TransferscaleError("no axis to test: name at least one column (e.g. size, data_fraction, steps)")
    missing = [c for c in dict.fromkeys([us, ds, *by, *axes, *strata]) if c not in points.columns]
    if missing:
        raise TransferscaleError(f"the points table has no column(s) {missing}; it has {list(points.columns)}")
    clash = sorted(set(axes) & set(by))
    if clash:
        raise TransferscaleError(f"{clash} both group the tests (by) and are tested (axes); keep each in one")
    table = points[points[[us, ds]].notna().all(axis=1)]
    groups = table.groupby(by, sort=True, dropna=False) if by else [((), table)]
    rows = []
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        residual, why = _residuals(g[us].to_numpy(float), g[ds].to_numpy(float), fit, min_points)
        splits: dict[bytes, str] = {}
        for axis in axes:
            row = dict(zip(by, key))
            row["axis"] = axis
            split = pd.factorize(g[axis], use_na_sentinel=False)[0].tobytes()
            alias = splits.setdefault(split, axis)
            if why:
                row.update(_untested(len(g), why))
            elif alias != axis:  # the same grouping of the rows as an axis before it: one test, not two
                row.update(_untested(len(g), f"the same split of the runs as {axis_label(alias)}"))
            else:
                rng = np.random.default_rng(group_seed(seed, (*key, axis)))
                row.update(_test_axis(g, residual, axis, strata, us, ds, fit, int(n_permutations), stop_after,
                                      int(max_levels), min_points, rng))
            rows.append(row)
    out = pd.DataFrame(rows, columns=[*by, *RESULT_COLUMNS])
    out["p_adjusted"] = np.nan
    tested = out["p_value"].notna()
    if family == "all":
        out.loc[tested, "p_adjusted"] = adjust_pvalues(out.loc[tested, "p_value"].to_numpy(float), correction)
    else:
        sub = out[tested]
        families = [sub.index[pos] for pos in sub.groupby(by, sort=False, dropna=False).indices.values()] if by \
            else [sub.index]
        for idx in families:
            out.loc[idx, "p_adjusted"] = adjust_pvalues(out.loc[idx, "p_value"].to_numpy(float), correction)
    out["adds_information"] = (out["p_adjusted"] <= alpha).fillna(False).astype(bool)
    for col in ("n", "levels", "permutations"):
        out[col] = out[col].astype("Int64")
    out["exact"] = out["exact"].astype("boolean")
    out.attrs.update(alpha=alpha, correction=correction, family=family, fit=fit,
                     n_tests=int(tested.sum()), strata=strata)
    return out


def adjust_pvalues(p: Sequence[float], method: str = "holm") -> np.ndarray:
    """p-values adjusted for testing m hypotheses at once, in the input's order.

    With p_(1) <= ... <= p_(m) sorted: Holm, adjusted p_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)) (reject
    H_(i) when that is <= alpha: the family-wise error rate stays <= alpha); Bonferroni, min(1, m p_i);
    Benjamini-Hochberg ("bh"), min_{j >= i} min(1, m p_(j) / j) (false discovery rate <= alpha for independent
    or positively dependent tests); "none", p itself."""
    p = np.asarray(p, dtype=float)
    if method not in CORRECTIONS:
        raise TransferscaleError(f"correction={method!r}: use one of {CORRECTIONS}")
    m = len(p)
    if m == 0 or method == "none":
        return p.copy()
    if method == "bonferroni":
        return np.minimum(1.0, m * p)
    order = np.argsort(p, kind="stable")
    ranked = p[order]
    if method == "holm":
        adjusted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * ranked))
    else:
        adjusted = np.minimum.accumulate(np.minimum(1.0, m * ranked / np.arange(1, m + 1))[::-1])[::-1]
    out = np.empty(m)
    out[order] = adjusted
    return out


def monotone_fit(us_acc, ds_acc, fit: str = "isotonic") -> np.ndarray:
    """f^(u_i) at each point: the non-decreasing least-squares fit of DS on US ("isotonic"; equal US values
    pooled, weighted by their count, so they share one fitted value), or the saturation law fitted on all
    points by least squares ("saturation")."""
    u, d = np.asarray(us_acc, dtype=float), np.asarray(ds_acc, dtype=float)
    if fit == "saturation":
        from transferscale.analysis.saturation import SaturationFit

        law = SaturationFit(points="all", n_bootstrap=0, loss="linear").fit(u, d)
        return law.predict(u)
    if fit != "isotonic":
        raise TransferscaleError(f"fit={fit!r}: use one of {FITS}")
    from scipy.optimize import isotonic_regression

    levels, inverse, counts = np.unique(u, return_inverse=True, return_counts=True)
    means = np.bincount(inverse, weights=d, minlength=len(levels)) / counts
    fitted = isotonic_regression(means, weights=counts.astype(float), increasing=True).x
    return fitted[inverse]


def joint_offsets(us_acc, ds_acc, codes, fit: str = "isotonic", max_iter: int = 200, tol: float = 1e-10
                  ) -> np.ndarray:
    """Per-level offsets beta (mean 0 over rows) of the joint fit d_i = f(u_i) + beta_{a_i} + noise, f monotone
    ("isotonic") or the saturation law, by least squares: backfitting, alternately f = the monotone fit of
    d - beta_a and beta_l = the mean over level l of d - f(u), centred, until beta moves less than `tol`.

    beta_high - beta_low is the effect size: the gap between levels at equal US accuracy. The fit blind to the
    axis (the test's residuals) would understate it, since the curve takes up part of any difference between
    levels that also differ in US accuracy."""
    u, d = np.asarray(us_acc, dtype=float), np.asarray(ds_acc, dtype=float)
    codes = np.asarray(codes, dtype=np.int64)
    counts = np.bincount(codes).astype(float)
    beta = np.zeros(len(counts))
    for _ in range(max_iter):
        curve = monotone_fit(u, d - beta[codes], fit)
        new = np.bincount(codes, weights=d - curve, minlength=len(counts)) / counts
        new -= (counts @ new) / counts.sum()
        moved = float(np.max(np.abs(new - beta)))
        beta = new
        if moved < tol:
            break
    return beta


def _residuals(u: np.ndarray, d: np.ndarray, fit: str, min_points: int) -> tuple[np.ndarray, str]:
    if len(u) < min_points:
        return np.empty(0), f"too few points ({len(u)} < {min_points})"
    if np.unique(u).size < 2:
        return np.empty(0), "every point has the same US accuracy"
    try:
        return d - monotone_fit(u, d, fit), ""
    except TransferscaleError as err:  # the law cannot be fitted on this group
        return np.empty(0), f"no {fit} fit ({err})"


def _untested(n: int, why: str) -> dict:
    return dict(n=n, levels=pd.NA, statistic=np.nan, p_value=np.nan, effect=np.nan, high_level=None,
                low_level=None, us_overlap=np.nan, permutations=pd.NA, exact=pd.NA, reason=why)


def axis_levels(values: pd.Series, max_levels: int) -> tuple[np.ndarray, list[str]]:
    """(level code per row, level labels) of an axis with no missing values: its distinct values in sorted
    order, or, for a numeric axis with more than `max_levels` of them, at most `max_levels` bins of about
    equal counts (by quantile; equal values share a bin), labelled "low-high"."""
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if numeric and values.nunique() > max_levels:
        bins = pd.qcut(values.astype(float), max_levels, labels=False, duplicates="drop").to_numpy()
        _, codes = np.unique(bins, return_inverse=True)
        labels = [f"{format_value(values[codes == c].min())}-{format_value(values[codes == c].max())}"
                  for c in range(codes.max() + 1)]
        return codes, labels
    if numeric:
        uniques, codes = np.unique(values.to_numpy(float), return_inverse=True)
        return codes.astype(np.int64), [format_value(v) for v in uniques]
    uniques, codes = np.unique(values.astype(str).to_numpy(dtype=str), return_inverse=True)
    return codes.astype(np.int64), [str(v) for v in uniques]


def format_value(v) -> str:
    """A level as text: an integral float as an int (300.0 -> 300), other floats with %g."""
    if isinstance(v, float | np.floating) and float(v).is_integer():
        return str(int(v))
    return f"{v:g}" if isinstance(v, float | np.floating) else str(v)


def _test_axis(g: pd.DataFrame, residual: np.ndarray, axis: str, strata: list[str], us: str, ds: str, fit: str,
               n_perm: int, stop_after: int | None, max_levels: int, min_points: int,
               rng: np.random.Generator) -> dict:
    keep = g[axis].notna().to_numpy().copy()
    for col in strata:
        if col != axis:
            keep &= g[col].notna().to_numpy()
    n = int(keep.sum())
    if n < min_points:
        return _untested(n, f"too few points with a value ({n} < {min_points})")
    values = g[axis][keep]
    if isinstance(values.iloc[0], list | tuple):  # a shape field such as a ResNet's widths
        values = values.map(lambda v: "x".join(map(str, v)) if isinstance(v, list | tuple) else str(v))
    codes, labels = axis_levels(values.reset_index(drop=True), max_levels)
    n_levels = len(labels)
    if n_levels < 2:
        return {**_untested(n, f"one level ({labels[0]})"), "levels": 1}
    if n_levels == n:
        return {**_untested(n, "every row is its own level"), "levels": n_levels}
    # one canonical row order (by US, DS, level, strata), so the relabellings drawn do not depend on the
    # order the table lists the group's rows in
    sub = g[keep].assign(_code=codes, _r=residual[keep]).reset_index(drop=True)
    strata_cols = [c for c in strata if c != axis]
    sub = sub.sort_values([us, ds, "_code", *strata_cols], kind="stable").reset_index(drop=True)
    codes, g, keep = sub["_code"].to_numpy(np.int64), sub, np.ones(n, dtype=bool)
    r = sub["_r"].to_numpy(float)
    r = r - r.mean()
    total = float(r @ r)
    u = g[us].to_numpy(float)
    overlap = _us_overlap(u, codes, n_levels)
    counts = np.bincount(codes, minlength=n_levels).astype(float)
    means = np.bincount(codes, weights=r, minlength=n_levels) / counts
    offsets = joint_offsets(u, g[ds].to_numpy(float), codes, fit)
    hi, lo = int(np.argmax(offsets)), int(np.argmin(offsets))
    base = dict(n=n, levels=n_levels, effect=100 * float(offsets[hi] - offsets[lo]), high_level=labels[hi],
                low_level=labels[lo], us_overlap=overlap)
    if total <= 1e-24:
        return {**base, "statistic": 0.0, "p_value": 1.0, "permutations": 0, "exact": True,
                "reason": "every point lies on the curve"}
    observed = float(counts @ means**2) / total
    blocks = _strata_blocks(g, keep, strata, axis)
    n_arrangements = 1
    for b in blocks:  # capped: past n_perm the count only says "too many to enumerate"
        n_arrangements *= _arrangements(codes[b], cap=n_perm)
        if n_arrangements > n_perm:
            break
    exact = n_arrangements <= n_perm
    tol = 1e-10
    if exact:
        stats = np.concatenate([_eta2(c, r, counts, total) for c in _enumerate(codes, blocks)])
        p = float(np.mean(stats >= observed - tol))
        used = len(stats)
    else:
        hits, done = 0, 0
        while done < n_perm:
            size = min(_CHUNK, n_perm - done)
            perm = np.tile(codes, (size, 1))
            if len(blocks) == 1:  # no strata: the same draws as below, without copying through an index
                rng.permuted(perm, axis=1, out=perm)
            for b in blocks if len(blocks) > 1 else ():
                perm[:, b] = rng.permuted(perm[:, b], axis=1)
            reached = _eta2(perm, r, counts, total) >= observed - tol
            if stop_after is not None and hits + int(reached.sum()) >= stop_after:
                used = done + int(np.flatnonzero(reached)[stop_after - hits - 1]) + 1  # draw of the h-th hit
                p = stop_after / used
                break
            hits += int(reached.sum())
            done += size
        else:
            p = (1 + hits) / (1 + n_perm)
            used = n_perm
    reason = ""
    if overlap == 0:
        reason = "its levels do not overlap in US accuracy: the curve absorbs any difference between them"
    elif len(blocks) > 1 and all(len(np.unique(codes[b])) < 2 for b in blocks):
        reason = f"it does not vary within any stratum of {strata}: no relabelling changes it"
    return {**base, "statistic": observed, "p_value": p, "permutations": used, "exact": exact, "reason": reason}


def _eta2(codes: np.ndarray, r: np.ndarray, counts: np.ndarray, total: float) -> np.ndarray:
    """eta^2 = sum_l S_l^2 / n_l / S of each row of `codes` (relabellings; r has mean 0, so B is that)."""
    codes = np.atleast_2d(codes)
    k, n = codes.shape
    n_levels = len(counts)
    offset = codes + n_levels * np.arange(k)[:, None]
    sums = np.bincount(offset.ravel(), weights=np.tile(r, k), minlength=k * n_levels).reshape(k, n_levels)
    return (sums**2 / counts).sum(axis=1) / total


def _us_overlap(u: np.ndarray, codes: np.ndarray, n_levels: int) -> float:
    """Share of rows whose US accuracy lies within [min, max] of US over the rows of some other level."""
    lo = np.array([u[codes == c].min() for c in range(n_levels)])
    hi = np.array([u[codes == c].max() for c in range(n_levels)])
    inside = (u[:, None] >= lo[None, :]) & (u[:, None] <= hi[None, :])
    inside[np.arange(len(u)), codes] = False
    return float(inside.any(axis=1).mean())


def _strata_blocks(g: pd.DataFrame, keep: np.ndarray, strata: list[str], axis: str) -> list[np.ndarray]:
    """Positions (into the kept rows) of each stratum; one block of every row without strata."""
    cols = [c for c in strata if c != axis]
    n = int(keep.sum())
    if not cols:
        return [np.arange(n)]
    sub = g[cols][keep].reset_index(drop=True)
    return [np.asarray(ix) for ix in sub.groupby(cols, sort=True, dropna=False).indices.values()]


def _arrangements(codes: np.ndarray, cap: int | None = None) -> int:
    """The distinct orderings of a multiset of labels: n! / prod_l n_l!; with `cap`, any number above it
    once log-gamma puts the count well past it (the exact factorials of thousands of rows are slow)."""
    if cap is not None:
        log = math.lgamma(len(codes) + 1) - sum(math.lgamma(int(c) + 1) for c in np.bincount(codes))
        if log > math.log(cap) + 1.0:
            return cap + 1
    out = math.factorial(len(codes))
    for c in np.bincount(codes):
        out //= math.factorial(int(c))
    return out


def _enumerate(codes: np.ndarray, blocks: list[np.ndarray]):
    """Every distinct relabelling (within blocks), in chunks of rows of level codes."""
    per_block = [list(_multiset_orders(codes[b])) for b in blocks]
    batch = []
    for combo in itertools.product(*per_block):
        row = codes.copy()
        for b, order in zip(blocks, combo):
            row[b] = order
        batch.append(row)
        if len(batch) == _CHUNK:
            yield np.array(batch)
            batch = []
    if batch:
        yield np.array(batch)


def _multiset_orders(codes: np.ndarray):
    """Each distinct ordering of the multiset `codes` once: positions of each level chosen in turn."""
    n = len(codes)
    levels, counts = np.unique(codes, return_counts=True)

    def place(free: tuple, k: int, row: list):
        if k == len(levels):
            yield np.array(row)
            return
        for chosen in itertools.combinations(free, int(counts[k])):
            rest = tuple(i for i in free if i not in chosen)
            new = list(row)
            for i in chosen:
                new[i] = int(levels[k])
            yield from place(rest, k + 1, new)

    yield from place(tuple(range(n)), 0, [0] * n)


# ---- in words ---------------------------------------------------------------------------------------------


def axis_label(axis: str) -> str:
    """An axis column as words: data_fraction -> data fraction."""
    return axis.replace("_", " ")


def group_label(row: dict, by: Sequence[str]) -> str:
    """A group's key as words: its first column's value, then "10-shot" for shots and "COL VALUE" for the rest."""
    parts = []
    for i, col in enumerate(by):
        v = row[col]
        if v is None or (not isinstance(v, str) and pd.isna(v)):
            continue
        if i == 0:
            parts.append(str(v))
        elif col == "shots":
            parts.append(f"{format_value(v)}-shot")
        else:
            parts.append(f"{axis_label(col)} {format_value(v)}")
    return ", ".join(parts) if parts else "all points"


def same_curve_sentences(table: pd.DataFrame, by: Sequence[str] | None = None) -> pd.DataFrame:
    """`same_curve_test`'s table in words, one sentence per group: the by columns and `sentence`.

    E.g. "On far, 10-shot, steps adds information beyond US (p=0.003 after Holm, +2.1 points: 300 over 100 at
    equal US); size, data fraction: no information beyond US." Axes that could not be tested are named with
    their reason."""
    by = [c for c in table.columns if c not in RESULT_COLUMNS] if by is None else list(by)
    how = CORRECTION_WORDS.get(table.attrs.get("correction", "holm"), "the correction")
    after = "" if how == "no correction" else f" after {how}"
    rows = []
    groups = table.groupby(by, sort=False, dropna=False) if by else [((), table)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        head = dict(zip(by, key))
        found = g[g["adds_information"]]
        plain = g["p_value"].notna() & ~g["adds_information"]
        tested = g[plain & (g["us_overlap"] != 0)]
        weak = [axis_label(a) for a in g[plain & (g["us_overlap"] == 0)]["axis"]]
        untested = g[g["p_value"].isna()]
        parts = []
        for r in found.itertuples(index=False):
            parts.append(f"{axis_label(r.axis)} adds information beyond US ({_p(r.p_adjusted)}{after}, "
                         f"+{r.effect:.1f} points: {r.high_level} over {r.low_level} at equal US)")
        if len(tested):
            names = ", ".join(axis_label(a) for a in tested["axis"])
            parts.append(f"{names}: no information beyond US" if len(found) else
                         f"{names}: no information beyond US (the same curve)")
        for r in untested.itertuples(index=False):
            parts.append(f"{axis_label(r.axis)} not tested ({r.reason})")
        if weak:
            parts.append(f"{', '.join(weak)}: cannot tell (their levels lie apart in US accuracy, where the curve "
                         "absorbs any difference)")
        text = "; ".join(parts) if parts else "nothing to test"
        rows.append({**head, "sentence": f"On {group_label(head, by)}, {text}."})
    return pd.DataFrame(rows, columns=[*by, "sentence"])


def verdict_word(row: dict) -> str:
    """One row's verdict: "adds information", "same curve", "cannot tell" (tested, but its levels lie apart
    in US, where a monotone curve absorbs any difference) or "not tested"."""
    if row["p_value"] != row["p_value"]:
        return "not tested"
    if row["adds_information"]:
        return "adds information"
    return "cannot tell" if row["us_overlap"] == 0 else "same curve"


def _p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}" if p < 0.1 else f"p={p:.2f}"
