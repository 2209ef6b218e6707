"""The per-task figures: the law's parameters against shots, layer-wise curves, rank correlations."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from transferscale.report import style
from transferscale.report.data import ReportData
from transferscale.report.numbers import US_NAME, Analysis

PARAMS = [("e_ir", "e_IR (irreducible DS error, fraction)"), ("k", "k (scale, error units)"),
          ("alpha", "alpha (exponent, unitless)")]


def params_vs_shots(data: ReportData, res: Analysis) -> bytes | None:
    """e_IR, k and alpha of the hull fit against shots, one line per task, bootstrap intervals as bars.

    Abnar et al. find that with more shots k and e_IR fall and alpha rises.
    """
    if not data.has_shots or len(data.shots) < 2 or not res.hull["k"].notna().any():
        return None
    colours = style.task_colours(data.tasks)
    fig, axes = style.new_grid(1, 3, w=3.3, h=2.6, wgap=0.75, head=style.head_height(-(-len(data.tasks) // 4)))
    n = len(data.tasks)
    with style.rc():
        for ax, (param, label) in zip(axes[0], PARAMS):
            for t, task in enumerate(data.tasks):
                f = res.hull[res.hull["task"] == task].sort_values("shots")
                f = f[np.isfinite(f[param].astype(float))]
                if f.empty:
                    continue
                # a small multiplicative offset per task keeps the bars of equal shots apart on a log axis
                x = f["shots"].astype(float) * 1.045 ** (t - (n - 1) / 2)
                y = f[param].astype(float)
                err = np.vstack([y - f[f"{param}_low"], f[f"{param}_high"] - y]).clip(0)
                ax.errorbar(x, y, yerr=err, color=colours[task], marker="o", ms=3.5, lw=1.2, elinewidth=0.7,
                            capsize=1.5, alpha=0.9)
            ax.set_xscale("log")
            ax.set_xticks(data.shots, [str(s) for s in data.shots])
            ax.minorticks_off()
            ax.set_xlabel("shots per class (log scale)")
            ax.set_ylabel(label)
            ax.set_title(f"{param} of the hull fit")
    handles = [Line2D([], [], color=colours[t], marker="o", ms=3.5, label=str(t)) for t in data.tasks]
    rows = [handles[i:i + 4] for i in range(0, len(handles), 4)]
    style.finish(fig, f"The law's parameters against shots (bars: {res.n_bootstrap}-resample bootstrap 95% CI)", rows)
    return style.to_png(fig)


def layer_curves(data: ReportData, res: Analysis, shots) -> bytes | None:
    """DS accuracy against relative depth per task, near tasks in the left column and far ones on the right.

    Near and far: the tasks split at the median of their Spearman correlation with US accuracy. Abnar et al.
    find near tasks improve up to the last layer while far tasks peak earlier; the marker shows each
    model's best layer.
    """
    lay = data.layers
    if lay.empty:
        return None
    lay = lay[lay["shots"] == shots] if (lay["shots"] == shots).any() else lay[lay["shots"] == lay["shots"].max()]
    present = set(lay["task"].unique())
    near, far = near_far(data, res, shots, [t for t in data.tasks if t in present])
    n_rows = max(len(near), len(far), 1)
    fig, axes = style.new_grid(n_rows, 2, w=3.6, h=2.1, wgap=0.8, hgap=0.6, head=style.head_height(1))
    rho = _rho_us(res, shots)
    with style.rc():
        for col, (group, title) in enumerate(((near, "near"), (far, "far"))):
            for i in range(n_rows):
                ax = axes[i, col]
                if i >= len(group):
                    ax.set_visible(False)
                    continue
                task = group[i]
                rows = lay[lay["task"] == task]
                if rows["model"].nunique() > DENSE_MODELS:
                    _quantile_bands(ax, rows)
                for _, g in (rows.groupby("model") if rows["model"].nunique() <= DENSE_MODELS else ()):
                    g = g.sort_values("depth")
                    colour = style.family_colour(g["family"].iloc[0])
                    ax.plot(g["depth"], g["ds_acc"], color=colour, lw=1.0, alpha=0.6)
                    top = g.loc[g["ds_acc"].idxmax()]
                    ax.scatter([top["depth"]], [top["ds_acc"]], color=colour, s=14, zorder=3)
                r = rho.get(task, np.nan)
                ax.set_title(f"{title}: {task} (ρ_US = {r:.2f})" if np.isfinite(r) else f"{title}: {task}")
                ax.set_xlim(-0.03, 1.03)
                ax.set_ylabel(DS_SHOT_LABEL.format(shots=shots))
                if i == len(group) - 1 or i == n_rows - 1:
                    ax.set_xlabel("relative depth (1 = last block)")
    handles = [Line2D([], [], color=style.family_colour(f), label=style.family_label(f))
               for f in sorted(lay["family"].unique())]
    dense = lay.groupby("task")["model"].nunique().max() > DENSE_MODELS
    best = "each family's median best layer" if dense else "each model's best layer"
    handles.append(Line2D([], [], ls="", marker="o", color="#666666", ms=4, label=best))
    if dense:
        handles.append(Patch(color="#999999", alpha=0.35, label=f"over {DENSE_MODELS} models: median per family, "
                                                                "band: middle half of the models"))
    style.finish(fig, f"Layer-wise {shots}-shot probes: near tasks (left) and far tasks (right)", [handles])
    return style.to_png(fig)


DS_SHOT_LABEL = "DS accuracy, {shots}-shot (fraction)"
DENSE_MODELS = 40  # more models than this in a panel: their spread per family, not one line each


def _quantile_bands(ax, rows) -> None:
    """Per family, the median accuracy at each relative depth with its interquartile band (edges drawn thin,
    so overlapping families stay apart), and a dot at the median curve's best depth."""
    for fam, f in rows.groupby("family", sort=True):
        q = f.groupby(f["depth"].round(6))["ds_acc"].quantile([0.25, 0.5, 0.75]).unstack()
        colour = style.family_colour(fam)
        ax.fill_between(q.index, q[0.25], q[0.75], color=colour, alpha=0.12, lw=0)
        for edge in (0.25, 0.75):
            ax.plot(q.index, q[edge], color=colour, lw=0.6, alpha=0.7)
        ax.plot(q.index, q[0.5], color=colour, lw=1.6)
        top = q[0.5].idxmax()
        ax.scatter([top], [q.at[top, 0.5]], color=colour, s=14, zorder=3)


def near_far(data: ReportData, res: Analysis, shots, tasks=None) -> tuple[list, list]:
    """Tasks ordered by Spearman correlation with US (highest first), split at the median into near / far."""
    tasks = list(data.tasks if tasks is None else tasks)
    rho = _rho_us(res, shots)
    ordered = sorted(tasks, key=lambda t: -rho.get(t, -np.inf) if np.isfinite(rho.get(t, np.nan)) else np.inf)
    half = math.ceil(len(ordered) / 2)
    return ordered[:half], ordered[half:]


def correlation_heatmaps(data: ReportData, res: Analysis, ref_shots) -> bytes:
    """Spearman's rho between upstream accuracy and every DS task and between DS tasks at the reference
    shot count (left), and each task's rho with upstream at every shot count (right)."""
    names = _corr_order(res, ref_shots)
    shots = list(res.corr)
    m = res.corr[ref_shots].loc[names, names].to_numpy(float)
    w_us = np.array([[res.corr[s].loc[US_NAME, t] for s in shots] for t in names[1:]], dtype=float)
    n, k = len(names), len(shots)
    longest = max(len(_short(t)) for t in names)
    cell, head = 0.4, 0.55
    left = gap = 0.35 + 0.058 * longest  # room for the task names on the y axis
    bottom = 0.25 + 0.036 * longest  # and for the rotated names under the matrix
    fig_w = left + n * cell + gap + k * cell * 1.3 + 1.3
    fig_h = head + n * cell + bottom
    with style.rc():
        fig = plt.figure(figsize=(fig_w, fig_h))
        ax1 = fig.add_axes([left / fig_w, bottom / fig_h, n * cell / fig_w, n * cell / fig_h])
        ax2 = fig.add_axes([(left + n * cell + gap) / fig_w, bottom / fig_h, k * cell * 1.3 / fig_w,
                            (n - 1) * cell / fig_h])
        labels = [_short(t) for t in names]
        im = _heat(ax1, m, labels, labels)
        shot_title = f" ({data.shot_label(ref_shots)})" if data.has_shots else ""
        ax1.set_title(f"between upstream and DS tasks{shot_title}")
        _heat(ax2, w_us, [data.shot_label(s) or "all" for s in shots], labels[1:])
        ax2.set_title("each task with upstream", loc="left")
        ax2.set_xlabel("shots per class")
        cax = fig.add_axes([(fig_w - 0.95) / fig_w, bottom / fig_h, 0.13 / fig_w, n * cell / fig_h])
        fig.colorbar(im, cax=cax, label="Spearman ρ (rank correlation, unitless)")
    style.finish(fig, "Rank correlations over the trained models (tasks ordered by ρ with upstream accuracy)")
    return style.to_png(fig)


def _heat(ax, m, xlabels, ylabels):
    im = ax.imshow(m, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    ax.grid(False)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if np.isfinite(m[i, j]):
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6.3,
                        color="white" if abs(m[i, j]) > 0.6 else "#222222")
    ax.set_xticks(range(m.shape[1]), xlabels, rotation=50 if len(xlabels) > 4 else 0,
                  ha="right" if len(xlabels) > 4 else "center")
    ax.set_yticks(range(m.shape[0]), ylabels)
    ax.spines[:].set_visible(False)
    return im


def _corr_order(res: Analysis, shots) -> list:
    m = res.corr[shots] if shots in res.corr else next(iter(res.corr.values()))
    tasks = [n for n in m.index if n != US_NAME]
    rho = m.loc[US_NAME, tasks].astype(float).fillna(-2)
    return [US_NAME, *sorted(tasks, key=lambda t: -rho[t])]


def _rho_us(res: Analysis, shots) -> dict:
    w = res.with_us[res.with_us["shots"] == shots]
    return dict(zip(w["task"], w["spearman"].astype(float)))


def _short(name: str, n: int = 24) -> str:
    name = str(name)
    return name if len(name) <= n else name[: n - 1] + "…"


def extrapolation_scatter(data: ReportData, res: Analysis) -> bytes | None:
    """The extrapolation check at a glance: per (task, shots) group, the hull fit's error on the held-out
    frontier runs against the all-points fit's (left), and the same for the bias (right). Below the diagonal
    on the left the hull predicted better; left of 0 on the right, the all-points fit under-predicted."""
    extra = res.extrapolation
    if extra is None or extra.empty:
        return None
    keys = ["task", *(["shots"] if "shots" in extra.columns else [])]
    wide = extra.pivot_table(index=keys, columns="points", values=["rmse_frontier", "bias_frontier"],
                             dropna=False).reset_index()
    try:
        err = wide[("rmse_frontier", "all")].to_numpy(float), wide[("rmse_frontier", "upper_hull")].to_numpy(float)
        bias = wide[("bias_frontier", "all")].to_numpy(float), wide[("bias_frontier", "upper_hull")].to_numpy(float)
    except KeyError:  # one point set alone: nothing to compare
        return None
    ok = np.isfinite(err[0]) & np.isfinite(err[1])
    if not ok.any():
        return None
    tasks = wide[("task", "")].to_numpy()[ok]
    order = [t for t in data.tasks if t in set(tasks)] + sorted(set(tasks) - set(data.tasks), key=str)
    colours = dict(zip(order, plt.get_cmap("tab20" if len(order) > 10 else "tab10").colors))
    per_row = 4  # legend entries a row holds across the two panels
    n_rows = -(-len(order) // per_row)
    fig, axes = style.new_grid(1, 2, w=3.0, h=2.8, wgap=0.9, head=style.head_height(n_rows))
    with style.rc():
        for ax, (x, y), what in ((axes[0, 0], err, "error"), (axes[0, 1], bias, "bias")):
            x, y = x[ok], y[ok]
            ax.scatter(x, y, s=16, c=[colours.get(t, "#777777") for t in tasks], edgecolor="white", linewidth=0.4,
                       zorder=3)
            lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
            pad = 0.05 * max(hi - lo, 1e-3)
            lo, hi = (min(lo - pad, 0.0), hi + pad) if what == "error" else (lo - pad, max(hi + pad, 0.0))
            ax.plot([lo, hi], [lo, hi], color="#888888", lw=0.8, ls="--", zorder=1)
            if what == "bias":
                ax.axhline(0, color="#bbbbbb", lw=0.6, zorder=0)
                ax.axvline(0, color="#bbbbbb", lw=0.6, zorder=0)
            ax.set_xlim(lo, hi)
            ax.set_ylim(lo, hi)
            ax.set_xlabel(f"{what}, fit on all points")
            ax.set_ylabel(f"{what}, fit on the hull")
        wins = int(np.sum(err[1][ok] < err[0][ok]))
        axes[0, 0].set_title(f"hull predicts better in {wins} of {int(ok.sum())} groups", loc="left")
        axes[0, 1].set_title("bias < 0: the strongest runs beat the prediction", loc="left")
    handles = [Line2D([], [], ls="", marker="o", color=colours[t], label=str(t)) for t in order]
    rows = [handles[i:i + per_row] for i in range(0, len(handles), per_row)]
    style.finish(fig, "Predicting the strongest runs from the weaker ones, hull against all points", rows)
    return style.to_png(fig)
