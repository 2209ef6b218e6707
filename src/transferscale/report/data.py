"""What a report shows, gathered from a study's store or from any results table.

Everything downstream of this module (fits, figures, the page) reads one `ReportData`, so a study and an
external CSV make the same report; sections a table cannot fill (shots, layers, scaling axes) say why.
"""
from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from transferscale.analysis.tables import (
    check_fittable,
    finetune_points,
    load_fit_table,
    points_from_groups,
    read_csv_table,
    store_upstream,
    study_mean_mode,
    trained_groups,
)
from transferscale.errors import TransferscaleError

POINT_COLUMNS = ["model", "family", "size", "data_fraction", "steps", "budget_rank", "task", "shots",
                 "us_acc", "ds_acc"]
LAYER_COLUMNS = ["model", "family", "size", "task", "shots", "layer", "depth", "ds_acc"]
STUDY_AXES = [("size", "model size"), ("data_fraction", "upstream data fraction"), ("steps", "training steps")]

LAYER_HINT = (
    "Its probes read only the final representation (layer = -1). Layer-wise probes come from "
    '`layers = "all"` in the spec\'s [probe] table: run the study again with it (`transferscale run SPEC`; '
    "trained checkpoints are reused and only the probes run again), then make this report again. Any results "
    "table with rows at layer indices 0..L-1 (and optionally a `depth` column in (0, 1]) draws this section."
)
FINETUNE_HINT = (
    "No fine-tuning results: add a `[finetune]` table with `tasks` and `runs` (name patterns, e.g. "
    '`runs = ["*-m-d1-*", "*-m-random"]`) to the spec, run the study again, then make this report again.'
)
FINETUNE_COLUMNS = ["model", "family", "size", "kind", "run_kind", "task", "ft_acc", "n_seeds", "us_acc",
                    "fewshot_shots", "fewshot_acc"]


@dataclass
class ReportData:
    """A study or table, ready to report. `points` are trained models only (one row per model x task x
    shots, final layer); `baselines` (raw pixels, random init) are reference lines, never fit points."""

    title: str
    source: str  # "study" or "csv"
    points: pd.DataFrame
    baselines: pd.DataFrame  # name, run_kind, family, task, shots, ds_acc
    # model, family, size, task, shots, layer, depth, ds_acc: from a study, at the one shot count the layer-wise
    # figure draws (the largest), so the page never holds every block of every probe
    layers: pd.DataFrame
    tasks: list
    shots: list
    has_shots: bool
    us_label: str
    axes: list = field(default_factory=list)  # (column, label) pairs for the scaling-axes view
    facts: list = field(default_factory=list)  # (label, value) pairs for the page header
    reproduce: list = field(default_factory=list)  # (what, command) pairs
    spec_text: str | None = None
    notes: list = field(default_factory=list)
    # per (run, task) fine-tuned: model, family, size, kind, run_kind, task, ft_acc, n_seeds, us_acc,
    # fewshot_shots, fewshot_acc (analysis.tables.finetune_points); baselines are references, not points
    finetune: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=FINETUNE_COLUMNS))
    # a study's axes and costs (report.shape.ShapeData: the same-curve test, Pareto frontiers); None for a table
    shape: object | None = None
    # pretrained against from-scratch accuracy by data size and the gap law (report.gap.GapData); None for a
    # table, or a study with no `scratch_accuracy` rows
    gap: object | None = None

    def shot_label(self, shots) -> str:
        return f"{shots}-shot" if self.has_shots else ""


# ---- a study ------------------------------------------------------------------------------------------


def load_study(study_dir: Path, early: Callable[[ReportData], None] | None = None,
               prefetch: bool = False) -> ReportData:
    """Read a study's store: trained points on the final layer, baselines, layer-wise rows, provenance.

    Only what the page shows is read, aggregated in SQL (seed means of the final layer, and of every block
    at the reference shot count), never the whole tidy table: the numbers are those `read_results` and
    `analysis.tables.study_points` give, bit for bit.

    `early`, when given, is called once the fit points, baselines, tasks and shots are read, with a
    `ReportData` holding only those (no layers, fine-tuning, shape or gap data, no facts), before the rest
    is read: what the fits need, so that a caller can start them while the store is still being read
    (`report.build_study_report`). The data returned holds everything, those parts the same objects.

    `prefetch`: a forked process reads the layer-wise rows meanwhile (`_BlockPrefetch`); the same rows.
    """
    from transferscale.report.forked import can_fork
    from transferscale.store import Store  # torch-free; lazily so `--csv` needs no store

    study_dir = Path(study_dir)
    blocks = _BlockPrefetch(study_dir) if prefetch and can_fork() else None  # before this process opens the store
    try:
        with Store(study_dir, create=False) as store, store.snapshot():
            runs_read = store.runs_table()
            if runs_read.empty:
                raise TransferscaleError(f"the study at {study_dir} has no results yet; run it first "
                                         "(`transferscale run`) and make the report when some runs are done")
            mode = study_mean_mode(store, runs_read)
            us = store_upstream(store, trained_only=True)
            return _study_data(study_dir, store, runs_read, mode, us, early, blocks)
    finally:
        if blocks is not None:
            blocks.stop()


class _BlockPrefetch:
    """Every probed block's seed groups at the largest final-layer shot count (what `_layer_rows` reads), read
    by a forked process from its own connection while this one reads the fit points.

    Its groups are used only where they are the ones this process would read: the same blocks and shot count,
    from the same state of the store (`_store_state`); otherwise, or if the process failed, this one reads them.
    """

    def __init__(self, study_dir: Path):
        from transferscale.report.forked import Forked

        self.job = Forked(_prefetch_blocks, study_dir)

    def read(self, store, where: str, shots: int):
        try:
            got = self.job.get("blocks", lambda: None)
        except Exception:  # noqa: BLE001 - whatever it met, this process meets (and reports) it itself
            got = None
        if got is not None:
            state, their_where, their_shots, groups = got
            if (their_where, their_shots) == (where, shots) and state == _store_state(store):
                return groups
        return _read_blocks(store, where, shots)

    def stop(self) -> None:
        self.job.stop()


def _prefetch_blocks(send, study_dir: Path) -> None:
    """The forked reader of `_BlockPrefetch`: its own connection and snapshot; sends nothing when there are no
    blocks."""
    from transferscale.store import FEWSHOT, Store

    with Store(study_dir, create=False) as store, store.snapshot():
        where, shots = _blocks_where(store), store.top_shots(FEWSHOT, "m.layer = -1")
        if where is not None and shots is not None:
            groups = store.seed_groups(FEWSHOT, where, (shots,), depth=True)
            send("blocks", (_store_state(store), where, shots, groups))


def _store_state(store) -> tuple:
    """What tells two snapshots of a store apart: per run status, how many runs and the sums of their start and
    finish times, and the same of the evaluations. Every commit of measurements sets its run's `finished` (and
    its evaluations'), to the time of the commit."""
    return (tuple(store.conn.execute("SELECT status, COUNT(*), TOTAL(started), TOTAL(finished) FROM runs "
                                     "GROUP BY status ORDER BY status")),
            store.conn.execute("SELECT COUNT(*), TOTAL(finished) FROM evaluations").fetchone())


def _read_blocks(store, where: str, shots: int):
    from transferscale.store import FEWSHOT

    return store.seed_groups(FEWSHOT, where, (shots,), depth=True)


def _study_data(study_dir: Path, store, runs_read: pd.DataFrame, mode: str, us: pd.DataFrame,
                early: Callable[[ReportData], None] | None = None, blocks: _BlockPrefetch | None = None
                ) -> ReportData:
    """Everything else `load_study` reads, from the open store (`early`, `blocks`: see `load_study`)."""
    from transferscale.store import FEWSHOT

    meta = store.meta()
    runs = store.runs_frame()
    configs = store.run_configs()
    final = store.seed_groups(FEWSHOT, "m.layer = -1")
    pts = points_from_groups(final, runs_read, us, mode)
    final_points = pts  # store_points(store, layers="final"), which the shape section reads too
    top = _top_shots(final)  # per task, for the fine-tuning section
    seeds = set(final.seeds_present())
    del final
    pts = pd.concat([pts, _deepest_layer(store, runs_read, us, pts, mode)], ignore_index=True)
    if pts.empty:
        if (runs_read["kind"] == "baseline").all():
            raise TransferscaleError(f"the study at {study_dir} has no finished model runs yet (only "
                                     "baselines); make the report when some are done")
        raise TransferscaleError(
            f"no model of the study at {study_dir} has an upstream accuracy, the x axis of every figure here; "
            "give each pretrained model its published value (`upstream_accuracy = 0.75` in its [[models]] "
            "entry) and run the study again (the features are cached: only the probes run again), or read "
            f"its per-layer accuracies with `transferscale results {study_dir} --format csv`")
    runs_info = _run_descriptors(runs_read, configs)
    points = _with_runs(_final_layer(pts), runs_info)
    points = points.rename(columns={"name": "model"})[[*POINT_COLUMNS, "upstream"]]
    spec = json.loads(meta["spec_json"]) if "spec_json" in meta else {}
    tasks = _task_order(points["task"].unique(), spec.get("downstream", {}).get("tasks", []))
    shots = sorted(int(s) for s in points["shots"].dropna().unique())
    baselines, base_seeds = _baselines(store)
    upstream = points["upstream"].iloc[0]
    core = ReportData(
        title=meta.get("name", study_dir.name),
        source="study",
        points=points.reset_index(drop=True),
        baselines=baselines,
        layers=pd.DataFrame(columns=LAYER_COLUMNS),
        tasks=tasks,
        shots=shots,
        has_shots=True,
        us_label=f"US accuracy on {upstream} (fraction)",
        axes=list(STUDY_AXES),
        spec_text=meta.get("spec"),
    )
    if early is not None:
        early(core)
    layers, layer_seeds = _layer_rows(store, runs_read, us, mode, runs_info, max(shots) if shots else None,
                                      _read_blocks if blocks is None else blocks.read)
    finetune, ft_seeds = _finetune(store, top, tasks)
    seeds |= layer_seeds | base_seeds | ft_seeds
    facts = _study_facts(study_dir, meta, spec, runs, int(runs_read["n_rows"].sum()), len(seeds), points)
    return replace(core, layers=layers, facts=facts, finetune=finetune, shape=_shape(store, final_points),
                   gap=_gap(store, tasks), reproduce=_run_command(study_dir, meta, spec))


def _shape(store, final_points: pd.DataFrame):
    """The same-curve test and the costs' frontiers (report.shape), from the open store and the final layer's
    points already read."""
    from transferscale.report.shape import load_shape

    return load_shape(store, final_points)


def _gap(store, tasks: list):
    """The pretrain-or-not section's data (report.gap.load_gap: the scratch rows, the sized fine-tuning rows
    and those runs' final-layer probes, a few rows), or None when nothing was trained from scratch."""
    from transferscale.report.gap import load_gap

    return load_gap(store, tasks)


def _deepest_layer(store, runs_read: pd.DataFrame, us: pd.DataFrame, pts: pd.DataFrame, mode: str) -> pd.DataFrame:
    """Points of the trained runs with no final-layer probe (layer -1): their deepest probed layer instead."""
    from transferscale.store import FEWSHOT

    have = pts["run"].unique()  # not set(): iterating 100,000s of arrow-backed strings costs a fifth of a second
    rest = runs_read[(runs_read["kind"] != "baseline") & runs_read["fewshot"] & runs_read["run"].isin(us["run"])
                     & ~runs_read["run"].isin(have)]
    frames = []
    for key in sorted(rest["run"]):
        (deepest,) = store.conn.execute("SELECT MAX(layer) FROM measurements WHERE run = ? AND metric = ?",
                                        (key, FEWSHOT)).fetchone()
        groups = store.seed_groups(FEWSHOT, "m.run = ? AND m.layer = ?", (key, deepest))
        frames.append(points_from_groups(groups, runs_read, us, mode))
    return pd.concat(frames, ignore_index=True) if frames else pts.iloc[:0]


def _final_layer(pts: pd.DataFrame) -> pd.DataFrame:
    """The final representation per (run, task, shots): layer -1 where probed, else the deepest layer."""
    final = pts["layer"] == -1
    if set(pts.loc[~final, "run"].unique()).isdisjoint(pts.loc[final, "run"].unique()):
        without = pts[~final]  # the usual case, runs with a final layer and no other rows: no per-row lookups
        if without.empty:
            return pts[final]
        return pd.concat([pts[final], without[without["layer"] == without.groupby("run")["layer"].transform("max")]])
    has_final = pts["run"].isin(pts.loc[pts["layer"] == -1, "run"])
    final = pts[has_final & (pts["layer"] == -1)]
    rest = pts[~has_final]
    if not rest.empty:
        final = pd.concat([final, rest[rest["layer"] == rest.groupby("run")["layer"].transform("max")]])
    return final


def _with_runs(df: pd.DataFrame, runs_info: pd.DataFrame) -> pd.DataFrame:
    """`df.merge(runs_info, on="run", how="left")` for a long `df` and one row per run: the run's columns
    looked up, not a join's copies of the long table (the same values, dtypes and order)."""
    info = runs_info.set_index("run")
    out = df.reset_index(drop=True)
    for col in info.columns:
        out[col] = info[col].reindex(out["run"]).set_axis(out.index)
    return out


def _run_descriptors(runs_read: pd.DataFrame, configs: dict) -> pd.DataFrame:
    """Per run: size, data fraction and steps (from its config) and its budget's rank within its family."""
    runs = runs_read[["run", "size", "family"]].copy()
    training = {k: c.get("training", {}) for k, c in configs.items()}
    runs["data_fraction"] = runs["run"].map(lambda r: training.get(r, {}).get("data_fraction", np.nan))
    runs["steps"] = runs["run"].map(lambda r: training.get(r, {}).get("steps", np.nan))
    trained = runs_read["kind"].to_numpy() != "baseline"
    key = (runs["data_fraction"] * 1e9 + runs["steps"]).where(trained)
    runs["budget_rank"] = key.groupby(runs["family"]).rank(method="dense") - 1
    return runs.drop(columns="family")


def _baselines(store) -> tuple[pd.DataFrame, set]:
    """Baseline DS accuracy (mean over seeds, final layer) per (baseline, task, shots), and the seeds seen.

    Baselines are few runs: their raw rows are read and averaged as the tidy table's would be."""
    from transferscale.store import BASELINE_KINDS, FEWSHOT

    where = f"m.metric = ? AND r.kind IN {BASELINE_KINDS!r}"
    base = store.tidy_rows(where + " AND m.layer = -1", (FEWSHOT,), runs_first=True)
    if base.empty:  # no baseline probed at the final layer: every layer, as the tidy table's reader did
        base = store.tidy_rows(where, (FEWSHOT,), runs_first=True)
    cols = ["name", "run_kind", "family", "task", "shots"]
    if base.empty:
        return pd.DataFrame(columns=[*cols, "ds_acc"]), set()
    seeds = set(base["seed"].dropna().astype(int))
    return base.groupby(cols, as_index=False, dropna=False).agg(ds_acc=("value", "mean")), seeds


def _blocks_where(store) -> str | None:
    """SQL picking the rows of every probed block at one shot count (`?`): an index seek per layer."""
    from transferscale.store import FEWSHOT

    blocks = [layer for layer in store.layers_of(FEWSHOT) if layer >= 0]
    return f"m.layer IN ({', '.join(str(int(b)) for b in blocks)}) AND m.shots = ?" if blocks else None


def _layer_rows(store, runs_read: pd.DataFrame, us: pd.DataFrame, mode: str, runs_info: pd.DataFrame,
                shots, read: Callable = _read_blocks) -> tuple[pd.DataFrame, set]:
    """Trained runs' few-shot accuracy at real layer indices (layer >= 0), with relative depth in (0, 1], at
    the shot count the layer-wise figure draws (the report's reference, the largest; where no block was
    probed at it, the largest the blocks were probed at), and the seeds seen.

    depth = (i + 1) / L for layer i of a network with L probed blocks, so the last block is 1, and 1.0 for
    the final representation (layer -1): the engine's rule (`analysis.tables.relative_depth`), which it
    records in the store's `depth` column; that recorded value is used. One fallback, for rows that lack it
    (an older store, or a table without a `depth` column): the same rule with L = the run's deepest layer
    index + 1, which assumes layers 0..L-1 were all probed.
    """
    from transferscale.store import FEWSHOT

    cols = LAYER_COLUMNS
    empty = pd.DataFrame(columns=cols), set()
    where = _blocks_where(store)
    if shots is None or where is None:
        return empty
    groups = read(store, where, int(shots))
    if not len(groups.take(trained_groups(groups, runs_read))):
        groups = _read_blocks(store, where, store.top_shots(FEWSHOT, "m.layer >= 0"))
    groups = groups.take(trained_groups(groups, runs_read))
    seeds = set(groups.seeds_present())
    depth = _recorded_depth(store, groups)
    lay = points_from_groups(groups, runs_read, us, mode).rename(columns={"name": "model"})
    if lay.empty:
        return empty
    lay = lay.merge(depth, on=["run", "layer"], how="left")
    n_layers = lay.groupby("run")["layer"].transform("max") + 1
    lay["depth"] = lay["depth"].where(lay["depth"].notna(), (lay["layer"] + 1) / n_layers)
    return _with_runs(lay, runs_info[["run", "size"]])[cols].reset_index(drop=True), seeds


def _recorded_depth(store, groups) -> pd.DataFrame:
    """Per (run, layer): the depth recorded with its rows (NaN where none was); where a run's rows of one
    layer disagree, their mean over all of that layer's rows."""
    keys = np.array(groups.runs, dtype=object)
    df = pd.DataFrame({"run": keys[groups.run], "layer": groups.layer, "lo": groups.depth_min,
                       "hi": groups.depth_max})
    per = df.groupby(["run", "layer"], as_index=False).agg(lo=("lo", "min"), hi=("hi", "max"))
    per["depth"] = per["lo"].where(per["lo"] == per["hi"])
    for i in np.flatnonzero((per["lo"] != per["hi"]) & per["lo"].notna()):
        run, layer = per.at[i, "run"], int(per.at[i, "layer"])
        per.at[i, "depth"] = store.tidy_rows("m.run = ? AND m.layer = ?", (run, layer))["depth"].mean()
    return per[["run", "layer", "depth"]]


def _top_shots(final) -> pd.Series:
    """The largest shot count of each task's final-layer probes (over every run)."""
    return pd.Series(final.shots, index=np.array(final.tasks, dtype=object)[final.task]).groupby(level=0).max()


def _finetune(store, top: pd.Series, tasks: list) -> tuple[pd.DataFrame, set]:
    """Fine-tuned accuracy per (run, task) with its US and few-shot accuracy, tasks in the report's order.

    `analysis.tables.finetune_points` on the rows it reads: every fine-tuning and upstream row, and the
    final-layer probes of the fine-tuned tasks at each task's largest shot count (`top`, over every run's
    final-layer probes)."""
    from transferscale.store import FEWSHOT, FINETUNE, UPSTREAM

    ft_rows = store.tidy_rows("m.metric = ?", (FINETUNE,))
    if ft_rows.empty:
        return pd.DataFrame(columns=FINETUNE_COLUMNS), set()
    pairs = [(t, int(top[t])) for t in dict.fromkeys(ft_rows["task"]) if t in top.index]
    few = [store.tidy_rows("m.metric = ? AND m.layer = -1 AND m.task = ? AND m.shots = ?", (FEWSHOT, t, s))
           for t, s in pairs]
    rows = pd.concat([ft_rows, store.tidy_rows("m.metric = ?", (UPSTREAM,)), *few], ignore_index=True)
    ft = finetune_points(rows, top_shots=dict(pairs))
    order = {t: i for i, t in enumerate([*tasks, *sorted(set(ft["task"]) - set(tasks))])}
    ft = ft.rename(columns={"name": "model"}).assign(_order=ft["task"].map(order))
    ft = ft.sort_values(["_order", "kind", "ft_acc"], ascending=[True, False, False], kind="stable")
    return ft[FINETUNE_COLUMNS].reset_index(drop=True), set(ft_rows["seed"].dropna().astype(int))


def _task_order(present, spec_tasks) -> list:
    """The spec's order (near to far in the default study), then any other task alphabetically."""
    present = set(present)
    return [t for t in spec_tasks if t in present] + sorted(present - set(spec_tasks))


def _study_facts(study_dir, meta, spec, runs, n_rows: int, seeds: int, points) -> list:
    created = meta.get("created", "")
    finished = pd.to_numeric(runs["finished"], errors="coerce").max()
    last = datetime.fromtimestamp(finished).astimezone().strftime("%Y-%m-%d %H:%M %Z") if finished == finished else "-"
    status = runs["status"].value_counts()
    status_text = ", ".join(f"{n} {s}" for s, n in status.items())
    facts = [("study", meta.get("name", study_dir.name)), ("description", spec.get("description", "")),
             ("directory", str(Path(study_dir).resolve())), ("created", created), ("last run finished", last),
             ("runs", f"{len(runs)} in the store ({status_text}); {points['model'].nunique()} trained runs "
                      "are fit points, baselines are reference lines"),
             ("measurements", f"{n_rows:,} rows; {seeds} probe seed(s), averaged")]
    if (runs["status"] != "done").any():
        facts.append(("note", "the study is not finished: this report shows the runs done so far"))
    return [(k, v) for k, v in facts if v]


def _run_command(study_dir: Path, meta: dict, spec: dict) -> list:
    """How to produce this study's results again: the embedded default by name, else the spec below."""
    text = meta.get("spec", "")
    try:
        toml_name = tomllib.loads(text).get("name")
    except tomllib.TOMLDecodeError:
        toml_name = None
    quick = " --quick" if toml_name and spec.get("name") and spec["name"] != toml_name else ""
    out = f" --out {study_dir}"
    from transferscale.spec import builtin_spec_text  # torch-free (pydantic and the shape registry)

    builtin = builtin_spec_text("default")
    if text.strip() == builtin.strip():
        return [("run the study (the embedded default spec)", f"transferscale run{quick}{out}")]
    return [("save the spec below as study.toml, then run it", f"transferscale run study.toml{quick}{out}")]


# ---- any table ----------------------------------------------------------------------------------------


def load_table(csv: Path, us: str | None, ds: list | None, by: list, join: Path | None, on: list,
               percent: bool | None, model: str | None = None, axes: list | None = None) -> ReportData:
    """An external results table, loaded exactly as `transferscale fit --csv` loads it
    (`analysis.tables.load_fit_table`: the same options, the same notes).

    Rows are models. Panels are the DS columns (and --by groups); `model` (default: the --on keys, else a
    column named model or name) names the models in the best-checkpoint table and pairs tasks for the
    rank correlations; `axes` columns colour the scaling-axes view.
    """
    header = read_csv_table(Path(csv)).columns  # an empty or unreadable file: the loader's clear error
    labels = [model] if model else list(on) or [c for c in ("model", "name") if c in header][:1]
    axes = list(axes or [])
    extra = [c for c in dict.fromkeys([*labels, *axes]) if c not in by]
    table, by_cols, notes, _ = load_fit_table(None, csv, us, ds, [*by, *extra], join, on, percent)
    check_fittable(table, Path(csv).name, us or "us_acc")
    task_cols = [c for c in by_cols if c not in extra]
    table = table.reset_index(drop=True)
    if task_cols:
        task = table[task_cols].astype(str).agg(" / ".join, axis=1)
    else:
        task = pd.Series(ds[0], index=table.index)
    names = table[labels].astype(str).agg(" / ".join, axis=1) if labels else table.index.map(lambda i: f"row {i}")
    points = pd.DataFrame({"model": names, "family": "models", "size": None, "data_fraction": np.nan,
                           "steps": np.nan, "budget_rank": 0.0, "task": task, "shots": 0,
                           "us_acc": table["us_acc"].astype(float), "ds_acc": table["ds_acc"].astype(float)})
    for col in axes:
        points[col] = table[col].to_numpy()
    if not labels:
        notes.append("no model column (give --model COL): models are named by row, and tasks are paired by row "
                     "for the rank correlations")
    where = f"{csv.name}" + (f" joined with {join.name} on {', '.join(on)}" if join is not None else "")
    facts = [("table", where), ("upstream column", us), ("downstream column(s)", ", ".join(ds)),
             ("groups", ", ".join(task_cols) or "-"), ("rows", f"{len(points):,} model x task points")]
    return ReportData(
        title=csv.stem, source="csv", points=points,
        baselines=pd.DataFrame(columns=["name", "run_kind", "family", "task", "shots", "ds_acc"]),
        layers=pd.DataFrame(columns=LAYER_COLUMNS),
        tasks=sorted(points["task"].unique()), shots=[0], has_shots=False,
        us_label=f"US accuracy, {us} (fraction)", axes=[(c, c) for c in axes],
        facts=facts, notes=notes)
