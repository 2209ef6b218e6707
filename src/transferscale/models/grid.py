"""The `grid` model source: small timm ViT / MLP-Mixer / ResNet networks built from shapes, trained by the study.

timm's registered entry points fix patch sizes and stems meant for 224x224 RGB, so the classes are built
directly: ViT with average pooling and no class token, MLP-Mixer with the shape's patches, ResNet with a deep
(narrow) stem, since the default 7x7 stem is always 64 channels wide. The input size and channel count come
from the upstream dataset (28x28 grey in the default study).

Inputs are uint8 images mapped by one fixed affine map, x / 255 * 2 - 1 (`to_tensor`), whatever the dataset.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from transferscale.data.dataset import InputSpec
from transferscale.errors import TransferscaleError, unknown
from transferscale.models.backbone import Backbone
from transferscale.shapes import FAMILIES, resolve_shape

# Images are uint8 in [0, 255]; one fixed affine map to roughly zero mean, unit scale for every dataset.
PIXEL_SHIFT, PIXEL_SCALE = 0.5, 0.5
IMG_SIZE, IN_CHANS = 28, 1  # the default study's images


def to_tensor(x_uint8: np.ndarray) -> torch.Tensor:
    """uint8 images (N, H, W) or (N, H, W, C) -> float NCHW tensor, (x / 255 - 0.5) / 0.5."""
    x = torch.from_numpy(np.ascontiguousarray(x_uint8)).float().div_(255.0)
    x = x.sub_(PIXEL_SHIFT).div_(PIXEL_SCALE)
    return x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()


def build_model(family: str, shape: dict, num_classes: int, img_size: int | tuple[int, int] = IMG_SIZE,
                in_chans: int = IN_CHANS) -> nn.Module:
    """A freshly initialised network; `shape` is a dict of the family's shape fields."""
    if family not in FAMILIES:
        raise unknown("model family", family, FAMILIES)
    if family == "vit":
        from timm.models.vision_transformer import VisionTransformer

        return VisionTransformer(
            img_size=img_size, patch_size=shape["patch_size"], in_chans=in_chans, num_classes=num_classes,
            embed_dim=shape["embed_dim"], depth=shape["depth"], num_heads=shape["num_heads"],
            mlp_ratio=shape["mlp_ratio"], global_pool="avg", class_token=False, fc_norm=False,
        )
    if family == "mixer":
        from timm.models.mlp_mixer import MlpMixer

        return MlpMixer(
            num_classes=num_classes, img_size=img_size, in_chans=in_chans, patch_size=shape["patch_size"],
            num_blocks=shape["num_blocks"], embed_dim=shape["embed_dim"],
            mlp_ratio=(shape["mlp_ratio_tokens"], shape["mlp_ratio_channels"]),
        )
    from timm.models.resnet import BasicBlock, ResNet

    return ResNet(
        block=BasicBlock, layers=tuple(shape["layers"]), num_classes=num_classes, in_chans=in_chans,
        channels=tuple(shape["widths"]), stem_type="deep", stem_width=shape["stem_width"],
    )


def build_named(family: str, size: str, num_classes: int = 100) -> nn.Module:
    from transferscale.shapes import shape_dict

    return build_model(family, shape_dict(resolve_shape(family, size)), num_classes)


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def pooled_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The final representation: pooled pre-logits features, the input to the classifier head."""
    return model.forward_head(model.forward_features(x), pre_logits=True)


class TimmBackbone(Backbone):
    """A timm image network: layer i is intermediate i of `forward_intermediates` (NCHW, averaged over H and
    W: ViT and Mixer tokens, ResNet stem and stages), -1 the pooled pre-logits features the head reads."""

    modality = "image"

    def __init__(self, module: nn.Module, *, has_head: bool = True, input_spec: InputSpec | None = None):
        super().__init__(module, has_head=has_head)
        self.input_spec = input_spec

    def preprocess(self, x: np.ndarray) -> torch.Tensor:
        return to_tensor(x)

    def forward_layers(self, inputs: torch.Tensor) -> dict[int, torch.Tensor]:
        final, inter = self.module.forward_intermediates(inputs)
        out = {-1: self.module.forward_head(final, pre_logits=True)}
        for layer, fmap in enumerate(inter):  # NCHW for every family: average over the spatial positions
            out[layer] = fmap.mean(dim=(2, 3))
        return out

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.module(inputs)

    def check_input(self, spec: InputSpec, task: str) -> None:
        super().check_input(spec, task)
        if self.input_spec is not None and spec != self.input_spec:
            raise TransferscaleError(
                f"task {task!r} holds {spec.describe()}, but this grid model was built for "
                f"{self.input_spec.describe()} (its upstream); give the task images of that size and channel count")
