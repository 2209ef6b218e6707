"""The scaling-axes view: DS against US coloured in turn by model size, data fraction and training steps.

Abnar et al.'s "same curve" figure: if an axis only moves a model along one curve, its colours mix along
the law fitted on all models, and a colour that sits above or below the rest at equal US accuracy means
the axis matters by itself. Axes with a few values get a legend; numeric axes with many values (an external
table's parameter counts) get a colour bar, on a log scale when they span more than a decade.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm, Normalize
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from transferscale.report import style
from transferscale.report.data import ReportData
from transferscale.report.figures import DENSE_POINTS, DS_LABEL, _curve, _panel_title, _us_limits, _ylim
from transferscale.report.numbers import Analysis

CMAP = colormaps["viridis"]
LEGEND_COLS = 5
MAX_DISCRETE = 10
CURVE = "#b0b0b0"


def scaling_axes_grid(data: ReportData, res: Analysis, shots) -> bytes | None:
    """Tasks down, one column per scaling axis, the hull-fit curve in grey under the coloured points."""
    axes_cols = [(c, label) for c, label in data.axes if data.points[c].notna().any()]
    if not axes_cols:
        return None
    pts, tasks = data.points[data.points["shots"] == shots], data.tasks
    colourings = [_colouring(pts[c]) for c, _ in axes_cols]
    key_height = max(0.62 if isinstance(c, Normalize) else 0.2 + 0.17 * -(-len(c) // LEGEND_COLS)
                     for c in colourings)
    fig, grid = style.new_grid(len(tasks), len(axes_cols), sharex=True, w=2.9, head=style.head_height(1) + key_height)
    xlim = _us_limits(pts["us_acc"])
    xs = np.linspace(*xlim, 120)
    with style.rc():
        for j, ((col, label), colouring) in enumerate(zip(axes_cols, colourings)):
            for i, task in enumerate(tasks):
                ax = grid[i, j]
                g = pts[pts["task"] == task]
                _curve(ax, res.fit("hull", task, shots), xs, CURVE, "-", lw=2.2)
                if len(g) > DENSE_POINTS:
                    _mean_colour_cells(ax, g, col, colouring, xlim)
                for fam, f in (g.groupby("family") if len(g) <= DENSE_POINTS else ()):
                    ax.scatter(f["us_acc"], f["ds_acc"], s=26 if len(g) < 200 else 9, c=_colours(f[col], colouring),
                               marker=family_marker(fam), edgecolor="white", linewidth=0.4, zorder=3)
                ax.set_xlim(*xlim)
                _ylim(ax, g["ds_acc"], [], None)  # the data's range: the curve may leave it where it extrapolates
                ax.set_title(_panel_title(task, f"by {label}"))
                if i == len(tasks) - 1:
                    ax.set_xlabel(data.us_label)
                if j == 0:
                    ax.set_ylabel(DS_LABEL)
            _key(fig, grid[0, j], label, colouring)
    handles = [Line2D([], [], color=CURVE, lw=2.2, label="law fitted on the upper hull of all models")]
    handles += [Line2D([], [], ls="", marker=family_marker(f), color="#666666", label=style.family_label(f))
                for f in sorted(pts["family"].unique()) if f != "models"]
    if len(pts) and pts.groupby("task").size().max() > DENSE_POINTS:
        handles.append(Patch(color=CMAP(0.5), label=f"panels of over {DENSE_POINTS} models: each hexagon coloured "
                                                   "by the mean of the axis over its models"))
    shot_text = f" at {data.shot_label(shots)}" if data.has_shots else ""
    style.finish(fig, f"Scaling axes{shot_text}: one curve for every axis?", [handles])
    return style.to_png(fig)


def _mean_colour_cells(ax, g: pd.DataFrame, col: str, colouring, xlim, gridsize: int = 24) -> None:
    """Thousands of models: hexagons coloured by the mean position of their models' axis values on the
    colour scale (the legend's order for a few values, the colour bar's scale for many)."""
    t = _positions(g[col], colouring)
    ok = np.isfinite(t)
    if not ok.any():
        return
    y = g["ds_acc"].to_numpy(float)
    pad = 0.02 * max(float(np.ptp(y)), 0.02)
    ax.hexbin(g["us_acc"].to_numpy(float)[ok], y[ok], C=t[ok], reduce_C_function=np.mean, gridsize=gridsize,
              cmap=CMAP, vmin=0.0, vmax=1.0, mincnt=1, linewidths=0,
              extent=(xlim[0], xlim[1], float(y.min()) - pad, float(y.max()) + pad), zorder=3)


def _positions(values: pd.Series, colouring) -> np.ndarray:
    """Each value's place on the colour map, in [0, 1] (NaN where it has none)."""
    if isinstance(colouring, Normalize):
        return np.ma.filled(colouring(pd.to_numeric(values, errors="coerce").to_numpy(float)), np.nan)
    keys = list(colouring)
    n = max(len(keys) - 1, 1)
    place = {k: 0.1 + 0.8 * i / n for i, k in enumerate(keys)}
    return np.array([place.get(str(v), np.nan) for v in values], dtype=float)


def family_marker(family) -> str:
    return {"vit": "o", "mixer": "s", "resnet": "^"}.get(family, "o")


def _colouring(values: pd.Series):
    """A dict value -> colour for axes with few values (sizes s < m < l, numbers ascending), else a norm."""
    vals = list(values.dropna().unique())
    numeric = pd.to_numeric(pd.Series(vals, dtype=object), errors="coerce")
    if len(vals) > MAX_DISCRETE and numeric.notna().all():
        lo, hi = float(numeric.min()), float(numeric.max())
        return LogNorm(lo, hi) if lo > 0 and hi / lo > 10 else Normalize(lo, hi)
    order = {"s": 0, "m": 1, "l": 2, "xl": 3}
    if numeric.notna().all():
        vals = [v for _, v in sorted(zip(numeric, vals))]
    else:
        vals = sorted(vals, key=lambda v: (order.get(v, 99), str(v)))
    n = max(len(vals) - 1, 1)
    return {str(v): CMAP(0.1 + 0.8 * i / n) for i, v in enumerate(vals)}


def _colours(values: pd.Series, colouring):
    if isinstance(colouring, Normalize):
        return CMAP(colouring(pd.to_numeric(values, errors="coerce").to_numpy(float)))
    return [colouring.get(str(v), (0.6, 0.6, 0.6, 1.0)) for v in values]


def _key(fig, ax, label: str, colouring) -> None:
    """The column's legend (few values) or colour bar (many), above its first panel."""
    if not isinstance(colouring, Normalize):
        handles = [Patch(color=c, label=_fmt(v)) for v, c in colouring.items()]
        ax.legend(handles=handles, title=label, loc="lower left", bbox_to_anchor=(0, 1.09),
                  ncol=min(len(handles), LEGEND_COLS), frameon=False, handlelength=1.0, columnspacing=0.8,
                  title_fontsize=7.5, fontsize=7, alignment="left")
        return
    box, fh = ax.get_position(), fig.get_size_inches()[1]
    cax = fig.add_axes([box.x0, box.y1 + 0.3 / fh, box.width * 0.85, 0.09 / fh])
    bar = fig.colorbar(ScalarMappable(norm=colouring, cmap=CMAP), cax=cax, orientation="horizontal")
    cax.xaxis.set_ticks_position("top")
    cax.tick_params(labelsize=6.5, length=2, pad=1)
    bar.outline.set_linewidth(0.4)
    cax.set_title(label + (" (log scale)" if isinstance(colouring, LogNorm) else ""), fontsize=7.5, loc="left",
                  pad=12)


def _fmt(v: str) -> str:
    try:
        return f"{float(v):g}"
    except ValueError:
        return v
