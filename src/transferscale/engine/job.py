"""A job: one run of the plan and the evaluations it owes, executed without touching the store.

`execute_job(job, ctx)` builds (or trains, or loads) the run's model as a Backbone, measures its upstream
accuracy where it has one, runs every owed evaluation through its protocol, and returns the rows as a
`JobResult`. The runner commits them; the same job executed anywhere (another process, another machine
sharing the study directory) gives the same rows.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from transferscale.engine.context import JobContext
from transferscale.plan import Evaluation, Run


@dataclass(frozen=True)
class Job:
    run: Run
    evaluations: tuple[Evaluation, ...]


@dataclass
class JobResult:
    run_key: str
    rows: list
    evaluations: tuple[Evaluation, ...]
    params: int | None
    train_seconds: float
    eval_seconds: float
    notes: list[str] = field(default_factory=list)


@dataclass
class JobFailure:
    run_key: str
    reason: str  # one line: the exception's type and message
    detail: str  # the traceback's last frames


def build_backbone(run: Run, ctx: JobContext):
    """The run's model as a Backbone, and the seconds spent training it (0 when nothing was trained)."""
    if run.kind in ("pixels", "words"):
        from transferscale.models.pixels import PixelBackbone, WordsBackbone

        return (PixelBackbone() if run.kind == "pixels" else WordsBackbone()), 0.0
    if "source" in run.config:  # a model a source provides (pretrained, or its architecture at random init)
        from transferscale.models.source import make_source

        ctx.phase("loading the model")
        source = make_source(run.config["source"], run.config["options"])
        backbone = source.load()
        backbone.source_identity = source.identity()
        return backbone, 0.0
    import torch

    from transferscale.models.grid import TimmBackbone, build_model
    from transferscale.pretrain import image_geometry, recompute_batchnorm, train

    up = ctx.upstream()
    if run.kind == "random_init":
        torch.manual_seed(run.config["seed"])
        model = build_model(run.family, run.config["shape"], up.n_classes, **image_geometry(up.x_train))
        recompute_batchnorm(model, up.x_train, seed=run.config["seed"])
        return TimmBackbone(model, input_spec=up.input_spec), 0.0
    from transferscale.plan import is_snapshot

    t0 = time.perf_counter()
    ctx.phase("training")
    if is_snapshot(run):  # saved by its full run as it passed; trained here only when that run has not
        keep, resume_from = {}, (ctx.full_run_checkpoint_path(run),)
    else:
        keep = {snap.config["training"]["steps"]: ctx.checkpoint_path(snap) for snap in ctx.plan.snapshots_of(run)}
        resume_from = ()
    result = train(run.config, up.x_train, up.y_train, up.n_classes, ctx.checkpoint_path(run),
                   checkpoint_every=ctx.spec.training.checkpoint_every, on_step=ctx.train_step, keep=keep,
                   resume_from=resume_from, device=None if ctx.device.type == "cpu" else ctx.device,
                   precision=ctx.precision)
    return TimmBackbone(result.model, input_spec=up.input_spec), time.perf_counter() - t0


def upstream_rows(run: Run, backbone, ctx: JobContext) -> list:
    """The upstream accuracy: measured by the model's own head on the upstream test split for models the
    study trains (and their random inits), or the value the spec gives for a pretrained model."""
    from transferscale.store import Measurement

    if run.kind in ("trained", "random_init") and "source" not in run.config:
        ctx.phase("upstream accuracy")
        up = ctx.upstream()
        return [Measurement("upstream_accuracy", ctx.spec.upstream.dataset, backbone.accuracy(up.x_test, up.y_test))]
    given = run.config.get("upstream_accuracy")
    if given is not None:
        return [Measurement("upstream_accuracy", given["dataset"], float(given["value"]))]
    return []


def execute_job(job: Job, ctx: JobContext) -> JobResult:
    """Every row the job owes; raises what the model or a protocol raises (the executor records it)."""
    run = job.run
    plan = ctx.plan
    backbone, train_s = build_backbone(run, ctx)
    if ctx.device.type != "cpu":  # (bf16 is refused off CUDA: device.autocast_dtype)
        backbone.to(ctx.device, ctx.precision)
    t0 = time.perf_counter()
    start_notes = len(ctx.notes)
    rows = upstream_rows(run, backbone, ctx)
    for ev in job.evaluations:
        task = plan.task(ev.task)
        backbone.check_input(ctx.dataset(task).input_spec, task.name)
        rows += plan.protocols[ev.protocol].measure(ctx, run, backbone, task)
    return JobResult(run.key, rows, job.evaluations, backbone.num_params(), train_s, time.perf_counter() - t0,
                     ctx.notes[start_notes:])
