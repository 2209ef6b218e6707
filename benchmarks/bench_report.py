"""How long `transferscale report` takes on a study the size of the embedded default, against its 30 s budget.

The default study has 27 trained runs (ViT, MLP-Mixer, ResNet x 3 sizes x 3 budgets), 10 baselines, 8 tasks,
4 shot counts, 3 seeds and layer-wise probes. This writes a store of that shape with synthetic accuracies (the
report's cost depends on the shape, not on the values), builds the report, and prints each stage's time and the share of
the budget, next to the bare saturation fits (fit_saturation, hull, 200 resamples) timed in the same run: the
ratio says how much the page adds to the analysis it shows. Pass a study directory to time a real one.

    python benchmarks/bench_report.py [STUDY_DIR]
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from transferscale.analysis import fit_saturation
from transferscale.report import analyse, figures, figures_axes, figures_tasks, html, load_study
from transferscale.store import Measurement, Store

BUDGET_S = 30.0
TASKS = [f"task{i}" for i in range(8)]
LAYERS = 4  # layer-wise probes at every block, as the default spec now asks


def write_default_shaped_study(study_dir: Path) -> Path:
    rng = np.random.default_rng(0)
    with Store(study_dir) as store:
        store.set_meta(name="bench", spec='name = "bench"\n', created="2026-01-01T00:00:00+0000", spec_json="{}")
        runs = [(f"{f}-{s}-d{d:g}", "trained", f, s, {"training": {"data_fraction": d, "steps": int(600 * d)}})
                for f in ("vit", "mixer", "resnet") for s in ("s", "m", "l") for d in (0.1, 0.3, 1.0)]
        runs += [(f"{f}-{s}-random", "random_init", f, s, {}) for f in ("vit", "mixer", "resnet") for s in "sml"]
        runs.append(("pixels", "pixels", "pixels", None, {}))
        for i, (name, kind, family, size, config) in enumerate(runs):
            store.mark_running(SimpleNamespace(key=f"r{i:02d}", name=name, kind=kind, family=family, size=size,
                                               config=config), versions={})
            us = rng.uniform(0.2, 0.7) if kind == "trained" else 0.01
            rows = [] if kind == "pixels" else [Measurement("upstream_accuracy", "fractals", us)]
            for t, task in enumerate(TASKS):
                for shots in (1, 5, 10, 25):
                    for seed in range(3):
                        acc = 0.9 - 0.1 * t / 8 - 0.2 / shots - 0.5 * (1 - us) ** 2 - abs(rng.normal(0, 0.03))
                        for layer in [-1, *(range(LAYERS) if kind == "trained" else ())]:
                            depth = 1.0 if layer == -1 else (layer + 1) / LAYERS
                            value = float(np.clip(acc - 0.1 * (1 - depth), 0.05, 1))
                            rows.append(Measurement("fewshot_accuracy", task, value, shots, seed, layer, 1024.0,
                                                    depth=depth))
            store.commit_run(f"r{i:02d}", rows, {}, params=1, train_seconds=1.0, eval_seconds=1.0)
    return study_dir


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        study = Path(sys.argv[1]) if len(sys.argv) > 1 else write_default_shaped_study(Path(tmp) / "study")
        times = {}
        t = time.perf_counter()
        data = load_study(study)
        times["load"] = time.perf_counter() - t
        t = time.perf_counter()
        fit_saturation(data.points, by=["task", "shots"], n_bootstrap=200, random_state=0)
        reference = time.perf_counter() - t
        t = time.perf_counter()
        res = analyse(data, n_bootstrap=200)
        times["analyse"] = time.perf_counter() - t
        ref = res.ref_shots
        figs = {}
        for name, draw in (("frontier", lambda: figures.frontier_grid(data, res)),
                           ("shots", lambda: figures_tasks.params_vs_shots(data, res)),
                           ("axes", lambda: figures_axes.scaling_axes_grid(data, res, ref)),
                           ("correlations", lambda: figures_tasks.correlation_heatmaps(data, res, ref)),
                           ("layers", lambda: figures_tasks.layer_curves(data, res, ref))):
            t = time.perf_counter()
            figs[name] = draw()
            times[f"figure {name}"] = time.perf_counter() - t
        t = time.perf_counter()
        page = html.page(data, res, figs, "transferscale report", sum(times.values()))
        times["page"] = time.perf_counter() - t
    total = sum(times.values())
    print(f"{data.points['model'].nunique()} trained runs x {len(data.tasks)} tasks x {len(data.shots)} shot counts; "
          f"page {len(page) / 1e6:.1f} MB")
    for name, sec in times.items():
        print(f"  {name:<22} {sec:6.2f} s")
    print(f"total {total:.1f} s = {total / BUDGET_S:.0%} of the {BUDGET_S:.0f} s budget; "
          f"{total / reference:.1f}x the bare hull fits with 200 resamples ({reference:.1f} s)")


if __name__ == "__main__":
    main()
