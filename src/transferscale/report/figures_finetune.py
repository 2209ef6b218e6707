"""The fine-tuning figure: per task, fine-tuned accuracy against few-shot accuracy and against US accuracy.

Left column: each fine-tuned run's accuracy after full fine-tuning against its few-shot probe accuracy on the
same task (final representation, the largest shot count, mean over seeds), with the diagonal y = x: a point
above it gained from fine-tuning. Right column: fine-tuned accuracy against US accuracy, the analogue of the
main figure. Randomly initialised networks fine-tuned on the task (training from scratch) are baselines: a
hollow cross on the left, and on the right a dashed line at their fine-tuned accuracy, since their
upstream accuracy is chance and places them nowhere on the US axis.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from transferscale.report import style
from transferscale.report.data import ReportData
from transferscale.report.figures import _panel_title, _us_limits

FT_LABEL = "fine-tuned DS accuracy (fraction)"
DIAGONAL = "#9a9a9a"


def finetune_grid(data: ReportData) -> bytes | None:
    """Tasks down; columns: fine-tuned vs few-shot accuracy (with y = x), fine-tuned vs US accuracy."""
    ft = data.finetune
    if ft.empty:
        return None
    tasks = list(dict.fromkeys(ft["task"]))
    trained, base = ft[ft["kind"] != "baseline"], ft[ft["kind"] == "baseline"]
    fig, axes = style.new_grid(len(tasks), 2, w=3.2, h=2.5, wgap=0.75, hgap=0.6, head=style.head_height(2))
    us = trained["us_acc"].dropna()
    xlim_us = _us_limits(us) if len(us) else (0.0, 1.0)
    with style.rc():
        for i, task in enumerate(tasks):
            g, b = trained[trained["task"] == task], base[base["task"] == task]
            shots = ft.loc[ft["task"] == task, "fewshot_shots"].dropna()
            shot_text = f"{int(shots.iloc[0])}-shot" if len(shots) else "few-shot"
            _versus_fewshot(axes[i, 0], g, b)
            axes[i, 0].set_title(_panel_title(task, f"vs {shot_text}"))
            axes[i, 0].set_xlabel(f"{shot_text} probe accuracy, final layer (fraction)")
            axes[i, 0].set_ylabel(FT_LABEL)
            _versus_us(axes[i, 1], g, b, xlim_us)
            axes[i, 1].set_title(_panel_title(task, "vs US"))
            axes[i, 1].set_xlabel(data.us_label)
    style.finish(fig, "Fine-tuning: against the few-shot probe (left) and against US accuracy (right)",
                 _legend(ft))
    return style.to_png(fig)


def _versus_fewshot(ax, g: pd.DataFrame, b: pd.DataFrame) -> None:
    vals = pd.concat([g["fewshot_acc"], g["ft_acc"], b["fewshot_acc"], b["ft_acc"]]).astype(float)
    vals = vals[np.isfinite(vals)]
    lo, hi = (float(vals.min()), float(vals.max())) if len(vals) else (0.0, 1.0)
    pad = 0.08 * max(hi - lo, 0.05)
    lo, hi = max(0.0, lo - pad), min(1.0, hi + pad)
    ax.plot([lo, hi], [lo, hi], color=DIAGONAL, ls="--", lw=1.0, zorder=1)
    _scatter(ax, g, "fewshot_acc")
    for _, r in b.iterrows():
        ax.scatter([r["fewshot_acc"]], [r["ft_acc"]], s=46, marker="X", facecolor="white",
                   edgecolor=style.family_colour(r["family"]), linewidth=1.2, zorder=4)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)


def _versus_us(ax, g: pd.DataFrame, b: pd.DataFrame, xlim) -> None:
    for _, r in b.iterrows():
        colour = style.family_colour(r["family"])
        ax.axhline(r["ft_acc"], color=colour, ls=(0, (4, 2)), lw=1.0, alpha=0.8, zorder=1)
        ax.annotate(f"{r['model']} (from scratch)", (0.98, r["ft_acc"]), xycoords=("axes fraction", "data"),
                    ha="right", va="bottom", fontsize=6.5, color=colour, zorder=2)
    _scatter(ax, g, "us_acc")
    ax.set_xlim(*xlim)
    vals = pd.concat([g["ft_acc"], b["ft_acc"]]).astype(float)
    vals = vals[np.isfinite(vals)]
    if len(vals):
        lo, hi = float(vals.min()), float(vals.max())
        pad = 0.1 * max(hi - lo, 0.05)
        ax.set_ylim(max(-0.02, lo - pad), min(1.02, hi + pad))


def _scatter(ax, g: pd.DataFrame, x: str) -> None:
    for (fam, size), f in g.groupby(["family", g["size"].fillna("-")], sort=True):
        ax.scatter(f[x], f["ft_acc"], s=34, color=style.family_colour(fam), marker=style.size_marker(size),
                   alpha=0.85, edgecolor="white", linewidth=0.5, zorder=3)


def _legend(ft: pd.DataFrame) -> list:
    trained = ft[ft["kind"] != "baseline"]
    fams = [Line2D([], [], ls="", marker="o", color=style.family_colour(f), label=style.family_label(f))
            for f in sorted(trained["family"].unique())]
    sizes = [s for s in ("s", "m", "l", "xl") if s in set(trained["size"].dropna())]
    fams += [Line2D([], [], ls="", marker=style.size_marker(s), color="#777777", label=f"size {s}") for s in sizes]
    lines = [Line2D([], [], color=DIAGONAL, ls="--", label="y = x (fine-tuning = few-shot probe)")]
    if (ft["kind"] == "baseline").any():
        lines += [Line2D([], [], ls="", marker="X", mfc="white", mec="#555555", markersize=7,
                         label="random init, fine-tuned from scratch (baseline)"),
                  Line2D([], [], color="#777777", ls=(0, (4, 2)), label="the same baseline on the US panels")]
    return [fams, lines]
