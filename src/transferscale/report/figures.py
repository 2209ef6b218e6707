"""The main figure: DS against US accuracy per task and shot count, with the upper hull and the law.

A grid of small multiples (tasks down, shots across) with one shared legend. Trained
models are points; baselines (raw pixels, random init) have no meaningful upstream accuracy, so they are
horizontal reference lines at their DS accuracy and never enter a fit.
"""
from __future__ import annotations

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from transferscale.analysis import upper_hull
from transferscale.report import style
from transferscale.report.data import ReportData
from transferscale.report.numbers import Analysis

DS_LABEL = "DS accuracy (fraction)"


RAW_KINDS = {"pixels": "raw pixels", "words": "bag of words"}  # the raw-input baselines, by run kind
# A panel with more points than this draws their density (hexagons) and only the hull's models as markers:
# thousands of overlapping markers hide the frontier they are meant to show, and cost seconds to draw.
DENSE_POINTS = 400
DENSITY_CMAP = "Greys"

def frontier_grid(data: ReportData, res: Analysis) -> bytes:
    """Every (task, shots) panel: points by family / size / budget, the hull, both fits, 1 - e_IR.

    Tasks run down and shot counts across; a table with one shot count wraps its tasks into rows of four.
    """
    pts = data.points
    panels = [(t, s) for t in data.tasks for s in data.shots]
    n_cols = len(data.shots) if len(data.shots) > 1 else min(4, len(panels))
    n_rows = -(-len(panels) // n_cols)
    legend = _frontier_legend(data)
    fig, axes = style.new_grid(n_rows, n_cols, sharex=True, head=style.head_height(len(legend)))
    xlim = _us_limits(pts["us_acc"])
    xs = np.linspace(*xlim, 120)
    with style.rc():
        for k, (task, s) in enumerate(panels):
            ax = axes[k // n_cols, k % n_cols]
            g = pts[(pts["task"] == task) & (pts["shots"] == s)]
            base = _baselines_at(data, task, s)
            _baseline_lines(ax, base)
            if len(g) > DENSE_POINTS:
                _density(ax, g["us_acc"], g["ds_acc"], xlim)
                _points(ax, g.iloc[_hull_index(g)])
            else:
                _points(ax, g)
            _hull_line(ax, g)
            hull, every = res.fit("hull", task, s), res.fit("all", task, s)
            _curve(ax, every, xs, style.ALL_FIT_COLOUR, "--")
            _curve(ax, hull, xs, style.HULL_COLOUR, "-")
            _ylim(ax, g["ds_acc"], base["ds_acc"], hull)
            _saturation(ax, hull)
            ax.set_xlim(*xlim)
            ax.set_title(_panel_title(task, data.shot_label(s)))
            if k + n_cols >= len(panels):
                ax.set_xlabel(data.us_label)
                ax.xaxis.set_tick_params(labelbottom=True)
            if k % n_cols == 0:
                ax.set_ylabel(DS_LABEL)
        for k in range(len(panels), n_rows * n_cols):
            axes[k // n_cols, k % n_cols].set_visible(False)
    per = "per task and shot count" if data.has_shots else "per task"
    style.finish(fig, f"DS against US accuracy {per}, with the saturation law", legend)
    return style.to_png(fig)


# ---- parts ----------------------------------------------------------------------------------------------


def _panel_title(task, extra: str) -> str:
    task = str(task)
    task = task if len(task) <= 26 else task[:25] + "…"
    return f"{task} · {extra}" if extra else task


def _us_limits(us) -> tuple[float, float]:
    """Shared x range: the data, padded, with room on the right for where the curves head."""
    lo, hi = float(us.min()), float(us.max())
    span = max(hi - lo, 0.02)
    return max(0.0, lo - 0.06 * span), min(1.0, hi + 0.25 * span)


def _baselines_at(data: ReportData, task, shots):
    b = data.baselines
    if b.empty:
        return b
    return b[(b["task"] == task) & ((b["shots"] == shots) if data.has_shots else True)]


def _baseline_lines(ax, base) -> None:
    """Raw input (pixels, bag of words): black dotted; random init: the best size per family, dashed in the
    family colour."""
    if base.empty:
        return
    raw = base["run_kind"].isin(RAW_KINDS)
    for _, r in base[raw].iterrows():
        ax.axhline(r["ds_acc"], color="#222222", ls=":", lw=1.1, zorder=1)
    rnd = base[~raw]
    for fam, g in rnd.groupby("family"):
        ax.axhline(g["ds_acc"].max(), color=style.family_colour(fam), ls=(0, (4, 2)), lw=0.9, alpha=0.75,
                   zorder=1)


def _points(ax, g) -> None:
    """The models as markers: shape by size, colour by family, area by budget. One scatter per size (the
    colours go per point), not one per (family, size): a tenth of the calls on a 20-task grid."""
    size = g["size"].fillna("-")
    for s in sorted(size.unique()):
        f = g[size == s].sort_values("family", kind="stable")
        ax.scatter(f["us_acc"], f["ds_acc"], s=style.budget_area(f["budget_rank"].fillna(0)),
                   color=[style.family_colour(fam) for fam in f["family"]], marker=style.size_marker(s),
                   alpha=0.85, edgecolor="white", linewidth=0.5, zorder=3)


def _density(ax, x, y, xlim, gridsize: int = 28) -> None:
    """Where the models are, as hexagons shaded by how many fall in each (log scale), under everything else."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ylo, yhi = float(np.min(y)), float(np.max(y))
    pad = 0.02 * max(yhi - ylo, 0.02)
    ax.hexbin(x, y, gridsize=gridsize, bins="log", mincnt=1, cmap=DENSITY_CMAP, linewidths=0, alpha=0.75,
              extent=(xlim[0], xlim[1], ylo - pad, yhi + pad), zorder=1.2)


def _hull_index(g):
    return upper_hull(g["us_acc"].to_numpy(float), g["ds_acc"].to_numpy(float)) if len(g) >= 2 else np.arange(len(g))


def _hull_line(ax, g) -> None:
    if len(g) < 2:
        return
    h = g.iloc[_hull_index(g)]
    ax.plot(h["us_acc"], h["ds_acc"], color=style.HULL_COLOUR, lw=0.8, alpha=0.55, zorder=2)
    ax.scatter(h["us_acc"], h["ds_acc"], s=58, facecolor="none", edgecolor=style.HULL_COLOUR, linewidth=0.9,
               zorder=4)


def _curve(ax, fit, xs, colour, ls, lw=1.4) -> None:
    """The fitted law DS = 1 - e_IR - k (1 - US)^alpha over the panel's US range."""
    if fit is None or not np.isfinite(fit["k"]):
        return
    ys = 1 - (fit["k"] * np.clip(1 - xs, 0, None) ** fit["alpha"] + fit["e_ir"])
    ax.plot(xs, ys, color=colour, ls=ls, lw=lw, zorder=2.5)


def _ylim(ax, ds, base_ds, hull) -> None:
    """Fit the data and baselines; the saturation line joins them only where it stays near the data."""
    vals = np.concatenate([np.asarray(ds, float), np.asarray(base_ds, float)])
    vals = vals[np.isfinite(vals)]
    if not vals.size:
        return
    lo, hi = vals.min(), vals.max()
    span = max(hi - lo, 0.02)
    if hull is not None and np.isfinite(hull["saturation"]) and hull["saturation"] <= hi + 0.6 * span:
        hi = max(hi, hull["saturation"])
    ax.set_ylim(max(-0.02, lo - 0.08 * span), min(1.02, hi + 0.12 * span))  # a point at 0 or 1 stays whole


def _saturation(ax, hull) -> None:
    """1 - e_IR as a line with its bootstrap interval as a band, and its value written in the corner."""
    if hull is None or not np.isfinite(hull["saturation"]):
        ax.text(0.97, 0.04, "no hull fit (too few points)", transform=ax.transAxes, ha="right", va="bottom",
                fontsize=6.5, color="#a33", zorder=2)
        return
    sat, lo, hi = hull["saturation"], hull["saturation_low"], hull["saturation_high"]
    if np.isfinite(lo) and np.isfinite(hi):
        ax.axhspan(lo, hi, color=style.SATURATION_COLOUR, alpha=0.09, lw=0, zorder=0)
    ax.axhline(sat, color=style.SATURATION_COLOUR, lw=1.0, zorder=1.5)
    top = ax.get_ylim()[1]
    arrow = " ↑ off scale" if sat > top else ""
    ci = f" [{lo:.2f}, {hi:.2f}]" if np.isfinite(lo) else ""
    ax.text(0.97, 0.04, f"1−e_IR = {sat:.2f}{ci}{arrow}\nhull: {int(hull['n_points'])} pts", transform=ax.transAxes,
            ha="right", va="bottom", fontsize=6.5, color="#7a4a00", zorder=2,  # under the points
            bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="none", alpha=0.75))


def _frontier_legend(data: ReportData) -> list:
    """Two rows: what the points encode (family, size, budget), then what the lines are."""
    pts = data.points
    h = [Line2D([], [], ls="", marker="o", color=style.family_colour(f), label=style.family_label(f))
         for f in sorted(pts["family"].unique()) if f != "models"]
    sizes = [s for s in ("s", "m", "l", "xl") if s in set(pts["size"].dropna().unique())]
    h += [Line2D([], [], ls="", marker=style.size_marker(s), color="#777777", label=f"size {s}") for s in sizes]
    ranks = sorted(pts["budget_rank"].dropna().unique())
    if len(ranks) > 1:
        shown = ranks if len(ranks) <= 5 else [ranks[0], ranks[len(ranks) // 2], ranks[-1]]  # the legend fits a row
        h += [Line2D([], [], ls="", marker="o", color="#999999",
                     markersize=float(np.sqrt(style.budget_area(r))), label=f"budget {int(r) + 1} of {len(ranks)}")
              for r in shown]
    lines = [Line2D([], [], ls="", marker="o", mfc="none", mec=style.HULL_COLOUR, markersize=8, label="on upper hull"),
          Line2D([], [], color=style.HULL_COLOUR, label="fit on hull"),
          Line2D([], [], color=style.ALL_FIT_COLOUR, ls="--", label="fit on all points"),
          Patch(color=style.SATURATION_COLOUR, alpha=0.45, label="1 − e_IR (95% CI)")]
    if len(pts) and pts.groupby(["task", "shots"], dropna=False).size().max() > DENSE_POINTS:
        lines.append(Patch(color="#8a8a8a", alpha=0.6, label="where the models are (density)"))
    kinds = set(data.baselines["run_kind"]) if not data.baselines.empty else set()
    for kind in sorted(kinds & set(RAW_KINDS)):
        lines.append(Line2D([], [], color="#222222", ls=":", label=f"{RAW_KINDS[kind]} (baseline)"))
    if kinds - set(RAW_KINDS):
        lines.append(Line2D([], [], color="#777777", ls=(0, (4, 2)), label="random init, best size (baseline)"))
    return [h, lines]
