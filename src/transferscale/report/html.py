"""The report page: sections of figures, tables and the words that say how to read them."""
from __future__ import annotations

import re
from datetime import datetime
from html import escape

import numpy as np
import pandas as pd

from transferscale.report import style
from transferscale.report.data import FINETUNE_HINT, LAYER_HINT, ReportData
from transferscale.report.figures import DENSE_POINTS
from transferscale.report.figures_tasks import DENSE_MODELS
from transferscale.report.gap import gap_sections
from transferscale.report.numbers import HOLDOUT_QUANTILE, Analysis, summary
from transferscale.report.shape import cost_sections, same_curve_sections
from transferscale.report.template import CSS, PAGE


def page(data: ReportData, res: Analysis, figs: dict, command: str, seconds: float) -> str:
    """The whole page; `figs` maps a section's figure name to PNG bytes (or None where it does not apply)."""
    from transferscale import __version__

    sections = [
        ("frontier", "DS against US accuracy", _frontier(data, res, figs)),
        ("summary", "Summary per task", _summary(data, res)),
        ("extrapolation", "Predicting the strongest runs", _extrapolation(data, res, figs)),
        ("shots", "The law against shots", _shots(data, res, figs)),
        ("axes", "Scaling axes", _axes(data, res, figs)),
        *same_curve_sections(data),
        ("correlations", "Rank correlations", _correlations(res, figs)),
        ("layers", "Layer-wise probes", _layers(data, res, figs)),
        ("finetune", "Fine-tuning", _finetune(data, figs)),
        *gap_sections(data),
        *cost_sections(data),
        ("reproduce", "Reproduce", _reproduce(data, res, command)),
    ]
    nav = "".join(f'<li><a href="#{key}">{escape(title)}</a></li>' for key, title, _ in sections)
    body = _header_facts(data, res) + "".join(
        f'<section id="{key}">\n<h2>{escape(title)}</h2>\n{html}\n</section>\n' for key, title, html in sections)
    kind = "study" if data.source == "study" else "results table"
    lede = (f"Pre-training &rarr; downstream transfer report for the {kind} <b>{escape(data.title)}</b>: where do "
            "downstream (DS) gains saturate as upstream (US) accuracy rises? Errors are 1 &minus; accuracy; "
            "the law is e<sub>DS</sub> = k &middot; e<sub>US</sub><sup>&alpha;</sup> + e<sub>IR</sub>, "
            "fitted on the upper convex hull of the (US, DS) scatter, as in Abnar et al. 2021.")
    built = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return PAGE.format(title=escape(f"transferscale report: {data.title}"), css=CSS, lede=lede, nav=nav, body=body,
                       version=escape(__version__), built=escape(built), seconds=seconds)


# ---- sections -------------------------------------------------------------------------------------------


def _header_facts(data: ReportData, res: Analysis) -> str:
    rows = "".join(f'<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>' for k, v in data.facts)
    notes = "".join(f'<p class="note">{escape(n)}</p>' for n in data.notes)
    return f'<table class="facts">{rows}</table>{notes}'


def _frontier(data: ReportData, res: Analysis, figs) -> str:
    base = ""
    if not data.baselines.empty:
        base = (" Baselines have no meaningful upstream accuracy, so they are horizontal lines at their DS "
                "accuracy and never enter a fit: raw pixels dotted black, randomly initialised networks dashed in "
                "their family's colour (the best size of each family).")
    if data.source == "study":
        what = ("Each panel is one downstream task (rows) at one shot count (columns); the US axis is shared. "
                "Points are trained models, coloured by family, shaped by model size and sized by training "
                "budget (data fraction and steps).")
    else:
        what = ("Each panel is one downstream column (or --by group); the US axis is shared. Points are the "
                "table's models.")
    cap = (what + " Ringed points are the upper hull. Black: the law fitted "
           "on the hull; grey dashed: fitted on all points. The orange line is the saturation value 1 &minus; "
           f"e<sub>IR</sub>, the band its 95% interval from a {res.n_bootstrap}-resample bootstrap (the report's "
           "small bootstrap, for speed; <code>transferscale fit</code> uses 1,000)." + base)
    if _densest(data.points, ["task", "shots"]) > DENSE_POINTS:
        cap += (f" Panels of over {DENSE_POINTS} models shade where the models are (grey hexagons, darker for more, "
                "on a log scale) and draw as markers only the models on the hull.")
    return _figure(figs.get("frontier"), "DS accuracy against US accuracy for every task and shot count", cap)


def _summary(data: ReportData, res: Analysis) -> str:
    ref = res.ref_shots
    table = summary(data, res, ref)
    if table.empty:
        return _absent("No task has results at this shot count yet.")
    best = table["best_model"].replace("", np.nan).dropna()
    n_best = best.nunique()
    verdict = (f"No single checkpoint is best for all tasks: {n_best} different models are best across "
               f"{len(best)} tasks." if n_best > 1 else
               f"One checkpoint, {escape(str(best.iloc[0]))}, is best on every task." if n_best else "")
    shot = f" at {data.shot_label(ref)}" if data.has_shots else ""
    head = (f"<p>Per task{shot}: the hull fit's saturation value 1 &minus; e<sub>IR</sub> with its 95% interval, "
            "k, &alpha;, the points it used (hull vertices of all trained models), its flags, the all-points fit's "
            "saturation for comparison, and the best trained checkpoint for that task (mean DS accuracy over "
            f"probe seeds). {verdict}</p>")
    html = _saturation_words(data, res) + head + _summary_table(table, with_rho=True)
    if data.has_shots and len(data.shots) > 1:
        parts = []
        for s in data.shots:
            t = summary(data, res, s)
            parts += [f"<h3>{escape(data.shot_label(s))}</h3>" + _summary_table(t, True)] if not t.empty else []
        html += f"<details><summary>Every shot count</summary>{''.join(parts)}</details>"
    flags = ("<p class='muted'>Flags: <b>too_few_points</b> fewer than 5 hull points; <b>e_ir_at_bound</b>, "
             "<b>alpha_at_bound</b> a parameter rests on its bound (e<sub>IR</sub> on its upper bound, the lowest "
             "error observed, means the frontier is already flat at the strongest runs: saturation reached within "
             "the data, which the summary counts as support when nothing else is flagged); "
             "<b>wide_interval</b> the e<sub>IR</sub> interval "
             "is wider than 0.1; <b>alpha_below_one</b> the frontier bends the other way, which a hull cannot "
             "follow; <b>bootstrap_failed</b> over 10% of resamples had fewer than 3 hull points. A flagged fit "
             "is a weak statement: add models (sizes, budgets) to fill the frontier.</p>")
    return html + flags


def _saturation_words(data: ReportData, res: Analysis) -> str:
    """Per task, in words, whether the study supports saturation (analysis.verdicts: the hull fit on the final
    layer has no flag and an e_IR interval that excludes 0 and is narrower than 0.1), and the count."""
    from transferscale.analysis.verdicts import count_sentence, saturation_verdicts, task_sentences

    fits = res.hull[res.hull["task"].isin(data.tasks)]
    if fits.empty:
        return ""
    verdicts = saturation_verdicts(fits)
    order = {t: i for i, t in enumerate(data.tasks)}
    verdicts = verdicts.assign(_o=verdicts["task"].map(order)).sort_values(["_o", "shots"], kind="stable")
    over = "shots" if data.has_shots else None
    lines = task_sentences(verdicts, over=over, label=data.shot_label)["sentence"]
    items = "".join(f"<li>{escape(t)}</li>" for t in lines)
    where = "the final layer's hull fit" + (" at each shot count" if data.has_shots else "")
    return (f"<p><b>Does the study support saturation?</b> A fit supports it when {where} has no flag and its "
            "e<sub>IR</sub> interval excludes 0 (the downstream error does not vanish with the upstream error) "
            "and is narrower than 0.1, or when its only flag is e<sub>IR</sub> resting on the lowest error "
            "observed (the frontier is already flat at the strongest runs: saturation reached within the data); "
            "otherwise it cannot tell, for the reasons named (the flags below). "
            f"{escape(count_sentence(verdicts))}.</p><ul class='verdicts'>{items}</ul>")


def _extrapolation(data: ReportData, res: Analysis, figs: dict) -> str:
    """The extrapolation check: the per-task verdicts, a figure of every group's errors and biases (hull
    against all points), then the table."""
    extra, verdicts = res.extrapolation, res.extrapolation_verdicts
    if extra is None or extra.empty:
        return _absent("No group to check.")
    q = f"{HOLDOUT_QUANTILE:g}"
    head = (f"<p>Abnar et al.'s check of the hull fit: per task{' and shot count' if data.has_shots else ''}, fit "
            f"the law on the runs below the {q} quantile of US accuracy, then predict the DS accuracy of the held-out "
            "strongest runs that lie on the frontier (the upper hull of all runs). <b>Error</b> is the root mean "
            "square of predicted &minus; observed over those runs, <b>bias</b> its mean: a negative bias means the "
            "strongest runs do better than the weaker ones predicted. A law that describes the frontier should "
            "predict them well; the hull fit should beat the fit on all points.</p>")
    order = {t: i for i, t in enumerate(data.tasks)}
    ranked = sorted(zip(verdicts["task"], verdicts["sentence"]), key=lambda ts: order.get(ts[0], len(order)))
    items = "".join(f"<li>{escape(t)}</li>" for _, t in ranked)
    cols = ["task", *(["shots"] if data.has_shots else []), "held out (on the frontier)", "error, hull",
            "error, all points", "bias, hull", "bias, all points", "better", "note"]
    th = "".join(f'<th class="{"l" if c in ("task", "better", "note") else ""}">{escape(c)}</th>' for c in cols)
    hull = extra[extra["points"] == "upper_hull"].reset_index(drop=True)
    every = extra[extra["points"] == "all"].reset_index(drop=True)
    rows = []
    for i in sorted(range(len(hull)), key=lambda i: (order.get(hull.at[i, "task"], len(order)), i)):
        h, a = hull.iloc[i], every.iloc[i]
        he, ae = h["rmse_frontier"], a["rmse_frontier"]
        both = np.isfinite(he) and np.isfinite(ae)
        better = ("-" if not both else "<b>hull</b>" if he < ae else "all points" if ae < he else "tie")
        held = "-" if pd.isna(h["n_holdout"]) else (
            f"{int(h['n_holdout'])} ({'-' if pd.isna(h['n_frontier']) else int(h['n_frontier'])})")
        note = "; ".join(dict.fromkeys(r for r in (h["reason"], a["reason"]) if isinstance(r, str) and r))
        cells = [f'<td class="l">{escape(str(h["task"]))}</td>',
                 *([f"<td>{escape(data.shot_label(h['shots']))}</td>"] if data.has_shots else []),
                 f"<td>{held}</td>", _num(he, 3), _num(ae, 3), _signed(h["bias_frontier"]),
                 _signed(a["bias_frontier"]), f'<td class="l">{better}</td>', f'<td class="l">{escape(note)}</td>']
        rows.append("<tr>" + "".join(cells) + "</tr>")
    table = f'<table class="extrapolation"><thead><tr>{th}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    figure = "" if figs.get("extrapolation") is None else _figure(
        figs["extrapolation"], "hull against all-points fit: errors and biases on the held-out strongest runs",
        "Each point is one task" + (" and shot count" if data.has_shots else "") + ": the error (left) and bias "
        "(right) of the law fitted on the upper hull, against the same for the law fitted on all points, on the "
        "held-out strongest runs on the frontier. Points below the dashed diagonal on the left are groups where "
        "the hull fit predicted better.")
    if len(rows) > 30:
        table = f"<details><summary>Every group ({len(rows)} rows)</summary>{table}</details>"
    return (head + f"<ul class='verdicts'>{items}</ul>" + figure + table
            + "<p class='muted'>The same numbers come from <code>transferscale fit --extrapolation</code>, which "
            "writes them as extrapolation.csv.</p>")


def _signed(v) -> str:
    return f"<td>{v:+.3f}</td>" if v is not None and np.isfinite(v) else "<td>-</td>"


def _summary_table(t: pd.DataFrame, with_rho: bool) -> str:
    cols = ["task", "ρ with US", "1 − e_IR [95% CI]", "k", "α", "points used", "flags", "1 − e_IR, all points",
            "best checkpoint (DS acc.)", "best baseline (DS acc.)"]
    head = "".join(f'<th class="{"l" if c in ("task", "flags") or c.startswith("best") else ""}">{escape(c)}</th>'
                   for c in cols)
    rows = []
    for r in t.to_dict("records"):
        sat = (f"{r['saturation']:.3f} [{r['sat_low']:.3f}, {r['sat_high']:.3f}]" if np.isfinite(r["saturation"])
               else "no fit")
        flags = "<br>".join(escape(f) for f in str(r["flags"]).split(";") if f)
        beaten = np.isfinite(r["baseline_acc"]) and np.isfinite(r["best_acc"]) and r["baseline_acc"] >= r["best_acc"]
        baseline = (f"{escape(str(r['best_baseline']))} ({r['baseline_acc']:.3f})"
                    if isinstance(r["best_baseline"], str) else "-")
        if beaten:
            baseline = f"<b>{baseline}</b> beats every trained model"
        cells = [f'<td class="l">{escape(str(r["task"]))}</td>', _num(r["rho_us"], 2),
                 f'<td class="nw">{sat}</td>', _num(r["k"], 3), _num(r["alpha"], 3),
                 f'<td class="nw">{int(r["n_points"])} of {int(r["n_models"])}</td>',
                 f'<td class="l flag">{flags}</td>', _num(r["saturation_all"], 3),
                 f'<td class="l">{escape(str(r["best_model"]))} ({r["best_acc"]:.3f})</td>',
                 f'<td class="l">{baseline}</td>']
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _shots(data: ReportData, res: Analysis, figs) -> str:
    if figs.get("shots") is None and data.has_shots and len(data.shots) > 1:
        return _absent("No task has a hull fit yet (each needs at least 3 points on its upper hull): add "
                       "trained models, or wait for more runs of the study to finish.")
    if figs.get("shots") is None:
        return _absent("The law against shots needs results at two or more shot counts; "
                       + ("this table has none (external tables have no shots column)." if not data.has_shots
                          else f"this study has only {data.shot_label(data.shots[0])}."))
    cap = ("e<sub>IR</sub>, k and &alpha; of the hull fit per task against the number of shots per class. "
           "Abnar et al. find that with more shots k and e<sub>IR</sub> fall and &alpha; rises. Fits with "
           "parameters on a bound (see the summary's flags) show as flat lines at the bound.")
    html = _figure(figs["shots"], "The saturation law's parameters against shots", cap)
    if res.trend is not None and not res.trend.empty:
        html += _trend_table(res.trend)
    return html


def _trend_table(trend: pd.DataFrame) -> str:
    expect = {"k": -1, "e_ir": -1, "alpha": 1}
    words = {"k": "k falls", "e_ir": "e_IR falls", "alpha": "α rises"}
    parts = []
    for p in ("e_ir", "k", "alpha"):
        g = trend[trend["param"] == p]
        ok = int((np.sign(g["spearman"]) == expect[p]).sum())
        parts.append(f"{words[p]} with shots in {ok} of {len(g)} fitted tasks")
    return f"<p>Trends (sign of Spearman's ρ of each parameter with shots): {escape('; '.join(parts))}.</p>"


def _axes(data: ReportData, res: Analysis, figs) -> str:
    if figs.get("axes") is None:
        return _absent("No scaling axes to colour by: this table has no model size, data fraction or training "
                       "steps columns (with --csv, name them with --axis COL).")
    shot = f" at {data.shot_label(res.ref_shots)}" if data.has_shots else ""
    cap = (f"DS against US accuracy{shot}, the same models in each column, coloured in turn by "
           f"{', '.join(label for _, label in data.axes)}; the grey curve is the law fitted on the upper hull of "
           "all of them. Abnar et al. find that these axes move a model along one curve: conditioned on US "
           "accuracy they add no information about DS accuracy. Colours mixed along the curve mean the same here; "
           "a colour sitting above or below the rest at equal US accuracy means that axis matters by itself.")
    if _densest(data.points[data.points["shots"] == res.ref_shots], ["task"]) > DENSE_POINTS:
        cap += (f" Panels of over {DENSE_POINTS} models colour each hexagon by the mean of the axis over the models "
                "in it, on the same colour scale.")
    return _figure(figs["axes"], "DS against US coloured by each scaling axis", cap)


def _correlations(res: Analysis, figs) -> str:
    cap = ("Spearman's rank correlation between upstream accuracy (first row and column) and each DS task, and "
           "between DS tasks, over the trained models. Tasks that saturate early correlate weakly with upstream "
           "(UC-Merced and colorectal histology in Abnar et al.).")
    return _figure(figs.get("correlations"), "Spearman correlation matrices", cap)


def _layers(data: ReportData, res: Analysis, figs) -> str:
    if figs.get("layers") is None:
        if data.source == "csv":
            return _absent("An external table has no layer-wise probes.")
        return _absent("This study has no layer-wise probes. " + escape(LAYER_HINT))
    cap = ("Few-shot DS accuracy of each trained model's features at every layer, against relative depth "
           "(i + 1) / L for layer i of L probed blocks, so 1 is the last block, one line per model coloured by "
           "family; a dot marks the model's best layer. Left: the tasks most correlated with upstream accuracy "
           "(near); right: the rest (far). "
           "Abnar et al. find near tasks improve up to the last layer while far tasks peak earlier.")
    if len(data.layers) and data.layers.groupby("task")["model"].nunique().max() > DENSE_MODELS:
        cap += (f" Tasks with over {DENSE_MODELS} models show, per family, the median accuracy at each depth with "
                "the band holding the middle half of the models (25th to 75th percentile), and a dot at the "
                "median's best depth.")
    return _figure(figs["layers"], "Layer-wise DS accuracy against relative depth", cap)


def _finetune(data: ReportData, figs) -> str:
    if data.source == "csv":
        return _absent("An external table has no fine-tuning results.")
    ft = data.finetune
    if ft.empty:
        return _absent(FINETUNE_HINT)
    cap = ("Per task, each fine-tuned run's DS accuracy after full fine-tuning (on the task's whole training "
           "pool, mean over its fine-tuning seeds) against, left, its few-shot probe accuracy on the same task "
           "(final representation, the task's largest shot count, mean over probe seeds), with the diagonal "
           "y = x dashed: points above it gain from fine-tuning; and, right, against its US accuracy. Trained "
           "runs are coloured by family and shaped by size. Randomly initialised networks fine-tuned on the "
           "task (trained from scratch) are baselines: hollow crosses on the left, and dashed lines at their "
           "fine-tuned accuracy on the right, where their chance-level US accuracy would place them nowhere.")
    html = _figure(figs.get("finetune"), "Fine-tuned accuracy against few-shot and US accuracy", cap)
    return html + _finetune_table(ft)


def _finetune_table(ft: pd.DataFrame) -> str:
    cols = ["task", "model", "family", "run", "US acc.", "few-shot acc.", "fine-tuned acc.", "fine-tuned − few-shot",
            "seeds"]
    head = "".join(f'<th class="{"l" if i < 4 else ""}">{escape(c)}</th>' for i, c in enumerate(cols))
    rows = []
    for r in ft.to_dict("records"):
        baseline = r["kind"] == "baseline"
        what = f"baseline ({r['run_kind']})" if baseline else r["kind"]
        shots = f" ({int(r['fewshot_shots'])}-shot)" if pd.notna(r["fewshot_shots"]) else ""
        few = f"<td>{r['fewshot_acc']:.3f}{escape(shots)}</td>" if pd.notna(r["fewshot_acc"]) else "<td>-</td>"
        us = "<td>-</td>" if baseline else _num(r["us_acc"], 3)  # a baseline's US accuracy is chance: not shown
        gain = r["ft_acc"] - r["fewshot_acc"] if pd.notna(r["fewshot_acc"]) else np.nan
        cells = [f'<td class="l">{escape(str(r["task"]))}</td>', f'<td class="l">{escape(str(r["model"]))}</td>',
                 f'<td class="l">{escape(style.family_label(r["family"]))}</td>', f'<td class="l">{escape(what)}</td>',
                 us, few, _num(r["ft_acc"], 3), f"<td>{gain:+.3f}</td>" if np.isfinite(gain) else "<td>-</td>",
                 f"<td>{int(r['n_seeds'])}</td>"]
        rows.append(f'<tr class="{"muted" if baseline else ""}">' + "".join(cells) + "</tr>")
    return (f'<table class="finetune"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
            "<p class='muted'>Rows per task: trained runs by fine-tuned accuracy, then baselines.</p>")


def _reproduce(data: ReportData, res: Analysis, command: str) -> str:
    cmds = [*data.reproduce, ("make this report", command)]
    html = "".join(f"<h3>{escape(what.capitalize())}</h3><pre class='cmd'>{escape(cmd)}</pre>" for what, cmd in cmds)
    html += (f"<p class='muted'>Intervals use {res.n_bootstrap} bootstrap resamples (seed {res.seed}) so the "
             "report builds in seconds; the fits are deterministic. <code>transferscale fit</code> with its "
             "default 1,000 resamples gives the same estimates with steadier intervals.</p>")
    if data.spec_text:
        html += f"<details><summary>The study's spec (TOML)</summary><pre>{escape(data.spec_text)}</pre></details>"
    return html


# ---- parts ----------------------------------------------------------------------------------------------


def _densest(points: pd.DataFrame, by: list) -> int:
    """The most points any panel (group of `by`) holds."""
    return int(points.groupby(by, dropna=False).size().max()) if len(points) else 0


def _figure(png: bytes | None, alt: str, caption: str) -> str:
    if png is None:
        return _absent("No figure: nothing to draw.")
    return (f'<figure><img src="{style.data_uri(png)}" alt="{escape(alt)}">'
            f"<figcaption>{caption}</figcaption></figure>")


def _absent(text: str) -> str:
    """A section that does not apply, and why; `name` in backticks becomes code."""
    return '<p class="absent">' + re.sub(r"`([^`]+)`", r"<code>\1</code>", text) + "</p>"


def _num(v, digits: int) -> str:
    return f"<td>{v:.{digits}f}</td>" if v is not None and np.isfinite(v) else "<td>-</td>"
