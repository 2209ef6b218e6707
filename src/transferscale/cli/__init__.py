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
from typer.core import TyperGroup  # noqa: E402

from transferscale.cli.axes import axes_command  # noqa: E402
from transferscale.cli.cost import cost_command  # noqa: E402
from transferscale.cli.fit import fit_command  # noqa: E402
from transferscale.cli.probe import probe_command  # noqa: E402
from transferscale.cli.report import report_command  # noqa: E402
from transferscale.errors import TransferscaleError  # noqa: E402


class Commands(TyperGroup):
    """The command group: whatever command runs, a query that meets a damaged results store ends it with the
    store's own "is damaged" message and exit code 2 (`damaged_store_error`), not SQLite's traceback."""

    def invoke(self, ctx: typer.Context) -> object:
        import click

        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise  # the command has already said what went wrong (and may have met the damage itself)
        except Exception as err:
            problem = damaged_store_error(err)
            if problem is None:
                raise
            _fail(problem)


app = typer.Typer(
    cls=Commands,
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
    typer.Argument(help="A study's output directory (holds results.sqlite). Default: the study run most "
                   "recently under transferscale-runs/."),
]
RUNS_ROOT = Path("transferscale-runs")  # where studies go by default (StudySpec.study_dir), under the cwd
LAST_RUN = ".last-run"  # in RUNS_ROOT: which study `transferscale run` ran last, and when


def _fail(err: TransferscaleError) -> None:
    err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False)
    raise typer.Exit(2)


def damaged_store_error(err: BaseException) -> TransferscaleError | None:
    """The error to show for `err` when it is, or was raised from (pandas wraps it), SQLite saying a database is
    malformed or not a database; None for any other error.

    A reader checks every page only of stores up to `store.QUICK_CHECK_BYTES` when it opens them, so in a larger
    one the damage may first be met by a query, anywhere a command reads. The message is the one the store gives
    when its open-time check finds damage, for the store the query ran on: the `Store` found innermost among the
    failed call's frames."""
    import sqlite3

    from transferscale.store import Store

    chain, cause = [], err
    while cause is not None and len(chain) < 8:
        chain.append(cause)
        cause = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)
    found = next((e for e in chain if isinstance(e, sqlite3.DatabaseError)), None)
    if found is None:
        return None
    code = getattr(found, "sqlite_errorcode", None)
    text = str(found).lower()
    if (code is None or code & 0xFF not in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)) and \
            "malformed" not in text and "not a database" not in text:
        return None
    store = None
    for e in chain:
        tb = e.__traceback__
        while tb is not None:
            store = next((v for v in tb.tb_frame.f_locals.values() if isinstance(v, Store)), store)
            tb = tb.tb_next
    if store is not None:
        return store._damaged(str(found))
    return TransferscaleError(
        f"a results store this command read is damaged ({found}); nothing was written to it. Move it aside (its "
        "results.sqlite, with its -wal and -shm files if any) and run the study again: its checkpoints and feature "
        "cache rebuild the rows far faster than the first time")


def _resolve_dir(study_dir: Path | None) -> Path:
    return resolve_study_dir(study_dir)


def resolve_study_dir(study_dir: Path | None, alternative: str = "") -> Path:
    """The study a command acts on: `study_dir` when given, else the study run most recently under
    transferscale-runs/ (`latest_study`), said on stderr (stdout may be a CSV export). With no study there,
    an error saying to run one or pass its directory (`alternative`: another way, e.g. " or --csv FILE")."""
    if study_dir is not None:
        return study_dir
    found = latest_study()
    if found is None:
        raise TransferscaleError(
            f"no study under {RUNS_ROOT}/ in this directory yet: run one first (`transferscale run --quick` "
            f"for a first look, or `transferscale run`), or pass a study's directory (STUDY_DIR){alternative}")
    path, why = found
    err_console.print(f"using {escape(str(path))} ({why})", highlight=False)
    return path


def latest_study(root: Path = RUNS_ROOT) -> tuple[Path, str] | None:
    """The study under `root` that was run or written most recently, and why it is that one.

    Candidates are the directories holding a results store: `root`'s subdirectories, and the one `run`
    recorded last (`record_run`; it may be nested deeper). Each one's time is the latest write its store
    records (a run started, finished or failed, an evaluation finished; the file's modification time for a
    store that records none), or, for the study `run` recorded, the time of that run when later: a run that
    found nothing left to do still makes its study the latest. A directory without a store (a run that
    failed before writing any, checkpoints alone) is never chosen. None when no candidate has a store."""
    from transferscale.store import RESULTS_FILE

    if not root.is_dir():
        return None
    times: dict[Path, float] = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if (d / RESULTS_FILE).is_file():
            times[d] = _last_write(d / RESULTS_FILE)
    marked, marked_time = _read_last_run(root)
    if marked is not None and (marked / RESULTS_FILE).is_file():
        times[marked] = max(times.get(marked) or _last_write(marked / RESULTS_FILE), marked_time)
    if not times:
        return None
    best = max(times, key=lambda d: (times[d], str(d)))
    if best == marked:
        return best, "the study run most recently"
    return best, "the study whose results were written most recently"


def record_run(study_dir: Path, root: Path = RUNS_ROOT) -> None:
    """Note that `run` is running `study_dir` now, for commands given no STUDY_DIR (`latest_study`).

    Only a study under `root` is noted (one written elsewhere with --out is passed by its directory), and
    a note that cannot be written (a read-only directory) changes nothing but that."""
    import json
    import time

    try:
        rel = Path(study_dir).resolve().relative_to(root.resolve())
    except ValueError:
        return
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / (LAST_RUN + ".tmp")
        tmp.write_text(json.dumps({"study": rel.as_posix(), "time": time.time()}) + "\n")
        tmp.replace(root / LAST_RUN)
    except OSError:
        pass


def _read_last_run(root: Path) -> tuple[Path | None, float]:
    import json

    try:
        note = json.loads((root / LAST_RUN).read_text())
        return root / str(note["study"]), float(note["time"])
    except (OSError, ValueError, KeyError, TypeError):
        return None, 0.0


def _last_write(path: Path) -> float:
    """The latest time a store records writing (seconds since the epoch), else its file's modification time.

    Read-only, so that looking never counts as a write."""
    import sqlite3

    query = ("SELECT MAX(t) FROM (SELECT MAX(started) AS t FROM runs UNION ALL SELECT MAX(finished) FROM runs "
             "UNION ALL SELECT MAX(finished) FROM evaluations)")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            (latest,) = conn.execute(query).fetchone()
        finally:
            conn.close()
        if latest is not None:
            return float(latest)
    except sqlite3.Error:
        pass
    wal = path.with_name(path.name + "-wal")
    return max(path.stat().st_mtime, wal.stat().st_mtime if wal.is_file() else 0.0)


@app.command()
def run(
    spec: Annotated[Path | None, typer.Argument(
        help="Study spec (TOML), or a built-in study's name (shape, head_hparams, pretrain_or_not, "
        "efficientnet_lite, minilm_text). Default: the embedded default study.")] = None,
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
    device: Annotated[str | None, typer.Option(
        help="Where jobs compute: auto (CUDA when present, else the CPU), cpu, cuda or cuda:N (default: the "
        "device of the spec's executor table, auto).")] = None,
) -> None:
    """Run a study, or resume it: finished runs are never redone."""
    from transferscale.cli.progress import RichProgress
    from transferscale.engine.runner import run_study
    from transferscale.spec import load_spec

    try:
        study, text = load_spec(spec, quick=quick)
        if device is not None:
            study = with_device(study, device)
        study_dir = out or study.study_dir()
        console.print(f"[bold]study[/] {study.name}  ->  {study_dir}")
        record_run(study_dir)
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
        f"{result.skipped - len(result.left_failed)} already done, {len(result.failed)} failed"
        + (f", {len(result.left_failed)} failed before (`--retry-failed` runs them again)." if result.left_failed
           else "."), highlight=False,
    )
    for name, reason in result.failed.items():
        console.print(f"  [red]failed[/] {escape(name)}: {escape(reason)}", highlight=False)
    if result.left_failed:
        for name, reason in result.left_failed.items():
            console.print(f"  [red]failed before[/] {escape(name)}: {escape(reason)}", highlight=False)
    if study.costs:
        _measure_costs(study_dir, cache_dir)
    console.print(f"results: {study_dir / 'results.sqlite'}   (see `transferscale results {study_dir}`)")


def with_device(study, device: str):
    """The spec with `--device` as its [executor] device (checked as the spec checks it)."""
    from transferscale.device import check_device

    try:
        check_device(device)
    except ValueError as err:
        raise TransferscaleError(f"--device: {err}") from None
    return study.model_copy(update={"executor": study.executor.model_copy(update={"device": device})})


def _measure_costs(study_dir: Path, cache_dir: Path | None) -> None:
    """The spec's `costs = true`: measure every architecture not measured yet, as `transferscale cost` does
    with one thread, best of 3 repeats of at least 0.2 s (`transferscale cost --force` measures again, longer)."""
    from transferscale.cli.cost import measure_study

    try:
        result = measure_study(study_dir, cache_dir=cache_dir, repeats=3, min_seconds=0.2)
    except TransferscaleError as err:
        _fail(err)
    except KeyboardInterrupt:
        err_console.print("interrupted while measuring costs; `transferscale cost` measures the rest")
        raise typer.Exit(130) from None
    kept = f", {len(result.kept)} measured before" if result.kept else ""
    console.print(f"costs: {len(result.measured)} architecture(s) measured in {result.seconds:.0f} s{kept} "
                  f"(see `transferscale cost {study_dir}`)", highlight=False)


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the spec.")] = Path("study.toml"),
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
    study: Annotated[str, typer.Option(help="Which built-in study: default, shape, head_hparams, pretrain_or_not, "
                                          "efficientnet_lite, minilm_text.")
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
    try:
        path.write_text(text)
    except OSError as err:
        from transferscale.files import write_problem

        _fail(TransferscaleError(write_problem(err)))
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
def gc(
    study_dir: StudyDir = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be removed; remove nothing.")
                       ] = False,
) -> None:
    """Delete the feature-cache files the study's spec no longer reads (runs, tasks or layers it dropped,
    retrained checkpoints). Results and checkpoints are left alone; a file removed costs one forward pass."""
    from transferscale.gc import collect_garbage

    try:
        study = _resolve_dir(study_dir)
        out = collect_garbage(study, dry_run=dry_run)
    except TransferscaleError as err:
        _fail(err)
    except OSError as err:
        from transferscale.files import write_problem

        _fail(TransferscaleError(write_problem(err)))
    verb = "would remove" if dry_run else "removed"
    console.print(f"feature cache of {study}: kept {len(out.kept)} files ({out.kept_bytes / 2**20:.1f} MiB), "
                  f"{verb} {len(out.removed)} ({out.removed_bytes / 2**20:.1f} MiB) the spec no longer reads",
                  highlight=False)


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
app.command("cost")(cost_command)
app.command("axes")(axes_command)

