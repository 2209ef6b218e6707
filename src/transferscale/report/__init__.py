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

__all__ = ["Analysis", "ReportData", "analyse", "build_report", "draw_figures", "load_study", "load_table", "render"]


def render(data: ReportData, n_bootstrap: int = 200, seed: int = 0, command: str = "",
           jobs: int | None = None) -> str:
    """The report page as one HTML string (`jobs`: processes for the fits' bootstraps and the figures;
    None: one per core; no number or figure depends on it)."""
    from transferscale.report import html

    start = time.perf_counter()
    res = analyse(data, n_bootstrap=n_bootstrap, seed=seed, jobs=jobs)
    figs = draw_figures(data, res, jobs)
    return html.page(data, res, figs, command, time.perf_counter() - start)


FIGURES = ("frontier", "axes", "layers", "correlations", "shots", "finetune")  # the longest to draw first
_SHARED: tuple | None = None  # (data, res) for the figure workers, which inherit it by fork
FIGURE_JOBS = 2


def draw_figures(data: ReportData, res: Analysis, jobs: int | None = None) -> dict:
    """Every figure as PNG bytes (None where a section has nothing to draw), by name.

    With jobs > 1 (None: one per core) and fork available, the figures are drawn in up to FIGURE_JOBS forked
    processes at once, each inheriting `data` and `res`; the PNGs are the same either way. More would gain
    little (the frontier grid alone takes half the time) and cost each one's memory."""
    import multiprocessing as mp

    from transferscale.analysis.saturation import default_jobs

    jobs = min(default_jobs(len(FIGURES)) if jobs is None else max(1, int(jobs)), FIGURE_JOBS)
    if jobs == 1 or "fork" not in mp.get_all_start_methods():
        return {name: _draw(name, data, res) for name in FIGURES}
    from concurrent.futures import ProcessPoolExecutor

    global _SHARED
    _SHARED = (data, res)
    try:
        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("fork")) as pool:
            pngs = list(pool.map(_draw_shared, FIGURES))
    finally:
        _SHARED = None
    return dict(zip(FIGURES, pngs))


def _draw_shared(name: str) -> bytes | None:
    data, res = _SHARED
    return _draw(name, data, res)


def _draw(name: str, data: ReportData, res: Analysis) -> bytes | None:
    from transferscale.report import figures, figures_axes, figures_finetune, figures_tasks

    ref = res.ref_shots
    draw = {"frontier": lambda: figures.frontier_grid(data, res),
            "shots": lambda: figures_tasks.params_vs_shots(data, res),
            "axes": lambda: figures_axes.scaling_axes_grid(data, res, ref),
            "correlations": lambda: figures_tasks.correlation_heatmaps(data, res, ref),
            "layers": lambda: figures_tasks.layer_curves(data, res, ref),
            "finetune": lambda: figures_finetune.finetune_grid(data)}[name]
    return draw()


def build_report(data: ReportData, out: str | Path, n_bootstrap: int = 200, seed: int = 0,
                 command: str = "", jobs: int | None = None) -> Path:
    """Write the page to `out` (a file, written atomically) and return its path."""
    out = Path(out)
    text = render(data, n_bootstrap=n_bootstrap, seed=seed, command=command, jobs=jobs)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out
