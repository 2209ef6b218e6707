"""Full fine-tuning (`transferscale.finetune`'s recipe) as a study protocol: the spec's [finetune] table.

Fine-tuning trains every weight on a task's training pool and reports test accuracy, one
`finetune_accuracy` row per (run, task). It is far costlier than a probe, so a study fine-tunes a subset:
`runs` are shell-style patterns over run names (e.g. "*-m-d1-*" for every size-m model at full data,
"*-random" for the from-scratch baselines), `tasks` the tasks (which must be downstream tasks). Snapshot
runs (models midway through a schedule, `...-s300of1200`) are left out unless `snapshots = true`.

The downstream data size as an axis (all optional; at their defaults a run trains once on the whole pool for
`steps` steps and its row has no `shots`, as before this axis existed, and the evaluation key leaves them
out, so existing results stay valid):

- `fractions` (of each class's pool) or `per_class` (examples per class): one training per size, on nested,
  stratified subsets (`finetune.nested_subset`); each row's `shots` holds n, the number of training examples
  it saw (all classes together; the validation split is not counted);
- `seeds`: each seed draws its own validation split, subsets and batches (default: the one `seed`);
- `epochs`: the budget rule steps(n) = clip(ceil(epochs * n / batch_size), min_steps, max_steps) in place of
  the fixed `steps`;
- `val_fraction` > 0: a validation split carved from each class's pool (the same for every size of a seed)
  and early stopping on it (`patience`, in validation checks, one every ceil(steps / `evaluations`) steps);
- `lr` as a list: a learning-rate grid, every value trained at every (seed, size) and the one whose best
  checkpoint has the highest validation accuracy kept (ties: the first listed); a value whose run diverges is
  skipped. Needs the validation split. Its rows say which it chose: `finetune_lr` (`scratch_lr` for scratch).

Each size trains from the run's weights on its own, seeded by (seed, step) only: a size's result does not
depend on which other sizes are in the sweep. The scratch protocol (protocols/scratch.py) is this loop from
random initialisation.

Per-run recipes (`overrides`): one table serves runs that need different recipes (a ResNet fine-tuned for
100 passes at lr 0.2, MiniLM for 3 passes at 0.03, as BERT-style models are). Each `[[finetune.overrides]]`
entry has `runs` (patterns) and any recipe or data-size fields; a run takes the first entry whose patterns
match its name, merged over the table's own values, and its evaluation key is that of the merged options,
exactly as if the table held them. Runs no entry matches, and studies without overrides, keep their keys.

Text: a backbone with a `classifier()` (models/hf_text.py, models/lstm_text.py) is trained through it: a
linear head on its mean-pooled tokens, fed token batches, with no pixel shifts (`max_shift` is ignored).
"""
from __future__ import annotations

import fnmatch

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from transferscale.protocols.base import Protocol

SIZE_FIELDS = ("fractions", "per_class", "seeds", "epochs", "min_steps", "max_steps", "val_fraction", "patience",
               "evaluations")
NOT_RECIPE = ("tasks", "runs", "snapshots", "overrides")  # which runs and tasks a table covers


class FinetuneOptions(BaseModel):
    """The fine-tuning recipe's hyper-parameters, the data-size axis, and which runs and tasks it applies to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tasks: list[str] = Field(default_factory=list)
    runs: list[str] = Field(default_factory=lambda: ["*"])
    snapshots: bool = False  # fine-tune the snapshot runs the patterns match too
    steps: int = Field(100, gt=0)
    lr: float | list[float] = 0.01  # a list: a grid, chosen on the validation split at every (seed, size)
    batch_size: int = Field(64, gt=0)
    warmup_fraction: float = Field(0.1, ge=0, lt=1)
    max_shift: int = Field(2, ge=0, le=8)
    momentum: float = Field(0.9, ge=0, lt=1)
    clip_norm: float | None = Field(1.0, gt=0)
    seed: int = 0
    # the data-size axis and the budget rule (module docstring); out of the key at these defaults
    fractions: list[float] | None = None
    per_class: list[int] | None = None
    seeds: list[int] | None = None
    epochs: float | None = Field(None, gt=0)
    min_steps: int = Field(50, gt=0)
    max_steps: int = Field(5000, gt=0)
    val_fraction: float = Field(0.0, ge=0, lt=1)
    patience: int = Field(5, gt=0)
    evaluations: int = Field(10, gt=0)
    # per-run recipes: [{runs = [patterns], FIELD = value, ...}], the first match wins (module docstring)
    overrides: list[dict] = Field(default_factory=list)

    @field_validator("lr")
    @classmethod
    def _lr(cls, lr):
        values = lr if isinstance(lr, list) else [lr]
        if not values or any(not v > 0 for v in values):
            raise ValueError(f"lr must be > 0, or a non-empty list of values > 0; got {lr}")
        return lr if not isinstance(lr, list) else list(dict.fromkeys(lr))

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, fractions):
        if fractions is not None and (not fractions or any(not 0 < f <= 1 for f in fractions)):
            raise ValueError(f"fractions must be a non-empty list of numbers in (0, 1], got {fractions}")
        return None if fractions is None else sorted(set(fractions))

    @field_validator("per_class")
    @classmethod
    def _per_class(cls, per_class):
        if per_class is not None and (not per_class or any(k < 1 for k in per_class)):
            raise ValueError(f"per_class must be a non-empty list of integers >= 1, got {per_class}")
        return None if per_class is None else sorted(set(per_class))

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds):
        if seeds is not None and (not seeds or any(s < 0 for s in seeds)):
            raise ValueError(f"seeds must be a non-empty list of integers >= 0, got {seeds}")
        return None if seeds is None else list(dict.fromkeys(seeds))

    @model_validator(mode="after")
    def _consistent(self):
        if self.fractions is not None and self.per_class is not None:
            raise ValueError("give fractions or per_class, not both: they are two ways to state one data-size axis")
        if isinstance(self.lr, list) and len(self.lr) > 1 and self.val_fraction == 0:
            raise ValueError(f"an lr grid ({self.lr}) is chosen on a validation split: set val_fraction > 0")
        if self.min_steps > self.max_steps:
            raise ValueError(f"min_steps ({self.min_steps}) must not exceed max_steps ({self.max_steps})")
        for i, entry in enumerate(self.overrides):
            runs = entry.get("runs") if isinstance(entry, dict) else None
            if not isinstance(runs, list) or not runs or not all(isinstance(r, str) for r in runs):
                raise ValueError(f"overrides[{i}] needs `runs`, a non-empty list of run-name patterns, and the "
                                 f"fields it sets; got {entry!r}")
            bad = sorted(set(entry) - set(type(self).model_fields) | set(entry) & {"tasks", "snapshots", "overrides"})
            if bad:
                raise ValueError(f"overrides[{i}] sets {bad}, which a per-run recipe cannot set; it takes `runs` and "
                                 f"recipe or data-size fields such as lr, epochs, batch_size, max_steps")
            try:
                self._merged(entry)
            except ValidationError as err:
                said = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in err.errors())
                raise ValueError(f"overrides[{i}] (runs {runs}): {said}") from None
        return self

    def _merged(self, entry: dict):
        """This table with `entry`'s fields over it (a data-size axis given there replaces the table's)."""
        base = self.model_dump(exclude={"overrides"})
        for axis, other in (("fractions", "per_class"), ("per_class", "fractions")):
            if axis in entry and other not in entry:
                base[other] = None
        return type(self).model_validate({**base, **{k: v for k, v in entry.items() if k != "runs"}})

    def for_run(self, name: str):
        """The options a run named `name` trains with: the first override whose patterns match it, merged
        over this table (with no overrides left), or this table itself when none matches."""
        for entry in self.overrides:
            if any(fnmatch.fnmatchcase(name, p) for p in entry["runs"]):
                return self._merged(entry)
        return self

    def recipe(self) -> dict:
        """The keyword arguments of `transferscale.finetune.finetune` (a FinetuneRecipe's fields)."""
        return self.model_dump(exclude={*NOT_RECIPE, *SIZE_FIELDS})

    def sizes(self) -> list[dict | None]:
        """One `nested_subset` keyword set per data size, smallest first; [None] (the whole pool) without an axis."""
        if self.fractions is not None:
            return [{"fraction": f} for f in self.fractions]
        if self.per_class is not None:
            return [{"per_class": k} for k in self.per_class]
        return [None]

    def seed_list(self) -> list[int]:
        return list(self.seeds) if self.seeds is not None else [self.seed]

    def lrs(self) -> list[float]:
        return list(self.lr) if isinstance(self.lr, list) else [self.lr]

    def trainings(self) -> int:
        return len(self.sizes()) * len(self.seed_list()) * len(self.lrs())


def train_at_sizes(module, ds, options: FinetuneOptions, *, preprocess, on_step=None,
                   precision: str = "fp32") -> list[tuple]:
    """Train `module` (copied: the caller's stays as it was) at every (seed, size) of `options` on `ds`.

    Returns (seed, n, budget_steps, lr, FinetuneResult) per (seed, size), n None when there is no data-size
    axis. For seed s: (pool, val) = validation_split(y_train, val_fraction, s); each size trains on
    pool[nested_subset(y_train[pool], s, size)] for steps(n) steps (or `steps`), with batches seeded by s, at
    every lr of the grid; the lr whose best checkpoint scores highest on val is kept.
    """
    from transferscale.finetune import budget_steps, finetune, nested_subset, validation_split
    from transferscale.pretrain import RunFailed

    recipe = options.recipe()
    grid = options.lrs()
    out = []
    for seed in options.seed_list():
        pool, val = validation_split(ds.y_train, options.val_fraction, seed)
        validation = (ds.x_train[val], ds.y_train[val]) if len(val) else None
        for size in options.sizes():
            idx = pool if size is None else pool[nested_subset(ds.y_train[pool], seed, **size)]
            steps = recipe["steps"] if options.epochs is None else budget_steps(
                len(idx), batch_size=recipe["batch_size"], epochs=options.epochs, min_steps=options.min_steps,
                max_steps=options.max_steps)
            best, failures = None, []
            for lr in grid:
                try:
                    result = finetune(module, ds.x_train[idx], ds.y_train[idx], ds.x_test, ds.y_test,
                                      num_classes=ds.n_classes, on_step=on_step, preprocess=preprocess,
                                      validation=validation, patience=options.patience,
                                      evaluations=options.evaluations, precision=precision,
                                      **{**recipe, "steps": steps, "seed": seed, "lr": lr})
                except RunFailed as err:
                    if len(grid) == 1:
                        raise
                    failures.append(str(err))
                    continue
                if best is None or result.val_accuracy > best[1].val_accuracy:
                    best = (lr, result)
            if best is None:
                raise RunFailed(f"every learning rate of the grid {grid} diverged: {failures[0]}")
            out.append((seed, None if size is None else len(idx), steps, *best))
    return out


def job_precision(ctx) -> str:
    """The precision a job's training runs under: the spec's, where the backbone's device makes it count."""
    return getattr(ctx, "precision", "fp32")


def trainable(backbone, run_name: str, section: str) -> tuple:
    """(module, preprocess) that the fine-tuning loop trains for a backbone: what its `classifier()` gives
    when it has one (text models: an encoder or LSTM with a linear head on its mean-pooled tokens, fed token
    batches), else its module (a timm network) and `preprocess`. Fails when there is nothing to train."""
    from transferscale.errors import TransferscaleError

    make = getattr(backbone, "classifier", None)
    if callable(make):
        return make()
    if backbone.module is None or not hasattr(backbone.module, "reset_classifier"):
        raise TransferscaleError(f"run {run_name!r} cannot be trained here: its model has neither a timm "
                                 f"`reset_classifier` nor a `classifier()`; leave it out of {section}.runs")
    return backbone.module, backbone.preprocess


class PerRun:
    """What [finetune] and [scratch] share for per-run recipes: the key, cost and options of a run are those of
    `options.for_run(run.name)`."""

    def _for(self, run):
        opts = self.options.for_run(run.name)
        return self if opts is self.options else type(self)(opts)

    def key(self, run, task) -> str:
        return Protocol.key(self._for(run), run, task)

    def cost(self, run, task) -> int:
        opts = self.options.for_run(run.name)
        per = opts.steps if opts.epochs is None else (opts.min_steps + opts.max_steps) // 2  # n is not known here
        return per * opts.trainings()


def check_sizes(options: FinetuneOptions, tasks: list, load, section: str) -> None:
    """Fail before any work when a task's class has fewer pool examples than the largest per_class asks
    (of the table, and of each per-run override)."""
    for entry in options.overrides:
        check_sizes(options._merged(entry), tasks, load, section)
    _check_per_class(options, tasks, load, section)


def _check_per_class(options: FinetuneOptions, tasks: list, load, section: str) -> None:
    import numpy as np

    from transferscale.errors import TransferscaleError
    from transferscale.finetune import validation_split

    if options.per_class is None:
        return
    need = max(options.per_class)
    for task in tasks:
        y = load(task).y_train
        for seed in options.seed_list():
            pool, _ = validation_split(y, options.val_fraction, seed)
            counts = np.unique(y[pool], return_counts=True)[1]
            if counts.min() < need:
                raise TransferscaleError(
                    f"{section}.per_class asks for {need} examples per class, but task {task.name!r} has a class "
                    f"with {counts.min()} in its training pool (after the validation split); lower per_class or "
                    f"val_fraction, or raise downstream.options.{task.name}.train_per_class")


class Finetune(PerRun, Protocol):
    name = "finetune"
    section = "finetune"
    metric = "finetune_accuracy"
    Options = FinetuneOptions
    recipe = "finetune-v1"

    def enabled(self) -> bool:
        return bool(self.options.tasks)

    def stale_metrics(self) -> tuple[str, ...]:
        return (self.metric, "finetune_lr")

    def key_options(self) -> dict:
        # which runs and tasks it covers does not change a result; the data-size fields enter only when set,
        # so keys made before they existed stay valid
        fields = FinetuneOptions.model_fields
        sized = {k: getattr(self.options, k) for k in SIZE_FIELDS if getattr(self.options, k) != fields[k].default}
        return {**self.options.recipe(), **sized}

    def tasks_for(self, plan, run) -> list:
        from transferscale.plan import is_snapshot

        ft = self.options
        if run.kind in ("pixels", "words") or not any(fnmatch.fnmatchcase(run.name, p) for p in ft.runs):
            return []
        if is_snapshot(run) and not ft.snapshots:
            return []
        return [task for task in plan.tasks_of(run) if task.name in ft.tasks]

    def feature_layers(self, run) -> None:
        return None  # it trains the whole network on its inputs, not on cached features

    def check(self, plan, load) -> None:
        check_sizes(self.options, [t for t in plan.tasks if t.name in self.options.tasks], load, self.section)

    def measure(self, ctx, run, backbone, task) -> list:
        from transferscale.store import Measurement

        options = self.options.for_run(run.name)
        module, preprocess = trainable(backbone, run.name, self.section)
        ctx.phase(f"fine-tuning on {task.name}")
        results = train_at_sizes(module, ctx.dataset(task), options, preprocess=preprocess, on_step=ctx.train_step,
                                 precision=job_precision(ctx))
        rows = []
        for seed, n, _steps, lr, r in results:
            at = {"seed": seed} if n is None else {"seed": seed, "shots": n}
            rows.append(Measurement(self.metric, task.name, r.accuracy, **at))
            if isinstance(options.lr, list):
                rows.append(Measurement("finetune_lr", task.name, lr, **at))
        return rows
