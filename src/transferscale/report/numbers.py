"""The numbers behind the report: saturation fits (hull and all points), rank correlations, best checkpoints.

Fits come from `analysis.fit_saturation`, one law per (task, shots) on trained models only; baselines are
never fit points. The report uses a small bootstrap (n_bootstrap, 200 by default) so it builds in seconds;
the page says so, and `transferscale fit` gives the full 1,000-resample intervals.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from transferscale.analysis import correlations, fit_saturation
from transferscale.analysis.extrapolation import extrapolation_table, extrapolation_verdicts
from transferscale.report.data import ReportData

US_NAME = "upstream"
BY = ["task", "shots"]
HOLDOUT_QUANTILE = 0.9  # the extrapolation check fits below this US quantile (as `transferscale fit` does)


@dataclass
class Analysis:
    hull: pd.DataFrame  # fit_saturation on the upper hull, by task and shots, with intervals
    all: pd.DataFrame  # the same on all points (no bootstrap: the curve is shown for comparison)
    corr: dict  # shots -> square Spearman matrix over [upstream, *tasks]
    with_us: pd.DataFrame  # shots, task, spearman, n
    trend: pd.DataFrame | None  # task, param, spearman, slope, n_shots
    best: pd.DataFrame  # per task and shots: best trained model and best baseline
    ref_shots: int
    n_bootstrap: int
    seed: int
    # the extrapolation check per (task, shots): fit below the 0.9 US quantile, predict the strongest runs
    # (analysis.extrapolation), and its per-task verdicts
    extrapolation: pd.DataFrame | None = None
    extrapolation_verdicts: pd.DataFrame | None = None

    def fit(self, which: str, task, shots) -> pd.Series | None:
        table = self.hull if which == "hull" else self.all
        row = table[(table["task"] == task) & (table["shots"] == shots)]
        return None if row.empty else row.iloc[0]


def analyse(data: ReportData, n_bootstrap: int = 200, seed: int = 0, jobs: int | None = None) -> Analysis:
    """The report's numbers; the hull fits' bootstraps run in `jobs` processes (None: one per core, at most
    one per group), which changes no number."""
    pts = data.points
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant inputs in tiny groups: flagged, not fatal
        hull = _clip(fit_saturation(pts, by=BY, points="upper_hull", n_bootstrap=n_bootstrap, random_state=seed,
                                    jobs=jobs if n_bootstrap else 1))
        every = _clip(fit_saturation(pts, by=BY, points="all", n_bootstrap=0, random_state=seed))
        corr = correlations(pts, task="task", model="model", shots="shots", fits=hull)
        extra = extrapolation_table(pts, by=BY, holdout_quantile=HOLDOUT_QUANTILE, random_state=seed)
    return Analysis(hull=hull, all=every, corr=_matrices(corr, data), with_us=corr.with_us,
                    trend=corr.shots_trend, best=_best(data), ref_shots=max(data.shots),
                    n_bootstrap=n_bootstrap, seed=seed, extrapolation=extra,
                    extrapolation_verdicts=extrapolation_verdicts(extra, BY))


def _clip(fits: pd.DataFrame) -> pd.DataFrame:
    """Keep interval bounds inside [0, 1] for e_IR and saturation, whatever table the fits come from (a
    basic bootstrap interval resting on 3-4 points can run past its bounds; an accuracy cannot)."""
    fits = fits.copy()
    for col in ("e_ir_low", "e_ir_high", "saturation_low", "saturation_high"):
        fits[col] = fits[col].clip(0.0, 1.0)
    return fits


def _matrices(corr, data: ReportData) -> dict:
    """Per shot count, the symmetric Spearman matrix with upstream accuracy as its first row and column."""
    out = {}
    names = [US_NAME, *data.tasks]
    for shots in data.shots:
        m = pd.DataFrame(np.eye(len(names)), index=names, columns=names)
        w = corr.with_us[corr.with_us["shots"] == shots]
        for _, r in w.iterrows():
            m.loc[US_NAME, r["task"]] = m.loc[r["task"], US_NAME] = r["spearman"]
        b = corr.between_tasks[corr.between_tasks["shots"] == shots]
        for _, r in b.iterrows():
            m.loc[r["task_a"], r["task_b"]] = m.loc[r["task_b"], r["task_a"]] = r["spearman"]
        out[shots] = m
    return out


def _best(data: ReportData) -> pd.DataFrame:
    """Per (task, shots): the trained model with the best DS accuracy, and the best baseline."""
    pts = data.points
    top = pts.loc[pts.groupby(BY)["ds_acc"].idxmax(), [*BY, "model", "family", "us_acc", "ds_acc"]]
    top = top.rename(columns={"model": "best_model", "family": "best_family", "ds_acc": "best_acc",
                              "us_acc": "best_us"})
    base = data.baselines
    if base.empty:
        return top.assign(best_baseline=None, baseline_acc=np.nan).reset_index(drop=True)
    bb = base.loc[base.groupby(BY)["ds_acc"].idxmax(), [*BY, "name", "ds_acc"]]
    bb = bb.rename(columns={"name": "best_baseline", "ds_acc": "baseline_acc"})
    bb["shots"] = bb["shots"].astype(top["shots"].dtype)
    return top.merge(bb, on=BY, how="left").reset_index(drop=True)


def summary(data: ReportData, res: Analysis, shots) -> pd.DataFrame:
    """One row per task at one shot count: the hull fit, the all-points saturation, the best checkpoint."""
    rows = []
    for task in data.tasks:
        h, a = res.fit("hull", task, shots), res.fit("all", task, shots)
        best = res.best[(res.best["task"] == task) & (res.best["shots"] == shots)]
        if h is None or best.empty:  # the task has no result at this shot count (a study still running)
            continue
        b = best.iloc[0]
        rho = res.with_us[(res.with_us["task"] == task) & (res.with_us["shots"] == shots)]["spearman"]
        rows.append({
            "task": task, "rho_us": float(rho.iloc[0]) if len(rho) else np.nan,
            "saturation": h["saturation"], "sat_low": h["saturation_low"], "sat_high": h["saturation_high"],
            "k": h["k"], "alpha": h["alpha"], "e_ir": h["e_ir"], "n_points": h["n_points"],
            "n_models": h["n_models"], "flags": h["flags"] if isinstance(h["flags"], str) else "",
            "saturation_all": a["saturation"] if a is not None else np.nan,
            "best_model": b["best_model"], "best_acc": b["best_acc"],
            "best_baseline": b["best_baseline"], "baseline_acc": b["baseline_acc"],
        })
    return pd.DataFrame(rows)
