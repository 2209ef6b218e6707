"""What a job needs besides its run: the study's plan, data, feature cache and a place to report progress.

A `JobContext` is built from plain, picklable values (spec, study directory, cache directory), so an executor
can make one in another process; the progress hooks are local and silent by default.
"""
from __future__ import annotations

import os
from pathlib import Path

from transferscale.plan import Plan, Run, Task, make_plan
from transferscale.spec import StudySpec


def default_cache_dir() -> Path:
    return Path(os.environ.get("TRANSFERSCALE_CACHE", Path.home() / ".cache" / "transferscale"))


class JobProgress:
    """What a job reports while it works; the CLI draws it, tests and remote workers stay silent."""

    def phase(self, text: str) -> None: ...
    def train_step(self, step: int, steps: int, loss: float) -> None: ...
    def note(self, text: str) -> None: ...


class JobContext:
    def __init__(self, spec: StudySpec, study_dir: str | Path, cache_dir: str | Path | None = None, *,
                 progress: JobProgress | None = None, plan: Plan | None = None):
        self.spec = spec
        self.dir = Path(study_dir)
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.plan = plan or make_plan(spec)
        self.progress = progress or JobProgress()
        self.notes: list[str] = []
        self._data: dict[str, object] = {}
        self._ids: dict[str, str] = {}

    def __getstate__(self):  # datasets and progress hooks stay behind; a worker loads its own
        return {"spec": self.spec, "dir": self.dir, "cache_dir": self.cache_dir}

    def __setstate__(self, state):
        self.__init__(state["spec"], state["dir"], state["cache_dir"])

    # ---- where tensors live ---------------------------------------------------------------------------
    @property
    def device(self):
        """The torch.device this process computes on (the spec's `[executor] device`, resolved here)."""
        if not hasattr(self, "_device"):
            from transferscale.device import resolve_device

            self._device = resolve_device(self.spec.executor.device)
        return self._device

    @property
    def precision(self) -> str:
        return self.spec.executor.precision

    # ---- progress -------------------------------------------------------------------------------------
    def phase(self, text: str) -> None:
        self.progress.phase(text)

    def train_step(self, step: int, steps: int, loss: float) -> None:
        self.progress.train_step(step, steps, loss)

    def note(self, text: str) -> None:
        self.notes.append(text)
        self.progress.note(text)

    # ---- data -----------------------------------------------------------------------------------------
    def load(self, name: str, options: dict):
        from transferscale.data import load_dataset

        key = repr((name, sorted(options.items())))
        if key not in self._data:
            self.phase(f"loading {name}")
            self._data[key] = load_dataset(name, cache_dir=str(self.cache_dir / "data"), **options)
        return self._data[key]

    def dataset(self, task: Task):
        return self.load(task.name, task.options)

    def upstream(self):
        return self.load(self.spec.upstream.dataset, dict(self.spec.upstream.options))

    def checkpoint_path(self, run: Run) -> Path:
        """checkpoints/KEY.pt; a snapshot's is its full run's key and step, checkpoints/FULLKEY@STEP.pt, where
        the full run saves it as it passes."""
        from transferscale.plan import is_snapshot

        if is_snapshot(run):
            full = self.full_run_checkpoint_path(run)
            return full.with_name(f"{full.stem}@{run.config['training']['steps']}.pt")
        return self.dir / "checkpoints" / f"{run.key}.pt"

    def full_run_checkpoint_path(self, run: Run) -> Path:
        """The rolling checkpoint of the full run a snapshot is taken from (a full run's own for a full run)."""
        from transferscale.plan import config_key, trajectory_config

        return self.dir / "checkpoints" / f"{config_key(trajectory_config(run.config))}.pt"

    # ---- features -------------------------------------------------------------------------------------
    def identity(self, run: Run, backbone) -> str:
        """What a run's features depend on: the checkpoint's content for a trained run, the source's identity
        for a pretrained one, else the run's config (random init and pixels are fixed by it)."""
        from transferscale.features import checkpoint_identity

        if run.key not in self._ids:
            if run.kind == "trained":
                self._ids[run.key] = checkpoint_identity(self.checkpoint_path(run))
            elif "source" in run.config:
                self._ids[run.key] = backbone.source_identity
            else:
                self._ids[run.key] = f"{run.kind}:{run.key}"
        return self._ids[run.key]

    def stored_identity(self, run: Run) -> str | None:
        """`identity` without a model in hand: None for a trained run whose checkpoint is not written yet."""
        from transferscale.features import checkpoint_identity

        if run.kind == "trained":
            path = self.checkpoint_path(run)
            return checkpoint_identity(path) if path.is_file() else None
        if "source" in run.config:
            from transferscale.models.source import make_source

            return make_source(run.config["source"], run.config["options"]).identity()
        return f"{run.kind}:{run.key}"

    @staticmethod
    def feature_cache_key(identity: str, task: Task, split: str, layers: str = "all") -> dict:
        """The feature cache's key of one (model, task, split) at `layers` ("all" or "final")."""
        from transferscale.features import feature_key

        key = feature_key(identity, task.name, task.options, split)
        return {**key, "layers": "final"} if layers == "final" else key  # "final" has a key of its own

    def features(self, run: Run, backbone, task: Task, split: str, x, layers: str = "all") -> dict:
        """Every layer's features of one split (`layers="final"`: the final representation only, {-1: ...}),
        from the study's feature cache or one forward pass. The cache keeps only what was asked for, so a
        study probing some runs at the final layer stores no more than that for them."""
        from transferscale.features import FeatureCache

        key = self.feature_cache_key(self.identity(run, backbone), task, split, layers)
        compute = (lambda: {-1: backbone.layers(x)[-1]}) if layers == "final" else (lambda: backbone.layers(x))
        return FeatureCache(self.dir / "features").get_or_compute(key, compute)
