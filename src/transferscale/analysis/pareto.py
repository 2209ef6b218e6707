"""Pareto frontiers of downstream accuracy against a cost (parameters, FLOPs, throughput): torch-free.

Tay et al. 2021 (*Scale Efficiently*) ask which model shapes give the most downstream accuracy for what they
cost. Within each group (e.g. one task and protocol), with cost c (lower is better, or higher for a
throughput) and value v (higher is better, e.g. accuracy), model i is *dominated* when some model j is no
worse on both and better on one: c_j <= c_i and v_j >= v_i, with one of the two strict. The *frontier* is the
models no other dominates (models identical in both are on it together, or off it together).

For each model the table says how far it is from the frontier in the two directions:

- margin = max { v_j : j on the frontier, c_j <= c_i } - v_i >= 0: the value lost against the best frontier
  model at no more cost (in the value's units: accuracy fractions, 0.03 = 3 points); 0 on the frontier (and
  for a model dominated only in cost: the same value, dearer). `dominated_by` names that frontier model: it
  dominates i whenever i is off the frontier, with the largest margin of any model that does.
- cost_factor: how many times cheaper the cheapest frontier model at least as good is, j* = argmin { c_j :
  j on the frontier, v_j >= v_i }: c_i / c_j* for a cost, t_j* / t_i for a throughput (t_j* >= t_i). 1 on the
  frontier. `matched_by` names j*.

Rows whose cost or value is missing (NaN) are not compared: on_frontier False, the other columns NA.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

PARETO_COLUMNS = ("on_frontier", "margin", "dominated_by", "cost_factor", "matched_by")


def pareto_frontier(df: pd.DataFrame, cost: str, value: str, by: Sequence[str] = (), *,
                    lower_cost_is_better: bool = True, label: str | None = None) -> pd.DataFrame:
    """`df` with PARETO_COLUMNS added (see the module docstring for the definitions), per group of `by`.

    cost: the cost column (params, flops; or a throughput with lower_cost_is_better=False); value: the column
    to maximise (e.g. downstream accuracy); by: columns whose every combination is a separate frontier
    (e.g. ("task", "protocol")); label: the column naming models in `dominated_by` / `matched_by` (default:
    the row's index label). The rows keep their order and index.
    """
    missing = [c for c in (cost, value, *by, *([label] if label else [])) if c not in df.columns]
    if missing:
        raise KeyError(f"pareto_frontier: no column(s) {missing} in the table (it has {list(df.columns)})")
    out = df.copy()
    n = len(df)
    on = np.zeros(n, dtype=bool)
    margin = np.full(n, np.nan)
    factor = np.full(n, np.nan)
    dom = np.full(n, -1, dtype=np.int64)  # positions into df, -1 for none
    match = np.full(n, -1, dtype=np.int64)
    c_all = pd.to_numeric(df[cost], errors="coerce").to_numpy(dtype=float)
    v_all = pd.to_numeric(df[value], errors="coerce").to_numpy(dtype=float)
    positions = np.arange(n)
    groups = [positions] if not by else [np.asarray(ix) for ix in df.groupby(list(by), sort=False, dropna=False)
                                         .indices.values()]
    for idx in groups:
        idx = idx[np.isfinite(c_all[idx]) & np.isfinite(v_all[idx])]
        if len(idx) == 0:
            continue
        c = c_all[idx] if lower_cost_is_better else -c_all[idx]
        f, m, d, k = _frontier(c, v_all[idx])
        on[idx], margin[idx] = f, m
        dom[idx] = np.where(f, -1, idx[d])
        match[idx] = idx[k]
        raw = c_all[idx]
        with np.errstate(divide="ignore", invalid="ignore"):
            factor[idx] = raw / raw[k] if lower_cost_is_better else raw[k] / raw
    names = df[label].to_numpy(dtype=object) if label else df.index.to_numpy(dtype=object)
    out["on_frontier"] = on
    out["margin"] = margin
    out["dominated_by"] = pd.Series([names[j] if j >= 0 else None for j in dom], index=df.index, dtype=object)
    out["cost_factor"] = factor
    out["matched_by"] = pd.Series([names[j] if j >= 0 else None for j in match], index=df.index, dtype=object)
    return out


def _frontier(c: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For costs c (lower better) and values v (higher better), all finite: (on the frontier, margin, the
    position of the best frontier point at no more cost, the position of the cheapest frontier point at least
    as good).

    Sort the distinct costs; best[l] = the highest value at cost level l or below. A point at level l is on the
    frontier iff its value is its level's highest and above every value at a lower level; its margin is
    best[l] - v (the highest value at no more cost is always a frontier point's)."""
    levels, level = np.unique(c, return_inverse=True)
    top = np.full(len(levels), -np.inf)
    np.maximum.at(top, level, v)
    best = np.maximum.accumulate(top)
    below = np.concatenate(([-np.inf], best[:-1]))
    on = (v == top[level]) & (v > below[level])
    margin = best[level] - v
    # each level's representative frontier point (its first in row order), and the frontier level at or below
    rep = np.full(len(levels), -1, dtype=np.int64)
    front = np.flatnonzero(on)
    front_level, first_at = np.unique(level[front], return_index=True)
    rep[front_level] = front[first_at]
    front_levels = np.flatnonzero(rep >= 0)  # ascending cost; the lowest level always has a frontier point
    best_level = front_levels[np.searchsorted(front_levels, np.arange(len(levels)), side="right") - 1]
    dominated_by = rep[best_level[level]]
    # along the frontier values rise strictly with cost, so the first at least as good is a binary search
    first = np.searchsorted(top[front_levels], v, side="left")
    matched_by = np.where(on, np.arange(len(v)), rep[front_levels[first]])  # a frontier point matches itself
    return on, margin, dominated_by, matched_by


def attach_costs(points: pd.DataFrame, costs: pd.DataFrame, arch_of: dict[str, str], *, run: str = "run",
                 columns: Sequence[str] = ("params", "flops", "train_throughput", "infer_throughput")) -> pd.DataFrame:
    """`points` (one row per run and whatever else, e.g. task and protocol) with each run's cost `columns`
    from `costs` (the store's costs table, one row per architecture key `arch`), through `arch_of` ({run key:
    architecture key}: `models.cost.architecture_keys(store.run_configs())`). Adds `arch`; rows of runs with no
    architecture or no cost row get NaN costs. Keeps the rows' order and index."""
    arch = points[run].map(arch_of)
    table = costs.set_index("arch")[list(columns)]
    out = points.copy()
    out["arch"] = arch
    for col in columns:
        out[col] = arch.map(table[col]).astype(float)
    return out
