"""The raw-input baselines: a task's pixels, flattened and scaled to [0, 1], or a text's hashed bag of words,
as the only (final) layer."""
from __future__ import annotations

import numpy as np

from transferscale.models.backbone import Backbone


class PixelBackbone(Backbone):
    modality = "image"

    def __init__(self):
        super().__init__(None, has_head=False)

    def layers(self, x: np.ndarray) -> dict[int, np.ndarray]:
        return {-1: x.reshape(len(x), -1).astype(np.float32) / 255.0}


class WordsBackbone(Backbone):
    """The raw-input baseline of text: hashed bag of words, the text analogue of pixels.

    Each text becomes counts of its lower-cased word unigrams and bigrams hashed into `n_features` buckets
    (scikit-learn's HashingVectorizer, signed hashing so collisions cancel on average), scaled to unit L2
    norm: one (final) layer, no learning, nothing fitted to the task.
    """

    modality = "text"
    n_features = 2**12

    def __init__(self):
        super().__init__(None, has_head=False)

    def layers(self, x: np.ndarray) -> dict[int, np.ndarray]:
        from sklearn.feature_extraction.text import HashingVectorizer

        vec = HashingVectorizer(n_features=self.n_features, ngram_range=(1, 2), norm="l2", lowercase=True)
        return {-1: vec.transform(list(x)).toarray().astype(np.float32)}
