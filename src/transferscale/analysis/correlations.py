"""Rank correlations of DS tasks with US and with each other, and how the law's parameters move with shots.

Spearman's rho (Pearson on ranks) asks only whether better upstream models are better downstream, not
whether the relation is linear; tasks that saturate early (UC-Merced in Abnar et al.) correlate weakly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from transferscale.analysis.saturation import fit_saturation
from transferscale.errors import TransferscaleError, did_you_mean


@dataclass
class Correlations:
    """with_us: (shots,) task, spearman, n. between_tasks: (shots,) task_a, task_b, spearman, n.
    shots_trend: task, param, spearman of the parameter with shots, slope per shot, n_shots (None
    when there is no shots column or fewer than two shot counts)."""

    with_us: pd.DataFrame
    between_tasks: pd.DataFrame
    shots_trend: pd.DataFrame | None


def correlations(df, us="us_acc", ds="ds_acc", task="task", model="run", shots="shots", fits=None,
                 **fit_params) -> Correlations:
    """Spearman correlation of every DS task with US and between DS tasks (per shot count), and trends.

    `df` has one row per (model, task[, shots]). The trend of k, alpha and e_IR with shots uses `fits`
    (a fit_saturation table with task and shots columns) or, if not given, fits one without bootstrap.
    Abnar et al. find k and e_IR fall and alpha rises as shots grow.
    """
    shots = shots if shots in df.columns else None
    for col in (us, ds, task, model):
        if col not in df.columns:
            raise TransferscaleError(f"column {col!r} is not in the table; {did_you_mean(col, df.columns)}")
    per = [shots] if shots else []
    with_us = _with_us(df, us, ds, task, per)
    between = _between(df, ds, task, model, per)
    trend = None
    if shots and df[shots].nunique() > 1:
        if fits is None:
            fits = fit_saturation(df, us=us, ds=ds, by=[task, shots], n_bootstrap=0, **fit_params)
        trend = shots_trend(fits, task=task, shots=shots)
    return Correlations(with_us, between, trend)


def shots_trend(fits: pd.DataFrame, task="task", shots="shots") -> pd.DataFrame:
    """Per task and parameter: Spearman of the fitted value with shots and the least-squares slope."""
    rows = []
    for name, g in fits.dropna(subset=["k"]).groupby(task, sort=True):
        g = g.sort_values(shots)
        for param in ("k", "alpha", "e_ir"):
            n = len(g)
            rho = spearmanr(g[shots], g[param]).statistic if n > 2 else np.sign(np.diff(g[param]).sum())
            slope = np.polyfit(g[shots].astype(float), g[param], 1)[0] if n > 1 else np.nan
            rows.append({task: name, "param": param, "spearman": float(rho), "slope": float(slope),
                         "n_shots": n})
    return pd.DataFrame(rows, columns=[task, "param", "spearman", "slope", "n_shots"])


def _with_us(df, us, ds, task, per) -> pd.DataFrame:
    rows = []
    for key, g in df.groupby([*per, task], sort=True, dropna=False):
        rho = spearmanr(g[us], g[ds]).statistic if len(g) > 2 else np.nan
        rows.append({**dict(zip([*per, task], key)), "spearman": float(rho), "n": len(g)})
    return pd.DataFrame(rows, columns=[*per, task, "spearman", "n"])


def _between(df, ds, task, model, per) -> pd.DataFrame:
    rows = []
    for key, g in (df.groupby(per, sort=True, dropna=False) if per else [((), df)]):
        key = key if isinstance(key, tuple) else (key,)
        wide = g.pivot_table(index=model, columns=task, values=ds, aggfunc="mean")
        rho = wide.corr(method="spearman", min_periods=3)
        counts = wide.notna().astype(int).T @ wide.notna().astype(int)
        names = list(wide.columns)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                rows.append({**dict(zip(per, key)), "task_a": a, "task_b": b,
                             "spearman": float(rho.loc[a, b]), "n": int(counts.loc[a, b])})
    return pd.DataFrame(rows, columns=[*per, "task_a", "task_b", "spearman", "n"])
