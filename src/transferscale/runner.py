"""Execute a plan locally: for each run not yet done, train (or build the baseline), measure, commit.

A run is done when its row says so and every (task, probe) evaluation it owes is recorded. Everything a run
measures is committed in one transaction at its end; a study interrupted at any moment resumes from the
store (finished runs) and the run's checkpoint (a run that was mid-training). A run that raises is recorded as
failed with its reason and the study goes on; Ctrl-C stops the study and leaves the run marked 'running',
which `status` shows as interrupted and the next `run` finishes.
"""
from __future__ import annotations

import os
import platform
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from transferscale.errors import TransferscaleError
from transferscale.plan import Plan, Run, Task, make_plan
from transferscale.spec import StudySpec
from transferscale.store import Measurement, Store

EVAL_COST = 60  # a run's evaluation, in training-step equivalents, for the progress bar's time estimate


def default_cache_dir() -> Path:
    return Path(os.environ.get("TRANSFERSCALE_CACHE", Path.home() / ".cache" / "transferscale"))


def versions() -> dict:
    import numpy
    import timm
    import torch

    import transferscale

    return {"transferscale": transferscale.__version__, "torch": torch.__version__, "timm": timm.__version__,
            "numpy": numpy.__version__, "python": platform.python_version()}


class Progress:
    """What the runner reports; the CLI draws it with rich, tests stay silent."""

    def start(self, plan: Plan, todo: list[Run], total_work: int) -> None: ...
    def start_run(self, run: Run, index: int, count: int) -> None: ...
    def train_step(self, step: int, steps: int, loss: float) -> None: ...
    def phase(self, text: str) -> None: ...
    def advance(self, work: int) -> None: ...
    def end_run(self, run: Run, status: str, seconds: float, note: str = "") -> None: ...
    def finish(self) -> None: ...


@dataclass
class StudyResult:
    study_dir: Path
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: int = 0
    seconds: float = 0.0


def _work(plan: Plan, run: Run) -> int:
    """A run's cost in training-step equivalents, for the progress bar's estimate of the time left."""
    train = run.config["training"]["steps"] if run.kind == "trained" else 0
    return train + EVAL_COST + len(plan.finetunes(run)) * plan.spec.finetune.steps


class StudyRunner:
    def __init__(self, spec: StudySpec, spec_text: str, study_dir: Path, *, progress: Progress | None = None,
                 cache_dir: Path | None = None, retry_failed: bool = False, checkpoint_every: int | None = None):
        self.spec, self.spec_text, self.dir = spec, spec_text, Path(study_dir)
        self.plan = make_plan(spec)
        self.progress = progress or Progress()
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.retry_failed = retry_failed
        self.checkpoint_every = checkpoint_every or spec.training.checkpoint_every
        self._data: dict[str, object] = {}
        self._ids: dict[str, str] = {}

    # ---- what is left ---------------------------------------------------------------------------------
    def pending(self, store: Store) -> list[Run]:
        status, done_evals = store.run_status(), store.done_evaluations()
        todo = []
        for run in self.plan.runs:
            if status.get(run.key) == "failed" and not self.retry_failed:
                continue
            owed = set(self.plan.evaluations(run).values())
            if status.get(run.key) != "done" or not owed <= done_evals:
                todo.append(run)
        return todo

    # ---- data -----------------------------------------------------------------------------------------
    def dataset(self, name: str, options: dict):
        from transferscale.data import load_dataset

        key = repr((name, sorted(options.items())))
        if key not in self._data:
            self.progress.phase(f"loading {name}")
            self._data[key] = load_dataset(name, cache_dir=str(self.cache_dir / "data"), **options)
        return self._data[key]

    def upstream(self):
        return self.dataset(self.spec.upstream.dataset, dict(self.spec.upstream.options))

    def check_shots(self) -> None:
        """Fail before any training if a task has a class with fewer train examples than the largest shot."""
        most = self.spec.probe.min_train_per_class()
        for task in self.plan.tasks:
            ds = self.dataset(task.name, task.options)
            labels, counts = np.unique(ds.y_train, return_counts=True)
            if counts.min() < most:
                c = labels[counts.argmin()]
                raise TransferscaleError(
                    f"task {task.name!r}: class {ds.classes[c]!r} has {counts.min()} training examples, fewer "
                    f"than the {most} the probe needs (largest shots, plus validation examples with select_l2); "
                    "lower the shots or raise "
                    f"downstream.options.{task.name}.train_per_class"
                )

    # ---- one run --------------------------------------------------------------------------------------
    def _model(self, run: Run):
        """The network a run measures: trained, randomly initialised, or None for raw pixels."""
        if run.kind == "pixels":
            return None, 0.0
        import torch

        from transferscale.models import build_model
        from transferscale.pretrain import recompute_batchnorm, train

        up = self.upstream()
        if run.kind == "random_init":
            torch.manual_seed(run.config["seed"])
            model = build_model(run.family, run.config["shape"], up.n_classes)
            recompute_batchnorm(model, up.x_train, seed=run.config["seed"])
            return model, 0.0
        t0 = time.perf_counter()
        self.progress.phase("training")
        result = train(run.config, up.x_train, up.y_train, up.n_classes, self.dir / "checkpoints" / f"{run.key}.pt",
                       checkpoint_every=self.checkpoint_every, on_step=self.progress.train_step)
        return result.model, time.perf_counter() - t0

    def _measure(self, run: Run, model, owed: list[str]) -> list[Measurement]:
        """Upstream accuracy, then every owed evaluation ('probe:TASK' or 'finetune:TASK')."""
        from transferscale.represent import accuracy

        rows = []
        if model is not None:
            self.progress.phase("upstream accuracy")
            up = self.upstream()
            rows.append(Measurement("upstream_accuracy", self.spec.upstream.dataset,
                                    accuracy(model, up.x_test, up.y_test)))
        tasks = {task.name: task for task in self.plan.tasks}
        for label in owed:
            kind, name = label.split(":", 1)
            if kind == "probe":
                rows += self._probe(run, model, tasks[name])
            else:
                rows += self._finetune(model, tasks[name])
        return rows

    def _finetune(self, model, task: Task) -> list[Measurement]:
        from transferscale.finetune import finetune

        ds = self.dataset(task.name, task.options)
        recipe = self.spec.finetune.recipe()
        self.progress.phase(f"fine-tuning on {task.name}")
        result = finetune(model, ds.x_train, ds.y_train, ds.x_test, ds.y_test, num_classes=ds.n_classes,
                          on_step=self.progress.train_step, **recipe)
        return [Measurement("finetune_accuracy", task.name, result.accuracy, seed=recipe["seed"])]

    def _identity(self, run: Run) -> str:
        """What a run's features depend on: the checkpoint's content for a trained run, else the run's config."""
        from transferscale.features import checkpoint_identity

        if run.kind != "trained":
            return f"{run.kind}:{run.key}"
        if run.key not in self._ids:
            self._ids[run.key] = checkpoint_identity(self.dir / "checkpoints" / f"{run.key}.pt")
        return self._ids[run.key]

    def _features(self, run: Run, model, task: Task, split: str, x: np.ndarray) -> dict[int, np.ndarray]:
        """Every layer's features of one split, from the study's feature cache or one forward pass."""
        from transferscale.features import FeatureCache, feature_key
        from transferscale.represent import extract_layers

        key = feature_key(self._identity(run), task.name, task.options, split)
        return FeatureCache(self.dir / "features").get_or_compute(key, lambda: extract_layers(model, x))

    def _probe(self, run: Run, model, task: Task) -> list[Measurement]:
        from transferscale.probe import fewshot_probe
        from transferscale.represent import layer_depth

        rows = []
        p = self.spec.probe
        ds = self.dataset(task.name, task.options)
        self.progress.phase(f"probing {task.name}")
        train_layers = self._features(run, model, task, "train", ds.x_train)
        test_layers = self._features(run, model, task, "test", ds.x_test)
        n_layers = len(train_layers) - 1
        if p.layers == "final":
            train_layers = {-1: train_layers[-1]}
        for layer, x_train in train_layers.items():
            # Small solves run far faster on one BLAS thread than on two fighting torch's (MEASURED.md).
            with threadpool_limits(1):
                table = fewshot_probe(x_train, ds.y_train, test_layers[layer], ds.y_test, shots=p.shots,
                                      seeds=p.seeds, l2=p.l2, method=p.method, select_l2=p.select_l2,
                                      val_per_class=p.val_per_class)
            if p.select_l2:  # the l2 chosen on validation is the one result; the others were only candidates
                table = table[table.selected]
            depth = layer_depth(layer, n_layers)
            rows += [Measurement("fewshot_accuracy", task.name, r.accuracy, shots=r.shots, seed=r.seed,
                                 layer=layer, l2=r.l2, depth=depth) for r in table.itertuples()]
        return rows

    def _one(self, store: Store, run: Run, done_evals: set[str]) -> None:
        from transferscale.models import num_params

        store.mark_running(run, self.versions)
        model, train_s = self._model(run)
        t0 = time.perf_counter()
        evaluations = self.plan.evaluations(run)
        if store.run_status().get(run.key) == "done":  # a finished run owes only what the spec added since
            evaluations = {label: key for label, key in evaluations.items() if key not in done_evals}
        rows = self._measure(run, model, list(evaluations))
        eval_keys = evaluations
        store.commit_run(run.key, rows, eval_keys, params=None if model is None else num_params(model),
                         train_seconds=train_s, eval_seconds=time.perf_counter() - t0)

    # ---- the study ------------------------------------------------------------------------------------
    def _lock(self):
        """Hold the study directory for this process; the OS releases it when the process ends, however."""
        import fcntl

        self.dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.dir / ".lock", "a+")
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

    def run(self) -> StudyResult:
        from transferscale.pretrain import RunFailed

        t_start = time.perf_counter()
        result = StudyResult(self.dir)
        with self._lock(), Store(self.dir) as store:
            store.set_meta(name=self.spec.name, spec=self.spec_text, spec_json=self.spec.model_dump_json())
            if "created" not in store.meta():
                store.set_meta(created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
            todo = self.pending(store)
            result.skipped = len(self.plan.runs) - len(todo)
            self.progress.start(self.plan, todo, sum(_work(self.plan, r) for r in todo))
            if todo:
                self.check_shots()
                self.versions = versions()
            for i, run in enumerate(todo):
                done_evals = store.done_evaluations()
                self.progress.start_run(run, i, len(todo))
                t0 = time.perf_counter()
                try:
                    self._one(store, run, done_evals)
                except (RunFailed, RuntimeError, ValueError, FloatingPointError, TransferscaleError) as err:
                    reason = f"{type(err).__name__}: {err}"
                    store.mark_failed(run.key, reason + "\n" + traceback.format_exc(limit=3))
                    result.failed[run.name] = reason
                    self.progress.end_run(run, "failed", time.perf_counter() - t0, reason)
                else:
                    result.done.append(run.name)
                    self.progress.end_run(run, "done", time.perf_counter() - t0)
                self.progress.advance(_work(self.plan, run))
        self.progress.finish()
        result.seconds = time.perf_counter() - t_start
        return result


def run_study(spec: StudySpec, spec_text: str, study_dir: Path | None = None, **kwargs) -> StudyResult:
    """Run (or resume) a study; returns which runs finished and which failed."""
    return StudyRunner(spec, spec_text, Path(study_dir) if study_dir else spec.study_dir(), **kwargs).run()
