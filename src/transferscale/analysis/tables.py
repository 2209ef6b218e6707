"""Tables in, tables out: a study's results as fit points, and any CSV (or two joined) as a fit table.

`load_fit_table` is the one loader behind `transferscale fit` and `transferscale report --csv`: a study
directory or a CSV (optionally joined with a second one) becomes a long table with `us_acc` and `ds_acc`
columns in [0, 1], the columns to group fits by, and notes saying what was read and how.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import pandas as pd

from transferscale.errors import TransferscaleError, did_you_mean
from transferscale.features import layer_depth as relative_depth  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    import numpy as np

    from transferscale.store import SeedGroups, Store

POINT_COLUMNS = ["run", "name", "family", "upstream", "us_acc", "task", "shots", "layer", "ds_acc"]
STUDY_GROUPS = ["upstream", "task", "shots", "layer"]  # one fit per group of a study's points


class FitTable(NamedTuple):
    """What `load_fit_table` returns: the points, the columns to group fits by, notes, a default CSV path."""

    points: pd.DataFrame  # us_acc and ds_acc in [0, 1], plus the group columns
    by: list[str]
    notes: list[str]
    default_out: Path


def load_fit_table(study_dir: Path | None = None, csv: Path | None = None, us: str | None = None,
                   ds: Sequence[str] | None = None, by: Sequence[str] = (), join: Path | None = None,
                   on: Sequence[str] = (), percent: bool | None = None, layers: str = "all") -> FitTable:
    """A study's points, or a CSV table (optionally joined with a second on `on`), ready to fit.

    Study: `store_points` of its store (layers "all", or "final": the final representation only), grouped by
    (upstream, task, shots, layer).
    CSV: the `us` column and each `ds` column (taken from the joined file when it has one of that name)
    melted to one row per (row, DS column), grouped by `by`, plus a `ds` column when there are several DS
    columns; the accuracy columns must hold numbers (an empty cell is a missing value), rows missing either
    value are dropped (a note says how many), and accuracies are scaled to fractions by `to_fraction`
    (percent: True, False or None; no number is divided by 100 unless --percent asks, and a column that
    looks like percent without it is an error saying so). `check_fittable` refuses a table no fit can use.
    """
    if (study_dir is None) == (csv is None):
        raise TransferscaleError("give either STUDY_DIR or --csv FILE (with --us COL --ds COL)")
    if study_dir is not None:
        return FitTable(store_points(study_dir, layers=layers), list(STUDY_GROUPS), [],
                        Path(study_dir) / "saturation_fits.csv")
    ds, by, on = list(ds or []), list(by), list(on)
    if not us or not ds:
        raise TransferscaleError("--csv needs --us COL and --ds COL (the upstream and downstream accuracy)")
    csv, join = Path(csv), None if join is None else Path(join)
    raw = read_csv_table(csv, join, on)
    ds_cols = [f"{c}_join" if join is not None and f"{c}_join" in raw.columns else c for c in ds]
    _require(raw, [us, *ds_cols, *by], "the table")
    labels = {us: f"{us!r} (US)"}
    for name, col in zip(ds, ds_cols):  # a DS column of the joined file that clashed: say which file
        labels.setdefault(col, f"{name!r} (DS" + (f", {join.name})" if col != name else ")"))
    where = _locator(raw, csv, on if join is not None else None)
    raw = numeric_columns(raw, labels, where)
    raw, note = to_fraction(raw, list(labels), percent, labels, where)
    notes = [note] if note else []
    table = melt_ds(raw, us, ds_cols, by)
    table["ds"] = table["ds"].str.removesuffix("_join")
    missing = table[["us_acc", "ds_acc"]].isna().any(axis=1)
    if missing.any():
        notes.append(f"dropped {int(missing.sum())} rows with no value in {us} or {ds}")
        table = table[~missing]
    by_cols = [*by, "ds"] if len(ds) > 1 else by
    return FitTable(table, by_cols, notes, Path("saturation_fits.csv"))


def check_fittable(table: pd.DataFrame, where: str, us: str = "us_acc") -> None:
    """Refuse, with the reason, a fit table (`load_fit_table`'s points) that no group could be fitted on:
    no rows, fewer models (rows per DS column) than the law's three parameters, or one US accuracy for every
    row. A table some of whose groups can be fitted passes: the others get NaN and a flag. `where` names the
    table in the message (its file), `us` the US column as the user knows it."""
    if table.empty:
        raise TransferscaleError(f"{where}: no row has both a US and a DS value, so there is nothing to fit")
    n = int(table.groupby("ds").size().max()) if "ds" in table.columns else len(table)
    if n < 3:
        raise TransferscaleError(
            f"{where}: {n} model row{'s' if n != 1 else ''} with values; the law e_DS = k e_US^alpha + e_IR has "
            "three parameters and needs at least 3 models that differ in US accuracy")
    if table["us_acc"].nunique() == 1:
        raise TransferscaleError(
            f"{where}: every row has the same US accuracy in {us!r} ({table['us_acc'].iloc[0]:g}); the law "
            "needs models that differ in upstream accuracy")


def study_points(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, task, shots, layer): the run's upstream accuracy and its mean DS accuracy over seeds.

    `results` is the store's tidy table (run, name, kind, family, metric, task, shots, seed, layer, value).
    Baselines (kind 'baseline': raw pixels, random initialisation) are dropped: the law describes what
    pre-training buys, and a random network's chance-level upstream accuracy says nothing about that.
    Runs without an upstream_accuracy row are dropped too: they have no place on the US axis. `upstream` names
    the upstream dataset, so a study with several upstreams fits each apart.
    """
    need = ["run", "name", "family", "metric", "task", "shots", "layer", "value"]
    missing = [c for c in need if c not in results.columns]
    if missing:
        raise TransferscaleError(f"the results table lacks columns {missing}; expected the store's format "
                                 "(transferscale.store.read_results)")
    if "kind" in results.columns:
        results = results[results["kind"] != "baseline"]
    us = results[results["metric"] == "upstream_accuracy"]
    us = us.groupby("run", as_index=False).agg(upstream=("task", "first"), us_acc=("value", "mean"))
    ds = results[results["metric"] == "fewshot_accuracy"]
    keys = ["run", "name", "family", "task", "shots", "layer"]
    if "l2" in ds.columns and ds.groupby([*keys, "seed"], dropna=False)["l2"].nunique().max() > 1:
        raise TransferscaleError("the results hold several l2 values per probe; keep one before fitting, "
                                 "e.g. results[results.l2 == 1024]")
    ds = ds.groupby(keys, dropna=False, as_index=False, sort=True).agg(ds_acc=("value", "mean"))
    return ds.merge(us, on="run", how="inner")[POINT_COLUMNS].reset_index(drop=True)


def store_points(study, layers: str = "all") -> pd.DataFrame:
    """`study_points(read_results(study))`, read from the store without the tidy table: the same rows,
    columns, order and numbers (bit for bit), aggregated in SQL. `study` is a study directory or an open
    `Store`; layers="final" keeps only the final representation (layer -1) and reads only its rows.
    """
    from transferscale.store import FEWSHOT

    if layers not in ("all", "final"):
        raise TransferscaleError(f"layers={layers!r}: use 'final' or 'all'")
    with _opened(study) as store, store.snapshot():
        runs = store.runs_table()
        us = store_upstream(store, trained_only=True)
        groups = store.seed_groups(FEWSHOT, "m.layer = -1" if layers == "final" else "1")
        return points_from_groups(groups, runs, us, study_mean_mode(store, runs))


def points_from_groups(groups: SeedGroups, runs: pd.DataFrame, us: pd.DataFrame, mode: str) -> pd.DataFrame:
    """`study_points` rows (POINT_COLUMNS, its dtypes and order) of these seed groups: the trained runs'
    groups with an upstream accuracy (`us`: run, upstream, us_acc), seeds averaged with `mode`.

    Raises, as `study_points` does, when a trained run's group holds several l2 values."""
    import numpy as np

    groups = groups.take(trained_groups(groups, runs))
    if groups.several_rows.any():
        raise TransferscaleError("the results hold several l2 values per probe; keep one before fitting, "
                                 "e.g. results[results.l2 == 1024]")
    per_run = pd.DataFrame({"run": groups.runs}).merge(runs[["run", "name", "family"]], on="run", how="left") \
        .merge(us, on="run", how="left")
    groups = groups.take(per_run["us_acc"].notna().to_numpy()[groups.run])  # the inner join with `us`
    code = groups.run
    ds = groups.mean(mode)
    return pd.DataFrame({
        "run": str_column(code, per_run["run"]),
        "name": str_column(code, per_run["name"]),
        "family": str_column(code, per_run["family"]),
        "upstream": str_column(code, per_run["upstream"]),
        "us_acc": per_run["us_acc"].to_numpy(float)[code],
        "task": str_column(groups.task, groups.tasks),
        "shots": pd.array(groups.shots, dtype="Int64"),
        "layer": np.asarray(groups.layer, dtype=np.int64),
        "ds_acc": ds,
    }, columns=POINT_COLUMNS)


def str_column(codes, values) -> pd.Series:
    """values[codes] as a pandas string column (the `str` dtype), built in Arrow: no Python object per row."""
    import numpy as np
    import pyarrow as pa

    dictionary = pa.array([None if v is None or (isinstance(v, float) and v != v) else str(v) for v in values],
                          pa.large_string())
    array = pa.DictionaryArray.from_arrays(pa.array(np.asarray(codes, dtype=np.int64)), dictionary)
    return pd.Series(array.cast(pa.large_string()), dtype=pd.StringDtype("pyarrow", na_value=np.nan))


def study_mean_mode(store: Store, runs: pd.DataFrame) -> str:
    """Which arithmetic `study_points(read_results(...))` averages seeds with on this store (see
    `SeedGroups.mean`): pandas takes numpy's add.reduceat when every group's rows are contiguous and in
    group order in the tidy table, its compensated sum otherwise. The tidy table orders a run's rows by
    (task, shots, seed, layer), so the groups (run, task, shots, layer) are in order when the trained runs'
    keys ascend with their rowids and no (run, task, shots) has both several seeds and several layers.
    """
    from transferscale.store import BASELINE_KINDS, FEWSHOT

    probed = runs[(runs["kind"] != "baseline") & runs["fewshot"]]["run"].tolist()
    if any(a >= b for a, b in zip(probed, probed[1:])):
        return "kahan"
    trained = f"m.run IN (SELECT key FROM runs WHERE kind NOT IN {BASELINE_KINDS!r})"
    if not store.has_rows(f"m.metric = ? AND m.layer != -1 AND {trained}", (FEWSHOT,)):
        return "reduceat"  # one layer per group: rows of a group are its seeds, one after another
    first = store.conn.execute(f"SELECT m.run, m.task, m.shots FROM measurements m WHERE m.metric = ? AND "
                               f"m.layer != -1 AND {trained} LIMIT 1", (FEWSHOT,)).fetchone()
    mixed = ("SELECT COUNT(DISTINCT seed) > 1 AND COUNT(DISTINCT layer) > 1 FROM measurements "
             "WHERE run = ? AND metric = ? AND task = ? AND shots = ?")
    if store.conn.execute(mixed, (first[0], FEWSHOT, *first[1:])).fetchone()[0]:
        return "kahan"  # the usual study with layer-wise probes: decided by one group
    scattered = store.conn.execute(
        f"SELECT 1 FROM measurements m WHERE m.metric = ? AND {trained} GROUP BY m.run, m.task, m.shots "
        "HAVING COUNT(DISTINCT m.seed) > 1 AND COUNT(DISTINCT m.layer) > 1 LIMIT 1", (FEWSHOT,)).fetchone()
    return "kahan" if scattered else "reduceat"


def store_upstream(store: Store, trained_only: bool) -> pd.DataFrame:
    """Per run: its upstream dataset (the first upstream row's task) and mean upstream accuracy, computed
    as `study_points` / `finetune_points` compute them, from the same rows in the same order."""
    from transferscale.store import BASELINE_KINDS, UPSTREAM

    where = "m.metric = ?" + (f" AND r.kind NOT IN {BASELINE_KINDS!r}" if trained_only else "")
    rows = store.tidy_rows(where, (UPSTREAM,))
    return rows.groupby("run", as_index=False).agg(upstream=("task", "first"), us_acc=("value", "mean"))


def trained_groups(groups: SeedGroups, runs: pd.DataFrame) -> np.ndarray:
    """Mask of the groups whose run is not a baseline."""
    import numpy as np

    baseline = set(runs.loc[runs["kind"] == "baseline", "run"])
    return ~np.array([r in baseline for r in groups.runs], dtype=bool)[groups.run] if len(groups) else \
        np.zeros(0, dtype=bool)


class _opened:
    """`with _opened(study) as store`: a study directory is opened (read-only use) and closed after; an
    open Store is used as it is."""

    def __init__(self, study):
        self.study, self.own = study, None

    def __enter__(self):
        from transferscale.store import Store

        if isinstance(self.study, Store):
            return self.study
        self.own = Store(self.study, create=False)
        return self.own

    def __exit__(self, *exc):
        if self.own is not None:
            self.own.close()


def read_csv_table(csv: Path, join: Path | None = None, on: list[str] | None = None) -> pd.DataFrame:
    """Read one CSV, or two joined on key columns (inner join); the joined file's clashing columns get a
    `_join` suffix only where they clash with something other than a key.

    Keys must be unique in both files: timm lists some models at two image sizes, so its files join on
    (model, img_size), and a join on model alone would pair every size with every other.
    """
    left = _read(csv)
    if join is None:
        return left
    if not on:
        raise TransferscaleError("--join needs --on COL (repeat it for several key columns, e.g. "
                                 "--on model --on img_size)")
    right = _read(join)
    for path, df in ((csv, left), (join, right)):
        _require(df, on, path)
        dup = df.duplicated(on, keep=False)
        if dup.any():
            example = df.loc[dup, on].iloc[0].to_dict()
            raise TransferscaleError(
                f"{path.name}: {int(dup.sum())} rows share their {on} key (e.g. {example}); add the column "
                "that tells them apart to --on (timm: --on model --on img_size)")
    return left.merge(right, on=on, how="inner", suffixes=("", "_join"))


def numeric_columns(df: pd.DataFrame, labels: dict, where) -> pd.DataFrame:
    """The accuracy columns (`labels`: column -> how an error names it) as floats; a value that is not a
    number (other than an empty cell, which is a missing value) is an error naming the column and its row."""
    out = {}
    for col, label in labels.items():
        values = pd.to_numeric(df[col], errors="coerce")
        bad = df[col].notna() & values.isna()
        if bad.any():
            i = bad.to_numpy().nonzero()[0]
            more = f" (and {len(i) - 1} more)" if len(i) > 1 else ""
            raise TransferscaleError(f"column {label} holds values that are not numbers: {df[col].iloc[i[0]]!r} at "
                                     f"{where(i[0])}{more}; fix them, or leave the cells empty to drop those rows")
        out[col] = values.astype(float)
    return df.assign(**out)


def to_fraction(df: pd.DataFrame, cols: list[str], percent: bool | None, labels: dict | None = None,
                where=None) -> tuple[pd.DataFrame, str]:
    """Accuracy columns as fractions in [0, 1]; returns the table and a note saying what was divided.

    Nothing is divided by 100 unless asked. Per column (its finite values):
      - any value below 0 or above 100: an error (not an accuracy, in either unit);
      - all within [0, 1]: fractions, kept as they are, whatever `percent` says;
      - some above 1: percent when `percent` is True (divided by 100, and the note names the column);
        an error otherwise, naming the column and saying what to change: pass --percent when it is percent,
        or fix the values when it is fractions with a stray value above 1 (most of its values within [0, 1]).
    So a table mixing a percent column and a fraction column needs --percent and divides only the first.
    `labels` (column -> its name in messages) and `where` (row position -> "line N of FILE") word the errors.
    """
    labels = labels or {c: repr(c) for c in cols}
    where = where or (lambda i: f"row {i}")
    divide, stray, percent_like = [], [], []
    for col in cols:
        v = df[col].to_numpy(float)
        finite = v[pd.notna(v)]
        if not finite.size:
            continue
        if finite.min() < 0 or finite.max() > 100:
            raise TransferscaleError(f"column {labels[col]} has values from {finite.min():g} to {finite.max():g}: "
                                     "accuracies are fractions in [0, 1] or percent in [0, 100]; fix those values")
        above = v > 1
        if not above.any():
            continue
        if percent:
            divide.append(col)
        elif 2 * above.sum() < finite.size:  # mostly fractions: a stray value
            i = above.nonzero()[0]
            more = f" (and {len(i) - 1} more)" if len(i) > 1 else ""
            stray.append(f"column {labels[col]} holds fractions but {v[i[0]]:g} at {where(i[0])}{more} is above 1: "
                         "fix that value (or pass --percent if the column really is percent)")
        else:
            percent_like.append((col, finite.max()))
    if stray or percent_like:
        problems = list(stray)
        if percent_like:
            named = [f"{labels[c]} (values up to {top:.4g})" for c, top in percent_like]
            names = named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]
            kept = [labels[c] for c in cols if not (df[c].to_numpy(float) > 1).any()]
            one = len(percent_like) == 1
            problems.append(f"column{'' if one else 's'} {names} look{'s' if one else ''} like percent: pass "
                            f"--percent to divide {'it' if one else 'them'} by 100"
                            + (f" ({', '.join(kept)}, within [0, 1], would stay fractions)" if kept else ""))
        if percent is False:
            problems.append("--fraction says every column holds fractions in [0, 1]")
        raise TransferscaleError("; ".join(problems))
    if percent and not divide:
        return df, "--percent: no column has a value above 1, so every column is read as fractions"
    if not divide:
        return df, ""
    kept = [labels[c] for c in cols if c not in divide]
    note = (f"--percent: divided by 100 {', '.join(labels[c] for c in divide)}"
            + (f"; kept as fractions (all within [0, 1]) {', '.join(kept)}" if kept else ""))
    return df.assign(**{c: df[c].astype(float) / 100 for c in divide}), note


def _locator(df: pd.DataFrame, csv: Path, on: list[str] | None):
    """Row position -> where a user finds that row: the join keys of a joined table, else the file's line."""
    if on:
        return lambda i: ", ".join(f"{k}={df[k].iloc[i]}" for k in on)
    return lambda i: f"line {i + 2} of {csv.name}"  # the header is line 1


def melt_ds(df: pd.DataFrame, us: str, ds: list[str], by: list[str]) -> pd.DataFrame:
    """Long format with columns us_acc, ds (the DS column's name), ds_acc, plus the by columns."""
    _require(df, [us, *ds, *by], "the table")
    long = df[[*by, us, *ds]].melt(id_vars=[*by, us], value_vars=ds, var_name="ds", value_name="ds_acc")
    return long.rename(columns={us: "us_acc"})


def _read(path: Path) -> pd.DataFrame:
    if not Path(path).is_file():
        raise TransferscaleError(f"no such CSV file: {path}")
    try:
        df = pd.read_csv(path, thousands=",")
    except pd.errors.EmptyDataError:
        raise TransferscaleError(f"{path} is empty: a CSV file needs a header row and one row per model") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TransferscaleError(f"{path} cannot be read as a CSV table ({first})") from None
    return df


def _require(df: pd.DataFrame, cols, where) -> None:
    for c in cols:
        if c not in df.columns:
            raise TransferscaleError(f"column {c!r} is not in {where}; {did_you_mean(c, map(str, df.columns))}")




FINETUNE_COLUMNS = ["run", "name", "kind", "run_kind", "family", "size", "task", "ft_acc", "n_seeds", "upstream",
                    "us_acc", "fewshot_shots", "fewshot_acc"]


def finetune_points(results: pd.DataFrame, top_shots: dict | None = None) -> pd.DataFrame:
    """One row per (run, task) that was fine-tuned: its fine-tuned accuracy beside its US and few-shot accuracy.

    `results` is the store's tidy table (transferscale.store.read_results). For run r and task t:
      ft_acc        = mean over seeds of r's finetune_accuracy on t (n_seeds: how many seeds), at the
                      largest downstream data size fine-tuned on when the rows have a size axis;
      us_acc        = mean of r's upstream_accuracy rows (NaN for a run without one, e.g. raw pixels);
      fewshot_acc   = mean over seeds of r's fewshot_accuracy on t at the final representation (layer -1)
                      and fewshot_shots, the largest shot count task t has in the results (NaN where r
                      has no probe there), so every run of a task is compared at one shot count.
    Baselines are kept, with their kind and run_kind (random_init: the network trained from scratch on t),
    so a caller can draw them as references. Empty (with these columns) when nothing was fine-tuned.
    """
    need = ["run", "name", "family", "metric", "task", "value"]
    missing = [c for c in need if c not in results.columns]
    if missing:
        raise TransferscaleError(f"the results table lacks columns {missing}; expected the store's format "
                                 "(transferscale.store.read_results)")
    res = results.copy()
    for col, default in (("kind", "trained"), ("size", None), ("shots", pd.NA), ("seed", pd.NA), ("layer", -1)):
        if col not in res.columns:
            res[col] = default
    if "run_kind" not in res.columns:
        res["run_kind"] = res["kind"]
    ft = res[res["metric"] == "finetune_accuracy"]
    if ft.empty:
        return pd.DataFrame(columns=FINETUNE_COLUMNS)
    # with a data-size axis (`shots` = the number of training examples) compare at the largest size only
    n = pd.to_numeric(ft["shots"], errors="coerce").fillna(0)
    ft = ft[n == n.groupby([ft["run"], ft["task"]]).transform("max")]
    runs = res.drop_duplicates("run").set_index("run")[["name", "kind", "run_kind", "family", "size"]]
    out = ft.groupby(["run", "task"], as_index=False, sort=False).agg(
        ft_acc=("value", "mean"), n_seeds=("seed", lambda s: max(int(s.nunique()), 1)))
    out = out.join(runs, on="run")
    us = res[res["metric"] == "upstream_accuracy"].groupby("run").agg(
        upstream=("task", "first"), us_acc=("value", "mean"))
    out = out.join(us, on="run")
    few = res[(res["metric"] == "fewshot_accuracy") & (res["layer"] == -1)]
    if "l2" in few.columns and few.groupby(["run", "task", "shots", "seed"], dropna=False)["l2"].nunique().max() > 1:
        raise TransferscaleError("the results hold several l2 values per probe; keep one before joining, "
                                 "e.g. results[results.l2 == 1024]")
    if top_shots is None:
        top = few.groupby("task")["shots"].max().rename("fewshot_shots")
    else:
        top = pd.Series(top_shots, dtype="Int64", name="fewshot_shots")
        top.index.name = "task"
    out = out.join(top, on="task")
    at_top = few[few["shots"] == few["task"].map(top)]
    acc = at_top.groupby(["run", "task"])["value"].mean().rename("fewshot_acc")
    out = out.join(acc, on=["run", "task"])
    return out[FINETUNE_COLUMNS].reset_index(drop=True)


# ---- the axes of a study's runs (the same-curve test, US and DS at odds, Pareto frontiers) ----------------

AXIS_POINT_COLUMNS = ["protocol", "run", "name", "family", "upstream", "task", "shots", "us_acc", "ds_acc"]
SCALE_AXES = ["family", "size", "data_fraction", "steps"]
NOT_HYPER_PARAMETERS = ("data_fraction", "steps", "schedule_steps", "seed")  # scale, snapshot, chance
AXIS_PROTOCOLS = ("fewshot", "finetune")


class AxisTable(NamedTuple):
    """What `axis_points` returns: the points, and which of their columns are axes, by kind. Each list holds
    only the axes with more than one value among the points' runs."""

    points: pd.DataFrame  # AXIS_POINT_COLUMNS, then every axis column
    scale: list[str]  # of SCALE_AXES (and schedule_steps when snapshots and full runs mix)
    shape: list[str]  # shape fields (a shape field named like another column gets a `shape_` prefix)
    training: list[str]  # other training settings: lr, weight_decay, head_weight_decay, head_lr_mult, seed, ...

    @property
    def axes(self) -> list[str]:
        """Every axis that varies, scale, shape and training."""
        return [*self.scale, *self.shape, *self.training]

    @property
    def hyper_parameters(self) -> list[str]:
        """The training settings that vary, less the data fraction, steps and seed: the upstream
        hyper-parameters (e.g. head weight decay) that may put US and DS at odds."""
        return [c for c in self.training if c not in NOT_HYPER_PARAMETERS]


def run_axes(configs: dict[str, dict], runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Per run (`runs`: run, family, size, as `Store.runs_table` gives them): its axes from its config
    (`configs`: {run key: config}, `Store.run_configs`). Returns (table, shape fields, training fields).

    family and size as stored; data_fraction and steps from the config's training table (a snapshot's steps
    are where it stops), schedule_steps the length of the schedule it follows (its own steps for a full
    run); each field of the config's shape (a list such as ResNet widths as "16x32x64x128") and, for a shape
    matched to a parameter budget, `matched_params`; and every other
    training setting (lr, weight_decay, and any a study adds, such as head_weight_decay). A run without a
    shape or training table (a pretrained model, a baseline) has NaN there."""
    import numpy as np

    table = runs[["run", "family", "size"]].copy()
    rows = []
    for key in table["run"]:
        config = configs.get(key) or {}
        training = dict(config.get("training") or {})
        if "steps" in training:
            training.setdefault("schedule_steps", training["steps"])
        shape = {k: "x".join(map(str, v)) if isinstance(v, list | tuple) else v
                 for k, v in dict(config.get("shape") or {}).items()}
        if "matched_params" in config:  # the parameter budget `match` solved the shape's width for
            shape["matched_params"] = config["matched_params"]
        rows.append((training, shape))
    training_keys = list(dict.fromkeys(k for t, _ in rows for k in t))
    shape_keys = list(dict.fromkeys(k for _, s in rows for k in s))
    for col in ("data_fraction", "steps"):
        table[col] = [t.get(col, np.nan) for t, _ in rows]
    fixed = set(AXIS_POINT_COLUMNS) | set(table.columns) | set(training_keys)
    shape_cols = []
    for k in shape_keys:
        col = f"shape_{k}" if k in fixed else k
        table[col] = pd.Series([s.get(k, np.nan) for _, s in rows], index=table.index)
        shape_cols.append(col)
    train_cols = [k for k in training_keys if k not in ("data_fraction", "steps")]
    for k in train_cols:
        table[k] = pd.Series([t.get(k, np.nan) for t, _ in rows], index=table.index)
    return table, shape_cols, train_cols


def axis_points(study, protocol: str = "fewshot", shots: int | None = None,
                points: pd.DataFrame | None = None) -> AxisTable:
    """One row per (trained run, task[, shots]) of a study, at the final layer: its US accuracy, its DS
    accuracy (seed mean) under `protocol`, and every axis of its run (`run_axes`).

    protocol "fewshot": `store_points(layers="final")` (final representation, layer -1), at every shot count
    or only `shots`; "finetune": `finetune_points` (fine-tuned accuracy at the largest downstream data size,
    shots NA). Baselines and runs without an upstream accuracy are left out, as in the fits. The axis lists
    hold the axes with more than one value among these runs; the points keep every axis column. `points`: the
    study's `store_points(study, layers="final")` when the caller has read them already (the report has), so
    they are not read twice."""
    from transferscale.store import FINETUNE, UPSTREAM

    if protocol not in AXIS_PROTOCOLS:
        raise TransferscaleError(f"protocol {protocol!r}: use one of {AXIS_PROTOCOLS}")
    with _opened(study) as store, store.snapshot():
        runs = store.runs_table()
        configs = store.run_configs()
        if protocol == "fewshot":
            pts = store_points(store, layers="final") if points is None else points
            if shots is not None:
                if not (pts["shots"] == int(shots)).any():
                    have = sorted(int(s) for s in pts["shots"].dropna().unique())
                    raise TransferscaleError(f"no few-shot result at {shots} shots; the study has {have or 'none'}")
                pts = pts[pts["shots"] == int(shots)]
        else:
            rows = store.tidy_rows("m.metric IN (?, ?)", (FINETUNE, UPSTREAM))
            ft = finetune_points(rows)
            ft = ft[(ft["kind"] != "baseline") & ft["us_acc"].notna()]
            pts = ft.rename(columns={"ft_acc": "ds_acc"}).assign(shots=pd.array([pd.NA] * len(ft), dtype="Int64"))
    pts = pts.assign(protocol=protocol)[AXIS_POINT_COLUMNS].reset_index(drop=True)
    axes, shape_cols, train_cols = run_axes(configs, runs)
    points = pts.merge(axes.drop(columns=["family"]), on="run", how="left")
    used = axes[axes["run"].isin(points["run"].unique())]

    def varies(col: str) -> bool:
        return used[col].nunique(dropna=True) > 1

    scale = [c for c in [*SCALE_AXES, "schedule_steps"] if c in used.columns and varies(c)]
    if "schedule_steps" in scale and used["schedule_steps"].equals(used["steps"]):
        scale.remove("schedule_steps")  # no snapshots: every run follows its own schedule, nothing beyond steps
    training = [c for c in train_cols if c != "schedule_steps" and varies(c)]
    return AxisTable(points, scale, [c for c in shape_cols if varies(c)], training)
