"""The HTML report: a study (or any results table) shown the way Abnar et al. 2021 show theirs.

    from transferscale.report import build_report, build_study_report, load_study
    path = build_report(load_study("transferscale-runs/default"), "report.html")
    data, path = build_study_report("transferscale-runs/default", "report.html")  # the same page, sooner

One self-contained page (figures embedded as PNG, style inline, no scripts) that opens from disk on any
machine. Torch-free: matplotlib (Agg), numpy, pandas, scipy.
"""
from __future__ import annotations

import time
from pathlib import Path

from transferscale.report.data import ReportData, load_study, load_table
from transferscale.report.numbers import Analysis, analyse

__all__ = ["Analysis", "ReportData", "analyse", "build_report", "build_study_report", "draw_figures", "load_study",
           "load_table", "render"]


def render(data: ReportData, n_bootstrap: int = 200, seed: int = 0, command: str = "",
           jobs: int | None = None) -> str:
    """The report page as one HTML string (`jobs`: processes for the fits' bootstraps and the figures;
    None: one per core; no number or figure depends on it)."""
    from transferscale.report import html

    start = time.perf_counter()
    res = analyse(data, n_bootstrap=n_bootstrap, seed=seed, jobs=jobs)
    figs = draw_figures(data, res, jobs)
    return html.page(data, res, figs, command, time.perf_counter() - start)


FIGURES = ("frontier", "axes", "layers", "correlations", "shots", "extrapolation", "finetune")  # longest first
_SHARED: tuple | None = None  # (data, res) for the figure workers, which inherit it by fork
FIGURE_JOBS = 2


def draw_figures(data: ReportData, res: Analysis, jobs: int | None = None, names: tuple = FIGURES) -> dict:
    """Every figure (or those in `names`) as PNG bytes (None where a section has nothing to draw), by name.

    With jobs > 1 (None: one per core) and fork available, the figures are drawn in up to FIGURE_JOBS forked
    processes at once, each inheriting `data` and `res`; the PNGs are the same either way. More would gain
    little (the frontier grid alone takes half the time) and cost each one's memory."""
    import multiprocessing as mp

    from transferscale.analysis.saturation import default_jobs

    jobs = min(default_jobs(len(names)) if jobs is None else max(1, int(jobs)), FIGURE_JOBS, len(names))
    if jobs <= 1 or "fork" not in mp.get_all_start_methods():
        return {name: _draw(name, data, res) for name in names}
    from concurrent.futures import ProcessPoolExecutor

    global _SHARED
    _SHARED = (data, res)
    try:
        with ProcessPoolExecutor(jobs, mp_context=mp.get_context("fork")) as pool:
            pngs = list(pool.map(_draw_shared, names))
    finally:
        _SHARED = None
    return dict(zip(names, pngs))


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
            "extrapolation": lambda: figures_tasks.extrapolation_scatter(data, res),
            "finetune": lambda: figures_finetune.finetune_grid(data)}[name]
    return draw()


def build_report(data: ReportData, out: str | Path, n_bootstrap: int = 200, seed: int = 0,
                 command: str = "", jobs: int | None = None) -> Path:
    """Write the page to `out` (a file, written atomically) and return its path."""
    text = render(data, n_bootstrap=n_bootstrap, seed=seed, command=command, jobs=jobs)
    return _write(out, text)


def _write(out: str | Path, text: str) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out


# Drawn by the background process after the fits. A figure here may read only what `load_study` gives its
# `early` callback (points, baselines, tasks, shots) and the fits. The frontier grid is the longest figure by far;
# the parent draws the rest meanwhile, and the two finish about together.
BACKGROUND_FIGURES = ("frontier",)


def build_study_report(study_dir: str | Path, out: str | Path, n_bootstrap: int = 200, seed: int = 0,
                       command: str = "", jobs: int | None = None) -> tuple[ReportData, Path]:
    """`build_report(load_study(study_dir), out, ...)`, the same page, with the work overlapped.

    With jobs > 1 (None: one per core) and fork available (`report.forked`): one forked process reads the
    layer-wise rows while this one reads the fit points (`load_study(prefetch=True)`); another starts the fits
    (`analyse`) as soon as the fit points are read, then draws BACKGROUND_FIGURES, while this one reads the rest
    and draws the other figures. Every number and figure is the one a single process gives (the fits are seeded
    per group; tests hold the page equal). Returns the data (for its notes) and the page's path.
    """
    from transferscale.analysis.saturation import default_jobs
    from transferscale.report.forked import Forked, can_fork

    start = time.perf_counter()
    jobs = default_jobs(len(FIGURES)) if jobs is None else max(1, int(jobs))
    if jobs == 1 or not can_fork():
        data = load_study(study_dir)
        return data, build_report(data, out, n_bootstrap=n_bootstrap, seed=seed, command=command, jobs=1)
    background: list = []
    core: list = []

    def start_fits(first: ReportData) -> None:
        core.append(first)
        background.append(Forked(_background_work, first, n_bootstrap, seed, jobs - 1))

    try:
        data = load_study(study_dir, early=start_fits, prefetch=True)
        res = background[0].get("analysis", lambda: analyse(core[0], n_bootstrap=n_bootstrap, seed=seed,
                                                             jobs=jobs - 1))
        figs = draw_figures(data, res, jobs - 1, names=tuple(f for f in FIGURES if f not in BACKGROUND_FIGURES))
        for name in BACKGROUND_FIGURES:
            figs[name] = background[0].get(name, lambda name=name: _draw(name, core[0], res))
    finally:
        for job in background:
            job.stop()
    from transferscale.report import html

    text = html.page(data, res, {name: figs[name] for name in FIGURES}, command, time.perf_counter() - start)
    return data, _write(out, text)


def _background_work(send, core: ReportData, n_bootstrap: int, seed: int, jobs: int) -> None:
    """The forked fits on the core data (see `load_study`'s `early`), then BACKGROUND_FIGURES, each sent as
    it is ready."""
    res = analyse(core, n_bootstrap=n_bootstrap, seed=seed, jobs=jobs)
    send("analysis", res)
    for name in BACKGROUND_FIGURES:
        send(name, _draw(name, core, res))
