"""Where a job's tensors live and in what precision: the `[executor]` table's `device` and `precision`.

`device = "auto"` (the default) is the first CUDA device when torch sees one, else the CPU; "cpu", "cuda"
and "cuda:N" force one. Each process resolves it for itself, so a Ray worker given a GPU (`num_gpus`) uses
it and one without uses its CPU. `precision = "auto"` runs the forward passes of training, feature
extraction and fine-tuning under bfloat16 autocast on CUDA and in float32 on the CPU; "fp32" forces float32
everywhere, "bf16" asks for bfloat16 and fails on the CPU: there torch's bfloat16 autocast left a fine-tuned
ResNet-s's BatchNorm statistics unusable (measured: train-mode test accuracy 1.0, eval-mode 0.5, where float32
gave 1.0 in both). Weights, optimiser
state, features written to the cache and every probe stay float32 or float64 whatever the precision.

On the CPU at float32 (every machine without a GPU, CI's included) nothing here changes what is computed.
Run keys do not hold the device or the precision: they say what a run is, as the thread count does not;
`versions` in the store's runs table records the setting each run was started under.
"""
from __future__ import annotations

import contextlib
import re
from typing import Any

from transferscale.errors import TransferscaleError

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
PRECISIONS = ("auto", "fp32", "bf16")


def check_device(name: str) -> str:
    """The device name if it is one `resolve_device` understands (no torch needed); ValueError otherwise."""
    if not DEVICE_PATTERN.match(name):
        raise ValueError(f"device {name!r}: use \"auto\", \"cpu\", \"cuda\" or \"cuda:N\"")
    return name


def resolve_device(name: str = "auto"):
    """The torch.device `name` means on this machine; a CUDA device it does not have fails clearly."""
    import torch

    check_device(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise TransferscaleError(f"device = {name!r}, but torch sees no CUDA device on this machine; use "
                                 "device = \"auto\" (CUDA when present, else the CPU) or \"cpu\"")
    index = int(name.split(":")[1]) if ":" in name else 0
    if index >= torch.cuda.device_count():
        raise TransferscaleError(f"device = {name!r}, but this machine has {torch.cuda.device_count()} CUDA "
                                 f"device(s): cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return torch.device("cuda", index)


def autocast_dtype(device, precision: str = "auto"):
    """The dtype forward passes autocast to (None: plain float32): bfloat16 on CUDA under "auto", or "bf16"."""
    import torch

    if precision not in PRECISIONS:
        raise TransferscaleError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    kind = torch.device(device).type
    if precision == "bf16" and kind != "cuda":
        raise TransferscaleError(f"precision = \"bf16\" needs a CUDA device, and this job computes on {kind}; use "
                                 "precision = \"auto\" (bf16 on CUDA, float32 elsewhere) or \"fp32\"")
    if precision == "bf16" or (precision == "auto" and kind == "cuda"):
        return torch.bfloat16
    return None


def autocast(device, precision: str = "auto"):
    """A context manager for forward passes: torch.autocast at `autocast_dtype`, or nothing at float32."""
    import torch

    dtype = autocast_dtype(device, precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def to_device(batch: Any, device) -> Any:
    """A batch (a tensor, a dict or tuple of tensors, or an object with `.to`) on `device`; the CPU is a no-op."""
    import torch

    device = torch.device(device)
    if device.type == "cpu":
        return batch
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple | list):
        return type(batch)(to_device(v, device) for v in batch)
    return batch.to(device, non_blocking=True) if hasattr(batch, "to") else batch
