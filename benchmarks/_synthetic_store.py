"""A synthetic study store at any scale, written through `Store` (used by bench_scale.py).

Runs are trained grid models (ViT, MLP-Mixer, ResNet at four sizes, several budgets) plus baselines (random
init and raw pixels); every run has few-shot rows for each task x shots x seed x layer (layer -1, the final
representation, and blocks 0..L-1 with their relative depth), accuracies rounded to 1/1000 as a test set of
1,000 images gives them, following the saturation law per task with noise below the frontier.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from transferscale.store import Measurement, RunCommit, Store

FAMILIES = ("vit", "mixer", "resnet")
SIZES = ("s", "m", "l", "xl")
SHOTS = (1, 5, 10, 25)


def synthetic_runs(n_runs: int, seed: int = 0) -> list[SimpleNamespace]:
    """n_runs runs: about 2% random-init baselines, one raw-pixels baseline, the rest trained."""
    rng = np.random.default_rng(seed)
    n_random = max(1, n_runs // 50)
    runs = []
    for i in range(n_runs):
        family, size = FAMILIES[i % 3], SIZES[(i // 3) % 4]
        if i == n_runs - 1:
            name, kind, family, size, config = "pixels", "pixels", "pixels", None, {}
        elif i >= n_runs - 1 - n_random:
            name, kind, config = f"{family}-{size}-random-{i}", "random_init", {"seed": i}
        else:
            frac, steps = float(rng.choice([0.1, 0.3, 1.0])), int(rng.choice([100, 300, 1000, 3000]))
            name, kind = f"{family}-{size}-d{frac:g}-s{steps}-{i}", "trained"
            config = {"family": family, "size": size, "training": {"data_fraction": frac, "steps": steps}}
        key = hashlib.sha256(name.encode()).hexdigest()
        runs.append(SimpleNamespace(key=key, name=name, kind=kind, family=family, size=size, config=config))
    return runs


def write_synthetic_store(study_dir: Path, n_runs: int, n_tasks: int = 20, shots=SHOTS, n_seeds: int = 3,
                          n_layers: int = 5, batch: int = 100, seed: int = 0) -> Path:
    """Write the store; `n_layers` blocks plus the final layer, so n_layers + 1 layer values per probe."""
    rng = np.random.default_rng(seed)
    tasks = [f"task{t:02d}" for t in range(n_tasks)]
    sat = 0.95 - 0.3 * np.arange(n_tasks) / max(n_tasks - 1, 1)  # near tasks saturate high, far ones low
    k = 0.5 + 0.4 * rng.random(n_tasks)
    alpha = 1.3 + 1.2 * rng.random(n_tasks)
    layers = [-1, *range(n_layers)]
    depth = np.array([1.0, *[(i + 1) / n_layers for i in range(n_layers)]])
    runs = synthetic_runs(n_runs, seed)
    with Store(study_dir) as store:
        store.set_meta(name=f"synthetic-{n_runs}", spec=f'name = "synthetic-{n_runs}"\n',
                       created="2026-01-01T00:00:00+0000",
                       spec_json=json.dumps({"name": f"synthetic-{n_runs}", "downstream": {"tasks": tasks}}))
        pending = []
        for run in runs:
            store.mark_running(run, versions={})
            trained = run.kind == "trained"
            us = float(rng.uniform(0.05, 0.9)) if trained else 0.01
            rows = [] if run.kind == "pixels" else [Measurement("upstream_accuracy", "fractals", round(us, 3))]
            # (tasks, shots, seeds, layers) accuracies in one array, then rows in the store's key order
            base = (sat[:, None] - 0.1 / np.asarray(shots, float)[None, :])[:, :, None, None]
            base = base - (k * (1 - us) ** alpha)[:, None, None, None] if trained else base * 0 + 0.2
            gap = np.abs(rng.normal(0, 0.03, (n_tasks, len(shots), n_seeds, 1)))
            acc = base - gap - 0.12 * (1 - depth)[None, None, None, :] ** 2
            acc = np.round(np.clip(acc + rng.normal(0, 0.005, acc.shape), 0.0, 1.0), 3)
            vals = acc.ravel().tolist()
            i = 0
            for task in tasks:
                for s in shots:
                    for sd in range(n_seeds):
                        for layer, d in zip(layers, depth.tolist()):
                            rows.append(Measurement("fewshot_accuracy", task, vals[i], s, sd, layer, 1024.0, d))
                            i += 1
            pending.append(RunCommit(run.key, rows, (), (), 1000, 1.0, 1.0))
            if len(pending) >= batch:
                store.commit_runs(pending)
                pending = []
        store.commit_runs(pending)
    return study_dir
