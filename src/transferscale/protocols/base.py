"""The interface every evaluation protocol implements, and the registry the spec, plan and runner ask.

A protocol owns everything that used to be keyed by strings across the code:

- `section`: its table in the study spec ([probe], [finetune], ...), validated into its pydantic `Options`;
- `metric`: the name its measurements carry in the store (readers filter on it);
- `key(run, task)`: the evaluation key, a hash of what the result depends on, so a changed option
  re-evaluates exactly what it changes;
- `tasks_for(plan, run)`: which tasks a run owes this protocol;
- `check(plan, load)`: a look at the data before any work (e.g. too few examples for the shots);
- `measure(ctx, run, backbone, task)`: the measurements, as `Measurement` rows, computed without touching the
  store (the runner is its only writer).

Adding a protocol is one module defining a subclass and one `PROTOCOLS.register_lazy` line (protocols/__init__.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel

from transferscale.registry import Registry

if TYPE_CHECKING:
    from transferscale.plan import Plan, Run, Task


class Protocol:
    """An evaluation of a model on a downstream task. Subclasses set the class attributes and `measure`."""

    name: ClassVar[str]
    section: ClassVar[str]
    metric: ClassVar[str]
    Options: ClassVar[type[BaseModel]]
    recipe: ClassVar[str]  # bump when the code changes what it computes for the same options
    key_field: ClassVar[str | None] = None  # the options' field name inside the key (default: `section`)
    always: ClassVar[bool] = False  # enabled even when the spec has no table for it

    def __init__(self, options: BaseModel):
        self.options = options

    # ---- planning -------------------------------------------------------------------------------------
    def enabled(self) -> bool:
        return True

    def stale_metrics(self) -> tuple[str, ...]:
        """Metrics whose rows for (run, task) a new result of this protocol replaces."""
        return (self.metric,)

    def key_options(self) -> dict:
        """The options as they enter the evaluation key (all of them, unless a subclass says otherwise)."""
        return self.options.model_dump()

    def key(self, run: Run, task: Task) -> str:
        from transferscale.plan import config_key

        return config_key({"run": run.key, "task": task.name, "options": task.options,
                           self.key_field or self.section: self.key_options(), "recipe": self.recipe})

    def tasks_for(self, plan: Plan, run: Run) -> list[Task]:
        """The tasks `run` owes this protocol (by default every task of the run's modality)."""
        return plan.tasks_of(run)

    def feature_layers(self, run: Run) -> str | None:
        """Which cached features `measure` reads for `run` through `ctx.features`: "all", "final", or None
        (none). `transferscale gc` keeps exactly these; the default keeps every layer."""
        return "all"

    def cost(self, run: Run, task: Task) -> int:
        """Work in training-step equivalents, for the progress bar's time estimate."""
        return 20

    def check(self, plan: Plan, load) -> None:
        """Fail with a TransferscaleError, before any work, when the study cannot run this protocol.
        `load(task)` returns a task's Dataset."""

    # ---- measuring ------------------------------------------------------------------------------------
    def measure(self, ctx: Any, run: Run, backbone: Any, task: Task) -> list:
        raise NotImplementedError


PROTOCOLS: Registry[type[Protocol]] = Registry("protocol", Protocol)
