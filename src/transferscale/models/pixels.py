"""The raw-input baseline: a task's pixels, flattened and scaled to [0, 1], as the only (final) layer."""
from __future__ import annotations

import numpy as np

from transferscale.models.backbone import Backbone


class PixelBackbone(Backbone):
    modality = "image"

    def __init__(self):
        super().__init__(None, has_head=False)

    def layers(self, x: np.ndarray) -> dict[int, np.ndarray]:
        return {-1: x.reshape(len(x), -1).astype(np.float32) / 255.0}
