"""`transferscale cost`: measure what each architecture of a study costs, into the store's `costs` table.

The study's plan is rebuilt from the spec stored with it (the last `transferscale run`). Its runs are grouped
by architecture (`models.cost.architecture_key`: every budget, snapshot and random-init baseline of one family
and shape share one network), and each architecture not measured yet (or every one, with --force) is built and
measured once (`models.cost.measure_architecture`): parameters, forward FLOPs per example, training and
inference throughput at the study's batch size with the threads pinned. Each row is written as soon as it is
measured, so an interrupted command keeps what it had. The study need not have run its training: costs depend
on the shapes only.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from transferscale.errors import TransferscaleError


@dataclass
class CostRun:
    """What `measure_study` did: the labels it measured, how many were measured before, what it skipped."""

    measured: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (label, why)
    seconds: float = 0.0


def _stored_spec(study_dir: Path):
    from transferscale.spec import StudySpec
    from transferscale.store import Store

    with Store(study_dir, create=False) as store:
        meta = store.meta()
    if "spec_json" not in meta:
        raise TransferscaleError(f"the study at {study_dir} has no stored spec yet; run it once first "
                                 "(`transferscale run SPEC --out DIR`)")
    try:
        return StudySpec.model_validate_json(meta["spec_json"])
    except ValueError as err:
        raise TransferscaleError(f"the spec stored with {study_dir} no longer validates ({str(err).splitlines()[0]}); "
                                 "run the study again with this version first") from None


def _batch_size(spec, runs) -> int:
    """The study's training batch size: a trained run's own, else the spec's [training], else its default."""
    for run in runs:
        training = run.config.get("training")
        if training and "batch_size" in training:
            return int(training["batch_size"])
    from transferscale.spec import TrainingSpec

    return int((spec.training or TrainingSpec()).batch_size)


def measure_study(study_dir: str | Path, *, threads: int = 1, repeats: int = 5, warmup: int = 2,
                  min_seconds: float = 0.25, force: bool = False, cache_dir: str | Path | None = None,
                  on_measured=None) -> CostRun:
    """Measure every architecture of the study's plan that its store has no cost row for (all, with
    `force`), writing each row as it is measured; `on_measured(label)` is called before each one."""
    from transferscale.engine.context import JobContext
    from transferscale.models.cost import architecture_key, architecture_label, measure_architecture
    from transferscale.plan import make_plan
    from transferscale.store import Store

    study_dir = Path(study_dir)
    start = time.perf_counter()
    spec = _stored_spec(study_dir)
    plan = make_plan(spec)
    ctx = JobContext(spec, study_dir, cache_dir, plan=plan)
    groups: dict[str, list] = {}
    for run in plan.runs:
        key = architecture_key(run)
        if key is not None:
            groups.setdefault(key, []).append(run)
    out = CostRun()
    with Store(study_dir) as store:  # a writer: an older store gains the costs table here
        done = set() if force else set(store.costs()["arch"])
        for key, runs in groups.items():
            # a random-init baseline first: a source builds it without reading any weights
            run = sorted(runs, key=lambda r: r.kind != "random_init")[0]
            label = architecture_label(run)
            if key in done:
                out.kept.append(label)
                continue
            if on_measured is not None:
                on_measured(label)
            if "source" in run.config:
                backbone, data, why = _load_source(run, ctx)
                if why:
                    out.skipped.append((label, why))
                    continue
            else:
                up = run.config["upstream"]
                backbone, data = None, ctx.load(up["dataset"], dict(up.get("options") or {}))
            row = measure_architecture(run, data, batch_size=_batch_size(spec, runs), threads=threads,
                                       warmup=warmup, repeats=repeats, min_seconds=min_seconds, backbone=backbone)
            store.write_costs([row])
            out.measured.append(label)
    out.seconds = time.perf_counter() - start
    return out


def _load_source(run, ctx):
    """(backbone, a dataset of its modality, None), or (None, None, why it cannot be measured)."""
    from transferscale.models.source import make_source

    tasks = ctx.plan.tasks_of(run)
    if not tasks:
        return None, None, f"no {run.modality} task to draw an input batch from"
    try:
        backbone = make_source(run.config["source"], run.config["options"]).load()
    except (TransferscaleError, ImportError, OSError) as err:  # weights or package missing: say so, go on
        return None, None, f"cannot load it ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
    return backbone, ctx.dataset(tasks[0]), None


def cost_command(
    study_dir: Annotated[Path | None, typer.Argument(
        help="A study directory (holds results.sqlite). Default: the study run most recently under "
        "transferscale-runs/.")] = None,
    threads: Annotated[int, typer.Option("--threads", min=1, help="Threads torch and BLAS are pinned to while "
                                         "measuring.")] = 1,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Timed repeats; the best is kept (other "
                                         "tenants only ever slow a repeat down).")] = 5,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed steps before the repeats.")] = 2,
    min_time: Annotated[float, typer.Option("--min-time", min=0.0, help="Seconds each repeat lasts at least "
                                            "(it runs as many steps as that takes).")] = 0.25,
    force: Annotated[bool, typer.Option("--force", help="Measure every architecture again, not only those "
                                        "not measured yet.")] = False,
    cache_dir: Annotated[Path | None, typer.Option(help="Where generated datasets are cached.")] = None,
) -> None:
    """Measure what each architecture of a study costs: parameters, forward FLOPs per example (torch's flop
    counter), training and inference throughput (examples/s on this machine, threads pinned, best of
    --repeats after --warmup steps), at the study's batch size.

    One measurement per distinct architecture (family, shape, input geometry, classes), stored in the
    results store's `costs` table; running it again measures only what is not measured yet.

    Example: transferscale cost transferscale-runs/default --threads 1 --repeats 5
    """
    from transferscale.cli import console, resolve_study_dir
    from transferscale.cli import err_console as err
    from transferscale.store import Store

    try:
        study_dir = resolve_study_dir(study_dir)
        result = measure_study(study_dir, threads=threads, repeats=repeats, warmup=warmup, min_seconds=min_time,
                               force=force, cache_dir=cache_dir,
                               on_measured=lambda label: err.print(f"measuring {escape(label)}", highlight=False))
        with Store(study_dir, create=False) as store:
            costs = store.costs()
    except TransferscaleError as e:
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False)
        raise typer.Exit(2) from None
    console.print(cost_table(costs, set(result.measured)))
    for label, why in result.skipped:
        console.print(f"[yellow]skipped[/] {escape(label)}: {escape(why)}", highlight=False)
    kept = f"; {len(result.kept)} measured before (--force measures them again)" if result.kept else ""
    console.print(f"measured {len(result.measured)} architecture(s) in {result.seconds:.1f} s with {threads} "
                  f"thread(s), best of {repeats}{kept}", highlight=False)


def cost_table(costs, new: set[str] = frozenset()) -> Table:
    """The costs table for the terminal: one line per architecture, `new` marks those just measured."""
    table = Table(title="costs per architecture (examples/s: best of the repeats)")
    for name, justify in (("architecture", "left"), ("params", "right"), ("MFLOP/example", "right"),
                          ("train ex/s", "right"), ("infer ex/s", "right"), ("batch", "right"),
                          ("threads", "right"), ("", "left")):
        table.add_column(name, justify=justify)

    def rate(v) -> str:
        return "-" if v != v else f"{v:,.0f}"  # NaN: not measured (a model the study does not train)

    for row in costs.itertuples(index=False):
        table.add_row(escape(row.label), f"{row.params:,}", f"{row.flops / 1e6:,.2f}", rate(row.train_throughput),
                      rate(row.infer_throughput), str(row.batch_size), str(row.threads),
                      "new" if row.label in new else "")
    return table
