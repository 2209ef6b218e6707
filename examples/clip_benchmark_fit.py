"""The saturation law on someone else's records: CLIP_benchmark's linear-probe results (LAION, MIT licence).

Upstream accuracy: each CLIP model's full-data ImageNet linear-probe accuracy. Downstream: its 10-shot,
25-shot and full-data linear-probe accuracy on each other dataset. The records hold one row per
(lr, epochs) setting; taking the best per (model, dataset, k) follows the benchmark's own summaries, but it
selects on test accuracy, so these points are optimistic. 12 models give few hull points: expect flags.

    python examples/clip_benchmark_fit.py [PATH/TO/scaling_experiment_data2.json]
"""
from __future__ import annotations

import sys

import pandas as pd

import transferscale as ts

DEFAULT = "../shared/data/external/clip_benchmark/scaling_experiment_data2.json"


def points(records: pd.DataFrame) -> pd.DataFrame:
    best = records.groupby(["model", "pretrained", "dataset", "fewshot_k"], as_index=False).lp_acc1.max()
    upstream = best[(best.dataset == "imagenet1k-unverified") & (best.fewshot_k == -1)]
    upstream = upstream.rename(columns={"lp_acc1": "us_acc"})[["model", "pretrained", "us_acc"]]
    down = best[best.dataset != "imagenet1k-unverified"].rename(columns={"lp_acc1": "ds_acc"})
    return down.merge(upstream, on=["model", "pretrained"])


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else DEFAULT
    table = points(pd.read_json(path))
    fits = ts.fit_saturation(table, us="us_acc", ds="ds_acc", by=["dataset", "fewshot_k"], n_bootstrap=500,
                             random_state=0)
    cols = ["dataset", "fewshot_k", "saturation", "saturation_low", "saturation_high", "n_points", "flags"]
    with pd.option_context("display.width", 200, "display.max_rows", 100):
        print(fits[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
