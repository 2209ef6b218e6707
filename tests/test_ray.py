"""The ray executor: the tiny study on two Ray workers gives the local executor's rows; a job that raises in a
worker is recorded as failed; a worker killed mid-job is retried; a driver killed with kill -9 resumes with its
finished runs kept; an unwritable study directory, a disk that fills up under a worker and a missing Ray fail
clearly; the [executor] table is validated.

Ray starts once for the module (two CPUs, so two workers) and is shut down after it. Its workers run this
file's `register_toys` as their setup hook, so a toy dataset the tests register here exists in them too.
"""
import errno
import importlib.util
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from transferscale.cli import app
from transferscale.data import Dataset, register_dataset
from transferscale.data.registry import DATASETS
from transferscale.engine.runner import Progress, StudyRunner, run_study
from transferscale.errors import TransferscaleError
from transferscale.files import write_problem
from transferscale.spec import load_spec, parse_spec
from transferscale.store import Store, read_results

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason='ray is not installed (pip install -e ".[ray]")')
IN_WORKER = "TRANSFERSCALE_TEST_RAY_WORKER"  # set in the module's Ray workers only
RAY_TABLE = '\n[executor]\nkind = "ray"\nnum_cpus = 1\n'
NAMES = ["pixels", "resnet-s-d0.5-s30", "resnet-s-random", "vit-s-d0.5-s30", "vit-s-random"]


def kill_once(marker: str = "", seed: int = 0) -> Dataset:
    """Grey 28x28 blobs at a class's position. In a Ray worker, the first load of all creates `marker` and
    kills its own process (kill -9); every later load appends its pid to the marker and goes on."""
    if marker and os.environ.get(IN_WORKER) == "1":
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            with open(marker, "a") as f:
                f.write(f"{os.getpid()}\n")
        else:
            os.write(fd, f"{os.getpid()}\n".encode())
            os.fsync(fd)
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)
    return _blobs("kill_once", seed)


def disk_full(path: str = "", seed: int = 0) -> Dataset:
    """kill_once's blobs; in a Ray worker, loading them fails with the OSError a full disk gives on `path`."""
    if path and os.environ.get(IN_WORKER) == "1":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
    return _blobs("disk_full", seed)


def _blobs(name: str, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)

    def split(per_class):
        y = np.repeat(np.arange(3), per_class)
        x = rng.integers(0, 60, size=(len(y), 28, 28)).astype(np.uint8)
        for i, c in enumerate(y):
            x[i, 6 * c + 2:6 * c + 10, 6 * c + 2:6 * c + 10] += 150
        return x, y.astype(np.int64)

    (x_tr, y_tr), (x_te, y_te) = split(20), split(20)
    return Dataset(name, x_tr, y_tr, x_te, y_te, ["a", "b", "c"])


TOYS = {"kill_once": kill_once, "disk_full": disk_full}


def register_toys() -> None:
    """The toy datasets, registered in this process (the test's) or a Ray worker's (its setup hook)."""
    for name, builder in TOYS.items():
        if name not in DATASETS:
            register_dataset(name, cache=False)(builder)


@pytest.fixture(scope="module")
def ray_two_workers():
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    path = os.pathsep.join(p for p in (str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")) if p)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             runtime_env={"worker_process_setup_hook": f"{Path(__file__).stem}.register_toys",
                          "env_vars": {"PYTHONPATH": path, IN_WORKER: "1"}})
    register_toys()
    yield ray
    for name in TOYS:
        DATASETS.unregister(name)
    ray.shutdown()


def _table(out):
    cols = ["name", "metric", "task", "shots", "seed", "layer", "l2", "value"]
    return read_results(out)[cols].sort_values(cols[:7]).reset_index(drop=True)


class _Counts(Progress):
    """Records the (done, running, left) counts the runner reports, and each run's start and end."""

    def __init__(self):
        self.counts, self.events = [], []

    def jobs(self, done, running, left):
        self.counts.append((done, running, left))

    def start_run(self, run, index, count):
        self.events.append(("start", run.name))

    def end_run(self, run, status, seconds, note=""):
        self.events.append((status, run.name))


# ---- without Ray running ------------------------------------------------------------------------------------


def test_the_executor_table_is_validated(tiny_spec):
    path, out = tiny_spec()
    base = path.read_text()
    spec = parse_spec(base + RAY_TABLE.replace("num_cpus = 1", 'num_cpus = 2\nnum_gpus = 0.5\nmemory = "2GiB"\n'
                                                                    "max_retries = 3"))
    ex = spec.executor
    assert (ex.kind, ex.num_cpus, ex.num_gpus, ex.memory, ex.max_retries) == ("ray", 2, 0.5, 2 * 2**30, 3)
    assert ex.threads() == 2
    assert parse_spec('executor = "ray"\n' + base).executor.kind == "ray"  # the short form, as before
    assert parse_spec(base).executor.kind == "local" and parse_spec(base).executor.threads() is None
    with pytest.raises(TransferscaleError, match=r"executor: unknown executor 'rey'; did you mean 'ray'\?"):
        parse_spec(base + RAY_TABLE.replace('"ray"', '"rey"'))
    with pytest.raises(TransferscaleError, match=r"unknown executor 'rey'.*did you mean 'ray'"):
        parse_spec('executor = "rey"\n' + base)
    with pytest.raises(TransferscaleError, match=r"executor\.num_cpus: Input should be greater than 0 \(got -1\)"):
        parse_spec(base + RAY_TABLE.replace("num_cpus = 1", "num_cpus = -1"))
    with pytest.raises(TransferscaleError, match=r"executor\.max_retries: .*greater than or equal to 0"):
        parse_spec(base + RAY_TABLE + "max_retries = -2\n")
    with pytest.raises(TransferscaleError, match=r"executor\.memory: .*'lots'"):
        parse_spec(base + RAY_TABLE + 'memory = "lots"\n')
    with pytest.raises(TransferscaleError, match=r"unknown key 'executor\.num_cpu'.*did you mean 'num_cpus'"):
        parse_spec(base + RAY_TABLE.replace("num_cpus", "num_cpu"))
    spec, text = load_spec(path)
    with pytest.raises(TransferscaleError, match=r"unknown executor 'rey'.*did you mean 'ray'"):
        StudyRunner(spec, text, out, executor="rey")  # the command line's --executor, checked the same way


def test_missing_ray_names_the_install_command(tiny_spec, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    path, out = tiny_spec()
    spec, text = load_spec(path)
    with pytest.raises(TransferscaleError, match=re.escape('pip install -e ".[ray]"')) as info:
        StudyRunner(spec, text, out, executor="ray")
    assert isinstance(info.value, ImportError)
    assert not out.exists()  # it failed before any work


# ---- on two Ray workers --------------------------------------------------------------------------------------


@needs_ray
@pytest.mark.slow
def test_two_ray_workers_give_the_local_rows(tiny_spec, ray_two_workers):
    path, out = tiny_spec("on_ray")
    path.write_text(path.read_text() + RAY_TABLE)
    spec, text = load_spec(path)
    progress = _Counts()
    on_ray = run_study(spec, text, out, progress=progress)  # the spec's executor: ray
    assert on_ray.failed == {} and sorted(on_ray.done) == NAMES
    # the counts add up, no more than the two workers run at once, and every run starts before it ends
    assert all(d + r + left == 5 for d, r, left in progress.counts) and progress.counts[-1] == (5, 0, 0)
    assert max(r for _, r, _ in progress.counts) <= 2
    for name in NAMES:
        assert progress.events.index(("start", name)) < progress.events.index(("done", name))
    # the same spec under the local executor (pinned to num_cpus = 1 thread, as each Ray job is)
    local_out = out.parent / "local"
    local = run_study(spec, text, local_out, executor="local")
    assert sorted(local.done) == NAMES
    pd.testing.assert_frame_equal(_table(out), _table(local_out), check_exact=True)
    again = run_study(spec, text, out)
    assert again.done == [] and again.skipped == 5


@needs_ray
@pytest.mark.slow
def test_a_job_that_raises_in_a_worker_is_recorded_as_failed(tiny_spec, ray_two_workers):
    path, out = tiny_spec("diverged")
    # a learning rate this large makes the ViT's loss diverge: pretrain raises RunFailed in the worker
    path.write_text(path.read_text().replace('sizes = ["s"]\n[training]', 'sizes = ["s"]\nlr = 1e30\n[training]'))
    spec, text = load_spec(path)
    result = run_study(spec, text, out, executor="ray")
    name = "vit-s-d0.5-s30-lr1e+30"
    assert list(result.failed) == [name] and result.failed[name].startswith("RunFailed: loss diverged")
    assert len(result.done) == 4
    with Store(out) as store:
        runs = store.runs_frame().set_index("name")
    assert runs.loc[name, "status"] == "failed" and "diverged" in runs.loc[name, "error"]
    assert (runs.drop(index=name).status == "done").all()


@needs_ray
@pytest.mark.slow
def test_a_killed_worker_is_retried_and_every_row_lands_once(tiny_spec, tmp_path, ray_two_workers):
    marker = tmp_path / "killed-once"
    path, out = tiny_spec("killed")
    text = path.read_text().replace('"sklearn_digits_shifted"]', '"sklearn_digits_shifted", "kill_once"]')
    text = text.replace("[downstream.options]\n", f'[downstream.options]\nkill_once = {{ marker = "{marker}" }}\n')
    path.write_text(text)
    spec, text = load_spec(path)
    result = run_study(spec, text, out, executor="ray")
    assert result.failed == {} and sorted(result.done) == NAMES
    pids = marker.read_text().split()
    assert len(pids) >= 2 and pids[0] not in pids[1:]  # the first loader died; its job ran again elsewhere
    df = read_results(out)
    keys = ["run", "metric", "task", "shots", "seed", "layer", "l2"]
    assert not df.duplicated(keys).any()
    # every run probed the toy task as fully as the others: nothing missing
    few = df[df.metric == "fewshot_accuracy"]
    per_task = few.groupby(["name", "task"]).size().unstack()
    assert (per_task["kill_once"] == per_task["fractals_heldout"]).all() and len(per_task) == 5
    with Store(out) as store:
        assert set(store.run_status().values()) == {"done"}


@needs_ray
@pytest.mark.slow
def test_a_job_whose_worker_dies_past_max_retries_is_recorded_as_failed(tiny_spec, tmp_path, ray_two_workers):
    marker = tmp_path / "killed-once"
    path, out = tiny_spec("no_retries")
    text = path.read_text().replace('"sklearn_digits_shifted"]', '"sklearn_digits_shifted", "kill_once"]')
    text = text.replace("[downstream.options]\n", f'[downstream.options]\nkill_once = {{ marker = "{marker}" }}\n')
    path.write_text(text + RAY_TABLE + "max_retries = 0\n")
    spec, text = load_spec(path)
    result = run_study(spec, text, out)
    assert len(result.failed) == 1 and len(result.done) == 4  # the job whose worker died, and no other
    (reason,) = result.failed.values()
    assert reason.startswith("WorkerCrashedError") and "died 1 time(s)" in reason


@needs_ray
@pytest.mark.slow
def test_a_study_dir_workers_cannot_write_fails_before_any_work(tiny_spec, ray_two_workers):
    path, out = tiny_spec("blocked")
    out.mkdir(parents=True)
    (out / "checkpoints").write_text("a file where the checkpoints directory should be")
    spec, text = load_spec(path)
    with pytest.raises(TransferscaleError, match=r"Ray workers cannot write to the study directory .*blocked.*"
                                                 r"shared filesystem"):
        run_study(spec, text, out, executor="ray")
    with Store(out) as store:
        assert store.run_status() == {}  # no job started


@needs_ray
@pytest.mark.slow
def test_a_full_disk_under_a_worker_is_the_local_executors_one_line_message(tiny_spec, tmp_path, ray_two_workers):
    """An OSError raised in a Ray worker stops the study with the message the local executor gives for it (from
    the runner's write_problem), not Ray's traceback of the worker."""
    target = tmp_path / "full" / "features.npz"
    path, out = tiny_spec("disk_full")
    text = path.read_text().replace('"sklearn_digits_shifted"]', '"sklearn_digits_shifted", "disk_full"]')
    text = text.replace("[downstream.options]\n", f'[downstream.options]\ndisk_full = {{ path = "{target}" }}\n')
    path.write_text(text)
    result = CliRunner().invoke(app, ["run", str(path), "--executor", "ray"], terminal_width=400)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    said = " ".join(result.output.split())
    want = write_problem(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target)))
    assert f"error: {want}" in said, said
    assert "Traceback" not in result.output and "RayTaskError" not in result.output and "pid=" not in said
    assert not list(out.rglob("*.tmp"))  # no half-written file left behind


@needs_ray
@pytest.mark.slow
def test_a_killed_driver_resumes_with_finished_runs_kept(tiny_spec):
    path, out = tiny_spec("driver_killed", steps=60)
    path.write_text(path.read_text() + RAY_TABLE)
    spec, text = load_spec(path)
    reference = out.parent / "reference"
    run_study(spec, text, reference, executor="local")  # one thread per job, as on Ray
    cli = [sys.executable, "-m", "transferscale", "run", str(path)]  # starts its own Ray instance

    def finished():
        try:
            with sqlite3.connect(out / "results.sqlite") as conn:
                return dict(conn.execute("SELECT name, finished FROM runs WHERE status='done'").fetchall())
        except sqlite3.OperationalError:
            return {}

    proc = subprocess.Popen(cli, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not finished():
        assert proc.poll() is None, "the study finished before it could be killed"
        assert time.time() - t0 < 120
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = finished()
    assert 1 <= len(kept) < 5
    again = subprocess.run(cli, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert f"{len(kept)} already done" in again.stdout
    assert {name: finished()[name] for name in kept} == kept  # not run again
    pd.testing.assert_frame_equal(_table(out), _table(reference), check_exact=True)
