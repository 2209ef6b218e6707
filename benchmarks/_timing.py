"""Timing shared by the benchmark scripts (run them as `python benchmarks/NAME.py`)."""
from __future__ import annotations

import time


def best_times(sides: dict, repeats: int) -> tuple[dict, dict]:
    """Best time and last result of each side, the sides taking turns in every repeat so that a noisy
    stretch of the shared machine hits them alike."""
    best, result = {name: float("inf") for name in sides}, {}
    for _ in range(repeats):
        for name, fn in sides.items():
            t0 = time.perf_counter()
            result[name] = fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best, result
