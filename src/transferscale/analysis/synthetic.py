"""Synthetic scatters with a known saturation frontier, for checking fits and their intervals."""
from __future__ import annotations

import numpy as np


def simulate_frontier(k, alpha, e_ir, n=100, us_range=(0.3, 0.9), gap_scale=0.03, noise=0.003,
                      random_state=None) -> tuple[np.ndarray, np.ndarray]:
    """(us_acc, ds_acc) of n models scattered below the frontier e_DS = k * e_US^alpha + e_IR.

    US accuracies are uniform in us_range; each model falls below the frontier by an exponential gap
    (mean gap_scale, so many models sit near it and a few far below, as in a grid of hyper-parameters),
    plus Gaussian measurement noise (sd noise) that can put a model slightly above it.
    """
    rng = np.random.default_rng(random_state)
    us = rng.uniform(*us_range, size=n)
    frontier = 1 - (k * (1 - us) ** alpha + e_ir)
    ds = frontier - rng.exponential(gap_scale, size=n) + rng.normal(0.0, noise, size=n)
    return us, np.clip(ds, 0.0, 1.0)
