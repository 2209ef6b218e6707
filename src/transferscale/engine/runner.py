"""The scheduler: work out what a study still owes, hand it to an executor as jobs, commit what comes back.

A run is done when its row says so and every evaluation it owes is recorded. The runner is the only writer
of the store: it marks a job's run as running when the job starts, and commits everything the job measured
in one transaction when its result arrives (or records the failure), so a study interrupted at any moment
resumes from the store (finished runs) and the run's checkpoint (a run that was mid-training). A run that
raises is recorded as failed with its reason and the evaluations it was attempting, and the study goes on;
the next `run` tries it again only when the spec now asks other evaluations of it (a failure the spec caused
does not outlive the spec) or with `retry_failed`. Ctrl-C stops the study and leaves the run marked 'running',
which `status` shows as interrupted and the next `run` finishes.

A file the study cannot write (a full disk, a read-only directory, a file where the study directory should
be) stops the study with one TransferscaleError naming the file and what to do; every run committed before
it is kept, and no half-written file is left.

Jobs may finish in any order (a parallel executor); each job's outcome is committed once, however often an
executor hands it back.
"""
from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

from transferscale.engine.context import JobContext, JobProgress, default_cache_dir
from transferscale.engine.executors import EXECUTORS
from transferscale.engine.job import Job, JobFailure, JobResult
from transferscale.errors import TransferscaleError
from transferscale.files import write_problem
from transferscale.plan import Plan, Run, make_plan
from transferscale.spec import ExecutorSpec, StudySpec
from transferscale.store import Store

__all__ = ["Progress", "StudyResult", "StudyRunner", "default_cache_dir", "executor_options", "run_study", "versions"]


def versions() -> dict:
    import numpy
    import timm
    import torch

    import transferscale

    return {"transferscale": transferscale.__version__, "torch": torch.__version__, "timm": timm.__version__,
            "numpy": numpy.__version__, "python": platform.python_version()}


class Progress(JobProgress):
    """What the runner reports; the CLI draws it with rich, tests stay silent."""

    def start(self, plan: Plan, todo: list[Run], total_work: int) -> None: ...
    def start_run(self, run: Run, index: int, count: int) -> None: ...
    def jobs(self, done: int, running: int, left: int) -> None:
        """How many of this session's jobs have finished (done or failed), are running, and wait to start."""
    def advance(self, work: int) -> None: ...
    def end_run(self, run: Run, status: str, seconds: float, note: str = "") -> None: ...
    def finish(self) -> None: ...


@dataclass
class StudyResult:
    study_dir: Path
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: int = 0  # runs not run this time: done before, or failed before (and in `left_failed`)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    left_failed: dict[str, str] = field(default_factory=dict)  # failed before, not retried: name -> reason


class StudyRunner:
    def __init__(self, spec: StudySpec, spec_text: str, study_dir: Path, *, progress: Progress | None = None,
                 cache_dir: Path | None = None, retry_failed: bool = False, executor: str | None = None,
                 address: str | None = None):
        self.spec, self.spec_text, self.dir = spec, spec_text, Path(study_dir)
        self.plan = make_plan(spec)
        self.progress = progress or Progress()
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.retry_failed = retry_failed
        self.executor_options = executor_options(spec.executor, executor, address)
        # an unknown name, or an executor that cannot run here (ray not installed), fails before any work
        EXECUTORS.get(self.executor_options.kind).check(self.executor_options)
        if self.executor_options.kind == "local":  # a device this machine lacks fails here (a Ray worker's may have it)
            from transferscale.device import autocast_dtype, resolve_device

            autocast_dtype(resolve_device(spec.executor.device), spec.executor.precision)

    def pending(self, store: Store) -> list[Job]:
        """A job per run that is not done, or done but owing evaluations the spec added since.

        A failed run is tried again when `retry_failed`, or when what it owes now differs from what its failed
        attempt owed (its failure may have come from an option the spec has changed since); a failure recorded
        before attempts were is tried again only when asked."""
        status, done_evals = store.run_status(), store.done_evaluations()
        attempts = store.failed_attempts()
        jobs = []
        for run in self.plan.runs:
            owed = self.plan.evaluations(run)
            if status.get(run.key) in ("done", "failed"):  # a run that got this far owes only what is not done
                owed = [e for e in owed if e.key not in done_evals]
            if status.get(run.key) == "failed" and not self.retry_failed:
                attempted = attempts.get(run.key)
                if attempted is None or attempted == {e.key for e in owed}:
                    continue
            elif status.get(run.key) == "done" and not owed:
                continue
            jobs.append(Job(run, tuple(owed)))
        return jobs

    def check(self, ctx: JobContext) -> None:
        """Each protocol's look at the data, before any training."""
        for proto in self.plan.protocols.values():
            proto.check(self.plan, ctx.dataset)

    def _lock(self):
        """Hold the study directory for this process; the OS releases it when the process ends, however."""
        import fcntl

        self.dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.dir / ".lock", "a+")  # noqa: SIM115 -- held open for the study's whole run
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "?"
            handle.close()
            raise TransferscaleError(
                f"another `transferscale run` (pid {owner}) is working on {self.dir}; wait for it to finish or "
                "stop it, then run again (finished work is kept)"
            ) from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        return handle

    def _left_failed(self, store: Store, jobs: list[Job]) -> dict[str, str]:
        """The runs of the plan that failed before and are not run this time: name -> the failure's first line."""
        status, running = store.run_status(), {job.run.key for job in jobs}
        failed = [run for run in self.plan.runs if status.get(run.key) == "failed" and run.key not in running]
        if not failed:
            return {}
        errors = store.runs_frame().set_index("key")["error"].to_dict()
        return {run.name: (errors.get(run.key) or "").split("\n")[0] for run in failed}

    def _commit(self, store: Store, job: Job, result: JobResult) -> None:
        stale = {(e.task, metric) for e in result.evaluations
                 for metric in self.plan.protocols[e.protocol].stale_metrics()}
        store.commit_run(result.run_key, result.rows, list(result.evaluations), stale=sorted(stale),
                         params=result.params, train_seconds=result.train_seconds,
                         eval_seconds=result.eval_seconds)

    def run(self) -> StudyResult:
        """Run what the study still owes (see the module docstring); raises TransferscaleError for a study
        that cannot run here, including a file it cannot write."""
        if self.dir.exists() and not self.dir.is_dir():
            raise TransferscaleError(f"the study directory {self.dir} is a file; choose another output directory "
                                     "(--out, or the spec's output_dir), or move the file")
        try:
            return self._run()
        except OSError as err:
            raise TransferscaleError(write_problem(err)) from None

    def _run(self) -> StudyResult:
        t_start = time.perf_counter()
        result = StudyResult(self.dir)
        with self._lock(), Store(self.dir) as store:
            jobs = self.pending(store)
            result.skipped = len(self.plan.runs) - len(jobs)
            result.left_failed = self._left_failed(store, jobs)
            work = {job.run.key: self.plan.work(job.run, list(job.evaluations)) for job in jobs}
            ctx = None
            if jobs:  # the protocols' look at the data comes first: a spec they refuse leaves the study as it was
                ctx = JobContext(self.spec, self.dir, self.cache_dir, progress=self.progress, plan=self.plan)
                self.check(ctx)
            store.set_meta(name=self.spec.name, spec=self.spec_text, spec_json=self.spec.model_dump_json())
            if "created" not in store.meta():
                store.set_meta(created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
            self.progress.start(self.plan, [job.run for job in jobs], sum(work.values()))
            if jobs:
                run_versions = {**versions(), "device": self.spec.executor.device,
                                "precision": self.spec.executor.precision}
                executor = EXECUTORS.get(self.executor_options.kind).from_spec(self.executor_options)
                started: dict[str, float] = {}
                finished: set[str] = set()

                def counts() -> None:
                    self.progress.jobs(len(finished), len(started) - len(finished), len(jobs) - len(started))

                def on_start(job: Job) -> None:
                    if job.run.key in started:  # a job's start is recorded once
                        return
                    store.mark_running(job.run, run_versions)
                    self.progress.start_run(job.run, len(started), len(jobs))
                    started[job.run.key] = time.perf_counter()
                    counts()

                counts()
                try:
                    for job, outcome in executor.run(jobs, ctx, on_start):
                        if job.run.key in finished:  # the same result handed back twice is committed once
                            continue
                        on_start(job)  # a no-op unless the executor skipped it: the run row must exist
                        finished.add(job.run.key)
                        seconds = time.perf_counter() - started[job.run.key]
                        if isinstance(outcome, JobFailure):
                            store.mark_failed(job.run.key, outcome.reason + "\n" + outcome.detail,
                                              [e.key for e in job.evaluations])
                            result.failed[job.run.name] = outcome.reason
                            self.progress.end_run(job.run, "failed", seconds, outcome.reason)
                        else:
                            self._commit(store, job, outcome)
                            result.done.append(job.run.name)
                            result.notes += outcome.notes
                            self.progress.end_run(job.run, "done", seconds)
                        self.progress.advance(work[job.run.key])
                        counts()
                finally:
                    executor.close()
        self.progress.finish()
        result.seconds = time.perf_counter() - t_start
        return result


def executor_options(given: ExecutorSpec, kind: str | None = None, address: str | None = None) -> ExecutorSpec:
    """The spec's [executor] table with the command line's `--executor` and `--address` over it; an unknown
    executor fails with a did-you-mean."""
    if kind is not None and kind not in EXECUTORS:
        EXECUTORS.get(kind)  # raises, naming the closest registered executors
    update = {k: v for k, v in (("kind", kind), ("address", address)) if v is not None}
    if not update:
        return given
    from pydantic import ValidationError

    try:
        return ExecutorSpec.model_validate({**given.model_dump(), **update})
    except ValidationError as err:
        raise TransferscaleError("; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())) from None


def run_study(spec: StudySpec, spec_text: str, study_dir: Path | None = None, **kwargs) -> StudyResult:
    """Run (or resume) a study; returns which runs finished and which failed."""
    return StudyRunner(spec, spec_text, Path(study_dir) if study_dir else spec.study_dir(), **kwargs).run()
