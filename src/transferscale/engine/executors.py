"""Executors: where jobs run. The runner hands an executor its jobs and commits what comes back.

An executor is an `Executor` subclass registered in `EXECUTORS`; the runner makes one with
`from_spec(options)` (the spec's `[executor]` table, an `ExecutorSpec`). `run(jobs, ctx, on_start)` yields
(job, JobResult | JobFailure) pairs as jobs finish, in any order, each job once; it calls `on_start(job)` in
the runner's process once per job, when the job starts (and before its outcome is yielded), so the runner can
record it as running. A job that raises one of `recorded_errors()` is yielded as a JobFailure (the study goes
on); anything else (KeyboardInterrupt, a bug) stops the study, leaving the store as the last commit left it.

`local` runs the jobs one after another in this process, sharing its loaded datasets and progress bars.
`ray` (engine/ray_executor.py, needs the `ray` extra) runs them as tasks on a Ray cluster.
"""
from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from transferscale.engine.context import JobContext
from transferscale.engine.job import Job, JobFailure, JobResult, execute_job
from transferscale.errors import TransferscaleError
from transferscale.registry import Registry

if TYPE_CHECKING:
    from transferscale.spec import ExecutorSpec


def recorded_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that fail one run, not the study: a diverged loss, a bad input, a user error."""
    from transferscale.pretrain import RunFailed

    return (RunFailed, RuntimeError, ValueError, FloatingPointError, TransferscaleError)


def failure(job: Job, err: BaseException) -> JobFailure:
    return JobFailure(job.run.key, f"{type(err).__name__}: {err}", traceback.format_exc(limit=3))


@contextmanager
def pinned_threads(threads: int | None) -> Iterator[None]:
    """Run the body with torch and the BLAS libraries limited to `threads` threads (None: leave them be).

    The thread count changes how reductions split, so the same job gives bit-identical rows only at the same
    count: every executor pins a job to the [executor] table's `num_cpus` when it gives one.
    """
    if threads is None:
        yield
        return
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(threads):
            yield
    finally:
        torch.set_num_threads(before)


class Executor:
    """Runs jobs somewhere; see the module docstring for the contract."""

    name = "executor"

    @classmethod
    def check(cls, options: ExecutorSpec) -> None:
        """Fail, before any work, when the executor cannot run here (a missing package, a bad option)."""

    @classmethod
    def from_spec(cls, options: ExecutorSpec) -> Executor:
        """The executor for a study whose [executor] table is `options`."""
        return cls()

    def run(self, jobs: list[Job], ctx: JobContext,
            on_start: Callable[[Job], None]) -> Iterator[tuple[Job, JobResult | JobFailure]]:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the executor holds (workers, a cluster connection)."""


class LocalExecutor(Executor):
    """One job at a time, in this process; with `threads`, torch and BLAS are pinned to that many for each."""

    name = "local"

    def __init__(self, threads: int | None = None):
        self.threads = threads

    @classmethod
    def from_spec(cls, options: ExecutorSpec) -> Executor:
        return cls(threads=options.threads())

    def run(self, jobs, ctx, on_start):
        errors = recorded_errors()
        for job in jobs:
            on_start(job)
            try:
                with pinned_threads(self.threads):
                    outcome = execute_job(job, ctx)
            except errors as err:
                outcome = failure(job, err)
            yield job, outcome


EXECUTORS: Registry[type[Executor]] = Registry("executor", Executor)
EXECUTORS.register("local", LocalExecutor)
EXECUTORS.register_lazy("ray", "transferscale.engine.ray_executor:RayExecutor")
