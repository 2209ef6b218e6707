"""Build timm networks of the three families (ViT, MLP-Mixer, ResNet) from a shape, at small sizes.

timm's registered entry points fix patch sizes and stems meant for 224x224 RGB, so the classes are built
directly: ViT with average pooling and no class token, MLP-Mixer with 4x4 patches, ResNet with a deep
(narrow) stem, since the default 7x7 stem is always 64 channels wide.
"""
from __future__ import annotations

import torch
from torch import nn

from transferscale.errors import unknown
from transferscale.shapes import FAMILIES, resolve_shape

IMG_SIZE = 28
IN_CHANS = 1


def build_model(family: str, shape: dict, num_classes: int) -> nn.Module:
    """A freshly initialised network; `shape` is a dict of the family's shape fields."""
    if family not in FAMILIES:
        raise unknown("model family", family, FAMILIES)
    if family == "vit":
        from timm.models.vision_transformer import VisionTransformer

        return VisionTransformer(
            img_size=IMG_SIZE, patch_size=shape["patch_size"], in_chans=IN_CHANS, num_classes=num_classes,
            embed_dim=shape["embed_dim"], depth=shape["depth"], num_heads=shape["num_heads"],
            mlp_ratio=shape["mlp_ratio"], global_pool="avg", class_token=False, fc_norm=False,
        )
    if family == "mixer":
        from timm.models.mlp_mixer import MlpMixer

        return MlpMixer(
            num_classes=num_classes, img_size=IMG_SIZE, in_chans=IN_CHANS, patch_size=shape["patch_size"],
            num_blocks=shape["num_blocks"], embed_dim=shape["embed_dim"],
            mlp_ratio=(shape["mlp_ratio_tokens"], shape["mlp_ratio_channels"]),
        )
    from timm.models.resnet import BasicBlock, ResNet

    return ResNet(
        block=BasicBlock, layers=tuple(shape["layers"]), num_classes=num_classes, in_chans=IN_CHANS,
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
