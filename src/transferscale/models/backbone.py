"""The one interface every model under study has: raw dataset inputs -> every layer's pooled features.

A `Backbone` wraps a torch module with what the engine needs and nothing else:

- `preprocess(x)`: a batch of a dataset's raw inputs (uint8 images (B, H, W[, C]) or a 1-D array of strings)
  -> what the module eats (a float tensor, or a dict of token tensors);
- `forward_layers(inputs)`: {layer: [B, D_layer] tensor} from ONE forward pass; layer i counts from the input
  side, -1 is the final representation (the features the upstream head, or a new one, reads);
- `logits(inputs)`: the upstream head's output, when `has_head`.

`layers(x)` and `accuracy(x, y)` batch these over a whole split in eval mode without gradients; models differ
only in the three methods above, so a new model family (a source) is one subclass.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from transferscale.data.dataset import InputSpec
from transferscale.errors import TransferscaleError

BATCH = 500


class Backbone:
    """A model under study. Subclasses set `modality` and implement preprocess / forward_layers (/ logits)."""

    modality: ClassVar[str] = "image"
    batch_size: int = BATCH
    device: torch.device = torch.device("cpu")  # `to` moves a backbone elsewhere
    precision: str = "fp32"

    def __init__(self, module: torch.nn.Module | None, *, has_head: bool = False):
        self.module = module
        self.has_head = has_head

    def to(self, device, precision: str = "auto") -> Backbone:
        """Compute on `device` (the module moves there) with forward passes autocast per `precision`
        (transferscale.device); inputs are moved batch by batch, features come back float32 on the CPU."""
        self.device, self.precision = torch.device(device), precision
        if self.module is not None:
            self.module.to(self.device)
        return self

    def _forward(self, fn, x: np.ndarray):
        from transferscale.device import autocast, to_device

        inputs = to_device(self.preprocess(x), self.device)
        with autocast(self.device, self.precision):
            return fn(inputs)

    # ---- what a subclass provides ---------------------------------------------------------------------
    def preprocess(self, x: np.ndarray) -> Any:
        raise NotImplementedError

    def forward_layers(self, inputs: Any) -> dict[int, torch.Tensor]:
        raise NotImplementedError

    def logits(self, inputs: Any) -> torch.Tensor:
        raise TransferscaleError(f"{type(self).__name__} has no upstream head, so it has no upstream accuracy")

    def check_input(self, spec: InputSpec, task: str) -> None:
        """Fail with a clear error when this backbone cannot read a dataset's inputs."""
        if spec.modality != self.modality:
            raise TransferscaleError(f"task {task!r} holds {spec.describe()}, but this model reads "
                                     f"{self.modality}; pick tasks of its modality")

    # ---- shared ---------------------------------------------------------------------------------------
    def num_params(self) -> int | None:
        return None if self.module is None else sum(p.numel() for p in self.module.parameters())

    @torch.no_grad()
    def layers(self, x: np.ndarray) -> dict[int, np.ndarray]:
        """Every layer's pooled features of every input, float32 {layer: [N, D_layer]}, batch by batch."""
        if self.module is not None:
            self.module.eval()
        chunks: dict[int, list[np.ndarray]] = {}
        for i in range(0, len(x), self.batch_size):
            out = self._forward(self.forward_layers, x[i:i + self.batch_size])
            for layer, feats in out.items():
                chunks.setdefault(layer, []).append(_numpy(feats))
        return {layer: np.concatenate(parts).astype(np.float32, copy=False) for layer, parts in chunks.items()}

    @torch.no_grad()
    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        """Top-1 accuracy of the upstream head."""
        self.module.eval()
        correct = 0
        for i in range(0, len(x), self.batch_size):
            pred = self._forward(self.logits, x[i:i + self.batch_size]).float().argmax(1).cpu().numpy()
            correct += int((pred == y[i:i + self.batch_size]).sum())
        return correct / len(x)


def _numpy(t) -> np.ndarray:
    return t.float().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of hidden [B, T, D] where mask [B, T] is 1: sum_t m_t h_t / max(1, sum_t m_t)."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
