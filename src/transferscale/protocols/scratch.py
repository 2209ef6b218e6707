"""Training from scratch on the downstream task alone (Wang, Khabsa, Ma 2020): the spec's [scratch] table.

The comparison that says what pre-training is worth: the same architecture, trained from random
initialisation on nothing but the task's training set, at growing fractions of it. It runs on the study's
random-init runs (`[baselines] random_init = true`: each grid architecture, untrained) and uses the
fine-tuning recipe (`transferscale.finetune`: SGD with momentum, warmup and cosine, clipping, a zero-initialised
head, random shifts of up to `max_shift` pixels) through the same loop as [finetune]'s data-size axis
(`protocols.finetune.train_at_sizes`), so the only differences from fine-tuning are the starting weights and
what the options below set. A budget fair to a network that starts from nothing:

- the number of steps grows with the data, steps(n) = clip(ceil(epochs * n / batch_size), min_steps,
  max_steps): `epochs` passes over the n training examples, not a fixed step count (a fixed 60 steps scores
  chance, 0.10 to 0.14 on 10 classes, in the default study);
- early stopping on a validation split carved from each class's training pool (`val_fraction`, the same for
  every size of a seed, never the test set): a check every ceil(steps / `evaluations`) steps and after the
  last, stop after `patience` checks without a new best, test the best checkpoint;
- a larger default learning rate than fine-tuning's (random weights need larger steps), or a grid
  (`lr = [...]`) chosen on the validation split at every size, as each arm deserves its best learning rate:
  measured on 270 held-out fractal images (ResNet-s), 30 passes at lr 0.05 scored 0.52, 100 passes at 0.1
  scored 0.92.

The model: the run's module (the random initialisation of the run's seed, `engine/job.py` build_backbone),
copied, with a new zero head for the task's classes and every BatchNorm's running statistics reset to
mean 0 / variance 1 with PyTorch's default momentum 0.1: the random-init baseline re-estimates them on
upstream images (cumulatively), and training from scratch must owe nothing to upstream data.

Text: a baseline model source with a `classifier()` (the `lstm:` source, models/lstm_text.py: an LSTM over a
pretrained model's tokenizer, with random or that model's frozen input embeddings) trains the same way, on
token batches and without pixel shifts. Its recipe usually differs from the image networks' in the same study
(more passes than MiniLM's fine-tuning, its own learning rates): `[[scratch.overrides]]` entries give runs
matching their `runs` patterns their own fields, as `[[finetune.overrides]]` do (protocols/finetune.py).

Rows, per (seed, size): `scratch_accuracy` (test accuracy of the best checkpoint), `scratch_budget_steps`
(steps(n)), `scratch_best_step` (the step of the checkpoint kept: equal to the budget means the model was
still improving when its budget ran out) and, with an lr grid, `scratch_lr` (the one chosen), each with
`shots` = n, the number of training examples (all classes together; the validation split is not counted),
and `seed`.
"""
from __future__ import annotations

import fnmatch

from pydantic import Field

from transferscale.errors import TransferscaleError
from transferscale.protocols.base import Protocol
from transferscale.protocols.finetune import (
    FinetuneOptions,
    PerRun,
    check_sizes,
    job_precision,
    train_at_sizes,
    trainable,
)

WANG_FRACTIONS = [0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0]  # Wang et al. 2020's training-set fractions


class ScratchOptions(FinetuneOptions):
    """[finetune]'s recipe and data-size options with defaults for training from random initialisation.

    `runs` are shell-style patterns over the random-init runs' names (e.g. "resnet-m-random"); `snapshots`
    has no meaning here (a random-init run is never a snapshot).
    """

    fractions: list[float] | None = Field(default_factory=lambda: list(WANG_FRACTIONS))
    epochs: float | None = Field(100.0, gt=0)
    min_steps: int = Field(100, gt=0)
    max_steps: int = Field(3000, gt=0)
    val_fraction: float = Field(0.1, ge=0, lt=1)
    patience: int = Field(4, gt=0)
    evaluations: int = Field(15, gt=0)
    lr: float | list[float] = 0.1


class Scratch(PerRun, Protocol):
    name = "scratch"
    section = "scratch"
    metric = "scratch_accuracy"
    Options = ScratchOptions
    recipe = "scratch-v1"

    def enabled(self) -> bool:
        return bool(self.options.tasks)

    def stale_metrics(self) -> tuple[str, ...]:
        return (self.metric, "scratch_budget_steps", "scratch_best_step", "scratch_lr")

    def key_options(self) -> dict:
        return self.options.model_dump(exclude={"tasks", "runs", "snapshots", "overrides"})

    def tasks_for(self, plan, run) -> list:
        if run.kind != "random_init" or not any(fnmatch.fnmatchcase(run.name, p) for p in self.options.runs):
            return []
        return [task for task in plan.tasks_of(run) if task.name in self.options.tasks]

    def feature_layers(self, run) -> None:
        return None  # it trains the architecture on its inputs, not on cached features

    def check(self, plan, load) -> None:
        unknown = [t for t in self.options.tasks if t not in {task.name for task in plan.tasks}]
        if unknown:
            raise TransferscaleError(f"scratch.tasks {unknown} are not in downstream.tasks "
                                     f"{[t.name for t in plan.tasks]}; add them there or drop them here")
        if not any(self.tasks_for(plan, run) for run in plan.runs):
            raise TransferscaleError(
                "scratch trains the study's random-init runs and none matches scratch.runs "
                f"{self.options.runs}; set [baselines] random_init = true, or name runs such as "
                f"{[r.name for r in plan.runs if r.kind == 'random_init'][:3] or ['resnet-m-random']}")
        check_sizes(self.options, [t for t in plan.tasks if t.name in self.options.tasks], load, self.section)

    def measure(self, ctx, run, backbone, task) -> list:
        from transferscale.store import Measurement

        options = self.options.for_run(run.name)
        module, preprocess = trainable(backbone, run.name, self.section)
        ctx.phase(f"training from scratch on {task.name}")
        results = train_at_sizes(fresh_statistics(module), ctx.dataset(task), options, preprocess=preprocess,
                                 on_step=ctx.train_step, precision=job_precision(ctx))
        rows = []
        for seed, n, steps, lr, r in results:
            at = {"seed": seed} if n is None else {"seed": seed, "shots": n}
            best = r.best_step if r.best_step is not None else r.steps
            rows += [Measurement(self.metric, task.name, r.accuracy, **at),
                     Measurement("scratch_budget_steps", task.name, float(steps), **at),
                     Measurement("scratch_best_step", task.name, float(best), **at)]
            if isinstance(options.lr, list):
                rows.append(Measurement("scratch_lr", task.name, lr, **at))
        return rows


def fresh_statistics(module):
    """A copy of `module` whose BatchNorm layers hold their initial running statistics (mean 0, variance 1,
    no batches seen) and PyTorch's default momentum 0.1; the weights are left as they are."""
    import copy

    import torch

    module = copy.deepcopy(module)
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = 0.1
    return module
