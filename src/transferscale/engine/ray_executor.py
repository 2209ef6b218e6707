"""The `ray` executor: a study's jobs as Ray tasks, on this machine or on a cluster.

    transferscale run study.toml --executor ray                  # a Ray instance started here, one slot a core
    transferscale run study.toml --executor ray --address auto   # join the cluster this machine belongs to

or, in the spec, `executor = "ray"` or a table giving what each job asks for:

    [executor]
    kind = "ray"
    num_cpus = 1        # CPUs per job, and the torch / BLAS threads it runs with (default 1)
    num_gpus = 0        # GPUs per job
    memory = "4GiB"     # memory Ray reserves per job (bytes, or a size with a unit)
    max_retries = 2     # how often a job whose worker process died (killed, out of memory) is run again
    address = "auto"    # a cluster to join ("auto", "HOST:PORT", "ray://HOST:PORT"); none: start Ray here

Each job is one Ray task asking for those resources, the costliest jobs submitted first; the task says when
it starts (the runner marks the run as running then, not when it was queued). The process running
`transferscale run` (the driver) stays the only writer of the results store, committing each job's rows in one
transaction as its task returns, in whatever order tasks finish. A job that raises one of the recorded errors
(a diverged loss, a bad input) is caught in the worker and comes back as a failure, recorded like under the
local executor; Ray retries a task only when its worker process dies (after `max_retries` more deaths the run
is recorded as failed). A killed driver (Ctrl-C, kill -9) takes its tasks with it; `transferscale run` again
resumes, finished runs kept, a run that was training resuming from its checkpoint.

Workers write checkpoints and the feature cache into the study directory, and read the spec's files (a
`file:` checkpoint, an image folder) by the paths the spec gives: on a multi-node cluster the study
directory, and those files, must be on a filesystem every node mounts at the same path (NFS, a cluster
filesystem), with transferscale installed in the same environment on every node. Before the first job, one
tiny task per node writes a file in the study directory, and the driver checks it sees it; when a node cannot,
the study stops with an error saying so, before any work.

Rows are the local executor's exactly when the jobs run with the same number of threads: give `num_cpus` in
the [executor] table and `--executor local` pins each job to that many threads too.
"""
from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transferscale.engine.context import JobContext
from transferscale.engine.executors import Executor, failure, pinned_threads, recorded_errors
from transferscale.engine.job import Job, JobFailure, JobResult, execute_job
from transferscale.errors import TransferscaleError

if TYPE_CHECKING:
    from transferscale.spec import ExecutorSpec

INSTALL = 'pip install -e ".[ray]"'
PROBE_TIMEOUT_S = 300.0  # a fresh cluster may pull runtime environments before its first task
WAIT_S = 1.0  # the driver waits on its tasks at most this long at a time, so Ctrl-C gets through


class RayNotInstalled(TransferscaleError, ImportError):
    """The `ray` executor was asked for, and Ray cannot be imported."""


def import_ray():
    try:
        import ray
    except ImportError as err:
        raise RayNotInstalled(
            f"the ray executor needs Ray, which is not installed here ({err}); install it with `{INSTALL}` "
            "from the transferscale checkout (or `pip install 'ray>=2.9'`), or run with `--executor local`"
        ) from err
    return ray


def worker_env(threads: int) -> dict[str, Any]:
    """The runtime environment of every task: thread counts and passive OpenMP waiting, set before torch
    loads in the worker (a spinning OpenMP thread steals the core another worker computes on)."""
    n = str(threads)
    return {"env_vars": {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n,
                         "OPENBLAS_NUM_THREADS": n}}


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail at once when HOST:PORT (or ray://HOST:PORT) does not answer, where Ray would retry for minutes."""
    if address in ("auto", "local"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # a form Ray resolves itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        raise TransferscaleError(f"no Ray cluster answers at {address!r} ({err}); is it up (`ray status` on its "
                                 "head node), and is the port open from here?") from None


def machine_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# ---- what runs in the workers ------------------------------------------------------------------------------

_CONTEXTS: dict[str, JobContext] = {}  # the study's context, per worker process: datasets loaded once
STARTED = "started"  # a task's first item: its job is running


def run_job(job: Job, boxed_ctx: list, token: str, threads: int) -> Iterator[str | JobResult | JobFailure]:
    """One job in a worker, as a Ray streaming generator: first STARTED (so the driver calls on_start when the
    job runs, not when it is queued; a retry's STARTED is not delivered again), then its rows or its recorded
    failure. Anything else raises, and stops the study."""
    yield STARTED
    ctx = _CONTEXTS.get(token)
    if ctx is None:
        import ray

        ctx = ray.get(boxed_ctx[0])  # boxed, so Ray hands the reference over and we fetch it only once
        _CONTEXTS.clear()
        _CONTEXTS[token] = ctx
    try:
        with pinned_threads(threads):
            outcome = execute_job(job, ctx)
    except recorded_errors() as err:
        outcome = failure(job, err)
    yield outcome


def probe_study_dir(study_dir: str, name: str, text: str) -> str:
    """Make the study's subdirectories and write `text` to study_dir/name; '' when that worked, else why not."""
    try:
        root = Path(study_dir)
        for sub in ("checkpoints", "features"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
        return ""
    except OSError as err:
        return f"{type(err).__name__}: {err}"


# ---- the driver --------------------------------------------------------------------------------------------


class RayExecutor(Executor):
    """Jobs as Ray tasks; see the module docstring."""

    name = "ray"

    def __init__(self, *, num_cpus: float = 1, num_gpus: float = 0, memory: int | None = None, max_retries: int = 2,
                 address: str | None = None, threads: int | None = None):
        self.num_cpus, self.num_gpus, self.memory = num_cpus, num_gpus, memory
        self.max_retries, self.address = max_retries, address
        self.threads = threads or max(1, int(num_cpus))
        self._ray = None
        self._owned = False  # whether this executor started (or connected) Ray, so it shuts it down
        self._pending: dict[Any, Job] = {}  # each job's task (a streaming generator), until its outcome is read

    @classmethod
    def check(cls, options: ExecutorSpec) -> None:
        import_ray()

    @classmethod
    def from_spec(cls, options: ExecutorSpec) -> Executor:
        return cls(num_cpus=options.num_cpus or 1, num_gpus=options.num_gpus, memory=options.memory,
                   max_retries=options.max_retries, address=options.address, threads=options.threads())

    def demand(self) -> dict[str, float]:
        """What one job asks of a node, in Ray's resource names."""
        need = {"CPU": float(self.num_cpus)}
        if self.num_gpus:
            need["GPU"] = float(self.num_gpus)
        if self.memory:
            need["memory"] = float(self.memory)
        return need

    def connect(self):
        """Ray, initialised: as this process already has it, joined at `address`, or started here."""
        ray = import_ray()
        if ray.is_initialized():  # a notebook, a test or a benchmark set it up: use it and leave it running
            self._ray, self._owned = ray, False
            return ray
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports sent anywhere
        quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
        try:
            if self.address:
                check_reachable(self.address)
                ray.init(address=self.address, **quiet)
            else:
                # "local": a new instance, even when this machine belongs to a cluster (RAY_ADDRESS, `ray start`)
                ray.init(address="local", num_cpus=machine_cores(), include_dashboard=False, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as err:
            where = f"the Ray cluster at {self.address!r}" if self.address else "a local Ray instance"
            raise TransferscaleError(f"could not start or join {where}: {err}") from None
        self._ray, self._owned = ray, True
        return ray

    def _nodes(self, ray, ctx: JobContext) -> list[dict]:
        """The alive nodes a job fits on; fails when none does (unless an autoscaler may add one)."""
        alive = [n for n in ray.nodes() if n.get("Alive")]
        need = self.demand()
        fit = [n for n in alive if all(n.get("Resources", {}).get(k, 0) >= v for k, v in need.items())]
        if fit:
            return fit
        sizes = "; ".join(f"{n.get('NodeManagerAddress')}: " + ", ".join(
            f"{k}={v:g}" for k, v in sorted(n.get("Resources", {}).items()) if k in ("CPU", "GPU", "memory"))
            for n in alive) or "no node alive"
        wanted = ", ".join(f"{k}={v:g}" for k, v in need.items())
        if self._owned and not self.address:
            raise TransferscaleError(f"no Ray node can run a job asking for {wanted} (nodes: {sizes}); lower "
                                     "num_cpus, num_gpus or memory in the [executor] table")
        ctx.progress.note(f"no Ray node can run a job asking for {wanted} yet ({sizes}); the jobs wait for the "
                          "cluster to add one")
        return alive

    def _check_study_dir(self, ray, nodes: list[dict], study_dir: Path) -> None:
        """From one worker on each node, write a file in the study directory; the driver must see each one."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        probe = ray.remote(probe_study_dir)
        token = uuid.uuid4().hex[:12]
        asked = []
        for i, node in enumerate(nodes):
            name, text = f".ray-probe-{token}-{i}", f"{node['NodeID']} {time.time()}"
            strategy = NodeAffinitySchedulingStrategy(node_id=node["NodeID"], soft=False)
            ref = probe.options(num_cpus=0, max_retries=0, scheduling_strategy=strategy,
                                runtime_env=worker_env(self.threads)).remote(str(study_dir), name, text)
            asked.append((node.get("NodeManagerAddress", node["NodeID"]), name, text, ref))
        try:
            answers = ray.get([ref for *_, ref in asked], timeout=PROBE_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            raise TransferscaleError(f"Ray workers did not answer within {PROBE_TIMEOUT_S:.0f} s; is the cluster "
                                     "up, and can its nodes start workers?") from None
        except ray.exceptions.RayError as err:
            first = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            raise TransferscaleError(
                f"a Ray worker could not run a transferscale task ({first}); every node needs transferscale "
                f"installed in the same Python environment (`{INSTALL}`)") from None
        problems = []
        for (where, name, text, _), answer in zip(asked, answers):
            path = study_dir / name
            try:
                seen = path.read_text() if path.is_file() else None
                path.unlink(missing_ok=True)
            except OSError:
                seen = None
            if answer:
                problems.append(f"on node {where}: {answer}")
            elif seen != text:
                problems.append(f"node {where} wrote {path}, but this machine does not see it there")
        if problems:
            raise TransferscaleError(
                f"Ray workers cannot write to the study directory {study_dir} ({'; '.join(problems)}); the "
                "workers write checkpoints and the feature cache there, so on a multi-node cluster it must be a "
                "shared filesystem mounted at the same path on every node (or use --out to choose one)")

    def run(self, jobs: list[Job], ctx: JobContext,
            on_start: Callable[[Job], None]) -> Iterator[tuple[Job, JobResult | JobFailure]]:
        ray = self.connect()
        study_dir = ctx.dir.resolve()
        self._check_study_dir(ray, self._nodes(ray, ctx), study_dir)
        remote_ctx = JobContext(ctx.spec, study_dir, ctx.cache_dir.resolve())
        boxed_ctx = [ray.put(remote_ctx)]
        token = uuid.uuid4().hex
        task = ray.remote(run_job)
        options = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus, "max_retries": self.max_retries,
                   "retry_exceptions": False, "num_returns": "streaming", "runtime_env": worker_env(self.threads)}
        if self.memory:
            options["memory"] = self.memory
        # the costliest first (the plan's estimate), so the last jobs to finish are short and no worker idles long
        for job in sorted(jobs, key=lambda j: -ctx.plan.work(j.run, list(j.evaluations))):
            self._pending[task.options(name=job.run.name, **options).remote(job, boxed_ctx, token, self.threads)] = job
        started: set[str] = set()

        def start(job: Job) -> None:
            if job.run.key not in started:
                started.add(job.run.key)
                on_start(job)

        crashes = (ray.exceptions.WorkerCrashedError, ray.exceptions.OutOfMemoryError, ray.exceptions.NodeDiedError,
                   ray.exceptions.LocalRayletDiedError)
        while self._pending:
            if not ray.wait(list(self._pending), num_returns=1, timeout=WAIT_S)[0]:
                continue
            for gen in ray.wait(list(self._pending), num_returns=len(self._pending), timeout=0)[0]:
                job = self._pending[gen]
                try:
                    outcome = ray.get(next(gen))
                    if isinstance(outcome, str):  # STARTED
                        start(job)
                        continue
                except StopIteration:  # cannot happen: the task yields its outcome or raises
                    outcome = JobFailure(job.run.key, "the Ray task ended without an outcome", "")
                except crashes as err:
                    outcome = JobFailure(
                        job.run.key, f"{type(err).__name__}: the Ray worker running this job died "
                        f"{self.max_retries + 1} time(s) (killed, out of memory or crashed); see the worker logs",
                        str(err)[-2000:])
                except ray.exceptions.RayTaskError as err:
                    cause = getattr(err, "cause", None)
                    if isinstance(cause, KeyboardInterrupt):
                        raise KeyboardInterrupt from None
                    if isinstance(cause, TransferscaleError):  # the user's to fix: its message, not Ray's traceback
                        raise TransferscaleError(str(cause)) from None
                    if isinstance(cause, OSError):
                        # a full disk, a read-only directory: the worker's own error, errno and file name intact,
                        # for the runner to word as under the local executor (Ray's wrapper, an OSError too, would
                        # be worded from its text: the worker's traceback)
                        raise cause from None
                    raise
                del self._pending[gen]
                start(job)  # normally a no-op: the job said it started
                yield job, outcome

    def close(self) -> None:
        ray = self._ray
        if ray is None:
            return
        for ref in list(self._pending):  # an interrupted study: stop what is queued or running
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 -- already finished, or the cluster is gone
                pass
        self._pending.clear()
        if self._owned:
            ray.shutdown()
        self._ray = None
