"""`transferscale axes`: the same-curve test of a study's axes, and US and DS at odds across its hyper-parameters.

Per task (at one shot count, or each), each axis that varies across the study's runs (family, size, data
fraction, steps, each shape field, each training setting) is tested for information about DS accuracy beyond
US accuracy (`analysis.samecurve`); when the study varies an upstream hyper-parameter (e.g. the head's weight
decay), the Spearman correlation of US and DS across it with everything else fixed, and the best checkpoint
per task with its margins (`analysis.atodds`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from transferscale.errors import TransferscaleError


def axes_command(
    study_dir: Annotated[Path | None, typer.Argument(
        help="A study directory (holds results.sqlite). Default: the study run most recently under "
        "transferscale-runs/.")] = None,
    protocol: Annotated[str, typer.Option("--protocol", help="DS accuracy of: fewshot (the final layer's probe) "
                                          "or finetune (fine-tuned, at the largest data size).")] = "fewshot",
    shots: Annotated[int | None, typer.Option("--shots", help="With --protocol fewshot: the shot count. Default: "
                                              "the largest; --all-shots tests each.")] = None,
    all_shots: Annotated[bool, typer.Option("--all-shots", help="Test every shot count (each task and shot count "
                                            "is a group).")] = False,
    axis: Annotated[list[str] | None, typer.Option("--axis", help="Test only this axis (repeat for several). "
                                                   "Default: every axis that varies.")] = None,
    within: Annotated[list[str] | None, typer.Option("--within", help="Permute within each value of this axis "
                                                     "(repeat for several), so its effect is not credited to "
                                                     "the axis tested.")] = None,
    permutations: Annotated[int, typer.Option("--permutations", min=1, help="Relabellings per test (all of them, "
                                              "exactly, when there are fewer).")] = 1999,
    stop_after: Annotated[int, typer.Option("--stop-after", min=0, help="Stop a test at its Nth relabelling that "
                                            "reaches the observed statistic, p = N / draws (Besag and Clifford's "
                                            "sequential test; 0 draws all --permutations).")] = 20,
    alpha: Annotated[float, typer.Option("--alpha", min=0.0, max=1.0, help="Level of the corrected test.")] = 0.05,
    correction: Annotated[str, typer.Option("--correction", help="holm, bonferroni, bh (false discovery rate) "
                                            "or none.")] = "holm",
    family: Annotated[str, typer.Option("--family", help="Correct over all tests (all) or each task's apart "
                                        "(group).")] = "all",
    fit: Annotated[str, typer.Option("--fit", help="The curve: isotonic (monotone) or saturation (the law).")
                   ] = "isotonic",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the relabellings.")] = 0,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the same-curve table as CSV here (the "
                                             "at-odds table beside it, as STEM-at-odds.csv).")] = None,
) -> None:
    """Does any axis of the study add information about DS accuracy beyond US accuracy (Abnar et al. 2021's
    same-curve test), and do US and DS pull apart across an upstream hyper-parameter?

    Per task: a monotone curve of DS on US, then, per axis, a permutation test of whether the residuals
    depend on the axis's levels (p-value, corrected for the number of tests; effect in accuracy points at
    equal US). With a hyper-parameter that varies (a training setting other than data fraction, steps and
    seed), the Spearman correlation of US and DS across it with the other axes fixed, and the best
    checkpoint per task.

    Example: transferscale axes transferscale-runs/head-hparams --within family
    """
    from transferscale.cli import console, resolve_study_dir
    from transferscale.cli import err_console as err

    try:
        study_dir = resolve_study_dir(study_dir)
        result, notes = run_axes(study_dir, protocol=protocol, shots=shots, all_shots=all_shots, axes=axis,
                                 within=within or [], n_permutations=permutations,
                                 stop_after=stop_after or None, alpha=alpha,
                                 correction=correction, family=family, fit=fit, seed=seed)
        if out is not None:
            written = write_tables(result, out)
    except TransferscaleError as e:
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False)
        raise typer.Exit(2) from None
    print_analysis(console, result, notes)
    if out is not None:
        console.print("wrote " + ", ".join(escape(str(p)) for p in written), highlight=False)


def run_axes(study_dir: Path, *, protocol: str = "fewshot", shots: int | None = None, all_shots: bool = False,
             axes=None, within=(), **options):
    """(`analysis.atodds.analyse_axes` of the study, notes on what was read) for the command's options."""
    from transferscale.analysis.atodds import analyse_axes
    from transferscale.analysis.tables import axis_points

    if protocol == "finetune" and (shots is not None or all_shots):
        raise TransferscaleError("--shots and --all-shots apply to --protocol fewshot; fine-tuning has no shots")
    if shots is not None and all_shots:
        raise TransferscaleError("give --shots N or --all-shots, not both")
    table = axis_points(study_dir, protocol=protocol, shots=shots)
    points = table.points
    if points.empty:
        raise TransferscaleError(f"the study at {study_dir} has no {protocol} results of trained models with an "
                                 "upstream accuracy yet: run it (`transferscale run`) and try again")
    notes = [f"{protocol}: {points['run'].nunique()} runs, {points['task'].nunique()} tasks"]
    if protocol == "fewshot" and shots is None and not all_shots:
        top = int(points["shots"].max())
        table = table._replace(points=points[points["shots"] == top].reset_index(drop=True))
        notes[0] += f", at {top} shots (the largest; --shots N or --all-shots for others)"
    by = ["task", "shots"] if protocol == "fewshot" else ["task"]
    return analyse_axes(table, axes or None, by=by, strata=list(within), **options), notes


def write_tables(result, out: Path) -> list[Path]:
    """The same-curve table to `out` (CSV), the at-odds table beside it when there is one."""
    from transferscale.files import write_problem

    paths = [Path(out)]
    try:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        result.same_curve.to_csv(out, index=False)
        if len(result.at_odds):
            odds = Path(out).with_name(Path(out).stem + "-at-odds.csv")
            result.at_odds.to_csv(odds, index=False)
            paths.append(odds)
    except OSError as e:
        raise TransferscaleError(write_problem(e)) from None
    return paths


def print_analysis(console, result, notes: list[str]) -> None:
    """The tables and sentences of `analyse_axes` on a rich console."""
    from transferscale.analysis.atodds import at_odds_sentences, best_sentences
    from transferscale.analysis.samecurve import CORRECTION_WORDS, same_curve_sentences

    for note in notes:
        console.print(escape(note), highlight=False)
    curve = result.same_curve
    console.print(same_curve_table(curve, result.by))
    attrs = curve.attrs
    console.print(f"{attrs['n_tests']} tests; {CORRECTION_WORDS[attrs['correction']]} over "
                  f"{'all of them' if attrs['family'] == 'all' else 'each group'}, alpha {attrs['alpha']:g}; "
                  f"the effect is the gap between the highest and lowest level at equal US (points)",
                  highlight=False)
    for sentence in same_curve_sentences(curve, result.by)["sentence"]:
        console.print(f"  {escape(sentence)}", highlight=False)
    if len(result.at_odds):
        console.print(at_odds_table(result.at_odds, result.by))
        for sentence in at_odds_sentences(result.at_odds, result.by)["sentence"]:
            console.print(f"  {escape(sentence)}", highlight=False)
    elif result.hyper_parameters:
        console.print(f"no context with at least 3 runs across {', '.join(result.hyper_parameters)}", highlight=False)
    console.print(best_table(result.best, result.by))
    for sentence in best_sentences(result.best, result.by):
        console.print(f"  {escape(sentence)}", highlight=False)
    if result.per_budget is not None and len(result.per_budget):
        from transferscale.analysis.atodds import budget_sentences

        console.print(best_table(result.per_budget, [*result.by, "family", "matched_params"],
                                 title="the best shape per parameter budget (margins in accuracy points)"))
        for sentence in budget_sentences(result.per_budget, result.by):
            console.print(f"  {escape(sentence)}", highlight=False)


def _cell(v, spec: str = ".3f") -> str:
    return "-" if v is None or v != v else format(v, spec)


def same_curve_table(curve, by: list[str]) -> Table:
    from transferscale.analysis.samecurve import verdict_word

    table = Table(title="the same curve? residuals of DS on a monotone curve of US, tested per axis")
    cols = [*by, "axis", "n", "levels", "eta²", "p", "p adj.", "effect (pts)", "high vs low", "US overlap", "verdict"]
    for c in cols:
        table.add_column(c, justify="left" if c in (*by, "axis", "high vs low", "verdict") else "right",
                         overflow="fold")
    for r in curve.to_dict("records"):
        tested = r["p_value"] == r["p_value"]
        word = verdict_word(r)
        verdict = (f"[bold]{word}[/]" if r["adds_information"] else word) if tested else \
            f"[dim]{escape(str(r['reason']))}[/]"
        if tested and r["reason"]:
            verdict += f" [dim]({escape(str(r['reason']))})[/]"
        levels = "-" if r["levels"] is None or r["levels"] != r["levels"] else str(r["levels"])
        table.add_row(*[escape(str(r[c])) for c in by], escape(r["axis"]), str(r["n"]), levels,
                      _cell(r["statistic"]), _cell(r["p_value"], ".4f"), _cell(r["p_adjusted"], ".4f"),
                      _cell(r["effect"], ".2f"),
                      escape(f"{r['high_level']} > {r['low_level']}") if tested and r["effect"] > 0 else "-",
                      _cell(r["us_overlap"], ".0%"), verdict)
    return table


def at_odds_table(odds, by: list[str]) -> Table:
    table = Table(title="US and DS across each hyper-parameter, the other axes fixed (Spearman's rho)")
    cols = [*by, "axis", "fixed", "runs", "rho(US, DS)", "rho(axis, US)", "rho(axis, DS)", "best US at",
            "best DS at", "cost (pts)", "at odds"]
    for c in cols:
        table.add_column(c, justify="left" if c in (*by, "axis", "fixed", "at odds") else "right", overflow="fold")
    for r in odds.to_dict("records"):
        table.add_row(*[escape(str(r[c])) for c in by], escape(r["axis"]), escape(r["context"] or "-"),
                      str(r["n_runs"]), _cell(r["rho_us_ds"], "+.2f"), _cell(r["rho_axis_us"], "+.2f"),
                      _cell(r["rho_axis_ds"], "+.2f"), escape(r["best_us"]), escape(r["best_ds"]),
                      _cell(r["loss"], ".1f"), "[bold]yes[/]" if r["at_odds"] else "no")
    return table


def best_table(best, by: list[str], title: str = "the best checkpoint per task (margins in accuracy points)") -> Table:
    table = Table(title=title)
    cols = [*by, "best", "DS", "US", "next best", "margin", "best upstream", "its DS", "margin over it"]
    for c in cols:
        table.add_column(c, justify="left" if c in (*by, "best", "next best", "best upstream") else "right",
                         overflow="fold")
    for r in best.to_dict("records"):
        nxt = r["next_best"]
        table.add_row(*[escape(str(r[c])) for c in by], escape(r["best"]), _cell(r["best_ds"]),
                      _cell(r["best_us_acc"]), escape(str(nxt)) if nxt == nxt and nxt is not None else "-",
                      _cell(r["margin_next"], ".1f"), escape(r["best_upstream"]), _cell(r["best_upstream_ds"]),
                      _cell(r["margin_upstream"], ".1f"))
    return table
