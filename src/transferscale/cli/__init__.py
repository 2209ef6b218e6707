"""The `transferscale` command line: run a study, look at its results, fit the saturation law, probe models.

The command line only: fit.py, report.py and probe.py hold their commands, tables.py the terminal tables of
`status` and `results`, progress.py the progress bars. Nothing outside this package imports it.
"""
from __future__ import annotations

import os

# OpenMP threads that spin while waiting lose badly to other tenants on a shared 2-core machine (a 512x512
# matmul rate fell to a tenth for seconds at a time with spinning threads; passive waiting held it near half):
# this must be set before torch is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Annotated  # noqa: E402

import typer  # noqa: E402
from rich.console import Console
from rich.markup import escape  # noqa: E402

from transferscale.cli.fit import fit_command  # noqa: E402
from transferscale.cli.probe import probe_command  # noqa: E402
from transferscale.cli.report import report_command  # noqa: E402
from transferscale.errors import TransferscaleError  # noqa: E402

app = typer.Typer(
    help="Run and analyse pre-training -> downstream transfer studies.\n\n"
    "Start with `transferscale run` (the embedded default study, offline, on the CPU), then "
    "`transferscale results` and `transferscale status`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Piped or captured output gets a wide console: 80 columns would squash the results tables.
console = Console() if Console().is_terminal else Console(width=160)
err_console = Console(stderr=True) if Console(stderr=True).is_terminal else Console(stderr=True, width=200)

StudyDir = Annotated[
    Path | None,
    typer.Argument(help="A study's output directory (holds results.sqlite). Default: the default study's."),
]


def _fail(err: TransferscaleError) -> None:
    err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False)
    raise typer.Exit(2)


def _resolve_dir(study_dir: Path | None) -> Path:
    if study_dir is not None:
        return study_dir
    from transferscale.spec import load_spec

    return load_spec(None)[0].study_dir()


@app.command()
def run(
    spec: Annotated[Path | None, typer.Argument(
        help="Study spec (TOML), or a built-in study's name (efficientnet_lite, minilm_text). Default: the embedded "
        "default study.")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Apply the spec's [quick] table: fewer, smaller runs.")
                     ] = False,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output directory (overrides the spec's).")] = None,
    retry_failed: Annotated[bool, typer.Option(help="Run again the runs that failed before.")] = False,
    cache_dir: Annotated[Path | None, typer.Option(help="Where generated datasets are cached.")] = None,
    executor: Annotated[str | None, typer.Option(help="Where jobs run: local, or ray (default: the spec's "
                                                    "`executor`, local).")] = None,
    address: Annotated[str | None, typer.Option(help="With --executor ray: the Ray cluster to join (auto, HOST:PORT "
                                                   "or ray://HOST:PORT). Default: the spec's, else start Ray on "
                                                   "this machine.")] = None,
) -> None:
    """Run a study, or resume it: finished runs are never redone."""
    from transferscale.cli.progress import RichProgress
    from transferscale.engine.runner import run_study
    from transferscale.spec import load_spec

    try:
        study, text = load_spec(spec, quick=quick)
        study_dir = out or study.study_dir()
        console.print(f"[bold]study[/] {study.name}  ->  {study_dir}")
        with RichProgress(console) as progress:
            result = run_study(study, text, study_dir, progress=progress, cache_dir=cache_dir,
                               retry_failed=retry_failed, executor=executor, address=address)
    except TransferscaleError as err:
        _fail(err)
    except KeyboardInterrupt:
        err_console.print("interrupted; run the same command again to finish the rest")
        raise typer.Exit(130) from None
    console.print(
        f"[bold green]done[/] in {result.seconds:.0f} s: {len(result.done)} run(s) finished, "
        f"{result.skipped} already done, {len(result.failed)} failed."
    )
    for name, reason in result.failed.items():
        console.print(f"  [red]failed[/] {name}: {reason}")
    console.print(f"results: {study_dir / 'results.sqlite'}   (see `transferscale results {study_dir}`)")


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the spec.")] = Path("study.toml"),
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
    study: Annotated[str, typer.Option(help="Which built-in study: default, efficientnet_lite, minilm_text.")
                     ] = "default",
) -> None:
    """Write a built-in study's spec (the default study unless --study says) to a file, to edit and run with
    `transferscale run FILE`."""
    from transferscale.spec import builtin_spec_text

    if path.exists() and not force:
        _fail(TransferscaleError(f"{path} exists; pass --force to overwrite it or choose another path"))
    try:
        text = builtin_spec_text(study)
    except TransferscaleError as err:
        _fail(err)
    path.write_text(text)
    console.print(f"wrote {path}; edit it, then `transferscale run {path}`")


@app.command()
def status(study_dir: StudyDir = None) -> None:
    """What is done, running (or interrupted), failed and left in a study."""
    from transferscale.cli.tables import PlainTable, status_table

    try:
        table = status_table(_resolve_dir(study_dir))
        if isinstance(table, PlainTable):  # thousands of runs: aligned text, not rich's per-cell layout
            console.out(str(table), highlight=False)
        else:
            console.print(table)
    except TransferscaleError as err:
        _fail(err)


@app.command()
def results(
    study_dir: StudyDir = None,
    format: Annotated[str, typer.Option("--format", "-f", help="table | csv | parquet")] = "table",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write (csv/parquet).")] = None,
    raw: Annotated[bool, typer.Option(help="With --format table: every measurement, not the summary.")] = False,
) -> None:
    """Print a study's results, or export the tidy measurement table as CSV or Parquet."""
    from transferscale.cli.tables import PlainTable, store_summary
    from transferscale.store import Store, export_results

    rows = 0
    try:
        if output is not None and format == "table":  # -o names a file: its suffix says the format
            suffixes = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
            if output.suffix.lower() not in suffixes:
                raise TransferscaleError(f"-o {output}: give --format csv or --format parquet, or a file ending in "
                                         ".csv or .parquet")
            format = suffixes[output.suffix.lower()]
        study_dir = _resolve_dir(study_dir)
        if format == "table" and not raw:
            summary = store_summary(study_dir)
            if isinstance(summary, PlainTable):
                console.out(str(summary), highlight=False)
            else:
                console.print(summary)
        elif format == "table":  # every row, a chunk at a time (one chunk: exactly the whole table's layout)
            with Store(study_dir, create=False) as store:
                for i, chunk in enumerate(store.iter_results()):
                    console.print(chunk.to_string(index=False, header=i == 0))
        elif format == "csv":
            rows = export_results(study_dir, sys.stdout if output is None else output, "csv")
        elif format == "parquet":
            output = output or study_dir / "results.parquet"
            rows = export_results(study_dir, output, "parquet")
        else:
            raise TransferscaleError(f"unknown format {format!r}; valid: 'table', 'csv', 'parquet'")
    except TransferscaleError as err:
        _fail(err)
    if output is not None and format in ("csv", "parquet"):
        console.print(f"wrote {rows} rows to {output}")


app.command("probe")(probe_command)
app.command("fit")(fit_command)
app.command("report")(report_command)

