"""Would the feature cache lose anything in float16? Probe a finished study's cached features both ways.

For every (checkpoint, task) pair in a study's feature cache (train and test split files), every cached layer,
the study's probe grid (shots, seeds, l2) is run on the float32 features and on the same features rounded to
float16 and read back as float32. Prints the largest accuracy change, how many accuracies changed at all, and
the cache's bytes in each dtype. The issue's bar: every accuracy within 0.001 of float32.

    python benchmarks/bench_cache_dtype.py transferscale-runs/default [--pairs 200] [--seed 0]

Probing only reads the cache; nothing in the study is written.
"""
from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from transferscale.data.registry import load_dataset
from transferscale.probe import feature_problem, fewshot_probe


def cached_pairs(study: Path) -> list[tuple[dict, Path, Path]]:
    """(key without split, train file, test file) for every key cached for both splits."""
    by_key: dict[str, dict[str, Path]] = {}
    keys: dict[str, dict] = {}
    for path in sorted((study / "features").glob("*.npz")):
        with np.load(path, allow_pickle=False) as f:
            key = json.loads(str(f["__key__"]))
        split = key.pop("split")
        text = json.dumps(key, sort_keys=True)
        by_key.setdefault(text, {})[split] = path
        keys[text] = key
    return [(keys[t], s["train"], s["test"]) for t, s in by_key.items() if {"train", "test"} <= set(s)]


def probe_grid(study: Path) -> dict:
    """The [probe] table of the spec stored with the study."""
    import tomllib

    with sqlite3.connect(f"file:{study / 'results.sqlite'}?mode=ro", uri=True) as conn:
        text = dict(conn.execute("select key, value from meta").fetchall())["spec"]
    probe = tomllib.loads(text).get("probe", {})
    return {"shots": probe.get("shots", [1, 5, 10, 25]), "seeds": probe.get("seeds", [0, 1, 2]),
            "l2": probe.get("l2", [1024.0])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", type=Path)
    ap.add_argument("--pairs", type=int, default=0, help="probe this many (checkpoint, task) pairs, drawn at "
                    "random (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    grid = probe_grid(args.study)
    pairs = cached_pairs(args.study)
    if args.pairs and args.pairs < len(pairs):
        pick = np.random.default_rng(args.seed).choice(len(pairs), args.pairs, replace=False)
        pairs = [pairs[i] for i in sorted(pick)]
    data: dict[str, object] = {}
    diffs, n_rows, n_changed, bytes32, bytes16, overflow = [], 0, 0, 0, 0, 0
    for key, train_path, test_path in pairs:
        name = json.dumps([key["dataset"], key.get("options", {})], sort_keys=True)
        if name not in data:
            data[name] = load_dataset(key["dataset"], **key.get("options", {}))
        ds = data[name]
        with np.load(train_path) as ftr, np.load(test_path) as fte:
            layers = [n for n in ftr.files if n.startswith("layer_")]
            for layer in layers:
                xtr, xte = ftr[layer].astype(np.float32), fte[layer].astype(np.float32)
                bytes32 += xtr.nbytes + xte.nbytes
                bytes16 += (xtr.nbytes + xte.nbytes) // 2
                if max(np.abs(xtr).max(), np.abs(xte).max()) >= 65504:  # float16's largest finite value
                    overflow += 1
                    continue
                if feature_problem(xtr) or feature_problem(xte):
                    continue
                with threadpool_limits(1):
                    ref = fewshot_probe(xtr, ds.y_train, xte, ds.y_test, check_features=False, **grid)
                    half = fewshot_probe(xtr.astype(np.float16).astype(np.float32), ds.y_train,
                                         xte.astype(np.float16).astype(np.float32), ds.y_test,
                                         check_features=False, **grid)
                d = np.abs(ref["accuracy"].to_numpy() - half["accuracy"].to_numpy())
                diffs.append(d.max())
                n_rows += len(d)
                n_changed += int((d > 0).sum())
    diffs = np.array(diffs)
    print(f"pairs probed: {len(pairs)} (checkpoint x task), layers: {len(diffs)}, accuracies: {n_rows}")
    print(f"changed at all: {n_changed} ({n_changed / max(n_rows, 1):.1%}); largest change: {diffs.max():.5f}; "
          f"layers over 0.001: {(diffs > 0.001).sum()}; layers with values beyond float16's range: {overflow}")
    print(f"bytes of these features: float32 {bytes32 / 2**20:.1f} MiB, float16 {bytes16 / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
