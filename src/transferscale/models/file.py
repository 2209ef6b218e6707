"""The `file` model source: a checkpoint file a user already has, evaluated as is.

    [[models]]
    source = "file:/path/to/checkpoint.pt"
    options = { model = "resnet18", num_classes = 10 }    # only for a bare state dict

Three kinds of file are understood, told apart by their contents:

(a) a dict {"model": "<timm model name>", "state_dict": {...}, "num_classes": N (optional)};
(b) a bare state dict (parameter name -> tensor); Options `model` names the timm model, `num_classes` its
    classes (by default read from the classifier's weight in the file);
(c) a checkpoint written by `transferscale.pretrain.save_checkpoint`: {"config": {"family", "shape", ...},
    "model": state dict, ...}, rebuilt with `transferscale.models.grid.build_model` for Options `img_size`
    (default 28) and `in_chans` (default 1); the class count is read from the head in the file.

The spec refuses a file that cannot be a torch checkpoint before any work: one that is empty, neither the zip
archive torch.save writes nor its legacy pickle format, or a zip archive whose directory cannot be read (a copy
cut short) or, for files up to CRC_CHECK_BYTES, a member of which fails its checksum.

Files are read with `torch.load(weights_only=True)`, which refuses pickled Python objects other than tensors
and plain containers. A file that needs more fails with a message; `trust_pickle = true` reads it with full
unpickling, which can run code stored in the file, so only for files whose origin you trust.

(a) and (b) read images like `timm:` models (resized to img_size, the model's pretrained mean and std; img_size
None = its pretrained input size; in_chans None = what the file's first convolution reads); (c) reads them
like the study's own grid models (x / 255 * 2 - 1, the size and channels it was built for).

Importing this module does not import torch; the spec validates `Options` without loading anything.
"""
from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from transferscale.errors import TransferscaleError
from transferscale.files import file_sha256
from transferscale.models.source import ModelSource

if TYPE_CHECKING:
    from transferscale.models.backbone import Backbone

TRANSFERSCALE_IMG_SIZE, TRANSFERSCALE_IN_CHANS = 28, 1
CRC_CHECK_BYTES = 64 << 20  # checkpoints up to this size have every member's checksum verified at spec time
_LOOKED_AT: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> checkpoint_problem's answer


class FileOptions(BaseModel):
    """Options of a `file:PATH` model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = None  # the timm model name, for a bare state dict (overrides one stored in the file)
    num_classes: int | None = Field(default=None, gt=0)  # None = read from the classifier in the file
    img_size: int | None = Field(default=None, gt=0)  # None = 28 for transferscale checkpoints, else the model's
    in_chans: int | None = Field(default=None, gt=0)  # None = 1 for transferscale checkpoints, else the file's stem
    batch_size: int | None = Field(default=None, gt=0)  # None = 16 for timm models, 500 for transferscale ones
    trust_pickle: bool = False  # allow full unpickling (runs code from the file) when weights_only refuses it


def checkpoint_problem(path: Path) -> str:
    """Why the file at `path` cannot be a torch checkpoint, judged from its structure without loading it ('' when
    it may be one). A torch.save file is a zip archive: its directory (at the end, where a copy cut short loses
    it) is read, and so, when the file is no larger than CRC_CHECK_BYTES, is every member, against its checksum.
    A file opening with a pickle's first byte (torch's legacy format) is let through unchecked. Answers are kept
    per version of a file, since every source made from the spec asks again."""
    try:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in _LOOKED_AT:
            _LOOKED_AT[key] = _structure_problem(path, stat.st_size)
        return _LOOKED_AT[key]
    except OSError as err:
        return f"it cannot be read: {err.strerror or err}"


def _structure_problem(path: Path, size: int) -> str:
    if size == 0:
        return "it is empty"
    with open(path, "rb") as fh:
        head = fh.read(4)
    if not head.startswith(b"PK"):
        if head.startswith(b"\x80"):  # a pickle stream: torch.save(..., _use_new_zipfile_serialization=False)
            return ""
        return "it is neither the zip archive torch.save writes nor torch's legacy format"
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if not any(m.filename.rpartition("/")[2] == "data.pkl" for m in members):
                return "it is a zip archive without the data.pkl that torch.save writes"
            if any(m.header_offset + m.compress_size > size for m in members):
                return "it is cut short: its members run past its end"
            bad = archive.testzip() if size <= CRC_CHECK_BYTES else None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, zlib.error) as err:
        return f"it is cut short or damaged ({err})"
    return f"it is damaged: {bad} in it fails its checksum" if bad else ""


def _is_state_dict(obj: Any) -> bool:
    import torch

    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _classes_in(model, state: dict) -> int | None:
    """The output size of the model's classifier as stored in `state`, or None when it cannot be found."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    for name, module in model.named_modules():
        if module is head and name and f"{name}.weight" in state:
            return int(state[f"{name}.weight"].shape[0])
    return None


def _stem_channels(state: dict) -> int:
    """The input channels of the first convolution (or patch embedding) in a state dict: dim 1 of its first
    4-D tensor, timm registering the stem first; 3 when there is none."""
    first = next((v for v in state.values() if v.ndim == 4), None)
    return int(first.shape[1]) if first is not None else 3


class FileSource(ModelSource):
    """`file:PATH`: a checkpoint on disk (see the module docstring for the kinds understood)."""

    prefix = "file"
    Options = FileOptions
    modality = "image"

    @property
    def path(self) -> Path:
        return Path(self.ref).expanduser()

    def check(self) -> None:
        if not self.path.is_file():
            raise TransferscaleError(f"file:{self.ref}: no checkpoint file at {self.path.resolve()}; pass the path "
                                     "of an existing file")
        problem = checkpoint_problem(self.path)
        if problem:
            raise TransferscaleError(f"file:{self.ref}: {self.path.resolve()} is not a readable torch checkpoint: "
                                     f"{problem}; save it again with torch.save, or copy it again from where it "
                                     "came from")

    def default_name(self) -> str:
        return self.path.stem

    def identity(self) -> str:
        """"sha256:" of the checkpoint file's bytes, plus the options that change how it is read."""
        if not hasattr(self, "_digest"):
            self.check()
            self._digest = file_sha256(self.path)
        o = self.options
        return f"sha256:{self._digest};model={o.model};img_size={o.img_size};in_chans={o.in_chans}"

    # ---- loading ----------------------------------------------------------------------------------------
    def read(self) -> Any:
        """The file's contents: torch.load(weights_only=True), or with full unpickling when trust_pickle."""
        import pickle

        import torch

        self.check()
        try:
            return torch.load(self.path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            if not self.options.trust_pickle:
                first = str(err).splitlines()[0] if str(err) else type(err).__name__
                raise TransferscaleError(
                    f"file:{self.ref} holds pickled Python objects that torch.load(weights_only=True) refuses "
                    f"({first[:200]}). Re-save it as plain tensors, e.g. torch.save({{'model': NAME, "
                    "'state_dict': model.state_dict()}, path), or, if you trust where the file comes from, pass "
                    "options = { trust_pickle = true } (full unpickling can run code stored in the file)") from None
        except Exception as err:
            raise TransferscaleError(f"file:{self.ref} is not a readable torch checkpoint: {type(err).__name__}: "
                                     f"{str(err).splitlines()[0] if str(err) else ''}") from None
        try:
            return torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception as err:
            raise TransferscaleError(f"file:{self.ref} could not be unpickled: {type(err).__name__}: {err}") from None

    def load(self) -> Backbone:
        """Rebuild the model the file describes, load its weights, and wrap it as a backbone."""
        data = self.read()
        if isinstance(data, dict) and isinstance(data.get("config"), dict) and isinstance(data.get("model"), dict):
            return self._load_transferscale(data)
        if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
            name = self.options.model or data.get("model")
            if not isinstance(name, str):
                raise TransferscaleError(f"file:{self.ref} holds a state dict without a model name; pass "
                                         "options = { model = \"<timm model name>\" }")
            classes = self.options.num_classes or data.get("num_classes")
            return self._load_timm(name, data["state_dict"], classes)
        if _is_state_dict(data):
            if self.options.model is None:
                raise TransferscaleError(f"file:{self.ref} holds a bare state dict, which does not say which "
                                         "network it is; pass options = { model = \"<timm model name>\" }, "
                                         "e.g. model = \"resnet18\"")
            return self._load_timm(self.options.model, data, self.options.num_classes)
        kind = type(data).__name__
        keys = f" with keys {sorted(map(str, data))[:8]}" if isinstance(data, dict) else ""
        raise TransferscaleError(
            f"file:{self.ref} holds a {kind}{keys}, not a checkpoint this source reads: pass a state dict, a dict "
            "{'model': timm name, 'state_dict': ...}, or a checkpoint written by transferscale")

    def _load_timm(self, name: str, state: dict, num_classes: int | None) -> Backbone:
        import timm

        from transferscale.errors import did_you_mean
        from transferscale.models.timm_pretrained import load_state_into, timm_backbone

        if not timm.is_model(name):
            raise TransferscaleError(f"file:{self.ref}: timm has no model {name!r}; "
                                     f"{did_you_mean(name, timm.list_models())}")
        if not _is_state_dict(state):
            raise TransferscaleError(f"file:{self.ref}: its state_dict is not a dict of tensors")
        if all(k.startswith("module.") for k in state):
            state = {k[len("module."):]: v for k, v in state.items()}
        kwargs: dict[str, Any] = {"in_chans": self.options.in_chans or _stem_channels(state)}
        if num_classes is not None:
            kwargs["num_classes"] = int(num_classes)
        model = timm.create_model(name, pretrained=False, **kwargs)
        load_state_into(model, state, f"file:{self.ref} as timm model {name!r}")
        model.eval()
        return timm_backbone(model, img_size=self.options.img_size, batch_size=self.options.batch_size or 16)

    def _load_transferscale(self, data: dict) -> Backbone:
        from transferscale.data.dataset import InputSpec
        from transferscale.models.grid import TimmBackbone, build_model

        config = data["config"]
        if "family" not in config or "shape" not in config:
            raise TransferscaleError(f"file:{self.ref} holds a 'config' without family and shape, so it is not a "
                                     "transferscale checkpoint; save a state dict instead")
        if self.options.model is not None:
            raise TransferscaleError(f"file:{self.ref} is a transferscale checkpoint of a {config['family']} "
                                     "model; drop options.model (it applies to bare state dicts only)")
        img_size = self.options.img_size or TRANSFERSCALE_IMG_SIZE
        in_chans = self.options.in_chans or TRANSFERSCALE_IN_CHANS
        state = data["model"]
        model = build_model(config["family"], config["shape"], 1, img_size=img_size, in_chans=in_chans)
        classes = self.options.num_classes or _classes_in(model, state)
        if classes is None:
            raise TransferscaleError(f"file:{self.ref}: cannot tell its class count; pass options.num_classes")
        model = build_model(config["family"], config["shape"], classes, img_size=img_size, in_chans=in_chans)
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise TransferscaleError(
                f"file:{self.ref}: its weights do not fit a {config['family']} model for {img_size}x{img_size} "
                f"images with {in_chans} channel(s) and {classes} classes; set options img_size, in_chans "
                f"(and num_classes) to what it was trained with. ({str(err).splitlines()[0]})") from None
        model.eval()
        backbone = TimmBackbone(model, has_head=True, input_spec=InputSpec("image", (img_size, img_size), in_chans))
        if self.options.batch_size is not None:
            backbone.batch_size = self.options.batch_size
        return backbone
