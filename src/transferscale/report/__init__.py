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


FIGURES = ("frontier", "axes", "layers", "correlations", "shots", "finetune")  # the longest to draw first
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

    With jobs > 1 (None: one per core) and fork available, one forked process starts the fits (`analyse`)
    as soon as the fit points are read, while this process reads the layer rows, fine-tuning, shape and gap
    data; that process then draws BACKGROUND_FIGURES and this one the rest. Every number and figure is the
    one a single process gives (the fits are seeded per group; a test holds the page equal). Returns the
    data (for its notes) and the page's path.
    """
    import multiprocessing as mp

    from transferscale.analysis.saturation import default_jobs

    start = time.perf_counter()
    jobs = default_jobs(len(FIGURES)) if jobs is None else max(1, int(jobs))
    if jobs == 1 or "fork" not in mp.get_all_start_methods():
        data = load_study(study_dir)
        return data, build_report(data, out, n_bootstrap=n_bootstrap, seed=seed, command=command, jobs=1)
    background = _Background(n_bootstrap, seed, jobs - 1)
    try:
        data = load_study(study_dir, early=background.start)
        res = background.get("analysis")
        figs = draw_figures(data, res, jobs - 1, names=tuple(f for f in FIGURES if f not in BACKGROUND_FIGURES))
        figs.update({name: background.get(name) for name in BACKGROUND_FIGURES})
    finally:
        background.stop()
    from transferscale.report import html

    text = html.page(data, res, {name: figs[name] for name in FIGURES}, command, time.perf_counter() - start)
    return data, _write(out, text)


_CORE: ReportData | None = None  # what `load_study` gave `early`, for the forked background process


class _Background:
    """One forked process: `analyse(core)`, then BACKGROUND_FIGURES, each result sent back down a pipe as it
    is ready. A result it could not send (the process died, or raised) is computed here instead, after its
    error is raised if it raised one."""

    def __init__(self, n_bootstrap: int, seed: int, jobs: int):
        self.n_bootstrap, self.seed, self.jobs = n_bootstrap, seed, jobs
        self.proc = self.conn = self.core = None
        self.results: dict = {}

    def start(self, core: ReportData) -> None:
        import multiprocessing as mp

        global _CORE
        self.core = _CORE = core
        ctx = mp.get_context("fork")
        self.conn, child = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_background_main, args=(child, self.n_bootstrap, self.seed, self.jobs),
                                daemon=True)
        try:
            self.proc.start()
        finally:
            _CORE = None
            child.close()

    def get(self, name: str):
        while name not in self.results and self.conn is not None:
            try:
                key, value = self.conn.recv()
            except (EOFError, OSError):  # the process ended without sending it
                self.conn = None
                break
            if key == "error":
                self.conn = None
                raise value
            self.results[key] = value
        if name not in self.results:
            if name == "analysis":
                self.results[name] = analyse(self.core, n_bootstrap=self.n_bootstrap, seed=self.seed,
                                             jobs=self.jobs)
            else:
                self.results[name] = _draw(name, self.core, self.get("analysis"))
        return self.results[name]

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.is_alive():
                self.proc.terminate()
            self.proc.join()
        if self.conn is not None:
            self.conn.close()


def _background_main(conn, n_bootstrap: int, seed: int, jobs: int) -> None:
    """The background process: the fits on the core data it inherited, then its figures, sent as ready."""
    core = _CORE
    try:
        res = analyse(core, n_bootstrap=n_bootstrap, seed=seed, jobs=jobs)
        conn.send(("analysis", res))
        for name in BACKGROUND_FIGURES:
            conn.send((name, _draw(name, core, res)))
    except BaseException as err:  # noqa: BLE001 - raised again in the parent, which shows it
        try:
            conn.send(("error", err))
        except Exception:  # noqa: BLE001 - an error that does not pickle: the parent computes it itself
            pass
    finally:
        conn.close()
