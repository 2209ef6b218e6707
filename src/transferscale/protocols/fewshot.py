"""The few-shot linear probe (big_vision's fewshot_lsr protocol, `transferscale.probe`) as a study protocol.

For every task, every layer of the run's backbone (or only the final representation), every shot count and
seed: the closed-form probe's test accuracy, one `fewshot_accuracy` row each, with the layer's relative depth
(i + 1) / L (1.0 for the final representation, layer -1). Features come from the study's feature cache (one
forward pass per checkpoint and split); a layer whose features are constant or non-finite is recorded as
`degenerate_features` (value 1) instead of an accuracy.
"""
from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from transferscale.errors import TransferscaleError
from transferscale.protocols.base import Protocol


class FewShotOptions(BaseModel):
    """Few-shot linear probes in closed form (big_vision's protocol): the spec's [probe] table.

    `select_l2`: choose l2 per (shots, seed) on `val_per_class` validation examples per class, drawn from the
    training pool apart from the shots (never from test); only the chosen l2's accuracy is stored.
    `method = "logistic"`: scikit-learn's logistic regression instead of the closed-form ridge (far slower).
    `snapshot_layers`: the layers probed on snapshot runs (models midway through a schedule), e.g. "final"
    where the layer-wise view of the finished runs is enough.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    shots: list[int] = Field(default_factory=lambda: [1, 5, 10, 25], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    l2: list[float] = Field(default_factory=lambda: [2.0**10], min_length=1)
    layers: Literal["all", "final"] = "all"
    snapshot_layers: Literal["all", "final"] | None = None  # for snapshot runs; None: as `layers`
    method: Literal["ridge", "logistic"] = "ridge"
    select_l2: bool = False
    val_per_class: int = Field(10, gt=0)

    def min_train_per_class(self) -> int:
        """Examples a class needs: the largest shot count, plus the validation examples when l2 is selected."""
        return max(self.shots) + (self.val_per_class if self.select_l2 else 0)

    @field_validator("shots")
    @classmethod
    def _positive(cls, shots):
        if any(k < 1 for k in shots):
            raise ValueError(f"shots must be positive integers, got {shots}")
        return sorted(set(shots))

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds):
        if any(s < 0 for s in seeds):  # a seed picks the k-shot examples; numpy's generators take seeds >= 0
            raise ValueError(f"seeds must be integers >= 0, got {seeds}")
        return list(dict.fromkeys(seeds))

    @field_validator("l2")
    @classmethod
    def _l2(cls, l2):
        if any(not (v > 0 and math.isfinite(v)) for v in l2):
            raise ValueError(f"l2 values must be finite and > 0, got {l2}")
        return l2


class FewShot(Protocol):
    name = "fewshot"
    section = "probe"
    metric = "fewshot_accuracy"
    Options = FewShotOptions
    # v2: every layer; v3: degenerate features recorded, not probed; v4: each probe scored on its own
    recipe = "eval-v4"
    always = True

    def cost(self, run, task) -> int:
        return 10

    def key_options(self) -> dict:
        options = self.options.model_dump()
        if options["snapshot_layers"] is None:  # absent from keys made before it existed: they stay valid
            del options["snapshot_layers"]
        return options

    def feature_layers(self, run) -> str:
        return self.layers_for(run)

    def layers_for(self, run) -> str:
        """"all" or "final": the layers probed on `run`."""
        from transferscale.plan import is_snapshot

        snap = self.options.snapshot_layers
        return snap if snap is not None and is_snapshot(run) else self.options.layers

    def stale_metrics(self) -> tuple[str, ...]:
        return (self.metric, "degenerate_features")

    def check(self, plan, load) -> None:
        """Fail before any training if a task has a class with fewer train examples than the probe needs."""
        import numpy as np

        most = self.options.min_train_per_class()
        for task in plan.tasks:
            ds = load(task)
            labels, counts = np.unique(ds.y_train, return_counts=True)
            if counts.min() < most:
                c = labels[counts.argmin()]
                raise TransferscaleError(
                    f"task {task.name!r}: class {ds.classes[c]!r} has {counts.min()} training examples, fewer "
                    f"than the {most} the probe needs (largest shots, plus validation examples with select_l2); "
                    f"lower the shots or raise downstream.options.{task.name}.train_per_class")

    def measure(self, ctx, run, backbone, task) -> list:
        from threadpoolctl import threadpool_limits

        from transferscale.features import layer_depth
        from transferscale.probe import fewshot_probe
        from transferscale.store import Measurement

        p = self.options
        ds = ctx.dataset(task)
        ctx.phase(f"probing {task.name}")
        which = self.layers_for(run)
        train_layers = ctx.features(run, backbone, task, "train", ds.x_train, which)
        test_layers = ctx.features(run, backbone, task, "test", ds.x_test, which)
        n_layers = len(train_layers) - 1
        rows = []
        for layer, x_train in train_layers.items():
            depth = layer_depth(layer, n_layers)
            problem = _problem(x_train, test_layers[layer])
            if problem is not None:
                rows.append(Measurement("degenerate_features", task.name, 1.0, layer=layer, depth=depth))
                ctx.note(f"{run.name} on {task.name}, layer {layer}: {problem}; recorded as degenerate_features")
                continue
            # Small solves on two BLAS threads, beside torch's, can run tens of times slower than on one
            # (benchmarks/bench_probe.py pins one thread for the same reason).
            with threadpool_limits(1):
                table = fewshot_probe(x_train, ds.y_train, test_layers[layer], ds.y_test, shots=p.shots,
                                      seeds=p.seeds, l2=p.l2, method=p.method, select_l2=p.select_l2,
                                      val_per_class=p.val_per_class, check_features=False,
                                      device=None if ctx.device.type == "cpu" else ctx.device)
            if p.select_l2:  # the l2 chosen on validation is the one result; the others were only candidates
                table = table[table.selected]
            rows += [Measurement(self.metric, task.name, r.accuracy, shots=r.shots, seed=r.seed, layer=layer,
                                 l2=r.l2, depth=depth) for r in table.itertuples()]
        return rows



def _problem(x_train, x_test) -> str | None:
    """Why a layer's features cannot be probed (`probe.feature_problem`: non-finite, constant or collapsed
    features, in the training pool or the test split), else None."""
    from transferscale.probe import feature_problem

    for split, x in (("training pool", x_train), ("test split", x_test)):
        problem = feature_problem(x)
        if problem is not None:
            return f"{split}: {problem}"
    return None
