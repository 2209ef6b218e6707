"""Executors: where jobs run. The runner hands an executor its jobs and commits what comes back.

An executor is an `Executor` subclass registered in `EXECUTORS`. `run(jobs, ctx, on_start)` yields
(job, JobResult | JobFailure) pairs as jobs finish, in any order; it calls `on_start(job)` in the runner's
process just before a job starts, so the runner can record it as running. A job that raises one of
`RECORDED` is yielded as a JobFailure (the study goes on); anything else (KeyboardInterrupt, a bug) stops
the study, leaving the store as the last commit left it.

`local` runs the jobs one after another in this process, sharing its loaded datasets and progress bars.
"""
from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator

from transferscale.engine.context import JobContext
from transferscale.engine.job import Job, JobFailure, JobResult, execute_job
from transferscale.errors import TransferscaleError
from transferscale.registry import Registry


def recorded_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that fail one run, not the study: a diverged loss, a bad input, a user error."""
    from transferscale.pretrain import RunFailed

    return (RunFailed, RuntimeError, ValueError, FloatingPointError, TransferscaleError)


def failure(job: Job, err: BaseException) -> JobFailure:
    return JobFailure(job.run.key, f"{type(err).__name__}: {err}", traceback.format_exc(limit=3))


class Executor:
    """Runs jobs somewhere; see the module docstring for the contract."""

    name = "executor"

    def run(self, jobs: list[Job], ctx: JobContext,
            on_start: Callable[[Job], None]) -> Iterator[tuple[Job, JobResult | JobFailure]]:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the executor holds (workers, a cluster connection)."""


class LocalExecutor(Executor):
    """One job at a time, in this process."""

    name = "local"

    def run(self, jobs, ctx, on_start):
        errors = recorded_errors()
        for job in jobs:
            on_start(job)
            try:
                outcome = execute_job(job, ctx)
            except errors as err:
                outcome = failure(job, err)
            yield job, outcome


EXECUTORS: Registry[type[Executor]] = Registry("executor", Executor)
EXECUTORS.register("local", LocalExecutor)
