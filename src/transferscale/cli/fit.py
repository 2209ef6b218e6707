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
                                               "fits every (upstream, task, shots, layer) group."),
    csv: Path | None = typer.Option(None, "--csv", help="Fit a results table instead of a study."),
    us: str | None = typer.Option(None, "--us", help="Column of upstream accuracy (in the --csv file)."),
    ds: list[str] | None = typer.Option(None, "--ds", help="Column of downstream accuracy; repeat for "
                                           "several (in the --join file when there is one)."),
    by: list[str] | None = typer.Option(None, "--by", help="Fit one law per value of this column; "
                                           "repeat for several."),
    points: str = typer.Option("upper_hull", "--points", help="upper_hull (the paper's choice) or all."),
    join: Path | None = typer.Option(None, "--join", help="A second CSV joined to --csv on --on "
                                        "(inner join), e.g. one timm test set per file."),
    on: list[str] | None = typer.Option(None, "--on", help="Join key column; repeat for several "
                                           "(timm: --on model --on img_size)."),
    percent: bool | None = typer.Option(
        None, "--percent/--fraction", help="Accuracies are percent (0-100) or fractions (0-1). Default: "
        "fractions, unless a value is above 1 (and none above 100): then percent, and it says so."),
    n_bootstrap: int = typer.Option(1000, "--n-bootstrap", help="Bootstrap resamples per group; 0: none."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
    layers: str = typer.Option("final", "--layers", help="With STUDY_DIR: fit the final representation "
                               "only (final), or every probed layer (all)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="CSV to write. Default: "
                                       "STUDY_DIR/saturation_fits.csv, or ./saturation_fits.csv with --csv."),
    jobs: int | None = typer.Option(None, "--jobs", "-j", min=1, help="Processes fitting groups at once; the "
                                    "numbers do not depend on it. Default: one per core, at most one per group."),
) -> None:
    """Fit e_DS = k * e_US^alpha + e_IR (errors = 1 - accuracy) per group and report the saturation 1 - e_IR.

    Examples: `transferscale fit runs/my_study`;
    `transferscale fit --csv results-imagenet.csv --us top1 --join results-sketch.csv --ds top1
    --on model --on img_size` (percent detected);
    `transferscale fit --csv table.csv --us upstream --ds task_a --ds task_b --points all`.
    """
    from transferscale.analysis.saturation import POINT_SETS, fit_saturation  # scipy and pandas: only when fitting
    from transferscale.analysis.tables import load_fit_table

    console = Console()
    if not console.is_terminal:  # piped or captured: 80 columns would squash the table
        console = Console(width=160)
    try:
        if layers not in ("final", "all"):
            raise TransferscaleError(f"--layers {layers!r}: use 'final' or 'all'")
        table, by_cols, notes, default_out = load_fit_table(study_dir, csv, us, ds, by or [], join, on or [],
                                                            percent, layers=layers)
        if points not in POINT_SETS:
            raise TransferscaleError(f"--points {points!r} is not a point set; use one of {POINT_SETS}")
        fits = fit_saturation(table, us="us_acc", ds="ds_acc", by=by_cols, points=points,
                              n_bootstrap=n_bootstrap, random_state=seed, jobs=jobs)
    except TransferscaleError as err:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(err))}", highlight=False)
        raise typer.Exit(2) from None
    for note in notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    console.print(_render(fits, by_cols, points))
    path = out or default_out
    fits.to_csv(path, index=False)
    console.print(f"wrote {path}")


def _render(fits, by_cols, points) -> Table:
    """A readable table: groups, saturation with its interval, k, alpha, e_IR, n_points, flags."""
    table = Table(title=f"e_DS = k * e_US^alpha + e_IR, fitted on {points}")
    for col in [*by_cols, "saturation [95% CI]", "k", "alpha", "e_IR", "n_points", "n_models", "flags"]:
        left = col in by_cols or col == "flags"
        table.add_column(str(col), justify="left" if left else "right", no_wrap=col != "flags",
                         overflow="fold")
    for _, r in fits.iterrows():
        sat = f"{r.saturation:.3f} [{r.saturation_low:.3f}, {r.saturation_high:.3f}]"
        table.add_row(*[str(r[c]) for c in by_cols], sat, f"{r.k:.3g}", f"{r.alpha:.3g}", f"{r.e_ir:.3f}",
                      str(int(r.n_points)), str(int(r.n_models)),
                      r["flags"] if isinstance(r["flags"], str) else "")
    return table
