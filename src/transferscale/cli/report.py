"""`transferscale report`: one self-contained HTML page showing a study (or any results table) as Abnar et al. do."""
from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from transferscale.errors import TransferscaleError


def report_command(
    study_dir: Annotated[Path | None, typer.Argument(
        help="A study directory (holds results.sqlite). Default: the study run most recently under "
        "transferscale-runs/; not with --csv.")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="HTML file to write. Default: STUDY_DIR/report/index.html, or "
        "./CSVNAME-report.html with --csv.")] = None,
    n_bootstrap: Annotated[int, typer.Option(
        "--n-bootstrap", help="Bootstrap resamples for the intervals (the page says how many); 0: none. "
        "Small by default so the report builds in seconds; `transferscale fit` uses 1000.")] = 200,
    seed: Annotated[int, typer.Option("--seed", help="Bootstrap seed.")] = 0,
    csv: Annotated[Path | None, typer.Option("--csv", help="Report on a results table instead of a study "
                                                "(one row per model).")] = None,
    us: Annotated[str | None, typer.Option("--us", help="Column of upstream accuracy (in the --csv file).")] = None,
    ds: Annotated[list[str] | None, typer.Option(
        "--ds", help="Column of downstream accuracy; repeat for several tasks (in the --join file when there "
        "is one).")] = None,
    by: Annotated[list[str] | None, typer.Option("--by", help="One panel row per value of this column; "
                                                    "repeat for several.")] = None,
    join: Annotated[Path | None, typer.Option(
        "--join", help="A second CSV joined to --csv on --on (inner join), e.g. one timm test set per file.")] = None,
    on: Annotated[list[str] | None, typer.Option(
        "--on", help="Join key column; repeat for several (timm: --on model --on img_size).")] = None,
    percent: Annotated[bool | None, typer.Option(
        "--percent/--fraction", help="--percent: the columns with values above 1 are percent (0-100) and are "
        "divided by 100; those within [0, 1] stay fractions. Without it nothing is divided: a column with values "
        "above 1 is an error that says which. --fraction: every column must be within [0, 1].")] = None,
    model: Annotated[str | None, typer.Option(
        "--model", help="Column naming each model (best-checkpoint table, correlations). Default: the --on "
        "keys, else a column called model or name.")] = None,
    axis: Annotated[list[str] | None, typer.Option(
        "--axis", help="With --csv: a column to colour the scaling-axes view by (e.g. params, samples_seen); "
        "repeat for several.")] = None,
    jobs: Annotated[int | None, typer.Option(
        "--jobs", "-j", min=1, help="Processes for the report's work: a study's reading, fits and figures "
        "overlap in forked processes, and the fits' bootstraps spread over the rest; 1: all in this process. The "
        "page does not depend on it. Default: one per core.")] = None,
) -> None:
    """Write one HTML page showing a study (or any results table) the way Abnar et al. 2021 show theirs.

    Self-contained (figures embedded, no server, no scripts): it opens from disk on any machine.

    Per task and shot count: DS vs US accuracy, the upper hull, and the law e_DS = k * e_US^alpha + e_IR.

    The law is fitted on the hull and on all points; the saturation value 1 - e_IR comes with its interval.

    Also: the parameters against shots, scaling axes, rank correlations, layer-wise curves, best checkpoints.

    Baselines (raw pixels, random init) are horizontal reference lines, never fit points.

    Example: transferscale report runs/my_study

    Example: transferscale report --csv results-imagenet.csv --us top1 --join results-sketch.csv --ds top1 --on model
    --on img_size
    """
    from transferscale.report import build_report, build_study_report, load_table

    console, err = Console(), Console(stderr=True)
    start = time.perf_counter()
    try:
        if csv is not None:
            if study_dir is not None:
                raise TransferscaleError("give either STUDY_DIR or --csv FILE, not both")
            data = load_table(csv, us, ds, by or [], join, on or [], percent, model, axis or [])
            path = out or Path(f"{csv.stem}-report.html")
            command = _command(study_dir, out, n_bootstrap, seed, csv, us, ds, by, join, on, percent, model, axis)
            build_report(data, path, n_bootstrap=n_bootstrap, seed=seed, command=command, jobs=jobs)
        else:
            if us or ds or by or join or on or model or axis:
                raise TransferscaleError("--us, --ds, --by, --join, --on, --model and --axis describe a --csv "
                                         "table; a study's report needs only STUDY_DIR")
            from transferscale.cli import resolve_study_dir

            study_dir = resolve_study_dir(study_dir, alternative=" or report on a results table with --csv FILE")
            path = out or Path(study_dir) / "report" / "index.html"
            command = _command(study_dir, out, n_bootstrap, seed, csv, us, ds, by, join, on, percent, model, axis)
            data, _ = build_study_report(study_dir, path, n_bootstrap=n_bootstrap, seed=seed, command=command,
                                         jobs=jobs)
    except TransferscaleError as e:
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False)
        raise typer.Exit(2) from None
    for note in data.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    console.print(f"wrote the report in {time.perf_counter() - start:.1f} s:", highlight=False)
    console.print(str(path.resolve()), soft_wrap=True, highlight=False)


def _command(study_dir, out, n_bootstrap, seed, csv, us, ds, by, join, on, percent, model, axis) -> str:
    """The command that makes this page again, with every option that differs from its default."""
    args = ["transferscale", "report"]
    if study_dir is not None:
        args.append(str(study_dir))
    pairs = [("--csv", csv), ("--us", us), ("--join", join), ("--model", model), ("--out", out)]
    args += [x for flag, v in pairs if v is not None for x in (flag, str(v))]
    for flag, values in (("--ds", ds), ("--by", by), ("--on", on), ("--axis", axis)):
        args += [x for v in values or [] for x in (flag, v)]
    if percent is not None:
        args.append("--percent" if percent else "--fraction")
    if n_bootstrap != 200:
        args += ["--n-bootstrap", str(n_bootstrap)]
    if seed != 0:
        args += ["--seed", str(seed)]
    return shlex.join(args)
