"""Tables in, tables out: a study's results as fit points, and any CSV (or two joined) as a fit table."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from transferscale.errors import TransferscaleError, did_you_mean

POINT_COLUMNS = ["run", "name", "family", "upstream", "us_acc", "task", "shots", "layer", "ds_acc"]


def study_points(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, task, shots, layer): the run's upstream accuracy and its mean DS accuracy over seeds.

    `results` is the store's tidy table (run, name, kind, family, metric, task, shots, seed, layer, value).
    Baselines (kind 'baseline': raw pixels, random initialisation) are dropped: the law describes what
    pre-training buys, and a random network's chance-level upstream accuracy says nothing about that.
    Runs without an upstream_accuracy row are dropped too: they have no place on the US axis. `upstream` names the upstream dataset, so a study with several upstreams fits each apart.
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
