"""Expand a study spec into runs and evaluations, each keyed by a hash of its canonical config.

The same config always gives the same key, so a run is never done twice; editing the spec adds only the
runs (or evaluations) whose config changed. Anything that does not change what a run computes (its name, the
output directory, the description) stays out of the key.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
from dataclasses import dataclass, field

from transferscale.shapes import resolve_shape, shape_dict
from transferscale.spec import StudySpec

# Bump when the training or evaluation code changes what it computes, so old results are not reused.
TRAIN_RECIPE = "train-v1"
EVAL_RECIPE = "eval-v2"  # v2: every layer
FINETUNE_RECIPE = "finetune-v1"


def config_key(config: dict) -> str:
    """sha256 of the canonical JSON (sorted keys, no whitespace), first 16 hex digits."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Task:
    """A downstream task: a registered dataset and its options."""

    name: str
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Run:
    key: str
    name: str
    kind: str  # "trained", "random_init" or "pixels"
    family: str  # a model family, or "pixels"
    size: str | None
    config: dict

    @property
    def is_baseline(self) -> bool:
        return self.kind != "trained"

    def eval_key(self, task: Task, probe: dict) -> str:
        return config_key({"run": self.key, "task": task.name, "options": task.options, "probe": probe,
                           "recipe": EVAL_RECIPE})

    def finetune_key(self, task: Task, recipe: dict) -> str:
        return config_key({"run": self.key, "task": task.name, "options": task.options, "finetune": recipe,
                           "recipe": FINETUNE_RECIPE})


@dataclass(frozen=True)
class Plan:
    spec: StudySpec
    runs: list[Run]
    tasks: list[Task]

    @property
    def probe(self) -> dict:
        return self.spec.probe.model_dump()

    def finetunes(self, run: Run) -> list[Task]:
        """The tasks this run is fine-tuned on: none unless its name matches a finetune.runs pattern."""
        ft = self.spec.finetune
        if run.kind == "pixels" or not any(fnmatch.fnmatchcase(run.name, p) for p in ft.runs):
            return []
        return [task for task in self.tasks if task.name in ft.tasks]

    def evaluations(self, run: Run) -> dict[str, str]:
        """Every evaluation the run owes, label -> key: a probe per task, a fine-tune per finetune task."""
        owed = {f"probe:{task.name}": run.eval_key(task, self.probe) for task in self.tasks}
        recipe = self.spec.finetune.recipe()
        owed |= {f"finetune:{task.name}": run.finetune_key(task, recipe) for task in self.finetunes(run)}
        return owed

    def __len__(self) -> int:
        return len(self.runs)


def _upstream(spec: StudySpec) -> dict:
    return {"dataset": spec.upstream.dataset, "options": dict(spec.upstream.options)}


def _fmt_fraction(f: float) -> str:
    return f"{f:g}"


def make_plan(spec: StudySpec) -> Plan:
    """Every (model, budget) pair becomes a trained run; baselines follow the spec's [baselines] table."""
    t = spec.training
    runs: list[Run] = []
    for group in spec.models:
        for size in group.sizes:
            shape = shape_dict(resolve_shape(group.family, size, group.shape))
            for budget in t.budgets:
                steps = max(1, round(budget.steps * group.steps_scale))
                training = {
                    "data_fraction": budget.data_fraction, "steps": steps, "batch_size": t.batch_size,
                    "lr": group.lr or t.lr, "weight_decay": t.weight_decay,
                    "warmup_fraction": t.warmup_fraction, "max_shift": t.max_shift, "seed": t.seed,
                }
                config = {"kind": "trained", "family": group.family, "shape": shape,
                          "upstream": _upstream(spec), "training": training, "recipe": TRAIN_RECIPE}
                name = f"{group.family}-{size}-d{_fmt_fraction(budget.data_fraction)}-s{steps}"
                runs.append(Run(config_key(config), name, "trained", group.family, size, config))
    if spec.baselines.random_init:
        seen = set()
        for group in spec.models:
            for size in group.sizes:
                shape = shape_dict(resolve_shape(group.family, size, group.shape))
                config = {"kind": "random_init", "family": group.family, "shape": shape,
                          "upstream": _upstream(spec), "seed": t.seed, "recipe": TRAIN_RECIPE}
                key = config_key(config)
                if key not in seen:
                    seen.add(key)
                    runs.append(Run(key, f"{group.family}-{size}-random", "random_init", group.family, size, config))
    if spec.baselines.pixels:
        config = {"kind": "pixels", "recipe": TRAIN_RECIPE}
        runs.append(Run(config_key(config), "pixels", "pixels", "pixels", None, config))
    _check_unique(runs)
    tasks = [Task(name, dict(spec.downstream.options.get(name, {}))) for name in spec.downstream.tasks]
    return Plan(spec, runs, tasks)


def _check_unique(runs: list[Run]) -> None:
    from transferscale.errors import TransferscaleError

    seen: dict[str, str] = {}
    for run in runs:
        if run.key in seen:
            raise TransferscaleError(
                f"runs {seen[run.key]!r} and {run.name!r} have the same config; remove the duplicate from the spec"
            )
        seen[run.key] = run.name
