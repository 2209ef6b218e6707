"""The report's pretrain-or-not section: pretrained against scratch accuracy, and their gap, against data size.

Torch-free; reads the store's tidy results table (`transferscale.store.read_results` columns). `gap_curves`
gathers each arm's accuracy per data size (fine-tuned and probed pretrained runs, and the same architecture
trained from scratch), `gap_summary` fits the gap law g(n) = a n^-b + c of `analysis.gap` to each pretrained
arm, and `gap_figure` draws, per task, the accuracies (left) and the gaps with the fitted law and the size n*
where the gap falls under the threshold, with its bootstrap interval (right).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from transferscale.analysis.gap import _MIN_SIZES, THRESHOLD, GapFit
from transferscale.report import style

ARM_STYLE = {"fine-tuned": ("#d62728", "o", "-"), "probe": ("#1f77b4", "s", "--"), "scratch": ("#444444", "^", ":")}


def gap_curves(results: pd.DataFrame, classes: dict[str, int] | None = None) -> pd.DataFrame:
    """Every arm's accuracy against data size, one row per (task, pretrained run, arm, n, seed).

    Pairs each run with `scratch_accuracy` rows (the scratch arm) with every other run of the same family and
    size that has sized `finetune_accuracy` rows ("fine-tuned") or, for the tasks in `classes` (task -> number
    of classes, which turns a probe's shots per class into n), final-layer `fewshot_accuracy` rows ("probe").
    Columns: task, family, size, pretrained, scratch (run names), arm, n, seed, accuracy. Empty when no run
    was trained from scratch.
    """
    cols = ["task", "family", "size", "pretrained", "scratch", "arm", "n", "seed", "accuracy"]
    res = results.copy()
    for col, default in (("family", ""), ("size", ""), ("layer", -1)):
        if col not in res.columns:
            res[col] = default
    res["size"] = res["size"].fillna("")
    sized = res[res["shots"].notna()]
    out = []
    for (task, family, size, scr), rows in sized[sized["metric"] == "scratch_accuracy"].groupby(
            ["task", "family", "size", "name"], sort=False):
        same = sized[(sized["task"] == task) & (sized["family"] == family) & (sized["size"] == size)
                     & (sized["name"] != scr)]
        ft = same[same["metric"] == "finetune_accuracy"]
        few = same[(same["metric"] == "fewshot_accuracy") & (same["layer"] == -1)]
        if len(ft):  # the probes of the fine-tuned runs only: a run probed but not fine-tuned is another study's
            few = few[few["name"].isin(ft["name"])]
        per_class = classes.get(task) if classes else None
        arms = [(rows, "scratch", None, 1), (ft, "fine-tuned", ft["name"], 1)]
        if per_class:
            arms.append((few, "probe", few["name"], per_class))
        for part, arm, pretrained, scale in arms:
            out.append(part.assign(pretrained=pretrained, scratch=scr, arm=arm,
                                   n=part["shots"].astype(float) * scale, accuracy=part["value"]))
    if not out:
        return pd.DataFrame(columns=cols)
    df = pd.concat(out, ignore_index=True)[cols]
    return df.sort_values(["task", "arm", "n", "seed"], kind="stable").reset_index(drop=True)


def gap_summary(curves: pd.DataFrame, threshold: float = THRESHOLD, n_bootstrap: int = 1000,
                random_state: int | None = 0) -> pd.DataFrame:
    """The gap law of each pretrained arm against scratch, per task and pretrained run (`gap_curves` rows).

    The gap at n is the arm's mean accuracy over seeds minus scratch's (pair="mean"), or seed by seed for
    fine-tuning when both arms share every seed at every size, so the bootstrap resamples seeds. Columns:
    task, pretrained, scratch, arm, sizes, largest_n, gap_at_largest, a, b, c, n_star, n_star_lo, n_star_hi, verdict,
    resample, flags (";"-joined); a row whose arm has fewer than 3 sizes has NaN for the law and verdict
    "too few sizes".
    """
    rows = []
    pre = curves[curves["arm"] != "scratch"]
    for (task, scratch, name, arm), g in pre.groupby(["task", "scratch", "pretrained", "arm"], sort=False):
        s = curves[(curves["arm"] == "scratch") & (curves["task"] == task) & (curves["scratch"] == scratch)]
        paired = g.merge(s, on=["n", "seed"], suffixes=("", "_scr"))
        full = len(paired) == len(g) == len(s) and paired.groupby("n").size().min() >= 2
        if full:
            n, gap = paired["n"].to_numpy(float), (paired["accuracy"] - paired["accuracy_scr"]).to_numpy(float)
        else:
            m = g.groupby("n", as_index=False)["accuracy"].mean().merge(
                s.groupby("n", as_index=False)["accuracy"].mean(), on="n", suffixes=("", "_scr"))
            n, gap = m["n"].to_numpy(float), (m["accuracy"] - m["accuracy_scr"]).to_numpy(float)
        row = {"task": task, "pretrained": name, "scratch": scratch, "arm": arm, "sizes": len(np.unique(n)),
               "largest_n": float(n.max()) if len(n) else np.nan,
               "gap_at_largest": float(gap[n == n.max()].mean()) if len(n) else np.nan}
        if row["sizes"] < _MIN_SIZES:
            rows.append({**row, "verdict": "too few sizes"})
            continue
        fit = GapFit(threshold, n_bootstrap, random_state).fit(n, gap)
        rows.append({**row, "a": fit.a_, "b": fit.b_, "c": fit.c_, "n_star": fit.n_star_,
                     "n_star_lo": fit.ci_["n_star"][0], "n_star_hi": fit.ci_["n_star"][1], "verdict": fit.verdict_,
                     "resample": fit.resample_, "flags": ";".join(fit.flags_)})
    cols = ["task", "pretrained", "scratch", "arm", "sizes", "largest_n", "gap_at_largest", "a", "b", "c", "n_star",
            "n_star_lo", "n_star_hi", "verdict", "resample", "flags"]
    return pd.DataFrame(rows, columns=cols)


def gap_figure(curves: pd.DataFrame, summary: pd.DataFrame | None = None, threshold: float = THRESHOLD) -> bytes | None:
    """Tasks down (one row per task and pretrained run); left: each arm's accuracy against n (log scale),
    the mean over seeds joined by a line and every seed a faint dot; right: the gap of each pretrained arm to
    scratch with its fitted law (the curve), the threshold (dashed) and n* with its interval (a marker on the
    threshold and a band); None when nothing was trained from scratch."""
    if curves.empty:
        return None
    summary = gap_summary(curves, threshold) if summary is None else summary
    pre = curves[curves["arm"] != "scratch"]
    panels = list(dict.fromkeys(zip(pre["task"], pre["scratch"], pre["pretrained"])))
    if not panels:
        return None
    fig, axes = style.new_grid(len(panels), 2, w=3.2, h=2.4, wgap=0.75, hgap=0.65, head=style.head_height(1))
    with style.rc():
        for i, (task, scratch, name) in enumerate(panels):
            rows = curves[(curves["task"] == task) & (curves["scratch"] == scratch)
                          & ((curves["pretrained"] == name) | (curves["arm"] == "scratch"))]
            _accuracy_panel(axes[i, 0], rows)
            axes[i, 0].set_title(f"{task}: accuracy ({name})", loc="left")
            axes[i, 0].set_ylabel("DS accuracy (fraction)")
            fits = summary[(summary["task"] == task) & (summary["scratch"] == scratch)
                           & (summary["pretrained"] == name)]
            _gap_panel(axes[i, 1], rows, fits, threshold)
            axes[i, 1].set_title(f"{task}: gap to scratch", loc="left")
            axes[i, 1].set_ylabel("pretrained - scratch (accuracy)")
            for ax in axes[i]:
                ax.set_xscale("log")
                ax.set_xlabel("downstream training examples n")
    arms = [a for a in ARM_STYLE if a in set(curves["arm"])]
    handles = [Line2D([], [], color=ARM_STYLE[a][0], marker=ARM_STYLE[a][1], ls=ARM_STYLE[a][2], label=a)
               for a in arms]
    handles.append(Line2D([], [], color="#9a9a9a", ls="--", label=f"gap = {threshold:g}"))
    style.finish(fig, "Pretrain or not: pretrained vs from-scratch accuracy, and the gap, against data size",
                 [handles])
    return style.to_png(fig)


def _accuracy_panel(ax, rows: pd.DataFrame) -> None:
    for arm, g in rows.groupby("arm", sort=False):
        colour, marker, ls = ARM_STYLE.get(arm, ("#777777", "o", "-"))
        ax.scatter(g["n"], g["accuracy"], s=8, color=colour, alpha=0.35, lw=0, zorder=2)
        mean = g.groupby("n")["accuracy"].mean()
        ax.plot(mean.index, mean.to_numpy(), color=colour, marker=marker, ms=4, ls=ls, lw=1.3, zorder=3)


def _gap_panel(ax, rows: pd.DataFrame, fits: pd.DataFrame, threshold: float) -> None:
    scratch = rows[rows["arm"] == "scratch"].groupby("n")["accuracy"].mean()
    ax.axhline(threshold, color="#9a9a9a", ls="--", lw=1.0, zorder=1)
    ax.axhline(0.0, color="#cccccc", lw=0.8, zorder=1)
    n_all = rows["n"].to_numpy(float)
    for arm, g in rows[rows["arm"] != "scratch"].groupby("arm", sort=False):
        colour, marker, _ = ARM_STYLE.get(arm, ("#777777", "o", "-"))
        mean = g.groupby("n")["accuracy"].mean()
        gap = (mean - scratch).dropna()
        ax.plot(gap.index, gap.to_numpy(), color=colour, marker=marker, ms=4, ls="none", zorder=3)
        fit = fits[fits["arm"] == arm]
        if fit.empty or not np.isfinite(fit["a"].iloc[0]):
            continue
        f = fit.iloc[0]
        n_star, lo, hi = f["n_star"], f["n_star_lo"], f["n_star_hi"]
        right = n_all.max() * 1.05  # the law drawn past the data, as far as n* (up to 100x the largest n)
        if np.isfinite(n_star) and n_star > n_all.max():
            right = min(n_star * 1.5, n_all.max() * 100)
        grid = np.geomspace(n_all.min(), right, 200)
        ax.plot(grid, f["a"] * grid ** -f["b"] + f["c"], color=colour, lw=1.2, zorder=2)
        if np.isfinite(n_star) and n_star > 0:
            ax.plot([n_star], [threshold], marker="|", ms=12, mew=2, color=colour, zorder=4)
            if np.isfinite(lo):
                ax.axvspan(max(lo, grid[0]), min(hi, grid[-1]) if np.isfinite(hi) else grid[-1], color=colour,
                           alpha=0.08, lw=0, zorder=0)
        ax.annotate(f"{arm}: n* {_size(n_star)} [{_size(lo)}, {_size(hi)}], {f['verdict']}",
                    (0.98, 0.96 - 0.09 * list(ARM_STYLE).index(arm)), xycoords="axes fraction", ha="right",
                    va="top", fontsize=6.5, color=colour)


def _size(n: float) -> str:
    if np.isnan(n):
        return "-"
    return "inf" if np.isinf(n) else f"{n:.3g}"
