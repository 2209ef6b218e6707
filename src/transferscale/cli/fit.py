"""`transferscale fit`: the saturation law on a study or on any results table, printed and written as CSV."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from transferscale.errors import TransferscaleError


def fit_command(
    study_dir: Path | None = typer.Argument(None, help="A study directory (holds results.sqlite); "
                                               "fits every (upstream, task, shots, layer) group. Default "
                                               "(without --csv): the study run most recently under "
                                               "transferscale-runs/."),
    csv: Path | None = typer.Option(None, "--csv", help="Fit a results table instead of a study."),
    us: str | None = typer.Option(None, "--us", help="Column of upstream accuracy (in the --csv file)."),
    ds: list[str] | None = typer.Option(None, "--ds", help="Column of downstream accuracy; repeat for "
                                           "several (in the --join file when there is one)."),
    by: list[str] | None = typer.Option(None, "--by", help="Fit one law per value of this column; "
                                           "repeat for several."),
    points: str = typer.Option("upper_hull", "--points", help="upper_hull (the paper's choice), all, or "
                               "quantile (the curve a share --quantile of the models lie below)."),
    quantile: float | None = typer.Option(None, "--quantile", help="With --points quantile: the share of "
                                          "models below the fitted frontier (default 0.9)."),
    join: Path | None = typer.Option(None, "--join", help="A second CSV joined to --csv on --on "
                                        "(inner join), e.g. one timm test set per file."),
    on: list[str] | None = typer.Option(None, "--on", help="Join key column; repeat for several "
                                           "(timm: --on model --on img_size)."),
    percent: bool | None = typer.Option(
        None, "--percent/--fraction", help="--percent: the columns with values above 1 are percent (0-100) and "
        "are divided by 100; those within [0, 1] stay fractions. Without it nothing is divided: a column "
        "with values above 1 is an error that says which. --fraction: every column must be within [0, 1]."),
    n_bootstrap: int = typer.Option(1000, "--n-bootstrap", help="Bootstrap resamples per group; 0: none."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
    layers: str = typer.Option("final", "--layers", help="With STUDY_DIR: fit the final representation "
                               "only (final), or every probed layer (all)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="CSV to write. Default: "
                                       "STUDY_DIR/saturation_fits.csv, or ./saturation_fits.csv with --csv."),
    jobs: int | None = typer.Option(None, "--jobs", "-j", min=1, help="Processes fitting groups at once; the "
                                    "numbers do not depend on it. Default: one per core, at most one per group."),
    extrapolation: bool = typer.Option(False, "--extrapolation", help="Also check each group's fits as Abnar "
                                       "et al. do: fit the hull and all points on the runs below a US quantile, "
                                       "predict the held-out strongest runs; prints the errors and a verdict "
                                       "per task, writes extrapolation.csv beside the fits."),
    holdout_quantile: float = typer.Option(0.9, "--holdout-quantile", min=0.0, max=1.0, help="With "
                                           "--extrapolation: fit below this quantile of each group's US accuracy, "
                                           "predict the runs at or above it."),
) -> None:
    """Fit e_DS = k * e_US^alpha + e_IR (errors = 1 - accuracy) per group and report the saturation 1 - e_IR.

    Examples: `transferscale fit runs/my_study`;
    `transferscale fit --csv results-imagenet.csv --us top1 --join results-sketch.csv --ds top1
    --on model --on img_size --percent` (timm's tables are percent);
    `transferscale fit --csv table.csv --us upstream --ds task_a --ds task_b --points all`.
    """
    from transferscale.analysis.saturation import POINT_SETS, fit_saturation  # scipy and pandas: only when fitting
    from transferscale.analysis.tables import check_fittable, load_fit_table
    from transferscale.analysis.verdicts import count_sentence, saturation_verdicts

    console = Console()
    if not console.is_terminal:  # piped or captured: 80 columns would squash the table
        console = Console(width=160)
    try:
        if layers not in ("final", "all"):
            raise TransferscaleError(f"--layers {layers!r}: use 'final' or 'all'")
        if points not in POINT_SETS:
            raise TransferscaleError(f"--points {points!r} is not a point set; use one of {POINT_SETS}")
        if extrapolation and not 0 < holdout_quantile < 1:
            raise TransferscaleError(f"--holdout-quantile {holdout_quantile:g}: give a quantile between 0 and 1, "
                                     "e.g. 0.9 (fit the runs below the 90th percentile, predict the rest)")
        if csv is None and study_dir is None:
            from transferscale.cli import resolve_study_dir

            study_dir = resolve_study_dir(None, alternative=" or fit a results table with --csv FILE")
        table, by_cols, notes, default_out = load_fit_table(study_dir, csv, us, ds, by or [], join, on or [],
                                                            percent, layers=layers)
        if not (out or default_out).parent.is_dir():  # say so before the fits, not after
            raise TransferscaleError(f"cannot write {out or default_out}: the directory "
                                     f"{(out or default_out).parent} does not exist; create it or choose another -o")
        if csv is not None:
            check_fittable(table, Path(csv).name, us or "us_acc")
        elif table.empty:
            raise TransferscaleError(f"the study at {study_dir} has no points to fit yet: no trained run with an "
                                     "upstream accuracy has few-shot results; let more runs finish, then fit again")
        extra_fit = {} if quantile is None else {"quantile": quantile}
        fits = fit_saturation(table, us="us_acc", ds="ds_acc", by=by_cols, points=points,
                              n_bootstrap=n_bootstrap, random_state=seed, jobs=jobs, **extra_fit)
        extra = None
        if extrapolation:
            from transferscale.analysis.extrapolation import extrapolation_table, extrapolation_verdicts

            extra = extrapolation_table(table, by=by_cols, holdout_quantile=holdout_quantile, random_state=seed)
            extra_verdicts = extrapolation_verdicts(extra, by_cols)
    except TransferscaleError as err:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(err))}", highlight=False)
        raise typer.Exit(2) from None
    for note in notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}", highlight=False)
    verdicts = saturation_verdicts(fits)
    console.print(_render(verdicts, by_cols, points))
    console.print(count_sentence(verdicts), highlight=False)
    path = out or default_out
    _write_csv(verdicts.drop(columns="main_reason"), path)
    console.print(f"wrote {path}")
    if extra is not None:
        console.print(_render_extrapolation(extra, by_cols, holdout_quantile))
        for sentence in extra_verdicts["sentence"]:
            console.print(f"  {escape(sentence)}", highlight=False)
        extra_path = path.with_name("extrapolation.csv" if out is None else f"{path.stem}-extrapolation.csv")
        _write_csv(extra, extra_path)
        console.print(f"wrote {extra_path}")


def _write_csv(df, path: Path) -> None:
    """Write the table, or stop with one message saying why the file cannot be written and what to do."""
    from transferscale.files import write_problem

    try:
        df.to_csv(path, index=False)
    except OSError as err:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(write_problem(err))}", highlight=False)
        raise typer.Exit(2) from None


def _render(fits, by_cols, points) -> Table:
    """A readable table: groups, saturation with its interval, k, alpha, e_IR, n_points, and the verdict in
    words (the flags themselves are in the CSV)."""
    table = Table(title=f"e_DS = k * e_US^alpha + e_IR, fitted on {points}",
                  caption="supports saturation: no flag, and an e_IR interval that excludes 0 and is narrower "
                  "than 0.1; the flags are in the CSV")
    for col in [*by_cols, "saturation [95% CI]", "k", "alpha", "e_IR", "n_points", "n_models", "verdict"]:
        left = col in by_cols or col == "verdict"
        table.add_column(str(col), justify="left" if left else "right", no_wrap=col != "verdict",
                         overflow="fold")
    for _, r in fits.iterrows():
        sat = "no fit" if _na(r.e_ir) else f"{r.saturation:.3f} [{r.saturation_low:.3f}, {r.saturation_high:.3f}]"
        verdict = r.verdict + (f": {r.why}" if r.why else "")
        table.add_row(*[str(r[c]) for c in by_cols], sat, *(_num(r[c], f) for c, f in (
                      ("k", ".3g"), ("alpha", ".3g"), ("e_ir", ".3f"))),
                      "-" if _na(r.n_points) else str(int(r.n_points)), str(int(r.n_models)),
                      escape(verdict))
    return table


def _na(v) -> bool:
    """Missing: None, NaN or pandas' NA (whose comparisons are NA, not a bool)."""
    try:
        return v is None or bool(v != v)
    except TypeError:
        return True


def _num(v, fmt: str) -> str:
    return "-" if _na(v) else format(v, fmt)


def _render_extrapolation(extra, by_cols, quantile: float) -> Table:
    """One row per group: the hull fit's and the all-points fit's error and bias on the held-out frontier."""
    table = Table(title=f"extrapolation: fitted below the {quantile:g} quantile of US accuracy, predicting the "
                  "held-out runs on the frontier (error: RMSE; bias: mean of predicted - observed)")
    cols = [*by_cols, "held out (frontier)", "hull error", "all error", "hull bias", "all bias", "better", "note"]
    for col in cols:
        left = col in by_cols or col in ("better", "note")
        table.add_column(str(col), justify="left" if left else "right", no_wrap=col != "note", overflow="fold")
    hull = extra[extra["points"] == "upper_hull"].reset_index(drop=True)
    every = extra[extra["points"] == "all"].reset_index(drop=True)
    for (_, h), (_, a) in zip(hull.iterrows(), every.iterrows()):
        he, ae = h.rmse_frontier, a.rmse_frontier
        better = "-" if _na(he) or _na(ae) else "hull" if he < ae else "all points" if ae < he else "tie"
        front = "-" if _na(h.n_frontier) else int(h.n_frontier)
        held = "-" if _na(h.n_holdout) else f"{int(h.n_holdout)} ({front})"
        note = "; ".join(dict.fromkeys(r for r in (h.reason, a.reason) if isinstance(r, str) and r))
        table.add_row(*[str(h[c]) for c in by_cols], held, _num(he, ".3f"), _num(ae, ".3f"),
                      _num(h.bias_frontier, "+.3f"), _num(a.bias_frontier, "+.3f"), better, escape(note))
    return table
