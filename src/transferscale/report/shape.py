"""The report's "Same curve?" and "Cost and shape" sections: the same-curve test of the study's axes, US and
DS at odds across an upstream hyper-parameter, and Pareto frontiers of DS accuracy against cost.

`load_shape(store)` gathers what both need from an open store (the study's points at the largest shot
count with every run's axes, `analysis.tables.axis_points`; fine-tuning too when the study has it; the
`costs` table that `transferscale cost` fills); `same_curve_sections` and `cost_sections` give the page's
sections, none where the data does not exist. Torch-free.

Cost and shape: every checkpoint of one architecture (its budgets, its snapshots) costs the same parameters,
FLOPs and throughput, so of those only the architecture's best checkpoint on a task can be on that task's
frontier; the frontier is drawn through each architecture's best (`analysis.pareto.pareto_frontier`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from html import escape

import numpy as np
import pandas as pd

COSTS = (("params", "parameters", True), ("flops", "forward FLOPs per example", True),
         ("train_throughput", "training throughput (examples/s)", False))
SAME_CURVE_PERMUTATIONS = 1999  # as `transferscale axes`, which also stops a test at its 20th hit
SAME_CURVE_STOP = 20


@dataclass
class ShapeData:
    """What the two sections show (each part empty where the study has no data for it)."""

    shots: int | None  # the few-shot count the points are at (the largest)
    best: pd.DataFrame  # per (protocol, task, arch): label, family, size, run name, ds_acc, n_checkpoints, costs
    frontiers: pd.DataFrame  # `best` x each cost measured: cost, value, on_frontier, margin, dominated_by, ...
    axes: object | None = None  # analysis.atodds.AxesAnalysis of the few-shot points, or None
    checkpoints: pd.DataFrame = field(default_factory=pd.DataFrame)  # every checkpoint with its costs
    notes: list = field(default_factory=list)


def load_shape(store, points=None) -> ShapeData | None:
    """The sections' data from an open Store; None when there is nothing to show (no trained runs with a
    few-shot result, no axis that varies and no costs)."""
    from transferscale.analysis.atodds import analyse_axes
    from transferscale.analysis.tables import axis_points
    from transferscale.errors import TransferscaleError
    from transferscale.store import FINETUNE

    try:
        table = axis_points(store, points=points)  # `points`: the final layer's, when the report has read them
    except TransferscaleError:
        return None
    if table.points.empty:
        return None
    shots = int(table.points["shots"].max())
    table = table._replace(points=table.points[table.points["shots"] == shots].reset_index(drop=True))
    notes, axes = [], None
    if table.axes:
        try:
            axes = analyse_axes(table, by=["task", "shots"], n_permutations=SAME_CURVE_PERMUTATIONS,
                                stop_after=SAME_CURVE_STOP)
        except TransferscaleError as err:
            notes.append(str(err))
    frames = [table.points]
    if store.has_rows("m.metric = ?", (FINETUNE,)):
        try:
            frames.append(axis_points(store, protocol="finetune").points)
        except TransferscaleError as err:
            notes.append(str(err))
    best, frontiers, checkpoints = _frontiers(store, pd.concat(frames, ignore_index=True))
    if axes is None and best.empty:
        return None
    return ShapeData(shots, best, frontiers, axes, checkpoints, notes)


def _frontiers(store, points: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Each architecture's best checkpoint per (protocol, task) with its costs, the frontiers, and every
    checkpoint with its costs."""
    from transferscale.analysis.pareto import attach_costs, pareto_frontier

    costs = store.costs()
    if costs.empty:
        return pd.DataFrame(), pd.DataFrame(), pd.DataFrame()
    from transferscale.models.cost import architecture_keys  # torch-free: plain configs

    pts = attach_costs(points, costs, architecture_keys(store.run_configs()))
    pts = pts[pts["arch"].notna() & pts["params"].notna()]
    if pts.empty:
        return pd.DataFrame(), pd.DataFrame(), pd.DataFrame()
    keys = ["protocol", "task", "arch"]
    pts = pts.assign(n_checkpoints=pts.groupby(keys)["run"].transform("size"))
    order = pts.sort_values(["ds_acc", "us_acc", "name"], ascending=[False, False, True], kind="stable")
    best = order.drop_duplicates(keys).merge(costs[["arch", "label"]], on="arch", how="left")
    best = best.sort_values(["protocol", "task", "params", "label"], kind="stable").reset_index(drop=True)
    parts = []
    for cost, _, lower in COSTS:
        if best[cost].notna().any():
            f = pareto_frontier(best, cost, "ds_acc", by=("protocol", "task"), lower_cost_is_better=lower,
                                label="label")
            parts.append(f.assign(cost=cost, cost_value=f[cost]))
    return best, pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(), pts


# ---- the sections ---------------------------------------------------------------------------------------


def same_curve_sections(data) -> list[tuple[str, str, str]]:
    """[("samecurve", "Same curve?", html)] when the study has an axis to test, else []."""
    shape = getattr(data, "shape", None)
    if shape is None or shape.axes is None:
        return []
    return [("samecurve", "Same curve?", _same_curve_html(shape))]


def cost_sections(data) -> list[tuple[str, str, str]]:
    """[("cost", "Cost and shape", html)] when the store has costs for the study's runs, else []."""
    shape = getattr(data, "shape", None)
    if shape is None or shape.frontiers.empty:
        return []
    return [("cost", "Cost and shape", _cost_html(shape))]


def _same_curve_html(shape: ShapeData) -> str:
    from transferscale.analysis.atodds import at_odds_sentences, best_sentences
    from transferscale.analysis.samecurve import CORRECTION_WORDS, same_curve_sentences

    res = shape.axes
    curve = res.same_curve
    attrs = curve.attrs
    head = (f"<p>Abnar et al. find that model size, upstream data and training steps move a model along one curve "
            f"of DS against US accuracy: at equal US accuracy they add no information about DS accuracy. The test, "
            f"per task at {shape.shots}-shot: fit a monotone (isotonic) curve of DS on US, then ask whether the "
            "residuals depend on each axis's levels, with a permutation test of the share of residual variance "
            f"the levels explain (up to {SAME_CURVE_PERMUTATIONS:,} relabellings, stopping at the "
            f"{SAME_CURVE_STOP}th that reaches the observed share, p = {SAME_CURVE_STOP} / draws; every one, "
            "exactly, when there are fewer). An axis <b>adds information</b> when its p-value is at most "
            f"{attrs['alpha']:g} after "
            f"{CORRECTION_WORDS[attrs['correction']]}'s correction over all {attrs['n_tests']} tests; its effect is "
            "the gap, in accuracy points, between its best and worst level at equal US accuracy.</p>")
    items = "".join(f"<li>{escape(s)}</li>" for s in same_curve_sentences(curve, res.by)["sentence"])
    html = head + f"<ul class='verdicts'>{items}</ul>" + _curve_table(curve, res.by)
    html += ("<p class='muted'>A curve takes up any difference between levels that lie on separate ranges of US "
             "accuracy (US overlap 0%), so there the test cannot tell. The same table comes from "
             "<code>transferscale axes</code>, which can also permute within another axis (<code>--within "
             "family</code>), test every shot count and write CSV.</p>")
    if len(res.at_odds):
        names = ", ".join(h.replace("_", " ") for h in res.hyper_parameters)
        html += (f"<h3>US and DS at odds across {escape(names)}</h3><p>Per task, for each setting of the other "
                 "axes, Spearman's &rho; of US and DS accuracy across the hyper-parameter: below 0, a setting that "
                 "lowers US accuracy raises DS accuracy. <b>Cost</b> is what choosing it by US accuracy loses "
                 "downstream (points).</p>")
        odds = "".join(f"<li>{escape(s)}</li>" for s in at_odds_sentences(res.at_odds, res.by)["sentence"])
        html += f"<ul class='verdicts'>{odds}</ul>" + _odds_table(res.at_odds, res.by)
    best = "".join(f"<li>{escape(s)}</li>" for s in best_sentences(res.best, res.by))
    html += f"<h3>The best checkpoint per task</h3><ul class='verdicts'>{best}</ul>"
    if res.per_budget is not None and len(res.per_budget):
        from transferscale.analysis.atodds import budget_sentences

        items = "".join(f"<li>{escape(s)}</li>" for s in budget_sentences(res.per_budget, res.by))
        html += ("<h3>The best shape per parameter budget</h3><p>Tay et al.'s question: among shapes matched "
                 f"to the same number of parameters, does the one best upstream win downstream?</p>"
                 f"<ul class='verdicts'>{items}</ul>")
    return html + "".join(f"<p class='note'>{escape(n)}</p>" for n in shape.notes)


def _td(v, spec: str, left: bool = False) -> str:
    text = "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) or v is pd.NA else format(v, spec)
    return f'<td class="l">{escape(text)}</td>' if left else f"<td>{escape(text)}</td>"


def _curve_table(curve: pd.DataFrame, by: list) -> str:
    from transferscale.analysis.samecurve import verdict_word

    cols = ["task", "axis", "rows", "levels", "η²", "p", "p adj.", "effect (pts)", "high vs low", "US overlap",
            "verdict"]
    head = "".join(f'<th class="{"l" if c in ("task", "axis", "high vs low", "verdict") else ""}">{escape(c)}</th>'
                   for c in cols)
    rows = []
    for r in curve.to_dict("records"):
        tested = r["p_value"] == r["p_value"]
        word = verdict_word(r)
        verdict = (f"<b>{word}</b>" if r["adds_information"] else word) if tested else \
            f'<span class="muted">{escape(str(r["reason"]))}</span>'
        hl = f"{r['high_level']} > {r['low_level']}" if tested and r["effect"] > 0 else "-"
        levels = r["levels"] if r["levels"] is not pd.NA else None
        rows.append("<tr>" + "".join([
            _td(str(r["task"]), "s", True), _td(str(r["axis"]).replace("_", " "), "s", True), _td(r["n"], "d"),
            _td(levels, "d"), _td(r["statistic"], ".3f"), _td(r["p_value"], ".4f"), _td(r["p_adjusted"], ".4f"),
            _td(r["effect"], ".2f"), _td(hl, "s", True), _td(r["us_overlap"], ".0%"),
            f'<td class="l">{verdict}</td>']) + "</tr>")
    return f'<table class="samecurve"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _odds_table(odds: pd.DataFrame, by: list) -> str:
    cols = ["task", "axis", "other axes fixed at", "runs", "ρ(US, DS)", "ρ(axis, US)", "ρ(axis, DS)",
            "best US at", "best DS at", "cost (pts)", "at odds"]
    head = "".join(f'<th class="{"l" if i < 3 or c == "at odds" else ""}">{escape(c)}</th>' for i, c in enumerate(cols))
    rows = []
    for r in odds.to_dict("records"):
        rows.append("<tr>" + "".join([
            _td(str(r["task"]), "s", True), _td(str(r["axis"]).replace("_", " "), "s", True),
            _td(r["context"] or "-", "s", True), _td(r["n_runs"], "d"), _td(r["rho_us_ds"], "+.2f"),
            _td(r["rho_axis_us"], "+.2f"), _td(r["rho_axis_ds"], "+.2f"), _td(str(r["best_us"]), "s"),
            _td(str(r["best_ds"]), "s"), _td(r["loss"], ".1f"),
            f'<td class="l">{"<b>yes</b>" if r["at_odds"] else "no"}</td>']) + "</tr>")
    table = f'<table class="atodds"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    if len(odds) > 30:
        table = f"<details><summary>Every setting ({len(odds)} rows)</summary>{table}</details>"
    return table


def _cost_html(shape: ShapeData) -> str:
    from transferscale.report import style

    png = pareto_figure(shape)
    shown = [label for cost, label, _ in COSTS if cost in set(shape.frontiers["cost"])]
    tuned = ", and fine-tuned" if (shape.best["protocol"] == "finetune").any() else ""
    cap = ("DS accuracy against what each architecture costs (" + ", ".join(shown) + "; log scale), per task "
           f"(few-shot at {shape.shots} shots{tuned}). Coloured markers: each architecture's best checkpoint on "
           "the task, by family and size; grey dots: its "
           "other checkpoints (budgets, snapshots), which cost the same, so only the best of them can be on the "
           "frontier. The black steps join the Pareto frontier, the architectures no other beats at no more cost "
           "(fewer parameters or FLOPs, or more examples per second); frontier points are labelled"
           + (f" ({label_key(shape.frontiers['label'])})" if label_key(shape.frontiers["label"]) else "") + ".")
    alt = "DS accuracy against parameters, FLOPs and throughput"
    figure = "" if png is None else (f'<figure><img src="{style.data_uri(png)}" alt="{alt}">'
                                     f"<figcaption>{escape(cap)}</figcaption></figure>")
    return figure + _dominated(shape)


def _dominated(shape: ShapeData) -> str:
    """Per (protocol, task, architecture): on each cost's frontier, or how far below it and against whom."""
    f = shape.frontiers
    costs = [c for c, _, _ in COSTS if c in set(f["cost"])]
    words = {"params": "params", "flops": "FLOPs", "train_throughput": "throughput"}
    cols = ["task", "architecture", "best checkpoint", "DS acc.", "checkpoints", *[f"by {words[c]}" for c in costs]]
    head = "".join(f'<th class="{"l" if i < 3 or i >= 5 else ""}">{escape(c)}</th>' for i, c in enumerate(cols))
    rows, n_dominated = [], 0
    for (protocol, task, _arch), g in f.groupby(["protocol", "task", "arch"], sort=False):
        r0 = g.iloc[0]
        cells = []
        for c in costs:
            row = g[g["cost"] == c]
            if row.empty or pd.isna(row.iloc[0]["margin"]):
                cells.append("<td class='l'>-</td>")
                continue
            r = row.iloc[0]
            if r["on_frontier"]:
                cells.append("<td class='l'><b>on the frontier</b></td>")
                continue
            n_dominated += 1
            better = "more examples/s" if c == "train_throughput" else f"fewer {words[c]}"
            factor = (f"; {escape(str(r['matched_by']))} matches it with {r['cost_factor']:.2g}&times; {better}"
                      if r["matched_by"] != r["label"] and np.isfinite(r["cost_factor"]) else "")
            cells.append(f"<td class='l'>&minus;{100 * r['margin']:.1f} pts vs {escape(str(r['dominated_by']))}"
                         f"{factor}</td>")
        label = f"{task}" + (" (fine-tuned)" if protocol == "finetune" else "")
        rows.append("<tr>" + "".join([_td(label, "s", True), _td(str(r0["label"]), "s", True),
                                      _td(str(r0["name"]), "s", True), _td(r0["ds_acc"], ".3f"),
                                      _td(int(r0["n_checkpoints"]), "d"), *cells]) + "</tr>")
    table = f'<table class="pareto"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    lede = (f"<p>Dominated shapes, and by how much: per task, each architecture's best checkpoint, on each cost's "
            "frontier or the accuracy points it loses against the best frontier architecture at no more cost, "
            f"and how much cheaper the cheapest architecture at least as good is. {n_dominated} of "
            f"{len(rows) * len(costs)} (architecture, task, cost) places are dominated.</p>")
    if len(rows) > 30:
        table = f"<details><summary>Every architecture and task ({len(rows)} rows)</summary>{table}</details>"
    return lede + table


_FIELD = re.compile(r"^([a-z]+(?:_[a-z]+)*?)(\d[\dx.]*)$")


def short_label(label: str) -> str:
    """An architecture's label for a crowded panel: its shape fields abbreviated to their initials
    (`mixer-s-embed_dim21-num_blocks8` -> `mixer-s ed21 nb8`, `vit-s-depth8-embed_dim16` -> `vit-s d8 ed16`);
    a label without such fields (`vit-s`, a `timm:` source) stays as it is."""
    family, _, rest = str(label).partition("-")
    size, _, fields = rest.partition("-")
    if not fields or ":" in family:
        return str(label)
    short = []
    for token in fields.split("-"):
        m = _FIELD.match(token)
        short.append("".join(w[0] for w in m.group(1).split("_")) + m.group(2) if m else token)
    return f"{family}-{size} " + " ".join(short)


def label_key(labels) -> str:
    """The abbreviations `short_label` makes of these labels, e.g. "ed = embed_dim, nb = num_blocks"."""
    seen: dict[str, str] = {}
    for label in labels:
        for token in str(label).split("-")[2:]:
            m = _FIELD.match(token)
            short = m and "".join(w[0] for w in m.group(1).split("_"))
            if m and short != m.group(1):
                seen.setdefault(short, m.group(1))
    return ", ".join(f"{k} = {v}" for k, v in sorted(seen.items()))


def _sparse_log_ticks(ax) -> None:
    """Log-axis tick labels that do not run into each other in a narrow panel: the decades, and within less
    than two decades also 2x and 5x (matplotlib's default labels 2x, 3x, 4x and 6x there)."""
    from matplotlib.ticker import FuncFormatter, LogFormatterSciNotation, NullFormatter

    lo, hi = ax.dataLim.intervalx
    if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo < hi) or np.log10(hi / lo) >= 2:
        ax.xaxis.set_minor_formatter(NullFormatter())
        return
    every = LogFormatterSciNotation(labelOnlyBase=False, minor_thresholds=(np.inf, np.inf))

    def two_and_five(x, pos=None):
        mantissa = x / 10 ** np.floor(np.log10(x) + 1e-9) if x > 0 else 0.0
        return every(x, pos) if min(abs(mantissa - 2), abs(mantissa - 5)) < 1e-6 else ""

    every.set_axis(ax.xaxis)
    ax.xaxis.set_minor_formatter(FuncFormatter(two_and_five))


def _label_points(ax, x, y, labels, fontsize: float = 5.5) -> None:
    """Label points without the labels running into each other or out of the panel: each label goes at the
    upper right of its point (upper left where it would run past the right edge), or, where that overlaps a
    label already placed, the nearest free line above or below it inside the panel (sizes estimated from the
    font size)."""
    ax.autoscale_view()
    to_pts = ax.transData + ax.figure.dpi_scale_trans.inverted()  # data -> inches
    (x0, y0), (x1, y1) = (ax.transAxes + ax.figure.dpi_scale_trans.inverted()).transform([(0, 0), (1, 1)])
    line, char = fontsize * 1.25 / 72, fontsize * 0.55 / 72  # inches
    placed: list[tuple[float, float, float, float]] = []
    for xx, yy, text in sorted(zip(x, y, labels), key=lambda t: t[1]):
        px, py = to_pts.transform((xx, yy))
        width = char * len(text)
        left = px + 0.04 + width > x1
        lo = px - 0.04 - width if left else px + 0.04
        first = min(py + 0.03, y1 - line)
        tries = [first + k * line * sign for k in range(12) for sign in ((1,) if k == 0 else (1, -1))]
        top = next((t for t in tries if _free(placed, lo, lo + width, t, t + line, y0, y1)), first)
        placed.append((lo, lo + width, top, top + line))
        anchor = lo + width if left else lo
        moved = dict(arrowprops=dict(arrowstyle="-", lw=0.4, color="#9a9a9a", shrinkA=0, shrinkB=2)) \
            if top != first else {}  # a label moved off its point's line is joined to it
        ax.annotate(text, (xx, yy), xytext=((anchor - px) * 72, (top - py) * 72), textcoords="offset points",
                    fontsize=fontsize, ha="right" if left else "left", va="bottom", annotation_clip=False,
                    zorder=4, **moved)


def _free(placed: list, left: float, right: float, bottom: float, top: float, y0: float, y1: float) -> bool:
    """Whether the box [left, right] x [bottom, top] lies within y0..y1 and overlaps none of `placed`."""
    return y0 <= bottom and top <= y1 and not any(left < b_hi and right > b_lo and bottom < t_hi and top > t_lo
                                                  for b_lo, b_hi, t_lo, t_hi in placed)


def pareto_figure(shape: ShapeData) -> bytes | None:
    """Rows: (protocol, task); columns: each cost; DS accuracy against the cost on a log axis."""
    from matplotlib.lines import Line2D

    from transferscale.report import style

    f = shape.frontiers
    if f.empty:
        return None
    costs = [(c, label, lower) for c, label, lower in COSTS if c in set(f["cost"])]
    panels = list(dict.fromkeys(zip(f["protocol"], f["task"])))
    fig, axes = style.new_grid(len(panels), len(costs), head=style.head_height(1), wgap=0.6, hgap=0.6)
    with style.rc():
        for i, (protocol, task) in enumerate(panels):
            for j, (cost, label, lower) in enumerate(costs):
                ax = axes[i, j]
                g = f[(f["protocol"] == protocol) & (f["task"] == task) & (f["cost"] == cost)]
                g = g[np.isfinite(g["cost_value"].astype(float))]
                every = shape.checkpoints
                every = every[(every["protocol"] == protocol) & (every["task"] == task)]
                ax.scatter(every[cost].astype(float), every["ds_acc"], s=9, color="#b5b5b5", zorder=1, linewidth=0)
                for r in g.itertuples(index=False):
                    ax.scatter([r.cost_value], [r.ds_acc], s=34, marker=style.size_marker(r.size),
                               color=style.family_colour(r.family), edgecolor="white", linewidth=0.5, zorder=3)
                front = g[g["on_frontier"]].sort_values("cost_value", ascending=lower)
                ax.set_xscale("log")
                _sparse_log_ticks(ax)
                if len(front):
                    x, y = front["cost_value"].to_numpy(float), front["ds_acc"].to_numpy(float)
                    ax.step(x, y, where="post", color=style.HULL_COLOUR, lw=1.0, zorder=2)
                    _label_points(ax, x, y, [short_label(n) for n in front["label"]])
                what = f"{task}" + (" (fine-tuned)" if protocol == "finetune" else f" ({shape.shots}-shot)")
                ax.set_title(what, loc="left")
                ax.set_xlabel(label)
                if j == 0:
                    ax.set_ylabel("DS accuracy (fraction)")
    families = list(dict.fromkeys(f["family"]))
    sizes = [s for s in dict.fromkeys(f["size"]) if isinstance(s, str)]
    handles = [Line2D([], [], marker="o", ls="", color=style.family_colour(fam), label=style.family_label(fam))
               for fam in families]
    handles += [Line2D([], [], marker=style.size_marker(s), ls="", color="#777777", label=f"size {s}") for s in sizes]
    handles += [Line2D([], [], color=style.HULL_COLOUR, lw=1.0, label="Pareto frontier")]
    style.finish(fig, "DS accuracy against cost: each architecture's best checkpoint", [handles])
    return style.to_png(fig)
