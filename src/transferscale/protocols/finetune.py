"""Full fine-tuning (`transferscale.finetune`'s recipe) as a study protocol: the spec's [finetune] table.

Fine-tuning trains every weight on a task's whole training pool and reports test accuracy, one
`finetune_accuracy` row per (run, task). It is far costlier than a probe, so a study fine-tunes a subset:
`runs` are shell-style patterns over run names (e.g. "*-m-d1-*" for every size-m model at full data,
"*-random" for the from-scratch baselines), `tasks` the tasks (which must be downstream tasks). Snapshot
runs (models midway through a schedule, `...-s300of1200`) are left out unless `snapshots = true`.
"""
from __future__ import annotations

import fnmatch

from pydantic import BaseModel, ConfigDict, Field

from transferscale.protocols.base import Protocol


class FinetuneOptions(BaseModel):
    """The fine-tuning recipe's hyper-parameters, and which runs and tasks it applies to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tasks: list[str] = Field(default_factory=list)
    runs: list[str] = Field(default_factory=lambda: ["*"])
    snapshots: bool = False  # fine-tune the snapshot runs the patterns match too
    steps: int = Field(100, gt=0)
    lr: float = Field(0.01, gt=0)
    batch_size: int = Field(64, gt=0)
    warmup_fraction: float = Field(0.1, ge=0, lt=1)
    max_shift: int = Field(2, ge=0, le=8)
    momentum: float = Field(0.9, ge=0, lt=1)
    clip_norm: float | None = Field(1.0, gt=0)
    seed: int = 0

    def recipe(self) -> dict:
        return self.model_dump(exclude={"tasks", "runs", "snapshots"})


class Finetune(Protocol):
    name = "finetune"
    section = "finetune"
    metric = "finetune_accuracy"
    Options = FinetuneOptions
    recipe = "finetune-v1"

    def enabled(self) -> bool:
        return bool(self.options.tasks)

    def key_options(self) -> dict:
        return self.options.recipe()  # which runs and tasks it covers does not change a result

    def tasks_for(self, plan, run) -> list:
        from transferscale.plan import is_snapshot

        ft = self.options
        if run.kind in ("pixels", "words") or not any(fnmatch.fnmatchcase(run.name, p) for p in ft.runs):
            return []
        if is_snapshot(run) and not ft.snapshots:
            return []
        return [task for task in plan.tasks_of(run) if task.name in ft.tasks]

    def cost(self, run, task) -> int:
        return self.options.steps

    def measure(self, ctx, run, backbone, task) -> list:
        from transferscale.finetune import finetune
        from transferscale.store import Measurement

        if backbone.module is None or not hasattr(backbone.module, "reset_classifier"):
            from transferscale.errors import TransferscaleError

            raise TransferscaleError(f"run {run.name!r} cannot be fine-tuned: its model has no timm "
                                     "`reset_classifier`; leave it out of finetune.runs")
        ds = ctx.dataset(task)
        recipe = self.options.recipe()
        ctx.phase(f"fine-tuning on {task.name}")
        result = finetune(backbone.module, ds.x_train, ds.y_train, ds.x_test, ds.y_test,
                          num_classes=ds.n_classes, on_step=ctx.train_step, preprocess=backbone.preprocess,
                          **recipe)
        return [Measurement(self.metric, task.name, result.accuracy, seed=recipe["seed"])]
