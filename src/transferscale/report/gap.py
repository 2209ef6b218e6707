"""The report's "Pretrain or not" section (Wang, Khabsa, Ma 2020): pretrained against from-scratch accuracy, and
their gap, against the downstream training-set size n.

Torch-free; reads the store's tidy rows (`transferscale.store.read_results` columns). The arms of a task:

- "fine-tuned": a pretrained (or trained) run's `finetune_accuracy` rows with a size (`shots` = n examples);
- "probe": the same run's final-layer `fewshot_accuracy` rows, whose shots k count examples per class, put on
  the same axis as n = k * C for the task's C classes (given, or `infer_classes`);
- "scratch": each run with `scratch_accuracy` rows (random init trained on the task alone, `shots` = n).

Pairs. Each pretrained arm is compared with the scratch runs of its own architecture (the same family and
size: a ResNet-m against the ResNet-m trained from scratch), or, where the task has none of its architecture
(a text study: MiniLM against LSTMs), with every scratch run of the task. The gap of a pair at n is

    g(n) = acc_pretrained(n) - acc_scratch(n)        (accuracy units: 0.01 is one point),

seed by seed when both arms have the same seeds at every size (two or more), else the difference of their
means over seeds. `analysis.gap.GapFit` fits g(n) = a n^-b + c to every pair (a >= 0, b > 0), with percentile
bootstrap intervals, and the size where the gap falls under the threshold t (one point),
n* = (a / (t - c))^(1 / b) (inf when c >= t), placed against the sizes measured: "within the data", "beyond
the data" (an extrapolation of the law), "below the data" or "never". The band drawn about the law is the
pointwise percentile interval of the bootstrap laws, a*_r n^-b*_r + c*_r over the resamples r.

In words, per task and pretrained run, against the strongest of its scratch arms (the highest mean accuracy
at the largest size): does the gap narrow with data (Wang's trend)? It narrows when the measured gap at the
largest size is below the one at the smallest and the law's a > 0 with a bootstrap interval that excludes 0.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from math import gcd

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from transferscale.analysis.gap import _MIN_SIZES, THRESHOLD, GapFit
from transferscale.report import style

SCRATCH, FINETUNE, FEWSHOT = "scratch_accuracy", "finetune_accuracy", "fewshot_accuracy"
GAP_BOOTSTRAP = 1000  # resamples per pair: a fit is a few numpy operations, so the report can afford these
ARM_STYLE = {"fine-tuned": ("#d62728", "o", "-"), "probe": ("#1f77b4", "s", "--"), "scratch": ("#444444", "^", ":")}
PALETTE = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
           "#bcbd22"]
CURVE_COLUMNS = ["task", "family", "size", "pretrained", "scratch", "arm", "n", "seed", "accuracy"]
SUMMARY_COLUMNS = ["task", "pretrained", "scratch", "arm", "sizes", "smallest_n", "gap_at_smallest", "largest_n",
                   "gap_at_largest", "pairing", "a", "a_lo", "a_hi", "b", "b_lo", "b_hi", "c", "c_lo", "c_hi",
                   "n_star", "n_star_lo", "n_star_hi", "verdict", "resample", "flags"]
GAP_COLUMNS = ["task", "pretrained", "scratch", "arm", "n", "pretrained_acc", "scratch_acc", "gap", "points"]
BAND_COLUMNS = ["task", "pretrained", "scratch", "arm", "n", "fit", "lo", "hi"]


@dataclass
class GapData:
    """What the section shows: every arm's accuracy (`curves`, `gap_curves`), each pair's law (`summary`),
    the measured gaps per size (`gaps`), the laws' bootstrap bands (`bands`), the tasks in the report's
    order, the class count each task's probe used (`classes`) and notes on what was left out."""

    curves: pd.DataFrame
    summary: pd.DataFrame
    gaps: pd.DataFrame
    bands: pd.DataFrame
    tasks: list
    classes: dict
    threshold: float = THRESHOLD
    n_bootstrap: int = GAP_BOOTSTRAP
    notes: list = field(default_factory=list)


# ---- the data ---------------------------------------------------------------------------------------------


def load_gap(store, tasks: list | None = None, threshold: float = THRESHOLD,
             n_bootstrap: int = GAP_BOOTSTRAP) -> GapData | None:
    """The section's data from an open Store; None when no run was trained from scratch.

    Reads only the few rows it needs: every `scratch_accuracy` row, the `finetune_accuracy` rows with a size,
    and the final-layer probes of the runs that could be a pretrained arm (those fine-tuned at sizes, and the
    trained runs of a scratch run's architecture)."""
    from transferscale.store import NA

    if not store.has_rows("m.metric = ?", (SCRATCH,)):
        return None
    scratch = store.tidy_rows("m.metric = ?", (SCRATCH,))
    sized = store.tidy_rows("m.metric = ? AND m.shots != ?", (FINETUNE, NA))
    runs = store.runs_table()
    archs = set(zip(scratch["family"], scratch["size"].fillna("")))
    same_arch = runs[(runs["kind"] != "baseline") & runs["fewshot"]
                     & np.array([(f, s) in archs for f, s in zip(runs["family"], runs["size"].fillna(""))],
                                dtype=bool)]
    keys = list(dict.fromkeys([*sized.loc[sized["kind"] != "baseline", "run"], *same_arch["run"]]))
    frames = [scratch, sized]
    for i in range(0, len(keys), 500):  # well under SQLite's limit on parameters
        part = keys[i:i + 500]
        frames.append(store.tidy_rows(f"r.key IN ({', '.join('?' * len(part))}) AND m.metric = ? AND m.layer = -1",
                                      (*part, FEWSHOT), runs_first=True))
    results = pd.concat([f for f in frames if len(f)], ignore_index=True)
    return gap_data(results, tasks=tasks, threshold=threshold, n_bootstrap=n_bootstrap)


def gap_data(results: pd.DataFrame, classes: dict | None = None, tasks: list | None = None,
             threshold: float = THRESHOLD, n_bootstrap: int = GAP_BOOTSTRAP, random_state: int | None = 0
             ) -> GapData | None:
    """`GapData` from a tidy results table; None when it has no `scratch_accuracy` rows with a size.

    `classes` (task -> number of classes) puts each task's probe on the n axis; where it does not say, the
    count comes from `infer_classes`, and a task with neither has no probe arm (a note says so)."""
    results, notes = _one_l2(results)
    known = {**infer_classes(results), **(classes or {})}
    curves = gap_curves(results, known)
    if curves.empty:
        return None
    probed = _probe_candidates(results)
    for task in dict.fromkeys(curves["task"]):
        if task in probed and task not in known:
            notes.append(f"The probe on {task} is left out: its shots count examples per class and the number of "
                         "classes could not be told from the sizes measured (no count C puts two or more of the "
                         "probe's shot counts k at a measured size n = k C).")
    summary, gaps, bands = gap_fits(curves, threshold, n_bootstrap, random_state)
    order = list(tasks or [])
    present = list(dict.fromkeys(curves["task"]))
    ordered = [t for t in order if t in present] + [t for t in present if t not in order]
    probe_tasks = set(curves.loc[curves["arm"] == "probe", "task"])
    used = {t: known[t] for t in ordered if t in probe_tasks}
    return GapData(curves, summary, gaps, bands, ordered, used, threshold, n_bootstrap, notes)


def _one_l2(results: pd.DataFrame) -> tuple[pd.DataFrame, list]:
    """The probe rows at one l2 per (run, task): where a probe stored several (an l2 list without
    `select_l2`), the l2 with the highest mean accuracy over its final-layer rows, and a note saying so."""
    if "l2" not in results.columns:
        return results, []
    layer = results["layer"] if "layer" in results.columns else pd.Series(-1, index=results.index)
    few = results[(results["metric"] == FEWSHOT) & (layer == -1) & results["l2"].notna()]
    counts = few.groupby(["name", "task"])["l2"].nunique()
    several = counts[counts > 1]
    if several.empty:
        return results, []
    notes, drop = [], []
    for name, task in several.index:
        mine = few[(few["name"] == name) & (few["task"] == task)]
        best = mine.groupby("l2")["value"].mean().idxmax()
        drop += list(mine.index[mine["l2"] != best])
        notes.append(f"{name}'s probe on {task} has {several[(name, task)]} l2 values; the one with the highest mean "
                     f"test accuracy, l2 = {best:g}, is shown (an optimistic choice: select_l2 = true in [probe] "
                     "chooses on validation examples instead).")
    return results.drop(index=drop), notes


def _probe_candidates(results: pd.DataFrame) -> set:
    """Tasks with both a scratch arm and final-layer probe rows."""
    layer = results["layer"] if "layer" in results.columns else pd.Series(-1, index=results.index)
    few = results[(results["metric"] == FEWSHOT) & (layer == -1)]
    return set(few["task"]) & set(results.loc[results["metric"] == SCRATCH, "task"])


def infer_classes(results: pd.DataFrame) -> dict:
    """Per task, the number of classes C that turns the probe's shots per class k into examples n = k C.

    The store does not hold C, but the sizes do: on a balanced pool every measured size (fine-tuning or
    scratch, on nested per-class subsets) is C times the examples per class, so C divides their greatest
    common divisor G. Of the divisors C >= 2 of G, the one that puts the most probe shot counts on a measured
    size (k C in the set of n) is taken, when it puts at least two there (one, if the probe has one shot count)
    and no other divisor does as well; otherwise the task is left out (no probe arm)."""
    out = {}
    layer = results["layer"] if "layer" in results.columns else pd.Series(-1, index=results.index)
    shots = pd.to_numeric(results["shots"], errors="coerce")
    for task, rows in results[shots.notna()].groupby("task", sort=False):
        sized = rows[rows["metric"].isin([SCRATCH, FINETUNE])]
        probe = rows[(rows["metric"] == FEWSHOT) & (layer.loc[rows.index] == -1)]
        if sized.empty or probe.empty:
            continue
        sizes = {int(n) for n in sized["shots"]}
        ks = sorted({int(k) for k in probe["shots"]})
        g = 0
        for n in sizes:
            g = gcd(g, n)
        scores = {c: sum(k * c in sizes for k in ks) for c in range(2, g + 1) if g % c == 0}
        if not scores:
            continue
        best = max(scores.values())
        winners = [c for c, s in scores.items() if s == best]
        if best >= min(2, len(ks)) and len(winners) == 1:
            out[task] = winners[0]
    return out


def gap_curves(results: pd.DataFrame, classes: dict[str, int] | None = None) -> pd.DataFrame:
    """Every arm's accuracy against data size: one row per (task, pair, arm, n, seed) for the pretrained arms
    (a row per scratch run it is paired with) and one per (task, scratch run, n, seed) for the scratch arm.

    Pretrained arms: runs (not baselines) with sized `finetune_accuracy` rows ("fine-tuned") and, for the tasks
    in `classes` (task -> number of classes, which turns a probe's shots per class into n), the final-layer
    `fewshot_accuracy` rows of those runs ("probe"; where the task has no sized fine-tuning, the probes of the
    trained runs of a scratch run's architecture). Each is paired with the scratch runs of its architecture
    (family and size), or with every scratch run of the task when none shares it. Columns: task, family, size,
    pretrained, scratch (run names; pretrained is None on scratch rows), arm, n, seed, accuracy. Empty when no
    run was trained from scratch.
    """
    res = results.copy()
    for col, default in (("family", ""), ("size", ""), ("layer", -1), ("kind", "trained")):
        if col not in res.columns:
            res[col] = default
    res["size"] = res["size"].fillna("")
    res = res[pd.to_numeric(res["shots"], errors="coerce").notna()]
    out = []
    for task, rows in res.groupby("task", sort=False):
        scr = rows[rows["metric"] == SCRATCH]
        if scr.empty:
            continue
        scratch_runs = list(dict.fromkeys(scr["name"]))
        arch = dict(zip(rows["name"], zip(rows["family"], rows["size"])))
        others = rows[~rows["name"].isin(scratch_runs) & (rows["kind"] != "baseline")]
        ft = others[others["metric"] == FINETUNE]
        few = others[(others["metric"] == FEWSHOT) & (others["layer"] == -1)]
        if len(ft):  # the probes of the fine-tuned runs only: a run probed but not fine-tuned is another study's
            few = few[few["name"].isin(ft["name"])]
        else:
            few = few[np.array([arch[name] in {arch[s] for s in scratch_runs} for name in few["name"]], dtype=bool)]
        per_class = (classes or {}).get(task)
        for name in scratch_runs:
            part = scr[scr["name"] == name]
            out.append(part.assign(pretrained=None, scratch=name, arm="scratch", n=part["shots"].astype(float),
                                   accuracy=part["value"]))
        arms = [(ft, "fine-tuned", 1)] + ([(few, "probe", per_class)] if per_class else [])
        for part, arm, scale in arms:
            for name, g in part.groupby("name", sort=False):
                partners = [s for s in scratch_runs if arch[s] == arch[name]] or scratch_runs
                for s in partners:
                    out.append(g.assign(pretrained=name, scratch=s, arm=arm, n=g["shots"].astype(float) * scale,
                                        accuracy=g["value"]))
    if not out:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    df = pd.concat(out, ignore_index=True)[CURVE_COLUMNS]
    return df.sort_values(["task", "arm", "n", "seed"], kind="stable").reset_index(drop=True)


def gap_fits(curves: pd.DataFrame, threshold: float = THRESHOLD, n_bootstrap: int = GAP_BOOTSTRAP,
             random_state: int | None = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Each pair's gap law (SUMMARY_COLUMNS), its measured gaps per size (GAP_COLUMNS) and its law's
    bootstrap band on a grid of n (BAND_COLUMNS), from `gap_curves` rows.

    The gap at n is seed by seed ("seed" in `pairing`) when both arms have the same (n, seed) points and two
    or more seeds at every size, so the bootstrap resamples seeds within each size; else the arm's mean over
    seeds minus scratch's ("mean"). A pair with fewer than 3 sizes has no law (verdict "too few sizes")."""
    rows, gap_rows, bands = [], [], []
    tail = (1 - GapFit().confidence) / 2
    for (task, scratch, name, arm), g in curves[curves["arm"] != "scratch"].groupby(
            ["task", "scratch", "pretrained", "arm"], sort=False):
        s = curves[(curves["arm"] == "scratch") & (curves["task"] == task) & (curves["scratch"] == scratch)]
        paired = g.merge(s, on=["n", "seed"], suffixes=("", "_scr"))
        seeded = len(paired) == len(g) == len(s) and len(paired) and paired.groupby("n").size().min() >= 2
        means = g.groupby("n")["accuracy"].mean().to_frame("pretrained_acc").join(
            s.groupby("n")["accuracy"].mean().rename("scratch_acc"), how="inner")
        if seeded:
            n, gap = paired["n"].to_numpy(float), (paired["accuracy"] - paired["accuracy_scr"]).to_numpy(float)
            per = pd.Series(gap).groupby(n).agg(["mean", "size"])
        else:
            n = means.index.to_numpy(float)
            gap = (means["pretrained_acc"] - means["scratch_acc"]).to_numpy(float)
            per = pd.DataFrame({"mean": gap, "size": 1}, index=n)
        key = {"task": task, "pretrained": name, "scratch": scratch, "arm": arm}
        for size in per.index:
            gap_rows.append({**key, "n": float(size), "pretrained_acc": means.at[size, "pretrained_acc"],
                             "scratch_acc": means.at[size, "scratch_acc"], "gap": float(per.at[size, "mean"]),
                             "points": int(per.at[size, "size"])})
        row = {**key, "sizes": len(per), "pairing": "seed" if seeded else "mean",
               "smallest_n": float(per.index.min()) if len(per) else np.nan,
               "gap_at_smallest": float(per["mean"].iloc[0]) if len(per) else np.nan,
               "largest_n": float(per.index.max()) if len(per) else np.nan,
               "gap_at_largest": float(per["mean"].iloc[-1]) if len(per) else np.nan}
        if row["sizes"] < _MIN_SIZES:
            rows.append({**row, "verdict": "too few sizes"})
            continue
        fit = GapFit(threshold, n_bootstrap, random_state).fit(n, gap)
        ci = fit.ci_
        rows.append({**row, "a": fit.a_, "b": fit.b_, "c": fit.c_, "n_star": fit.n_star_,
                     "a_lo": ci["a"][0], "a_hi": ci["a"][1], "b_lo": ci["b"][0], "b_hi": ci["b"][1],
                     "c_lo": ci["c"][0], "c_hi": ci["c"][1], "n_star_lo": ci["n_star"][0],
                     "n_star_hi": ci["n_star"][1], "verdict": fit.verdict_, "resample": fit.resample_,
                     "flags": ";".join(fit.flags_)})
        grid = _grid(fit.n_range_, fit.n_star_)
        band = {"lo": np.full(len(grid), np.nan), "hi": np.full(len(grid), np.nan)}
        if len(fit.boot_):
            b = fit.boot_
            laws = b[:, :1] * grid[None, :] ** -b[:, 1:2] + b[:, 2:3]
            band["lo"], band["hi"] = np.quantile(laws, [tail, 1 - tail], axis=0)
        bands.append(pd.DataFrame({**key, "n": grid, "fit": fit.predict(grid), **band}))
    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    gaps = pd.DataFrame(gap_rows, columns=GAP_COLUMNS)
    band = pd.concat(bands, ignore_index=True)[BAND_COLUMNS] if bands else pd.DataFrame(columns=BAND_COLUMNS)
    return summary, gaps, band


def _grid(n_range: tuple[float, float], n_star: float, points: int = 120) -> np.ndarray:
    """Where a law is drawn: the sizes measured, and on past the largest as far as n* (x 1.5; at most 100
    times the largest size) when the law crosses the threshold beyond the data."""
    lo, hi = n_range
    right = hi * 1.05
    if np.isfinite(n_star) and n_star > hi:
        right = min(n_star * 1.5, hi * 100)
    return np.geomspace(lo, right, points)


def gap_summary(curves: pd.DataFrame, threshold: float = THRESHOLD, n_bootstrap: int = 1000,
                random_state: int | None = 0) -> pd.DataFrame:
    """The gap law of each (pretrained arm, scratch run) pair, per task (`gap_fits`'s first table)."""
    return gap_fits(curves, threshold, n_bootstrap, random_state)[0]


# ---- the words --------------------------------------------------------------------------------------------


def _count(n: float) -> str:
    """A measured data size as the page prints it: 4,050 (whole examples), or - when missing."""
    if n is None or np.isnan(n):
        return "-"
    return f"{n:,.0f}" if n >= 10 else f"{n:.2g}"


def _estimate(n: float) -> str:
    """An estimated size (n* and its interval) to 3 significant figures, 2,364 -> 2,360, or ∞: its interval
    is far wider than that."""
    if n is None or np.isnan(n):
        return "-"
    if np.isinf(n):
        return "∞"
    return f"{float(f'{n:.3g}'):,.0f}" if n >= 10 else f"{n:.2g}"


def crossing_words(r: dict, threshold: float = THRESHOLD) -> str:
    """Where a pair's gap falls under the threshold, in words: n* with its interval and the verdict."""
    pts = f"{100 * threshold:g} point" + ("" if threshold == 0.01 else "s")
    verdict = r["verdict"]
    if verdict == "too few sizes":
        return f"too few sizes ({int(r['sizes'])}; the law needs {_MIN_SIZES}) to fit the law"
    interval = "" if np.isnan(r["n_star_lo"]) else f" [{_estimate(r['n_star_lo'])}, {_estimate(r['n_star_hi'])}]"
    if verdict == "never":
        text = (f"the law levels off at c = {100 * r['c']:+.1f} points, so the gap never falls under {pts}"
                f"{'' if not interval else ' (n* interval' + interval + ')'}")
        if r.get("gap_at_largest", np.inf) < threshold:  # the law and the measurements disagree: say so
            text += (f", though the gap measured at the largest size is already {100 * r['gap_at_largest']:+.1f}: "
                     "the law fits these sizes poorly")
        return text
    if verdict == "below the data":
        return (f"the law puts the gap under {pts} already below the smallest size "
                f"(n* = {_estimate(r['n_star'])}{interval})")
    if verdict == "within the data":
        return f"the gap falls under {pts} at n* = {_estimate(r['n_star'])}{interval}, within the sizes measured"
    return (f"the law puts the gap under {pts} at n* = {_estimate(r['n_star'])}{interval}, beyond the data (the "
            f"largest size is {_count(r['largest_n'])}): an extrapolation")


def trend_words(r: dict, threshold: float = THRESHOLD) -> str:
    """Whether a pair's gap narrows with data (Wang's trend), from the measured gaps and the law's a."""
    g0, g1 = r["gap_at_smallest"], r["gap_at_largest"]
    if max(g0, g1) < 0:
        return "scratch training is ahead at both ends of the sizes measured: pretraining did not help here"
    if max(g0, g1) < threshold:
        return f"pretraining gains under {100 * threshold:g} point at both ends of the sizes measured"
    if not g1 < g0:
        return "the gap does not narrow with data (unlike Wang et al.'s trend)"
    if pd.isna(r.get("a")):
        return "the gap narrows with data"
    lo = r.get("a_lo")
    if r["a"] > 0 and (pd.isna(lo) or lo > 0):
        return "the gap narrows with data, as Wang et al. found"
    return "the gap narrows in the measurements, but the bootstrap cannot tell it from a flat gap (a = 0)"


def gap_sentences(gd: GapData) -> list[tuple[str, str]]:
    """One sentence per task and pretrained run: its fine-tuned arm (else its probe) against the strongest of
    its scratch arms, the gap at the smallest and largest sizes, the trend, and the crossing."""
    out = []
    s = gd.summary
    for task in gd.tasks:
        here = s[s["task"] == task]
        if here.empty:
            n_scratch = gd.curves.loc[(gd.curves["task"] == task) & (gd.curves["arm"] == "scratch"), "scratch"]
            out.append((task, f"On {task}, {n_scratch.nunique()} scratch arm(s) and no pretrained arm at the same "
                              "sizes: nothing to compare (fine-tune a pretrained run with a size axis, [finetune] "
                              "fractions or per_class)."))
            continue
        for name in dict.fromkeys(here["pretrained"]):
            mine = here[here["pretrained"] == name]
            arm = "fine-tuned" if (mine["arm"] == "fine-tuned").any() else "probe"
            mine = mine[mine["arm"] == arm]
            best = _strongest(gd, task, list(mine["scratch"]))
            r = mine[mine["scratch"] == best].iloc[0].to_dict()
            if not r["sizes"]:
                out.append((task, f"On {task}, {name} {arm} and {best} share no data size: nothing to compare."))
                continue
            of = f"the strongest of its {len(mine)} scratch arms, " if len(mine) > 1 else "its scratch arm, "
            lead = (f"On {task}, {name} {arm} against {of}{best}: {100 * r['gap_at_smallest']:+.1f} points at "
                    f"n = {_count(r['smallest_n'])} and {100 * r['gap_at_largest']:+.1f} at "
                    f"n = {_count(r['largest_n'])}")
            ahead = " (scratch is ahead at the largest size)" if r["gap_at_largest"] < 0 else ""
            out.append((task, f"{lead}{ahead}; {trend_words(r, gd.threshold)}; {crossing_words(r, gd.threshold)}."))
    return out


def _strongest(gd: GapData, task: str, names: list) -> str:
    """Of the scratch runs `names` on `task`, the one with the highest mean accuracy at its largest size."""
    c = gd.curves[(gd.curves["task"] == task) & (gd.curves["arm"] == "scratch") & gd.curves["scratch"].isin(names)]
    top = c[c["n"] == c.groupby("scratch")["n"].transform("max")].groupby("scratch")["accuracy"].mean()
    return str(top.idxmax()) if len(top) else names[0]


# ---- the section ------------------------------------------------------------------------------------------


def gap_sections(data) -> list[tuple[str, str, str]]:
    """[("pretrain", "Pretrain or not", html)] when the study trained a run from scratch, else []."""
    gd = getattr(data, "gap", None)
    if gd is None:
        return []
    return [("pretrain", "Pretrain or not", gap_html(gd))]


def gap_html(gd: GapData) -> str:
    """The section: what it asks, the sentences, the figure, the laws and the measured gaps per size."""
    t = f"{100 * gd.threshold:g} point" + ("" if gd.threshold == 0.01 else "s")
    probe = ""
    if gd.classes:
        probe = (" The probe's shots k count examples per class; they sit at n = k C, with the class count C told "
                 "from the sizes measured (" + ", ".join(f"{escape(str(k))}: {v}" for k, v in gd.classes.items())
                 + ").")
    head = ("<p>Wang, Khabsa and Ma (2020) ask what pre-training is worth as the downstream task's own data grows: "
            "the gap between a pretrained model and the same task learned from scratch narrows with more data. "
            "Per task, each arm's accuracy against the number of training examples n: pretrained runs fine-tuned "
            "at each size (and probed, where they were), and every run trained from scratch on the task alone. "
            "Each pretrained arm is paired with the scratch runs of its own architecture, or with every scratch "
            "run of the task when none shares it (a pretrained text encoder against LSTMs), and the gap law "
            "g(n) = a n<sup>&minus;b</sup> + c is fitted to each pair's gaps (seed by seed where both arms share "
            f"their seeds, else between means), with {gd.n_bootstrap}-resample percentile bootstrap intervals. "
            f"n* is where the law falls under {t}: n* = (a / (0.01 &minus; c))<sup>1/b</sup>, never when c "
            "&ge; 0.01; past the largest size measured it is an extrapolation of the law. The sentences compare "
            "each pretrained run with the strongest of its scratch arms (the highest accuracy at the largest "
            f"size).{probe}</p>")
    items = "".join(f"<li>{escape(text)}</li>" for _, text in gap_sentences(gd))
    html = head + f"<ul class='verdicts'>{items}</ul>"
    png = gap_figure(gd.curves, gd.summary, gd.threshold, gd.bands, gd.tasks)
    if png is not None:
        cap = ("Left: accuracy against n (log scale), one curve per run and arm (the mean over seeds; each seed a "
               "faint dot): fine-tuned solid, probe dashed, scratch dotted. Right: each pair's measured gap "
               "(pretrained &minus; scratch, in points), its fitted law (the line, drawn on to n* when that lies "
               "beyond the data) with the law's 95% bootstrap band, the 1-point threshold (dashed) and n* (a "
               "tick on it). A pretrained arm's pairs share its colour, lighter for each further scratch run.")
        html += (f'<figure><img src="{style.data_uri(png)}" alt="Pretrained and scratch accuracy, and their gap, '
                 f'against data size"><figcaption>{cap}</figcaption></figure>')
    html += _law_table(gd) + _gap_tables(gd)
    return html + "".join(f"<p class='note'>{escape(n)}</p>" for n in gd.notes)


def _td(text: str, left: bool = False) -> str:
    return f'<td class="l">{escape(text)}</td>' if left else f"<td>{escape(text)}</td>"


def _interval(v: float, lo: float, hi: float, fmt) -> str:
    if v is None or np.isnan(v):
        return "-"
    return fmt(v) + ("" if np.isnan(lo) else f" [{fmt(lo)}, {fmt(hi)}]")


def _gap_at(gap: float, n: float) -> str:
    return "-" if pd.isna(gap) else f"{100 * gap:+.1f} (n = {_count(n)})"


def _law_table(gd: GapData) -> str:
    cols = ["task", "pretrained", "arm", "scratch", "sizes", "gap, smallest n (pts)", "gap, largest n (pts)",
            "a", "b [95% CI]", "c (pts) [95% CI]", "n* [95% CI]", "where n* lies", "flags"]
    head = "".join(f'<th class="{"l" if i < 4 or i >= 11 else ""}">{escape(c)}</th>' for i, c in enumerate(cols))
    order = {t: i for i, t in enumerate(gd.tasks)}
    rows = []
    for r in sorted(gd.summary.to_dict("records"), key=lambda r: order.get(r["task"], len(order))):
        rows.append("<tr>" + "".join([
            _td(str(r["task"]), True), _td(str(r["pretrained"]), True), _td(r["arm"], True),
            _td(str(r["scratch"]), True), _td(str(int(r["sizes"]))),
            _td(_gap_at(r["gap_at_smallest"], r["smallest_n"])), _td(_gap_at(r["gap_at_largest"], r["largest_n"])),
            _td("-" if pd.isna(r["a"]) else f"{r['a']:.3g}"),
            _td(_interval(r["b"], r["b_lo"], r["b_hi"], lambda v: f"{v:.2f}")),
            _td(_interval(r["c"], r["c_lo"], r["c_hi"], lambda v: f"{100 * v:+.2f}")),
            _td(_interval(r["n_star"], r["n_star_lo"], r["n_star_hi"], _estimate)),
            _td(str(r["verdict"]), True),
            f'<td class="l flag">{"<br>".join(escape(f) for f in str(r["flags"] or "").split(";") if f and f != "nan")}'
            "</td>"]) + "</tr>")
    table = f'<table class="gaplaw"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    return ("<h3>The gap law of each pair</h3>" + table
            + "<p class='muted'>Flags: <b>few_sizes</b> three sizes, no degree of freedom left; <b>b_at_bound</b> the "
              "exponent rests on a bound of its range; <b>flat</b> a = 0, the gap does not shrink with n. An n* "
              "interval ending at &infin; says that some resamples never fall under the threshold.</p>")


def _gap_tables(gd: GapData) -> str:
    """Per task: each arm's mean accuracy and each pair's measured gap (points) at every size."""
    parts = []
    for task in gd.tasks:
        c = gd.curves[gd.curves["task"] == task]
        acc_cols = []
        for (arm, name), g in c.assign(run=c["pretrained"].where(c["arm"] != "scratch", c["scratch"])).groupby(
                ["arm", "run"], sort=False):
            acc_cols.append((f"{name} ({arm})", g.drop_duplicates(["n", "seed"]).groupby("n")["accuracy"].mean()))
        gaps = gd.gaps[gd.gaps["task"] == task]
        gap_cols = [(f"{p} ({a}) − {s}", g.set_index("n")["gap"])
                    for (p, a, s), g in gaps.groupby(["pretrained", "arm", "scratch"], sort=False)]
        sizes = sorted(set(c["n"]))
        head = "<th>n</th>" + "".join(f"<th>{escape(label)}</th>" for label, _ in acc_cols) + "".join(
            f"<th>gap: {escape(label)} (pts)</th>" for label, _ in gap_cols)
        body = []
        for n in sizes:
            cells = [_td(_count(n))]
            cells += [_td(f"{s[n]:.3f}" if n in s.index else "-") for _, s in acc_cols]
            cells += [_td(f"{100 * s[n]:+.1f}" if n in s.index else "-") for _, s in gap_cols]
            body.append("<tr>" + "".join(cells) + "</tr>")
        table = (f'<table class="gaps" data-task="{escape(str(task))}"><thead><tr>{head}</tr></thead>'
                 f'<tbody>{"".join(body)}</tbody></table>')
        parts.append(f"<h3>{escape(str(task))}: accuracy and the gap at each size</h3>" + table)
    return "".join(parts)


# ---- the figure -------------------------------------------------------------------------------------------


def gap_figure(curves: pd.DataFrame, summary: pd.DataFrame | None = None, threshold: float = THRESHOLD,
               bands: pd.DataFrame | None = None, tasks: list | None = None) -> bytes | None:
    """One row per task. Left: every run and arm's accuracy against n (log scale), the mean over seeds joined
    by a line and every seed a faint dot. Right: each pair's gap with its fitted law, the law's bootstrap band
    (from `bands`, when given), the threshold (dashed) and n* (a tick on the threshold). None when nothing was
    trained from scratch."""
    if curves.empty:
        return None
    if summary is None:
        summary, _, bands = gap_fits(curves, threshold)
    present = list(dict.fromkeys(curves["task"]))
    tasks = [t for t in (tasks or []) if t in present] + [t for t in present if t not in (tasks or [])]
    fig, axes = style.new_grid(len(tasks), 2, w=3.4, h=2.5, wgap=0.8, hgap=0.7, head=style.head_height(1))
    with style.rc():
        for i, task in enumerate(tasks):
            rows = curves[curves["task"] == task]
            colours = _run_colours(rows)
            _accuracy_panel(axes[i, 0], rows, colours)
            axes[i, 0].set_title(f"{task}: accuracy", loc="left")
            axes[i, 0].set_ylabel("DS accuracy (fraction)")
            _gap_panel(axes[i, 1], rows, summary[summary["task"] == task], bands, colours, threshold)
            axes[i, 1].set_title(f"{task}: gap to scratch", loc="left")
            axes[i, 1].set_ylabel("pretrained − scratch (points)")
            for ax in axes[i]:
                ax.set_xscale("log")
                ax.set_xlabel("downstream training examples n")
    arms = [a for a in ARM_STYLE if a in set(curves["arm"])]
    handles = [Line2D([], [], color="#555555", marker=ARM_STYLE[a][1], ls=ARM_STYLE[a][2], label=a) for a in arms]
    handles.append(Line2D([], [], color="#9a9a9a", ls="--", label=f"gap = {100 * threshold:g} pt"))
    style.finish(fig, "Pretrain or not: pretrained vs from-scratch accuracy, and the gap, against data size",
                 [handles])
    return style.to_png(fig)


def _run_colours(rows: pd.DataFrame) -> dict:
    """A colour per (arm, run) of a task: the pretrained arms in turn from PALETTE (the first run fine-tuned
    red, probed blue), the scratch runs in greys (in PALETTE when the task has no pretrained arm)."""
    pre = rows[rows["arm"] != "scratch"]
    keys = list(dict.fromkeys(zip(pre["arm"], pre["pretrained"])))
    colours = {key: PALETTE[i % len(PALETTE)] for i, key in enumerate(keys)}
    greys = ["#333333", "#8a8a8a", "#5a5a5a", "#b0b0b0"]
    for j, name in enumerate(dict.fromkeys(rows.loc[rows["arm"] == "scratch", "scratch"])):
        colours[("scratch", name)] = greys[j % len(greys)] if keys else PALETTE[j % len(PALETTE)]
    return colours


def _accuracy_panel(ax, rows: pd.DataFrame, colours: dict) -> None:
    run = rows["pretrained"].where(rows["arm"] != "scratch", rows["scratch"])
    for (arm, name), g in rows.assign(run=run).groupby(["arm", "run"], sort=False):
        g = g.drop_duplicates(["n", "seed"])  # a pretrained arm's rows repeat once per scratch run it is paired with
        colour, (_, marker, ls) = colours[(arm, name)], ARM_STYLE.get(arm, ("#777777", "o", "-"))
        ax.scatter(g["n"], g["accuracy"], s=8, color=colour, alpha=0.35, lw=0, zorder=2)
        mean = g.groupby("n")["accuracy"].mean()
        ax.plot(mean.index, mean.to_numpy(), color=colour, marker=marker, ms=4, ls=ls, lw=1.3, zorder=3,
                label=f"{name} ({arm})")
    ax.legend(fontsize=5.5, loc="lower right", frameon=False, handlelength=1.8)


def _gap_panel(ax, rows: pd.DataFrame, fits: pd.DataFrame, bands: pd.DataFrame | None, colours: dict,
               threshold: float) -> None:
    ax.axhline(100 * threshold, color="#9a9a9a", ls="--", lw=1.0, zorder=1)
    ax.axhline(0.0, color="#cccccc", lw=0.8, zorder=1)
    pairs = list(dict.fromkeys(zip(rows.loc[rows["arm"] != "scratch", "pretrained"],
                                   rows.loc[rows["arm"] != "scratch", "arm"],
                                   rows.loc[rows["arm"] != "scratch", "scratch"])))
    if not pairs:
        ax.text(0.5, 0.5, "no pretrained arm at these sizes", transform=ax.transAxes, ha="center", va="center",
                fontsize=7, color="#777777")
        return
    shade: dict = {}
    for name, arm, scratch in pairs:
        mine = shade.setdefault((arm, name), {})
        colour = _shade(colours[(arm, name)], mine.setdefault(scratch, len(mine)))
        marker, ls = ARM_STYLE.get(arm, ("#777777", "o", "-"))[1:]
        pre = rows[(rows["pretrained"] == name) & (rows["arm"] == arm) & (rows["scratch"] == scratch)]
        scr = rows[(rows["arm"] == "scratch") & (rows["scratch"] == scratch)]
        gap = (pre.groupby("n")["accuracy"].mean() - scr.groupby("n")["accuracy"].mean()).dropna()
        label = f"{name} ({arm}) − {scratch}"
        ax.plot(gap.index, 100 * gap.to_numpy(), color=colour, marker=marker, ms=4, ls="none", zorder=3, label=label)
        fit = fits[(fits["pretrained"] == name) & (fits["arm"] == arm) & (fits["scratch"] == scratch)]
        if fit.empty or pd.isna(fit["a"].iloc[0]):
            continue
        f = fit.iloc[0]
        if bands is not None and len(bands):
            b = bands[(bands["task"] == f["task"]) & (bands["pretrained"] == name) & (bands["arm"] == arm)
                      & (bands["scratch"] == scratch)]
            grid = b["n"].to_numpy(float)
            ax.plot(grid, 100 * b["fit"].to_numpy(float), color=colour, lw=1.2, ls=ls, zorder=2)
            if b["lo"].notna().all():
                ax.fill_between(grid, 100 * b["lo"].to_numpy(float), 100 * b["hi"].to_numpy(float), color=colour,
                                alpha=0.12, lw=0, zorder=0)
        else:
            grid = _grid((float(gap.index.min()), float(gap.index.max())), f["n_star"])
            ax.plot(grid, 100 * (f["a"] * grid ** -f["b"] + f["c"]), color=colour, lw=1.2, ls=ls, zorder=2)
        if np.isfinite(f["n_star"]) and f["n_star"] > 0:
            ax.plot([f["n_star"]], [100 * threshold], marker="|", ms=12, mew=2, color=colour, zorder=4)
    ax.legend(fontsize=5.5, loc="upper right", frameon=False, handlelength=1.2)


def _shade(colour: str, k: int) -> tuple:
    """The k-th shade of a colour (0: itself; then lighter), for the pairs of one pretrained arm."""
    from matplotlib.colors import to_rgb

    rgb = np.array(to_rgb(colour))
    return tuple(rgb + (1 - rgb) * min(0.6, 0.28 * k))
