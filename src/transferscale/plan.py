"""Expand a study spec into runs, and each run into the evaluations it owes, every one keyed by a hash of its config.

The same config always gives the same key, so a run is never done twice; editing the spec adds only the
runs (or evaluations) whose config changed. Anything that does not change what a run computes (its name, the
output directory, the description) stays out of the key.

Run names are made from the config too, so they are unique by construction and stable across versions of a
spec: family and size, then every shape field that differs from the named size, the data fraction and steps,
then every training setting that differs from the tool's defaults, e.g. `vit-s-depth6-d0.3-s360-lr0.006`.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from transferscale.errors import TransferscaleError
from transferscale.protocols import PROTOCOLS, Protocol
from transferscale.shapes import SIZES, match_params, resolve_shape, shape_dict
from transferscale.spec import ModelGroup, PretrainedModel, StudySpec, TrainingSpec
from transferscale.store import BASELINE_KINDS  # reference points, never fit points

# Bump when the training code changes what it computes, so old results are not reused.
TRAIN_RECIPE = "train-v1"

# Training settings that show in a run's name when they differ from the defaults, and their short labels.
_NAMED_SETTINGS = {"lr": "lr", "batch_size": "bs", "weight_decay": "wd", "warmup_fraction": "wu",
                   "max_shift": "shift", "seed": "seed", "head_weight_decay": "hwd", "head_lr_mult": "hlr"}


def config_key(config: dict) -> str:
    """sha256 of the canonical JSON (sorted keys, no whitespace), first 16 hex digits."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Task:
    """A downstream task: a registered dataset, its options and its modality ("image" or "text")."""

    name: str
    options: dict = field(default_factory=dict)
    modality: str = "image"


@dataclass(frozen=True)
class Run:
    """One model of the study: trained by it (`trained`), a baseline (`random_init`, `pixels`) or evaluated
    as given (`pretrained`, from a model source)."""

    key: str
    name: str
    kind: str  # "trained", "random_init", "pixels", "words" or "pretrained"
    family: str  # a grid family, "pixels", or a model source's prefix
    size: str | None
    config: dict
    modality: str = "image"

    @property
    def is_baseline(self) -> bool:
        return self.kind in BASELINE_KINDS


@dataclass(frozen=True)
class Evaluation:
    """One (protocol, task) evaluation a run owes, and its key."""

    protocol: str
    task: str
    key: str


@dataclass(frozen=True)
class Plan:
    spec: StudySpec
    runs: list[Run]
    tasks: list[Task]
    protocols: dict[str, Protocol]  # the enabled protocols, by name

    def tasks_of(self, run: Run) -> list[Task]:
        """The downstream tasks a run can read: those of its modality."""
        return [task for task in self.tasks if task.modality == run.modality]

    def evaluations(self, run: Run) -> list[Evaluation]:
        """Every evaluation the run owes: for each enabled protocol, each task it applies to."""
        return [Evaluation(name, task.name, proto.key(run, task))
                for name, proto in self.protocols.items() for task in proto.tasks_for(self, run)]

    def snapshots_of(self, run: Run) -> list[Run]:
        """The snapshot runs taken along `run`'s training (none for a snapshot or an untrained run)."""
        if run.kind != "trained" or is_snapshot(run):
            return []
        return [r for r in self.runs if is_snapshot(r) and config_key(trajectory_config(r.config)) == run.key]

    def task(self, name: str) -> Task:
        return next(t for t in self.tasks if t.name == name)

    def work(self, run: Run, evaluations: list[Evaluation] | None = None) -> int:
        """A run's cost in training-step equivalents, for the progress bar's estimate of the time left."""
        # a snapshot's steps are trained by its full run, which keeps the model as it passes
        train = run.config["training"]["steps"] if run.kind == "trained" and not is_snapshot(run) else 0
        owed = self.evaluations(run) if evaluations is None else evaluations
        return train + sum(self.protocols[e.protocol].cost(run, self.task(e.task)) for e in owed)

    def __len__(self) -> int:
        return len(self.runs)


def _upstream(spec: StudySpec) -> dict:
    return {"dataset": spec.upstream.dataset, "options": dict(spec.upstream.options)}


def _value(v) -> str:
    if isinstance(v, list | tuple):
        return "x".join(_value(x) for x in v)
    return f"{v:g}" if isinstance(v, float) else str(v)


def shape_label(family: str, size: str, shape: dict) -> str:
    """`size`, then `-FIELDvalue` for every shape field that differs from the named size."""
    named = shape_dict(SIZES[family][size])
    return size + "".join(f"-{k}{_value(v)}" for k, v in sorted(shape.items()) if named.get(k) != v)


def _settings_label(training: dict) -> str:
    defaults = TrainingSpec.model_fields
    return "".join(f"-{label}{_value(training[k])}" for k, label in _NAMED_SETTINGS.items()
                   if k in training and training[k] != defaults[k].default)


@dataclass(frozen=True)
class GroupShape:
    """One architecture of a grid group: the named size it starts from, its shape, and the parameter budget
    it was matched to (`match`), if any."""

    size: str
    shape: dict
    matched_params: int | None = None

    def label(self, family: str) -> str:
        base = f"{family}-{shape_label(family, self.size, self.shape)}"
        return base if self.matched_params is None else f"{base}-p{_count(self.matched_params)}"


def _count(n: int) -> str:
    """20000 -> '20k', 1500000 -> '1.5M', 999 -> '999'."""
    for unit, scale in (("M", 10**6), ("k", 10**3)):
        if n >= scale:
            return f"{n / scale:g}{unit}"
    return str(n)


def _combinations(sweep: dict[str, list]) -> list[dict]:
    """Every combination of the swept values, in the order the spec lists them (the last key varies fastest)."""
    combos = [{}]
    for key, values in sweep.items():
        combos = [{**c, key: v} for c in combos for v in values]
    return combos


def group_shapes(spec: StudySpec, group: ModelGroup) -> list[GroupShape]:
    """The architectures a grid group trains: each size, with `shape`, each combination of the swept shape
    fields and, under `match`, the width solved for each parameter budget (at the upstream's image size)."""
    out, seen = [], {}
    for size in group.sizes:
        for combo in _combinations(group.shape_sweep()):
            shape = shape_dict(resolve_shape(group.family, size, {**group.shape, **combo}))
            if group.match is None:
                out.append(GroupShape(size, shape))
                continue
            h, w, c = upstream_geometry(spec)
            for target in group.match.params:
                matched = match_params(group.family, shape, target, field=group.match.width,
                                       tolerance=group.match.tolerance, img_size=(h, w), in_chans=c)
                key = json.dumps(matched, sort_keys=True)
                if key in seen:
                    raise TransferscaleError(
                        f"match: {group.family} {combo or size} gives the same shape for {seen[key]:,} and "
                        f"{target:,} parameters ({matched}); space the match.params targets further apart")
                seen[key] = target
                out.append(GroupShape(size, matched, target))
    return out


def upstream_geometry(spec: StudySpec) -> tuple[int, int, int]:
    """(height, width, channels) of the upstream images, without building them where the dataset says."""
    from transferscale.data.registry import dataset_geometry

    return dataset_geometry(spec.upstream.dataset, dict(spec.upstream.options))


def _grid_runs(spec: StudySpec, group: ModelGroup) -> list[Run]:
    t = spec.training
    sweep = {**t.sweep, **group.training_sweep()}
    runs = []
    for arch in group_shapes(spec, group):
        label = arch.label(group.family)
        for budget in group.budgets or t.budgets:
            steps = max(1, round(budget.steps * group.steps_scale))
            for settings in _combinations(sweep):
                training = _training_table(t, group, budget.data_fraction, steps, settings)
                config = {"kind": "trained", "family": group.family, "shape": arch.shape,
                          "upstream": _upstream(spec), "training": training, "recipe": TRAIN_RECIPE}
                if arch.matched_params is not None:
                    config["matched_params"] = arch.matched_params
                name = f"{label}-d{_value(budget.data_fraction)}-s{steps}{_settings_label(training)}"
                runs.append(Run(config_key(config), name, "trained", group.family, arch.size, config))
                for step in snapshot_steps(budget.snapshots, steps):
                    snap = {**config, "training": {**training, "steps": step, "schedule_steps": steps}}
                    name = f"{label}-d{_value(budget.data_fraction)}-s{step}of{steps}{_settings_label(training)}"
                    runs.append(Run(config_key(snap), name, "trained", group.family, arch.size, snap))
    return runs


def _training_table(t: TrainingSpec, group: ModelGroup, data_fraction: float, steps: int, settings: dict) -> dict:
    """A run's training config. The head's settings appear only when they differ from the body's (so a spec
    that never names them keeps the keys it always had)."""
    training = {
        "data_fraction": data_fraction, "steps": steps, "batch_size": t.batch_size,
        "lr": group.lr or t.lr, "weight_decay": t.weight_decay,
        "warmup_fraction": t.warmup_fraction, "max_shift": t.max_shift, "seed": t.seed,
        "head_weight_decay": t.head_weight_decay, "head_lr_mult": t.head_lr_mult, **settings,
    }
    if training["head_weight_decay"] is None:
        del training["head_weight_decay"]
    if training["head_lr_mult"] == 1.0:
        del training["head_lr_mult"]
    return training


def snapshot_steps(fractions: list[float], steps: int) -> list[int]:
    """The distinct steps, before the run's last, at which `fractions` of a `steps`-step run fall (rounded)."""
    return sorted({s for s in (round(f * steps) for f in fractions) if 0 < s < steps})


def trajectory_config(config: dict) -> dict:
    """The config of the full training run a snapshot is taken from; a run that is not a snapshot is its own.

    A snapshot's training table carries `steps` (where it stops) and `schedule_steps` (the length of the run
    whose learning-rate schedule it follows); the full run's table has `steps` = that length and no
    `schedule_steps`, so its config, and its key, are exactly the full run's.
    """
    training = config.get("training", {})
    if "schedule_steps" not in training:
        return config
    full = {k: v for k, v in training.items() if k != "schedule_steps"}
    full["steps"] = training["schedule_steps"]
    return {**config, "training": full}


def is_snapshot(run: Run) -> bool:
    return "schedule_steps" in run.config.get("training", {})


def _random_runs(spec: StudySpec) -> list[Run]:
    runs, seen = [], set()
    seed = spec.training.seed if spec.training else 0
    for group in spec.grid_groups():
        for arch in group_shapes(spec, group):
            config = {"kind": "random_init", "family": group.family, "shape": arch.shape,
                      "upstream": _upstream(spec), "seed": seed, "recipe": TRAIN_RECIPE}
            key = config_key(config)
            if key not in seen:
                seen.add(key)
                name = f"{arch.label(group.family)}-random"
                runs.append(Run(key, name + (f"-seed{seed}" if seed else ""), "random_init", group.family,
                                arch.size, config))
    return runs


def _pretrained_run(entry: PretrainedModel) -> Run:
    from transferscale.models.source import make_source

    source = make_source(entry.source, entry.options)
    config = source.config()
    if entry.upstream_accuracy is not None:
        config["upstream_accuracy"] = {"dataset": entry.upstream, "value": entry.upstream_accuracy}
    kind = "random_init" if source.is_baseline() else "pretrained"
    return Run(config_key(config), entry.name or source.default_name(), kind, source.prefix, None, config,
               source.modality)


def make_plan(spec: StudySpec) -> Plan:
    """Every grid (model, budget) pair becomes a trained run, every pretrained entry an evaluate-only run;
    baselines follow the spec's [baselines] table."""
    from transferscale.data.registry import dataset_modality

    runs: list[Run] = []
    for entry in spec.models:
        runs += _grid_runs(spec, entry) if isinstance(entry, ModelGroup) else [_pretrained_run(entry)]
    if spec.baselines.random_init:
        runs += _random_runs(spec)
    tasks = [Task(name, dict(spec.downstream.options.get(name, {})),
                  dataset_modality(name, spec.downstream.options.get(name, {}))) for name in spec.downstream.tasks]
    if spec.baselines.pixels and any(t.modality == "image" for t in tasks):
        config = {"kind": "pixels", "recipe": TRAIN_RECIPE}
        runs.append(Run(config_key(config), "pixels", "pixels", "pixels", None, config))
    if spec.baselines.words and any(t.modality == "text" for t in tasks):
        config = {"kind": "words", "recipe": TRAIN_RECIPE}
        runs.append(Run(config_key(config), "bag-of-words", "words", "words", None, config, "text"))
    _check_unique(runs)
    protocols = {}
    for name in PROTOCOLS.list():
        if name in spec.protocols:
            proto = PROTOCOLS.get(name)(spec.protocols[name])
            if proto.enabled():
                protocols[name] = proto
    return Plan(spec, runs, tasks, protocols)


def _check_unique(runs: list[Run]) -> None:
    keys: dict[str, str] = {}
    names: dict[str, str] = {}
    for run in runs:
        if run.key in keys:
            raise TransferscaleError(
                f"runs {keys[run.key]!r} and {run.name!r} have the same config; remove the duplicate from the spec")
        if run.name in names:
            raise TransferscaleError(
                f"two runs are both named {run.name!r}; give the [[models]] entries distinct `name`s")
        keys[run.key], names[run.name] = run.name, run.key
