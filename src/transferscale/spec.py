"""A study as a TOML file, validated into typed objects before any work is done.

Every mistake a user can make in a spec (an unknown key, a bad value, an unknown dataset, family or size)
fails here with one TransferscaleError naming the field, the value and what would be valid.
"""
from __future__ import annotations

import copy
import tomllib
import typing
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator

from transferscale.errors import TransferscaleError, did_you_mean
from transferscale.shapes import FAMILIES, SIZES, WIDTH_FIELDS, resolve_shape, shape_dict

# Specs shipped in the package (studies/NAME.toml): `transferscale run NAME` runs one, `init --study NAME` copies it.
BUILTIN_STUDIES = ("default", "efficientnet_lite", "minilm_text", "shape", "head_hparams", "pretrain_or_not")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_dataset(name: str, options: dict) -> None:
    from transferscale.data import dataset_options, list_datasets

    if name not in list_datasets():
        raise ValueError(f"unknown dataset {name!r}; {did_you_mean(name, list_datasets())}")
    valid = dataset_options(name)
    bad = sorted(set(options) - set(valid) - {"cache_dir"})
    if bad:
        raise ValueError(f"unknown option(s) {bad} for dataset {name!r}; valid: {sorted(valid)}")


class UpstreamSpec(_Strict):
    """The pre-training data set: a registered dataset name and its options."""

    dataset: str = "fractals"
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known(self):
        _check_dataset(self.dataset, self.options)
        return self


class Budget(_Strict):
    """One point of the training grid: which fraction of the upstream data, for how many steps.

    `snapshots`: fractions of the run's steps (each in (0, 1)) at which the model, midway through its
    schedule, is also evaluated as a model of its own (a run named `...-s300of1200`): a point of the
    training-length axis that costs an evaluation, not another training run.
    """

    data_fraction: float = Field(gt=0, le=1)
    steps: int = Field(gt=0)
    snapshots: list[float] = Field(default_factory=list)

    @model_validator(mode="after")
    def _snapshots(self):
        bad = [f for f in self.snapshots if not 0 < f < 1]
        if bad:
            raise ValueError(f"snapshots {bad}: each is a fraction of the run's steps, strictly between 0 and 1 "
                             "(the run's end is always evaluated)")
        if len(set(self.snapshots)) != len(self.snapshots):
            raise ValueError(f"snapshots {self.snapshots} lists a fraction twice; list each once")
        return self


# Training settings a grid can sweep (`sweep` in [training] or in a [[models]] entry): every optimiser field.
SWEEPABLE_TRAINING = ("lr", "weight_decay", "head_weight_decay", "head_lr_mult", "batch_size", "warmup_fraction",
                      "max_shift", "seed")


def _check_sweep(sweep: dict[str, Any], allowed: dict[str, str], where: str) -> None:
    """Each swept field is known (`allowed`: field -> what it is) and lists distinct values."""
    for key, values in sweep.items():
        if key not in allowed:
            hint = " (data size and training length are `budgets`)" if key in ("data_fraction", "steps") else ""
            raise ValueError(f"{where}: cannot sweep {key!r}{hint}; {did_you_mean(key, allowed)}")
        if not isinstance(values, list) or not values:
            raise ValueError(f"{where}.{key}: give a non-empty list of the values to sweep, e.g. {key} = [..]")
        if len({repr(v) for v in values}) != len(values):
            raise ValueError(f"{where}.{key} = {values} lists a value twice; list each once")


def _check_training_values(sweep: dict[str, Any], where: str) -> None:
    for key, values in sweep.items():
        if key not in SWEEPABLE_TRAINING:
            continue
        for value in values:
            try:
                TrainingSpec.model_validate({key: value})
            except ValidationError as err:
                raise ValueError(f"{where}.{key}: {value!r}: {err.errors()[0]['msg']}") from None


class MatchSpec(_Strict):
    """Shapes matched to parameter budgets: for every shape of the group and every target in `params`, the
    tool sets the width field (`width`; by default ViT and Mixer `embed_dim`, ResNet `widths`, scaled with
    the stem) so the network's parameters, head excluded, at the upstream's image size come closest to the
    target, and fails unless that is within `tolerance` (a fraction of the target)."""

    params: list[int] = Field(min_length=1)
    width: str | None = None
    tolerance: float = Field(0.1, gt=0, lt=1)

    @field_validator("params")
    @classmethod
    def _positive(cls, params):
        if any(p <= 0 for p in params) or len(set(params)) != len(params):
            raise ValueError(f"params {params}: give distinct parameter counts > 0")
        return sorted(params)


class ModelGroup(_Strict):
    """One family at several named sizes; `steps_scale` multiplies every budget's steps (ViTs need more).

    `budgets`, when given, replace the [training] table's for this group (e.g. longer runs for the largest
    size, a short one only for the smallest). `shape` overrides fields of every size's shape; `sweep` lists
    values of shape fields (depth, embed_dim, num_blocks, layers, ...) and of training settings (lr,
    head_weight_decay, head_lr_mult, ...) and the group trains every combination of them, on every size and
    budget; `match` then solves each shape's width for each parameter budget it lists.
    """

    source: Literal["grid"] = "grid"
    family: str
    sizes: list[str]
    shape: dict[str, Any] = Field(default_factory=dict)
    sweep: dict[str, Any] = Field(default_factory=dict)
    match: MatchSpec | None = None
    steps_scale: float = Field(1.0, gt=0)
    lr: float | None = Field(None, gt=0)
    budgets: list[Budget] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _known(self):
        if self.family not in FAMILIES:
            raise ValueError(f"unknown model family {self.family!r}; {did_you_mean(self.family, FAMILIES)}")
        if not self.sizes:
            raise ValueError(f"no sizes given for family {self.family!r}; valid: {sorted(SIZES[self.family])}")
        for size in self.sizes:
            if size not in SIZES[self.family]:
                hint = did_you_mean(size, SIZES[self.family])
                raise ValueError(f"unknown size {size!r} for family {self.family!r}; {hint}")
            try:
                resolve_shape(self.family, size, self.shape)
            except TransferscaleError as err:
                raise ValueError(str(err)) from None
        fields = {f: "shape" for f in shape_dict(SIZES[self.family][self.sizes[0]])}
        _check_sweep(self.sweep, {**fields, **dict.fromkeys(SWEEPABLE_TRAINING, "training")}, "sweep")
        for key, values in self.sweep.items():
            if key in fields:
                for value in values:
                    for size in self.sizes:
                        try:
                            resolve_shape(self.family, size, {**self.shape, key: value})
                        except (TransferscaleError, TypeError) as err:
                            raise ValueError(f"sweep.{key}: {value!r}: {err}") from None
        _check_training_values(self.sweep, "sweep")
        if self.lr is not None and "lr" in self.sweep:
            raise ValueError("give the group's lr or sweep it, not both")
        if self.match is not None:
            width = self.match.width or WIDTH_FIELDS[self.family]
            if width not in fields:
                raise ValueError(f"match.width {width!r} is not a shape field of {self.family}; "
                                 f"{did_you_mean(width, fields)}")
            if width in self.sweep or width in self.shape:
                raise ValueError(f"match solves {width!r} for each parameter budget: do not also give it in "
                                 "`sweep` or `shape`")
        return self

    def shape_sweep(self) -> dict[str, list]:
        """The swept shape fields and their values."""
        fields = shape_dict(SIZES[self.family][self.sizes[0]])
        return {k: v for k, v in self.sweep.items() if k in fields}

    def training_sweep(self) -> dict[str, list]:
        """The swept training settings and their values."""
        return {k: v for k, v in self.sweep.items() if k in SWEEPABLE_TRAINING}


class PretrainedModel(_Strict):
    """A model the study evaluates without training it: `source = "PREFIX:REF"` (timm:, hf:, file:, ...).

    `options` belong to the source (e.g. `weights` for timm:); `upstream_accuracy`, when given (e.g. the
    published ImageNet top-1, as a fraction), places the model on the upstream axis of the analysis, with
    `upstream` naming what it was measured on.
    """

    source: str
    options: dict[str, Any] = Field(default_factory=dict)
    name: str | None = Field(None, min_length=1, pattern=r"^[A-Za-z0-9_.+-]+$")
    upstream_accuracy: float | None = Field(None, ge=0, le=1)
    upstream: str = "given"

    @model_validator(mode="after")
    def _known(self):
        from pydantic import ValidationError as _VE

        from transferscale.models.source import make_source

        try:
            make_source(self.source, self.options)
        except TransferscaleError as err:
            raise ValueError(str(err)) from None
        except _VE as err:
            from transferscale.models.source import SOURCES, split_ref

            valid = SOURCES.get(split_ref(self.source)[0]).Options.model_fields
            problems = []
            for e in err.errors():
                where = ".".join(map(str, e["loc"]))
                hint = f"; {did_you_mean(where, valid)}" if e["type"] == "extra_forbidden" else ""
                problems.append(f"{where}: {e['msg']}{hint}")
            raise ValueError(f"options of {self.source!r}: " + "; ".join(problems)) from None
        return self


def _model_kind(value: Any) -> str:
    source = value.get("source") if isinstance(value, dict) else getattr(value, "source", None)
    return "grid" if source in (None, "grid") else "pretrained"


ModelEntry = Annotated[Annotated[ModelGroup, Tag("grid")] | Annotated[PretrainedModel, Tag("pretrained")],
                       Discriminator(_model_kind)]


class TrainingSpec(_Strict):
    budgets: list[Budget] = Field(default_factory=list)  # every grid group's, unless it gives its own
    batch_size: int = Field(128, gt=0)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    warmup_fraction: float = Field(0.1, ge=0, lt=1)
    max_shift: int = Field(2, ge=0, le=8)
    seed: int = 0
    checkpoint_every: int = Field(200, gt=0)
    # The classifier head's own optimiser settings during pre-training (Abnar et al. 2021 find they put
    # upstream and downstream accuracy at odds): weight decay (None: `weight_decay`) and a multiplier of `lr`.
    head_weight_decay: float | None = Field(None, ge=0)
    head_lr_mult: float = Field(1.0, gt=0)
    sweep: dict[str, Any] = Field(default_factory=dict)  # every grid group trains each combination

    @model_validator(mode="after")
    def _sweep(self):
        _check_sweep(self.sweep, dict.fromkeys(SWEEPABLE_TRAINING, "training"), "training.sweep")
        _check_training_values(self.sweep, "training.sweep")
        return self


class DownstreamSpec(_Strict):
    tasks: list[str] = Field(min_length=1)
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known(self):
        for task in self.tasks:
            _check_dataset(task, self.options.get(task, {}))
        extra = sorted(set(self.options) - set(self.tasks))
        if extra:
            raise ValueError(f"options given for {extra}, which are not in tasks {self.tasks}")
        return self


class BaselineSpec(_Strict):
    """Rows every study measures: the raw input (pixels of image tasks, a hashed bag of words of text tasks), and
    each model of the grid at random initialisation."""

    pixels: bool = True
    words: bool = True
    random_init: bool = True


_MEMORY_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
                 "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


class ExecutorSpec(_Strict):
    """Where the study's jobs run: `executor = "NAME"`, or an `[executor]` table with `kind` and its options.

    `num_cpus`, `num_gpus` and `memory` are what each job asks of a Ray cluster (memory in bytes, or a string
    such as "4GiB"); `num_cpus` is also the number of torch and BLAS threads a job runs with, under every
    executor (local included, when the table gives it), so the same spec gives the same rows wherever it runs.
    `max_retries` is how many times Ray runs a job again after its worker process died (killed, out of
    memory); an error the job raises is recorded as the run's failure, never retried. `address` is the Ray
    cluster to join ("auto", "HOST:PORT", "ray://HOST:PORT"); without one Ray starts on this machine.
    `device` ("auto": CUDA when a job's process sees it, else the CPU; "cpu", "cuda", "cuda:N") and `precision`
    ("auto": bfloat16 autocast on CUDA, float32 on the CPU; "fp32"; "bf16", CUDA only) say where and how jobs compute
    (transferscale/device.py).
    """

    kind: str = "local"
    num_cpus: float | None = Field(None, gt=0)
    num_gpus: float = Field(0, ge=0)
    memory: int | None = Field(None, gt=0)
    max_retries: int = Field(2, ge=0)
    address: str | None = Field(None, min_length=1)
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"

    @field_validator("device")
    @classmethod
    def _device(cls, value):
        from transferscale.device import check_device

        return check_device(value)

    @field_validator("memory", mode="before")
    @classmethod
    def _bytes(cls, value):
        if not isinstance(value, str):
            return value
        text = value.strip().lower().replace(" ", "")
        digits = text.rstrip("abcdefghijklmnopqrstuvwxyz")
        unit = text[len(digits):]
        if unit not in _MEMORY_UNITS or not digits:
            raise ValueError("memory must be a number of bytes or a size such as '4GiB' or '512MB'")
        try:
            return int(float(digits) * _MEMORY_UNITS[unit])
        except ValueError:
            raise ValueError(f"memory {value!r} does not start with a number") from None

    @model_validator(mode="after")
    def _known(self):
        from transferscale.engine.executors import EXECUTORS

        if self.kind not in EXECUTORS:
            raise ValueError(f"unknown executor {self.kind!r}; {did_you_mean(self.kind, EXECUTORS.list())}")
        return self

    def threads(self) -> int | None:
        """The torch and BLAS threads a job runs with (None: whatever the process has)."""
        return None if self.num_cpus is None else max(1, int(self.num_cpus))


class StudySpec(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    output_dir: str | None = None
    upstream: UpstreamSpec = Field(default_factory=UpstreamSpec)
    models: list[ModelEntry] = Field(min_length=1)
    training: TrainingSpec | None = None
    downstream: DownstreamSpec
    baselines: BaselineSpec = Field(default_factory=BaselineSpec)
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec)
    quick: dict[str, Any] | None = None
    # Measure each architecture's cost (parameters, FLOPs, throughput: `transferscale cost`) after the runs.
    costs: bool = False
    # Each registered protocol's options, from its own table ([probe], [finetune], ...): see `_protocols`.
    protocols: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _protocols(cls, data):
        """Move every protocol's table into `protocols`, validated by the protocol's own Options model."""
        from transferscale.protocols import PROTOCOLS, protocol_sections

        if not isinstance(data, dict):
            return data
        data = dict(data)
        given = dict(data.pop("protocols", None) or {})
        for section, name in protocol_sections().items():
            if section in data:
                given[name] = data.pop(section)
        parsed = {}
        for name in PROTOCOLS.list():
            proto = PROTOCOLS.get(name)
            raw = given.pop(name, None)
            if raw is None and not proto.always:
                continue
            try:
                parsed[name] = raw if isinstance(raw, proto.Options) else proto.Options.model_validate(raw or {})
            except ValidationError as err:
                raise ValueError("; ".join(_format_errors(err, proto.section))) from None
        if given:
            raise ValueError(f"unknown protocol(s) {sorted(given)}; registered: {PROTOCOLS.list()}")
        data["protocols"] = parsed
        return data

    @property
    def probe(self):
        """The few-shot probe's options (the [probe] table)."""
        return self.protocols["fewshot"]

    @property
    def finetune(self):
        """The fine-tuning options (the [finetune] table), defaults when the spec has none."""
        from transferscale.protocols.finetune import FinetuneOptions

        return self.protocols.get("finetune", FinetuneOptions())

    def grid_groups(self) -> list[ModelGroup]:
        return [m for m in self.models if isinstance(m, ModelGroup)]

    @field_validator("executor", mode="before")
    @classmethod
    def _executor_name(cls, value):
        """`executor = "ray"` is the short form of `[executor]` with `kind = "ray"` and default options."""
        return {"kind": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _training_for_grid(self):
        if self.grid_groups() and self.training is None:
            raise ValueError("the spec has grid models ([[models]] with family and sizes) but no [training] "
                             "table; add one with budgets (see `transferscale init`)")
        if self.training is not None and not self.training.budgets:
            bare = [g.family for g in self.grid_groups() if not g.budgets]
            if bare:
                raise ValueError(f"no budgets for the {', '.join(bare)} models: give [training] budgets, or "
                                 "`budgets` in each [[models]] entry")
        return self

    @model_validator(mode="after")
    def _finetune_tasks_are_tasks(self):
        extra = [t for t in self.finetune.tasks if t not in self.downstream.tasks]
        if extra:
            raise ValueError(f"finetune.tasks {extra} are not in downstream.tasks {self.downstream.tasks}; add "
                             "them there (fine-tuning reads a task's data and options from it)")
        return self

    @model_validator(mode="after")
    def _heldout_matches_upstream(self):
        # The held-out fractal classes are only unseen if they come from the same generation as the upstream.
        if self.upstream.dataset == "fractals" and "fractals_heldout" in self.downstream.tasks:
            up = self.upstream.options
            down = self.downstream.options.get("fractals_heldout", {})
            for key in ("classes", "seed"):
                if key in up or key in down:
                    if up.get(key) != down.get(key):
                        raise ValueError(
                            f"downstream.options.fractals_heldout.{key} = {down.get(key)} must equal "
                            f"upstream.options.{key} = {up.get(key)}, or the held-out classes overlap the upstream"
                        )
        return self

    def study_dir(self, base: Path | None = None) -> Path:
        path = Path(self.output_dir) if self.output_dir else Path("transferscale-runs") / self.name
        return path if path.is_absolute() or base is None else base / path


# ---- loading ------------------------------------------------------------------------------------------


def _check_keys(raw: dict, model: type[BaseModel], where: str) -> None:
    """Name unknown keys with a "did you mean" before pydantic's generic message can."""
    fields = dict(model.model_fields)
    if model is StudySpec:  # each protocol's table is a top-level key, checked against its Options
        from transferscale.protocols import PROTOCOLS, protocol_sections

        fields.pop("protocols")
        sections = {section: PROTOCOLS.get(name).Options for section, name in protocol_sections().items()}
    else:
        sections = {}
    if model is ModelGroup and raw.get("source") not in (None, "grid"):
        model, fields = PretrainedModel, dict(PretrainedModel.model_fields)
    for key, value in raw.items():
        path = f"{where}.{key}" if where else key
        if key in sections:
            if isinstance(value, dict):
                _check_keys(value, sections[key], path)
            continue
        if key not in fields:
            raise TransferscaleError(f"unknown key {path!r} in the study spec; "
                                     f"{did_you_mean(key, [*fields, *sections])}")
        if key == "options" and model is PretrainedModel:
            continue  # the source validates its own options
        inner = _model_of(fields[key].annotation)
        if inner is None:
            continue
        if isinstance(value, dict):
            _check_keys(value, inner, path)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    _check_keys(item, inner, f"{path}[{i}]")


def _model_of(annotation) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _format_errors(err: ValidationError, where: str = "") -> list[str]:
    lines = []
    for e in err.errors():
        parts = [*([where] if where else []), *e["loc"]]
        # a [[models]] entry's union tag ("grid" / "pretrained") says nothing the user wrote
        parts = [p for i, p in enumerate(parts)
                 if not (p in ("grid", "pretrained") and i and isinstance(parts[i - 1], int))]
        loc = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in parts)
        msg = e["msg"].removeprefix("Value error, ")
        got = e.get("input")
        shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
        lines.append(f"{loc.replace('.[', '[')}: {msg}{shown}" if loc else msg + shown)
    return lines


def _format(err: ValidationError) -> str:
    return "invalid study spec:\n  " + "\n  ".join(_format_errors(err))


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_spec(text: str, *, quick: bool = False, source: str = "<spec>") -> StudySpec:
    """Validate TOML text into a StudySpec; with `quick`, the spec's [quick] table is merged over it first."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise TransferscaleError(f"{source} is not valid TOML: {err}") from None
    if quick:
        over = raw.get("quick")
        if not over:
            raise TransferscaleError(
                f"{source} has no [quick] table, so --quick has nothing to apply; add one with the keys to "
                "override (see `transferscale init`)"
            )
        raw = _merge({k: v for k, v in raw.items() if k != "quick"}, over)
        down = raw.get("downstream")
        if isinstance(over.get("downstream"), dict) and "tasks" in over["downstream"] and isinstance(down, dict):
            # a quick variant that names fewer tasks drops the options of the tasks it leaves out
            kept = set(down.get("tasks") or [])
            if isinstance(down.get("options"), dict):
                down["options"] = {k: v for k, v in down["options"].items()
                                   if k in kept or k in (over["downstream"].get("options") or {})}
    _check_keys(raw, StudySpec, "")
    try:
        return StudySpec.model_validate(raw)
    except ValidationError as err:
        raise TransferscaleError(f"{source}: {_format(err)}") from None


def builtin_spec_text(name: str = "default") -> str:
    if name not in BUILTIN_STUDIES:
        raise TransferscaleError(f"unknown built-in study {name!r}; {did_you_mean(name, BUILTIN_STUDIES)}")
    return resources.files("transferscale").joinpath(f"studies/{name}.toml").read_text()


def load_spec(path: str | Path | None = None, *, quick: bool = False) -> tuple[StudySpec, str]:
    """Load a spec file, or a built-in study by name (the embedded default when `path` is None); returns the
    spec and its text. A file of that name wins over a built-in study."""
    if path is None:
        text, source = builtin_spec_text("default"), "the default study"
    elif not Path(path).is_file() and str(path) in BUILTIN_STUDIES:
        text, source = builtin_spec_text(str(path)), f"the built-in study {path}"
    else:
        path = Path(path)
        if not path.is_file():
            raise TransferscaleError(f"no study spec at {path}; write one with `transferscale init {path}`, or "
                                     f"name a built-in study: {', '.join(BUILTIN_STUDIES)}")
        text, source = _read_spec(path), str(path)
    return parse_spec(text, quick=quick, source=source), text


def _read_spec(path: Path) -> str:
    """A spec file's text; one that is not UTF-8 (as TOML must be) or cannot be read fails with what to do."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        data = path.read_bytes()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as err:  # the whole file at once: where it goes wrong, in the file
            line = data[:err.start].count(b"\n") + 1
            raise TransferscaleError(
                f"{path} is not UTF-8 text (byte {data[err.start]:#04x} on line {line}); TOML files are UTF-8: "
                "save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)") from None
        raise
    except OSError as err:
        raise TransferscaleError(f"cannot read the study spec {path}: {err.strerror or err}") from None
