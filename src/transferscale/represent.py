"""Representations: one forward pass of a checkpoint over a dataset gives its features and its logits."""
from __future__ import annotations

import numpy as np
import torch

from transferscale.models import pooled_features
from transferscale.pretrain import to_tensor

BATCH = 500


@torch.no_grad()
def extract(model: torch.nn.Module | None, x_uint8: np.ndarray) -> np.ndarray:
    """The final representation (pooled pre-logits features) of every image, float32 [N, D].

    `model=None` is the raw-pixel baseline: the flattened image scaled to [0, 1].
    """
    if model is None:
        return x_uint8.reshape(len(x_uint8), -1).astype(np.float32) / 255.0
    model.eval()
    out = [pooled_features(model, to_tensor(x_uint8[i:i + BATCH])).numpy() for i in range(0, len(x_uint8), BATCH)]
    return np.concatenate(out).astype(np.float32, copy=False)


@torch.no_grad()
def accuracy(model: torch.nn.Module, x_uint8: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of the model's own classifier head."""
    model.eval()
    correct = 0
    for i in range(0, len(x_uint8), BATCH):
        pred = model(to_tensor(x_uint8[i:i + BATCH])).argmax(1).numpy()
        correct += int((pred == y[i:i + BATCH]).sum())
    return correct / len(x_uint8)
