"""Upstream and downstream accuracy at odds across an upstream hyper-parameter, and the best checkpoint per task.

Abnar et al. 2021 find that some pre-training hyper-parameters (the head's weight decay, its learning rate)
trade upstream accuracy for downstream accuracy: a setting that lowers US accuracy raises DS accuracy on some
tasks, so the checkpoint best upstream is not the best for every task. This module measures that, per task.

**At odds.** Within each group (e.g. one task and shot count) and each *context* (one combination of the
other axes, held fixed: `fixed`), the runs differ only in the hyper-parameter h. Over those m runs:

- rho(US, DS): Spearman's rank correlation of US and DS accuracy, the Pearson correlation of their ranks
  (ties get their average rank): rho = sum_i (R_i - Rbar)(S_i - Sbar) / sqrt(sum_i (R_i - Rbar)^2
  sum_i (S_i - Sbar)^2). US and DS are **at odds** when rho < 0: across h, a setting that lowers US accuracy
  raises DS accuracy. NaN when either accuracy is the same for every run (no ranking).
- rho(h, US) and rho(h, DS): the same for the hyper-parameter against each accuracy, which says which way h
  moves each of them.
- best_us / best_ds: the setting of h with the highest US, and the highest DS accuracy; loss = DS(best_ds) -
  DS(best_us) >= 0 (accuracy points): what choosing h by US accuracy costs downstream.

With m runs Spearman's rho takes few values (m = 3: -1, -0.5, 0.5, 1), so a context is a statement about
these runs, not a test; `min_runs` (default 3) is the fewest runs a context needs.

**Best checkpoint.** Per group, over every run: the one with the highest DS accuracy, its margin over the
next best (DS_best - DS_second, points; 0 on a tie), and over the run best upstream (DS_best - DS(argmax US),
points; 0 when the best checkpoint is also the best upstream). Ties are broken by higher US, then the label.

Torch-free: numpy, pandas, scipy.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from transferscale.analysis.samecurve import axis_label, format_value, group_label
from transferscale.errors import TransferscaleError

AT_ODDS_COLUMNS = ["axis", "context", "n_runs", "levels", "rho_us_ds", "rho_axis_us", "rho_axis_ds", "at_odds",
                   "best_us", "best_ds", "loss"]
BEST_COLUMNS = ["best", "best_ds", "best_us_acc", "next_best", "margin_next", "best_upstream",
                "best_upstream_ds", "margin_upstream"]


def spearman(x, y) -> float:
    """Spearman's rank correlation: the Pearson correlation of the average ranks; NaN when either is constant
    or fewer than 2 pairs."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2:
        return float("nan")
    rx, ry = rankdata(x) - (len(x) + 1) / 2, rankdata(y) - (len(y) + 1) / 2
    denom = float(np.sqrt((rx @ rx) * (ry @ ry)))
    return float(rx @ ry / denom) if denom > 0 else float("nan")


def at_odds(points: pd.DataFrame, axis: str, fixed: Sequence[str] = (), *, us: str = "us_acc",
            ds: str = "ds_acc", by: Sequence[str] = ("task",), min_runs: int = 3) -> pd.DataFrame:
    """Per group of `by` and context (each combination of the `fixed` columns, a missing value being one
    value): how US and DS accuracy move together across `axis` (the maths: this module's docstring).

    One row per (group, context) with at least `min_runs` rows and 2 values of the axis: the `by` columns,
    then AT_ODDS_COLUMNS: context ("col=value, ..." of the fixed columns, less those the runs lack; "" with
    none), n_runs, levels (values of the axis), the three Spearman correlations, at_odds (rho_us_ds < 0),
    best_us and best_ds (the axis's value at the highest US and at the highest DS accuracy), loss (points).
    Rows missing US, DS or the axis are left out."""
    by, fixed = list(by), [c for c in fixed if c != axis]
    missing = [c for c in dict.fromkeys([us, ds, axis, *by, *fixed]) if c not in points.columns]
    if missing:
        raise TransferscaleError(f"the points table has no column(s) {missing}; it has {list(points.columns)}")
    if axis in by:
        raise TransferscaleError(f"{axis!r} both groups the rows (by) and is the axis; keep it in one")
    table = points[points[[us, ds, axis]].notna().all(axis=1)]
    keys = [*by, *fixed]
    groups = table.groupby(keys, sort=True, dropna=False) if keys else [((), table)]
    rows = []
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        values = g[axis]
        if len(g) < min_runs or values.nunique() < 2:
            continue
        u, d = g[us].to_numpy(float), g[ds].to_numpy(float)
        h = _numeric(values)
        i_us, i_ds = _argmax(u, d), _argmax(d, u)
        context = ", ".join(f"{c}={format_value(v)}" for c, v in zip(fixed, key[len(by):])
                            if isinstance(v, str) or not pd.isna(v))  # an axis the runs do not have: left out
        rows.append({**dict(zip(by, key[:len(by)])), "axis": axis, "context": context, "n_runs": len(g),
                     "levels": int(values.nunique()), "rho_us_ds": spearman(u, d),
                     "rho_axis_us": spearman(h, u) if h is not None else np.nan,
                     "rho_axis_ds": spearman(h, d) if h is not None else np.nan,
                     "best_us": format_value(values.iloc[i_us]), "best_ds": format_value(values.iloc[i_ds]),
                     "loss": 100 * float(d[i_ds] - d[i_us])})
    out = pd.DataFrame(rows, columns=[*by, *AT_ODDS_COLUMNS])
    out["at_odds"] = (out["rho_us_ds"] < 0).astype(bool)
    return out


def best_checkpoints(points: pd.DataFrame, *, us: str = "us_acc", ds: str = "ds_acc", by: Sequence[str] = ("task",),
                     label: str = "name") -> pd.DataFrame:
    """Per group of `by`: the run with the highest DS accuracy and its margins (this module's docstring).

    Columns: the `by` columns, then BEST_COLUMNS: best (its label), best_ds, best_us_acc, next_best (missing with
    one run), margin_next (points; NaN with one run), best_upstream (the run with the highest US accuracy),
    best_upstream_ds, margin_upstream (points). Rows missing US or DS are left out."""
    by = list(by)
    missing = [c for c in dict.fromkeys([us, ds, label, *by]) if c not in points.columns]
    if missing:
        raise TransferscaleError(f"the points table has no column(s) {missing}; it has {list(points.columns)}")
    table = points[points[[us, ds]].notna().all(axis=1)]
    groups = table.groupby(by, sort=True, dropna=False) if by else [((), table)]
    rows = []
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        names = g[label].astype(str).to_numpy()
        u, d = g[us].to_numpy(float), g[ds].to_numpy(float)
        order = np.lexsort((names, -u, -d))  # DS, then US, descending; then the label
        top, up = order[0], _argmax(u, d, names)
        second = order[1] if len(order) > 1 else None
        rows.append({**dict(zip(by, key)), "best": names[top], "best_ds": d[top], "best_us_acc": u[top],
                     "next_best": None if second is None else names[second],
                     "margin_next": np.nan if second is None else 100 * float(d[top] - d[second]),
                     "best_upstream": names[up], "best_upstream_ds": d[up],
                     "margin_upstream": 100 * float(d[top] - d[up])})
    return pd.DataFrame(rows, columns=[*by, *BEST_COLUMNS])


def _argmax(primary: np.ndarray, secondary: np.ndarray, names=None) -> int:
    """Position of the highest `primary`, ties broken by the higher `secondary`, then the first label."""
    names = np.arange(len(primary)).astype(str) if names is None else np.asarray(names, dtype=str)
    return int(np.lexsort((names, -secondary, -primary))[0])


def _numeric(values: pd.Series):
    """The axis as numbers, or None when it is not numeric (then it has no direction to correlate)."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.to_numpy(float)
    return None


# ---- in words ---------------------------------------------------------------------------------------------


def at_odds_sentences(table: pd.DataFrame, by: Sequence[str] = ("task",)) -> pd.DataFrame:
    """`at_odds`'s table in words, one sentence per (group, axis): the by columns, axis and `sentence`.

    E.g. "On far, 10-shot, US and DS are at odds across head weight decay in 2 of 2 settings of the other axes
    (median rho(US, DS) -0.80): the setting best upstream is not best downstream in 2 of them (choosing head
    weight decay by US costs up to 3.1 points)." """
    by = list(by)
    rows = []
    for key, g in table.groupby([*by, "axis"], sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        head = dict(zip([*by, "axis"], key))
        name = axis_label(head["axis"])
        k, m = int(g["at_odds"].sum()), len(g)
        contexts = not (m == 1 and g["context"].iloc[0] == "")
        rho = float(np.nanmedian(g["rho_us_ds"])) if g["rho_us_ds"].notna().any() else np.nan
        rho_text = "" if not np.isfinite(rho) else f" ({'median ' if m > 1 else ''}rho(US, DS) {rho:+.2f})"
        if k:
            where = f" in {k} of {m} setting{'s' if m != 1 else ''} of the other axes" if contexts else ""
            text = f"US and DS are at odds across {name}{where}{rho_text}"
        else:
            where = f" in any of {m} settings of the other axes" if contexts and m > 1 else ""
            text = f"US and DS are not at odds across {name}{where}{rho_text}"
        costly = g[g["loss"] > 0]
        if len(costly) and contexts:
            text += (f": the setting best upstream is not best downstream in {len(costly)} of them (choosing "
                     f"{name} by US costs up to {costly['loss'].max():.1f} points)")
        elif len(costly):
            r = costly.iloc[0]
            text += (f": the setting best upstream ({r['best_us']}) is not best downstream ({r['best_ds']}; "
                     f"choosing {name} by US costs {r['loss']:.1f} points)")
        rows.append({**head, "sentence": f"On {group_label(head, by)}, {text}."})
    return pd.DataFrame(rows, columns=[*by, "axis", "sentence"])


def best_sentences(best: pd.DataFrame, by: Sequence[str] = ("task",)) -> list[str]:
    """`best_checkpoints`'s table in words, one sentence per group."""
    by = list(by)
    out = []
    for r in best.to_dict("records"):
        text = f"On {group_label(r, by)}, the best checkpoint is {r['best']} (DS {r['best_ds']:.3f})"
        if pd.notna(r["next_best"]):
            text += f", {r['margin_next']:.1f} points above the next best ({r['next_best']})"
        if r["best_upstream"] == r["best"]:
            text += "; it is also the best upstream"
        else:
            text += (f"; {r['margin_upstream']:.1f} points above the best upstream run, {r['best_upstream']} "
                     f"(DS {r['best_upstream_ds']:.3f})")
        out.append(text + ".")
    return out


# ---- a study's axes at once -------------------------------------------------------------------------------


class AxesAnalysis(NamedTuple):
    """What `analyse_axes` returns (empty tables where a part does not apply)."""

    same_curve: pd.DataFrame  # samecurve.same_curve_test
    at_odds: pd.DataFrame  # at_odds of each hyper-parameter axis, stacked
    best: pd.DataFrame  # best_checkpoints
    by: list[str]  # the columns the tables are grouped by
    axes: list[str]  # the axes tested
    hyper_parameters: list[str]  # the axes of `at_odds`
    per_budget: pd.DataFrame | None = None  # best_checkpoints per (group, family, matched_params): Tay et al.'s


def budget_sentences(per_budget: pd.DataFrame, by: Sequence[str] = ("task",)) -> list[str]:
    """Tay et al.'s question in words, from `best_checkpoints` grouped by (by, family, matched_params): at each
    parameter budget, which shape wins downstream, and whether it is the one that wins upstream."""
    if per_budget is None or per_budget.empty:
        return []
    same = per_budget["best"] == per_budget["best_upstream"]
    lines = [f"At equal parameters, the shape best downstream is also the best upstream in {int(same.sum())} of "
             f"{len(per_budget)} (task, family, budget) groups; where it is not, choosing by US costs "
             f"{per_budget.loc[~same, 'margin_upstream'].median():.1f} points (median)." if (~same).any() else
             f"At equal parameters, the shape best downstream is also the best upstream in all {len(per_budget)} "
             "(task, family, budget) groups."]
    from transferscale.analysis.samecurve import group_label

    for r in per_budget[~same].to_dict("records"):
        head = group_label(r, [c for c in by if c in r])
        lines.append(f"On {head}, {r['family']} at {int(r['matched_params']):,} parameters: {r['best']} wins DS "
                     f"({r['best_ds']:.3f}), not {r['best_upstream']}, the best upstream "
                     f"({r['best_upstream_ds']:.3f}).")
    return lines


def analyse_axes(table, axes: Sequence[str] | None = None, *, by: Sequence[str] = ("task", "shots"),
                 strata: Sequence[str] = (), **test_options) -> AxesAnalysis:
    """The same-curve test of each axis, US and DS at odds across each hyper-parameter (with every other axis
    of the study fixed), and the best checkpoint, per group of `by`, on an `analysis.tables.AxisTable`
    (`axis_points`). `axes`: the axes to test (default: every axis that varies); `test_options` go to
    `same_curve_test` (n_permutations, alpha, correction, family, fit, seed, ...). Raises when no axis
    varies or a named axis is not one of the study's."""
    from transferscale.analysis.samecurve import same_curve_test
    from transferscale.errors import did_you_mean

    points = table.points
    by = [c for c in by if c in points.columns and points[c].notna().any()]
    known = table.axes
    if axes is None:
        axes = known
    for a in axes:
        if a not in points.columns:
            raise TransferscaleError(f"{a!r} is not an axis of this study; {did_you_mean(a, known)}"
                                     if known else f"{a!r} is not an axis of this study, and no axis varies in it")
    for s in strata:
        if s not in points.columns:
            raise TransferscaleError(f"--within {s!r} is not an axis of this study; {did_you_mean(s, known)}")
    if not axes:
        raise TransferscaleError(
            "no axis varies across this study's runs (family, size, data fraction, steps, shape, training "
            "settings): the same-curve test needs models that differ in at least one of them")
    curve = same_curve_test(points, list(axes), by=by, strata=strata, **test_options)
    hypers = [h for h in table.hyper_parameters if h in axes]
    odds = [at_odds(points, h, [a for a in known if a != h], by=by) for h in hypers]
    stacked = pd.concat(odds, ignore_index=True) if odds else pd.DataFrame(columns=[*by, *AT_ODDS_COLUMNS])
    per_budget = None
    if "matched_params" in known:
        budgeted = points[points["matched_params"].notna()]
        per_budget = best_checkpoints(budgeted, by=[*by, "family", "matched_params"])
    return AxesAnalysis(curve, stacked, best_checkpoints(points, by=by), by, list(axes), hypers, per_budget)
