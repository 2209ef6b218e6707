"""What a study shows at one shot count, per task: the best trained run against raw pixels and random init,
and the Spearman correlation of upstream with downstream accuracy over the trained runs.

    python examples/default_study_summary.py [STUDY_DIR] [--shots 10]

The README's table for the default study comes from this script.
"""
from __future__ import annotations

import argparse

import pandas as pd
from scipy.stats import spearmanr

import transferscale as ts


def summary(df: pd.DataFrame, shots: int) -> pd.DataFrame:
    few = df[(df.metric == "fewshot_accuracy") & (df.shots == shots) & (df.layer == -1)]
    acc = few.groupby(["name", "run_kind", "task"]).value.mean().reset_index()
    upstream = df[df.metric == "upstream_accuracy"].set_index("name").value
    rows = []
    for task, g in acc.groupby("task"):
        trained = g[g.run_kind == "trained"].set_index("name").value
        random = g[g.run_kind == "random_init"].set_index("name").value
        pixels = g[g.run_kind == "pixels"].value
        rows.append({
            "task": task, "best run": trained.idxmax(), "best": trained.max(),
            "pixels": pixels.item() if len(pixels) else float("nan"),
            "best random init": random.max() if len(random) else float("nan"),
            "spearman(US, DS)": spearmanr(upstream[trained.index], trained).statistic,
        })
    out = pd.DataFrame(rows)
    out["best - pixels"] = out["best"] - out["pixels"]
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study_dir", nargs="?", default="transferscale-runs/default")
    parser.add_argument("--shots", type=int, default=10)
    args = parser.parse_args()
    df = ts.read_results(args.study_dir)
    trained = df[(df.run_kind == "trained") & (df.metric == "upstream_accuracy")].value
    print(f"{len(trained)} trained runs, upstream accuracy {trained.min():.3f} to {trained.max():.3f}")
    print(summary(df, args.shots).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    ft = df[df.metric == "finetune_accuracy"]
    if len(ft):
        print("\nfine-tuning accuracy")
        print(ft.pivot_table(index="name", columns="task", values="value").to_string(float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
