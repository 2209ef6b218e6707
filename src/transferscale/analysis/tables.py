"""Tables in, tables out: a study's results as fit points, and any CSV (or two joined) as a fit table.

`load_fit_table` is the one loader behind `transferscale fit` and `transferscale report --csv`: a study
directory or a CSV (optionally joined with a second one) becomes a long table with `us_acc` and `ds_acc`
columns in [0, 1], the columns to group fits by, and notes saying what was read and how.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from transferscale.errors import TransferscaleError, did_you_mean
from transferscale.features import layer_depth as relative_depth  # noqa: F401 (re-exported)

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
                   on: Sequence[str] = (), percent: bool | None = None) -> FitTable:
    """A study's points, or a CSV table (optionally joined with a second on `on`), ready to fit.

    Study: `study_points` of its store, grouped by (upstream, task, shots, layer).
    CSV: the `us` column and each `ds` column (taken from the joined file when it has one of that name)
    melted to one row per (row, DS column), grouped by `by`, plus a `ds` column when there are several DS
    columns; rows missing either value are dropped (a note says how many), and accuracies are scaled to
    fractions by `to_fraction` (percent: True, False, or None to detect it; a note says what was done).
    """
    if (study_dir is None) == (csv is None):
        raise TransferscaleError("give either STUDY_DIR or --csv FILE (with --us COL --ds COL)")
    if study_dir is not None:
        from transferscale.store import read_results  # lazily: fitting a CSV needs no store

        return FitTable(study_points(read_results(study_dir)), list(STUDY_GROUPS), [],
                        Path(study_dir) / "saturation_fits.csv")
    ds, by, on = list(ds or []), list(by), list(on)
    if not us or not ds:
        raise TransferscaleError("--csv needs --us COL and --ds COL (the upstream and downstream accuracy)")
    raw = read_csv_table(Path(csv), join if join is None else Path(join), on)
    ds_cols = [f"{c}_join" if join is not None and f"{c}_join" in raw.columns else c for c in ds]
    table = melt_ds(raw, us, ds_cols, by)
    table["ds"] = table["ds"].str.removesuffix("_join")
    notes = []
    missing = table[["us_acc", "ds_acc"]].isna().any(axis=1)
    if missing.any():
        notes.append(f"dropped {int(missing.sum())} rows with no value in {us} or {ds}")
        table = table[~missing]
    table, note = to_fraction(table, ["us_acc", "ds_acc"], percent)
    notes += [note] if note else []
    by_cols = [*by, "ds"] if len(ds) > 1 else by
    return FitTable(table, by_cols, notes, Path("saturation_fits.csv"))


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


def to_fraction(df: pd.DataFrame, cols: list[str], percent: bool | None) -> tuple[pd.DataFrame, str]:
    """Scale accuracy columns to [0, 1]; returns the table and a note saying what was done.

    percent=True divides by 100, False keeps values as fractions, None decides: values above 1 (and none
    above 100) are read as percent, the note says so, and --fraction turns that off.
    """
    values = df[cols].to_numpy(float)
    top = pd.Series(values.ravel()).max()
    if percent is None:
        percent = bool(top > 1 and top <= 100)
        note = (f"values up to {top:g} in {cols}: read as percent and divided by 100 (--fraction to refuse)"
                if percent else "")
    else:
        note = "divided by 100 (--percent)" if percent else ""
    if percent:
        df = df.assign(**{c: df[c].astype(float) / 100 for c in cols})
    return df, note


def melt_ds(df: pd.DataFrame, us: str, ds: list[str], by: list[str]) -> pd.DataFrame:
    """Long format with columns us_acc, ds (the DS column's name), ds_acc, plus the by columns."""
    _require(df, [us, *ds, *by], "the table")
    long = df[[*by, us, *ds]].melt(id_vars=[*by, us], value_vars=ds, var_name="ds", value_name="ds_acc")
    return long.rename(columns={us: "us_acc"})


def _read(path: Path) -> pd.DataFrame:
    if not Path(path).is_file():
        raise TransferscaleError(f"no such CSV file: {path}")
    return pd.read_csv(path, thousands=",")


def _require(df: pd.DataFrame, cols, where) -> None:
    for c in cols:
        if c not in df.columns:
            raise TransferscaleError(f"column {c!r} is not in {where}; {did_you_mean(c, map(str, df.columns))}")




FINETUNE_COLUMNS = ["run", "name", "kind", "run_kind", "family", "size", "task", "ft_acc", "n_seeds", "upstream",
                    "us_acc", "fewshot_shots", "fewshot_acc"]


def finetune_points(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, task) that was fine-tuned: its fine-tuned accuracy beside its US and few-shot accuracy.

    `results` is the store's tidy table (transferscale.store.read_results). For run r and task t:
      ft_acc        = mean over seeds of r's finetune_accuracy on t (n_seeds: how many seeds);
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
    top = few.groupby("task")["shots"].max().rename("fewshot_shots")
    out = out.join(top, on="task")
    at_top = few[few["shots"] == few["task"].map(top)]
    acc = at_top.groupby(["run", "task"])["value"].mean().rename("fewshot_acc")
    out = out.join(acc, on=["run", "task"])
    return out[FINETUNE_COLUMNS].reset_index(drop=True)
