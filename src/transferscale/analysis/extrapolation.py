"""The extrapolation check, per group of a table: fit the weaker runs, predict the strongest ones.

Abnar et al. validate the hull fit this way: fitted on the models below an upstream-accuracy quantile, the
law fitted on the upper hull predicts where the strongest models land far better than the law fitted on
all points. `extrapolation_table` runs `analysis.saturation.extrapolation_error` on every group (the groups
`fit_saturation` fits) for each point set; `extrapolation_verdicts` says per task which fit predicted better.

For one group with US accuracies u_i and DS accuracies d_i, cut = the `holdout_quantile` quantile of u
(numpy's linear interpolation); the law is fitted on the runs with u_i < cut and predicts d-hat_i for the
held-out runs (u_i >= cut). On the held-out runs that lie on the upper hull of all runs (the frontier the
law is meant to trace, n_frontier of them):

    rmse_frontier = sqrt(mean_i (d-hat_i - d_i)^2)      bias_frontier = mean_i (d-hat_i - d_i)

and rmse_all is the first over every held-out run. A negative bias means the strongest runs do better
than the law fitted on the weaker ones predicts. Torch-free: pandas, numpy, scipy.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from transferscale.analysis.saturation import (
    POINT_SETS,
    TooFewPointsError,
    check_values,
    extrapolation_error,
    group_seed,
)
from transferscale.errors import TransferscaleError, did_you_mean

COMPARED = ("upper_hull", "all")  # the paper's comparison
EXTRAPOLATION_COLUMNS = ["points", "n_models", "holdout_quantile", "us_cut", "n_train", "n_holdout", "n_frontier",
                         "n_fit", "rmse_frontier", "bias_frontier", "rmse_all", "flags", "reason"]
POINT_NAMES = {"upper_hull": "hull", "all": "all points"}


def extrapolation_table(df: pd.DataFrame, us: str = "us_acc", ds: str = "ds_acc", by: str | Sequence[str] = (),
                        holdout_quantile: float = 0.9, point_sets: Sequence[str] = COMPARED,
                        random_state: int | None = 0, **fit_params) -> pd.DataFrame:
    """`extrapolation_error` per group of `df` and per point set; one row per (group, point set).

    Columns: the `by` keys, then points (the point set), n_models (rows in the group), holdout_quantile,
    us_cut (the US accuracy at the quantile), n_train (runs below it, fitted), n_holdout (runs at or above
    it, predicted), n_frontier (held-out runs on the upper hull of all runs), n_fit (points the fit used),
    rmse_frontier, bias_frontier, rmse_all (see the module's docstring), flags (of the fit on the weaker
    runs, ";"-joined) and reason: why a group has no numbers ("" where it has them). A group that cannot be
    checked (too few runs below the cut, a hull of under 3 points, equal US accuracies, no held-out run on
    the frontier) gets NaN and its reason; bad values (NaN, outside [0, 1]) stop the call, naming the column.

    Groups and their seeds are those of `fit_saturation` (`groupby(by, dropna=False, sort=True)`,
    `group_seed(random_state, key)`), so a group's numbers depend on nothing else in the table. The fits run
    without a bootstrap unless `fit_params` asks for one (n_bootstrap=...).
    """
    by = [by] if isinstance(by, str) else list(by)
    missing = [c for c in [us, ds, *by] if c not in df.columns]
    if missing:
        raise TransferscaleError(f"column {missing[0]!r} is not in the table; "
                                 f"{did_you_mean(missing[0], map(str, df.columns))}")
    if not 0 < holdout_quantile < 1:
        raise TransferscaleError(f"holdout quantile {holdout_quantile!r} must be between 0 and 1 (0.9: fit "
                                 "below the 90th percentile of US accuracy, predict the runs above it)")
    unknown = [p for p in point_sets if p not in POINT_SETS]
    if unknown:
        raise TransferscaleError(f"point set {unknown[0]!r} is unknown; use some of {POINT_SETS}")
    for col in (us, ds):
        check_values(f"column {col!r}", df[col].to_numpy(float))
    groups = df.groupby(by, dropna=False, sort=True) if by else [((), df)]
    rows = []
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        u, d = g[us].to_numpy(float), g[ds].to_numpy(float)
        seed = group_seed(random_state, key)
        for points in point_sets:
            row = group_extrapolation(u, d, holdout_quantile, points, random_state=seed, **fit_params)
            rows.append({**dict(zip(by, key)), **row})
    out = pd.DataFrame(rows, columns=[*by, *EXTRAPOLATION_COLUMNS])
    return out.astype({c: "Int64" for c in ("n_models", "n_train", "n_holdout", "n_frontier", "n_fit")})


def group_extrapolation(us: np.ndarray, ds: np.ndarray, holdout_quantile: float, points: str,
                        **fit_params) -> dict:
    """One row of `extrapolation_table`: `extrapolation_error` on one group, or NaNs and the reason why not."""
    us, ds = np.asarray(us, dtype=float), np.asarray(ds, dtype=float)
    row = dict.fromkeys(EXTRAPOLATION_COLUMNS, np.nan)
    row.update(points=points, n_models=len(us), holdout_quantile=holdout_quantile, flags="", reason="")
    if len(us):  # the split extrapolation_error makes, so a group it refuses still says what it held out
        cut = float(np.quantile(us, holdout_quantile))
        row.update(us_cut=cut, n_train=int((us < cut).sum()), n_holdout=int((us >= cut).sum()))
    if len(us) < 2 or np.ptp(us) == 0:
        row["reason"] = "one model" if len(us) == 1 else "no models" if not len(us) else "all US accuracies equal"
        return row
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the mean of no frontier runs: NaN, said below
            res = extrapolation_error(us, ds, holdout_quantile=holdout_quantile, points=points, **fit_params)
    except TooFewPointsError:
        row["reason"] = (f"the {POINT_NAMES.get(points, points)} of the {row['n_train']} runs below the cut has "
                         "fewer than 3 points")
        return row
    except TransferscaleError as err:
        few = row["n_train"] < 3 or row["n_holdout"] == 0
        row["reason"] = (f"{row['n_train']} runs below the cut, {row['n_holdout']} at or above it: too few to "
                         "fit and predict" if few else str(err))
        return row
    row.update(n_train=res["n_train"], n_holdout=res["n_holdout"], n_frontier=res["n_frontier"],
               n_fit=res["n_fit"], rmse_frontier=res["rmse_frontier"], bias_frontier=res["bias_frontier"],
               rmse_all=res["rmse_all"], flags=";".join(res["flags"]))
    if not res["n_frontier"]:
        row["reason"] = "no held-out run is on the frontier (a weaker run has the best DS accuracy)"
    return row


VERDICT_COLUMNS = ["task", "n_groups", "n_compared", "n_hull_better", "hull_median_error", "all_median_error",
                   "hull_median_bias", "all_median_bias", "sentence"]


def extrapolation_verdicts(table: pd.DataFrame, by: Sequence[str], task: str | None = None) -> pd.DataFrame:
    """Per task: in how many of its groups the hull fit predicted the held-out frontier better than the
    all-points fit (a lower rmse_frontier), the median errors and biases over the groups where both have a
    number, and one sentence saying so.

    `table` is `extrapolation_table(..., by=by)` with "upper_hull" and "all" rows; `task` is the column a
    verdict is given per (default: "task" when `by` has it, else the last `by` column, else one verdict for
    the whole table, named "all rows"). The sentence names what tells a task's groups apart (shot counts,
    layers), e.g. "fashion_mnist: the hull fit predicts the strongest runs better than the all-points fit in
    3 of 4 shot counts (median error: hull 0.021, all points 0.034; median bias: hull -0.010, all points
    +0.040)".
    """
    by = list(by)
    if task is None:
        task = "task" if "task" in by else (by[-1] if by else None)
    hull = table[table["points"] == "upper_hull"].reset_index(drop=True)
    every = table[table["points"] == "all"].reset_index(drop=True)
    if by:
        pair = hull.merge(every, on=by, how="left", suffixes=("_h", "_a"))
    else:
        pair = pd.concat([hull.add_suffix("_h"), every.add_suffix("_a")], axis=1)
    rest = [c for c in by if c != task]
    groups = pair.groupby(task, sort=False, dropna=False) if task else [("all rows", pair)]
    rows = []
    for name, g in groups:
        h, a = g["rmse_frontier_h"].to_numpy(float), g["rmse_frontier_a"].to_numpy(float)
        both = np.isfinite(h) & np.isfinite(a)
        better = int((h[both] < a[both]).sum())
        stats = dict(hull_median_error=_median(h[both]), all_median_error=_median(a[both]),
                     hull_median_bias=_median(g["bias_frontier_h"].to_numpy(float)[both]),
                     all_median_bias=_median(g["bias_frontier_a"].to_numpy(float)[both]))
        reasons = [r for r in [*g.loc[~both, "reason_h"], *g.loc[~both, "reason_a"]] if isinstance(r, str) and r]
        text = _sentence(name, len(g), int(both.sum()), better, int((h[both] == a[both]).sum()), _unit(g, rest),
                         stats, reasons)
        rows.append({"task": name, "n_groups": len(g), "n_compared": int(both.sum()), "n_hull_better": better,
                     **stats, "sentence": text})
    return pd.DataFrame(rows, columns=VERDICT_COLUMNS)


def _median(v: np.ndarray) -> float:
    return float(np.median(v)) if len(v) else np.nan


def _unit(groups: pd.DataFrame, rest: list[str]) -> tuple[str, str]:
    """(singular, plural) naming what tells a task's groups apart: the one `by` column that varies in it."""
    varying = [c for c in rest if groups[c].nunique(dropna=False) > 1]
    names = {"shots": ("shot count", "shot counts"), "layer": ("layer", "layers"),
             "upstream": ("upstream", "upstreams")}
    if len(varying) == 1:
        return names.get(varying[0], (f"{varying[0]} value", f"{varying[0]} values"))
    return ("group", "groups")


def _sentence(name, n: int, compared: int, better: int, ties: int, unit: tuple[str, str], stats: dict,
              reasons: list[str]) -> str:
    if not compared:
        why = max(dict.fromkeys(reasons), key=reasons.count) if reasons else "no numbers"
        return f"{name}: cannot compare the fits: {why}"
    worse = compared - better - ties
    if 2 * better > compared:
        who = "the hull fit predicts the strongest runs better than the all-points fit"
        k = better
    elif 2 * worse > compared:
        who = "the all-points fit predicts the strongest runs better than the hull fit"
        k = worse
    else:
        who = "neither fit predicts the strongest runs better"
        k = None
    median = "median " if compared > 1 else ""
    numbers = (f"{median}error: hull {stats['hull_median_error']:.3f}, all points {stats['all_median_error']:.3f}; "
               f"{median}bias: hull {stats['hull_median_bias']:+.3f}, all points {stats['all_median_bias']:+.3f}")
    if n == 1:
        count = ""
    elif k is None:
        count = f": the hull fit wins in {better} of {compared} {unit[1] if compared > 1 else unit[0]}"
    else:
        count = f" in {k} of {compared} {unit[1] if compared > 1 else unit[0]}"
    text = f"{name}: {who}{count} ({numbers})"
    if compared < n:
        text += f"; {n - compared} of {n} {unit[1]} not compared ({reasons[0] if reasons else 'no numbers'})"
    return text
