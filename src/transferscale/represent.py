"""Representations: one forward pass of a checkpoint over a dataset gives every layer's features.

Layers are numbered by timm's `forward_intermediates`: for ViT and MLP-Mixer, layer i is the output of
block i (tokens, averaged over all patch positions: there is no class token); for ResNet, layer 0 is the stem
and layers 1-4 the four stages (feature maps, averaged over height and width). Layer -1 is the final
representation, the pooled pre-logits features the classifier head sees (for ViT and Mixer, the tokens after
the final norm, averaged). `depth` = (i + 1) / number of layers, and 1.0 for layer -1, so models of
different depth compare.
"""
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


def layer_depth(layer: int, n_layers: int) -> float:
    return 1.0 if layer == -1 else (layer + 1) / n_layers


@torch.no_grad()
def extract_layers(model: torch.nn.Module | None, x_uint8: np.ndarray) -> dict[int, np.ndarray]:
    """Every layer's pooled features from one forward pass: {layer: float32 [N, D_layer]}, -1 the final one.

    `model=None` is the raw-pixel baseline, which has only layer -1.
    """
    if model is None:
        return {-1: extract(None, x_uint8)}
    model.eval()
    chunks: dict[int, list[np.ndarray]] = {}
    for i in range(0, len(x_uint8), BATCH):
        final, inter = model.forward_intermediates(to_tensor(x_uint8[i:i + BATCH]))
        chunks.setdefault(-1, []).append(model.forward_head(final, pre_logits=True).numpy())
        for layer, fmap in enumerate(inter):  # NCHW for every family: average over the spatial positions
            chunks.setdefault(layer, []).append(fmap.mean(dim=(2, 3)).numpy())
    return {layer: np.concatenate(parts).astype(np.float32, copy=False) for layer, parts in chunks.items()}


@torch.no_grad()
def accuracy(model: torch.nn.Module, x_uint8: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of the model's own classifier head."""
    model.eval()
    correct = 0
    for i in range(0, len(x_uint8), BATCH):
        pred = model(to_tensor(x_uint8[i:i + BATCH])).argmax(1).numpy()
        correct += int((pred == y[i:i + BATCH]).sum())
    return correct / len(x_uint8)
