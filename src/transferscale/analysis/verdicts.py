"""Saturation fits said in words: does a fit support saturation, and if not, why can it not tell?

One rule, used by `transferscale fit` (its closing count) and by the report (its per-task statements):
a fit **supports saturation** when it has no flag and its e_IR interval [e_ir_low, e_ir_high] excludes 0
(e_ir_low > 0: the downstream error does not vanish as the upstream error does) and is narrower than
`MAX_WIDTH` (0.1, accuracy units; the width at which `SaturationFit` flags wide_interval). Any other fit
**cannot tell**, for the reasons below in plain words.

One flag is told apart by which bound e_IR rests on. At 0 the runs show no ceiling below 100%. At its upper
bound, the lowest downstream error observed (the law needs e_IR below every point it passes through), the
frontier is already flat at the strongest runs: downstream accuracy stopped rising before upstream accuracy
did, and the ceiling is the best accuracy measured. That is saturation reached within the data, so a fit
whose only flag it is, with an interval that passes the rule above, supports saturation ("reached within the
data"). Torch-free: pandas and numpy only.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

SUPPORTS, CANNOT_TELL = "supports", "cannot tell"
REACHED = "reached within the data"  # the `why` of a fit that supports saturation by a plateau at the top
MAX_WIDTH = 0.1

# Why a fit cannot tell, most fundamental first: a fit with several reasons is counted under the first.
REASONS = {
    "too_few_models": "fewer than 3 models",
    "degenerate": "all US accuracies equal",
    "too_few_points": "too few points on the hull",
    "bootstrap_failed": "bootstrap failed",
    "alpha_below_one": "frontier bends the wrong way",
    "e_ir_at_bound": "e_IR at its bound",
    "e_ir_at_zero": "e_IR at 0",
    "alpha_at_bound": "alpha at bound",
    "wide_interval": "wide interval",
    "no_interval": "no interval (no bootstrap)",
    "reaches_zero": "interval reaches 0",
    "plateau": "flat at the strongest runs",  # last: alone it supports saturation; with others they are why not
}
# The longer words, for a legend: what each reason means.
EXPLAINED = {
    "too_few_models": "the group has fewer models than the law's three parameters",
    "degenerate": "every model has the same upstream accuracy, so there is no slope to fit",
    "too_few_points": "the upper hull has fewer than 5 points (under 3: no fit at all)",
    "bootstrap_failed": "over 10% of the bootstrap resamples had fewer than 3 hull points",
    "alpha_below_one": "alpha < 1: the frontier bends the other way, which a hull cannot follow",
    "e_ir_at_bound": "e_IR rests on a bound (0, or the lowest observed DS error)",
    "e_ir_at_zero": "e_IR rests on 0: these runs show no ceiling below 100%",
    "plateau": "e_IR rests on the lowest DS error observed: downstream accuracy stopped rising before the "
               "strongest runs, so the ceiling is the best accuracy measured",
    "alpha_at_bound": "alpha rests on a bound of its range",
    "wide_interval": f"the e_IR interval is wider than {MAX_WIDTH:g}",
    "no_interval": "the fit ran without a bootstrap, so it has no interval",
    "reaches_zero": "the e_IR interval reaches 0: these runs are consistent with no ceiling below 100%",
}


def reason_words(code: str) -> str:
    """The short words for a reason code; an unknown flag reads as its name with spaces."""
    return REASONS.get(code, code.replace("_", " "))


def saturation_verdicts(fits: pd.DataFrame, max_width: float = MAX_WIDTH) -> pd.DataFrame:
    """`fits` (a `fit_saturation` table: e_ir, e_ir_low, e_ir_high, flags) with three columns added:

    verdict      "supports" when the fit has no flag, e_ir_low > 0 and e_ir_high - e_ir_low < max_width;
                 "cannot tell" otherwise (a group that could not be fitted included; one of under 3
                 models, by `n_models`, says "fewer than 3 models");
    why          every reason in words, ", "-joined ("" for a fit that supports saturation);
    main_reason  the first reason in `REASONS`' order (the one a count files the fit under).
    """
    out = fits.copy()
    verdicts, whys, mains = [], [], []
    n_models = out["n_models"] if "n_models" in out.columns else pd.Series(np.nan, index=out.index)
    for flags, e_ir, low, high, n in zip(out["flags"], out["e_ir"], out["e_ir_low"], out["e_ir_high"], n_models):
        codes = _reasons(flags, low, high, max_width, e_ir)
        if n == n and n < 3:  # a group of one or two models: say so, not what its hull lacks
            codes = ["too_few_models", *(c for c in codes if c not in ("too_few_points", "degenerate"))]
        if codes == ["plateau"]:  # flat at the top, and the interval passes: saturation within the data
            verdicts.append(SUPPORTS)
            whys.append(REACHED)
            mains.append("")
            continue
        verdicts.append(CANNOT_TELL if codes else SUPPORTS)
        whys.append(", ".join(reason_words(c) for c in codes))
        mains.append(reason_words(codes[0]) if codes else "")
    return out.assign(verdict=verdicts, why=whys, main_reason=mains)


def _reasons(flags, low, high, max_width: float, e_ir: float = float("nan")) -> list[str]:
    """The reason codes of one fit, in `REASONS`' order (unknown flags after the known ones); e_ir_at_bound
    becomes e_ir_at_zero or plateau when e_ir says which bound."""
    present = [f for f in str(flags).split(";") if f] if isinstance(flags, str) else []
    if "e_ir_at_bound" in present and np.isfinite(float(e_ir)):
        present[present.index("e_ir_at_bound")] = "plateau" if float(e_ir) > 1e-6 else "e_ir_at_zero"
    low, high = float(low), float(high)
    if not (np.isfinite(low) and np.isfinite(high)):
        if "degenerate" not in present and "too_few_points" not in present:
            present.append("no_interval")  # fitted without a bootstrap, or not fitted at all
    else:
        if low <= 0:
            present.append("reaches_zero")
        if high - low >= max_width and "wide_interval" not in present:
            present.append("wide_interval")
    order = list(REASONS)
    return sorted(dict.fromkeys(present), key=lambda c: order.index(c) if c in order else len(order))


def count_sentence(verdicts: pd.DataFrame) -> str:
    """How many fits support saturation and, of the rest, how many for each main reason:
    "12 of 32 fits support saturation; 20 cannot tell: 14 wide interval, 6 alpha at bound"."""
    n = len(verdicts)
    k = int((verdicts["verdict"] == SUPPORTS).sum())
    head = f"{k} of {n} fit{'' if n == 1 else 's'} support{'s' if n == 1 else ''} saturation"
    reached = int(((verdicts["verdict"] == SUPPORTS) & (verdicts["why"] == REACHED)).sum())
    if reached:
        head += f" ({reached} reached within the data: downstream accuracy flat at the strongest runs)"
    if k == n:
        return head
    rest = verdicts.loc[verdicts["verdict"] != SUPPORTS, "main_reason"]
    counts = rest.value_counts(sort=False)
    order = {w: i for i, w in enumerate(REASONS.values())}
    parts = sorted(counts.items(), key=lambda kv: (-kv[1], order.get(kv[0], len(order))))
    return f"{head}; {n - k} cannot tell: " + ", ".join(f"{c} {w}" for w, c in parts)


def task_sentences(verdicts: pd.DataFrame, task: str = "task", over: str | None = "shots",
                   label: Callable[[object], str] | None = None, unit: str = "shot counts") -> pd.DataFrame:
    """One statement per task (in the table's order) of whether its fits support saturation.

    `over` is the column telling a task's fits apart (shots; None when a task has one fit), `label` names
    one of its values (default: "N-shot"), `unit` their plural. Returns task, n_fits, n_supports, sentence,
    e.g. "far: supports saturation at 1 of 3 shot counts (10-shot: 1 − e_IR 0.620 [0.580, 0.660]); cannot
    tell at 1-shot and 5-shot: wide interval", or "near: cannot tell at any of its 3 shot counts (1-shot:
    too few points on the hull; 5-shot and 10-shot: wide interval)".
    """
    label = label or (lambda v: f"{v}-shot")
    rows = []
    for name, g in verdicts.groupby(task, sort=False, dropna=False):
        ok = g[g["verdict"] == SUPPORTS]
        bad = g[g["verdict"] != SUPPORTS]
        if over is None or len(g) == 1:
            r = g.iloc[0]
            text = (f"{name}: supports saturation ({_saturation(r)})" if r["verdict"] == SUPPORTS
                    else f"{name}: cannot tell: {r['why']}")
        else:
            where = [label(v) for v in ok[over]]
            if len(ok) == len(g):
                text = f"{name}: supports saturation at all {len(g)} {unit} ({_range(ok)})"
            elif len(ok):
                text = (f"{name}: supports saturation at {len(ok)} of {len(g)} {unit} ({_and(where)}: "
                        f"{_range(ok)}); cannot tell at {_by_reason(bad, over, label)}")
            else:
                text = f"{name}: cannot tell at any of its {len(g)} {unit} ({_by_reason(bad, over, label)})"
        rows.append({task: name, "n_fits": len(g), "n_supports": len(ok), "sentence": text})
    return pd.DataFrame(rows, columns=[task, "n_fits", "n_supports", "sentence"])


def _saturation(r) -> str:
    reached = ", reached within the data" if r.get("why") == REACHED else ""
    return f"1 − e_IR {r['saturation']:.3f} [{r['saturation_low']:.3f}, {r['saturation_high']:.3f}]{reached}"


def _range(ok: pd.DataFrame) -> str:
    if len(ok) == 1:
        return _saturation(ok.iloc[0])
    reached = int((ok["why"] == REACHED).sum()) if "why" in ok.columns else 0
    tail = f", {reached} of them reached within the data" if reached else ""
    return f"1 − e_IR from {ok['saturation'].min():.3f} to {ok['saturation'].max():.3f}{tail}"


def _by_reason(bad: pd.DataFrame, over: str, label) -> str:
    """The fits that cannot tell, grouped by main reason: "1-shot and 5-shot: wide interval; 10-shot: ..."."""
    groups: dict[str, list[str]] = {}
    for value, reason in zip(bad[over], bad["main_reason"]):
        groups.setdefault(reason, []).append(label(value))
    return "; ".join(f"{_and(where)}: {reason}" for reason, where in groups.items())


def _and(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
