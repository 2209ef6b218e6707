"""The three point sets of the saturation fit side by side on timm's ImageNet results and five shifted test sets.

Upstream accuracy is ImageNet-1k top-1 (for ImageNet-R and -A, the same val images restricted to their 200
classes, the *-clean files); downstream is top-1 on the shifted set; the files are joined on (model,
img_size), since timm lists some models at two image sizes. Each test set is fitted on the upper hull, on all
models, and on the quantile frontier at each --quantiles q; the table gives per fit the points that carry it
(n_points), e_IR and alpha with their 95% intervals, and the flags.

    PYTHONPATH=src python benchmarks/compare_frontiers.py                   # 1,000 resamples, all cores
    PYTHONPATH=src python benchmarks/compare_frontiers.py --n-bootstrap 200 --quantiles 0.8 0.9 0.95
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from transferscale.analysis import fit_saturation

TIMM = Path(__file__).resolve().parents[2] / "shared" / "data" / "external" / "timm"
TEST_SETS = [  # (name, upstream file, shifted file)
    ("ImageNet-V2 (matched freq.)", "results-imagenet.csv", "results-imagenetv2-matched-frequency.csv"),
    ("ImageNet-ReaL", "results-imagenet.csv", "results-imagenet-real.csv"),
    ("ImageNet-Sketch", "results-imagenet.csv", "results-sketch.csv"),
    ("ImageNet-R", "results-imagenet-r-clean.csv", "results-imagenet-r.csv"),
    ("ImageNet-A", "results-imagenet-a-clean.csv", "results-imagenet-a.csv"),
]


def load_points(timm_dir: Path) -> pd.DataFrame:
    """One row per (test set, model at an image size): us_acc, ds_acc as fractions."""
    frames = []
    for name, upstream, shifted in TEST_SETS:
        up, sh = (pd.read_csv(timm_dir / f, thousands=",") for f in (upstream, shifted))
        joined = up.merge(sh, on=["model", "img_size"], suffixes=("_us", "_ds"), validate="one_to_one")
        frames.append(pd.DataFrame({"test_set": name, "us_acc": joined["top1_us"] / 100,
                                    "ds_acc": joined["top1_ds"] / 100}).dropna())
    return pd.concat(frames, ignore_index=True)


def interval(row, name: str) -> str:
    if np.isnan(row[name]):
        return "-"
    if np.isnan(row[f"{name}_low"]):
        return f"{row[name]:.3f}"
    return f"{row[name]:.3f} [{row[f'{name}_low']:.3f}, {row[f'{name}_high']:.3f}]"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--timm-dir", type=Path, default=TIMM)
    ap.add_argument("--n-bootstrap", type=int, default=1000)
    ap.add_argument("--quantiles", type=float, nargs="+", default=[0.9])
    ap.add_argument("--jobs", type=int, default=None, help="processes (default: one per core)")
    args = ap.parse_args()
    points = load_points(args.timm_dir)
    estimators = [("upper_hull", {}), ("all", {})] + [(f"quantile {q}", {"quantile": q}) for q in args.quantiles]
    t0 = time.perf_counter()
    fits = {}
    for label, extra in estimators:
        fits[label] = fit_saturation(points, by="test_set", points=label.split()[0], n_bootstrap=args.n_bootstrap,
                                     random_state=0, jobs=args.jobs, **extra).set_index("test_set")
    print(f"timm results, {points.groupby('test_set').size().max()} models (model, img_size); "
          f"e_DS = k e_US^alpha + e_IR; 95% intervals from {args.n_bootstrap} resamples\n")
    header = f"  {'estimator':14s} {'n_points':>8s}  {'e_IR [95% CI]':26s} {'alpha [95% CI]':26s} flags"
    for name, _, _ in TEST_SETS:
        print(f"{name} ({int(fits['all'].loc[name, 'n_models'])} models)")
        print(header)
        for label, _ in estimators:
            row = fits[label].loc[name]
            flags = row["flags"] if isinstance(row["flags"], str) and row["flags"] else "-"
            print(f"  {label:14s} {int(row['n_points']):8d}  {interval(row, 'e_ir'):26s} "
                  f"{interval(row, 'alpha'):26s} {flags}")
        print()
    print(f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
