"""The HTML report: a study (or any results table) shown the way Abnar et al. 2021 show theirs.

    from transferscale.report import build_report, load_study
    path = build_report(load_study("transferscale-runs/default"))   # -> .../report/index.html

One self-contained page (figures embedded as PNG, style inline, no scripts) that opens from disk on any
machine. Torch-free: matplotlib (Agg), numpy, pandas, scipy.
"""
from __future__ import annotations

import time
from pathlib import Path

from transferscale.report.data import ReportData, load_study, load_table
from transferscale.report.numbers import Analysis, analyse

__all__ = ["Analysis", "ReportData", "analyse", "build_report", "load_study", "load_table", "render"]


def render(data: ReportData, n_bootstrap: int = 200, seed: int = 0, command: str = "") -> str:
    """The report page as one HTML string."""
    from transferscale.report import figures, figures_axes, figures_finetune, figures_tasks, html

    start = time.perf_counter()
    res = analyse(data, n_bootstrap=n_bootstrap, seed=seed)
    ref = res.ref_shots
    figs = {
        "frontier": figures.frontier_grid(data, res),
        "shots": figures_tasks.params_vs_shots(data, res),
        "axes": figures_axes.scaling_axes_grid(data, res, ref),
        "correlations": figures_tasks.correlation_heatmaps(data, res, ref),
        "layers": figures_tasks.layer_curves(data, res, ref),
        "finetune": figures_finetune.finetune_grid(data),
    }
    return html.page(data, res, figs, command, time.perf_counter() - start)


def build_report(data: ReportData, out: str | Path, n_bootstrap: int = 200, seed: int = 0,
                 command: str = "") -> Path:
    """Write the page to `out` (a file, written atomically) and return its path."""
    out = Path(out)
    text = render(data, n_bootstrap=n_bootstrap, seed=seed, command=command)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out
