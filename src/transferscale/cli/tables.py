"""Tables for the terminal: a study's status, and a summary of its results."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from rich.table import Table

from transferscale.errors import TransferscaleError
from transferscale.store import Store


def status_table(study_dir: Path) -> Table | PlainTable:
    """One row per planned run: done, running (or interrupted), failed, or left.

    The plan comes from the spec stored with the study; when that spec no longer validates (written by
    another version), the runs in the store are listed, and the caption says so."""
    from pydantic import ValidationError

    from transferscale.plan import make_plan
    from transferscale.spec import StudySpec

    with Store(study_dir, create=False) as store:
        meta = store.meta()
        runs = store.runs_frame().set_index("key")
    plan, note = None, ""
    if "spec_json" in meta:
        try:
            plan = make_plan(StudySpec.model_validate_json(meta["spec_json"]))
        except (ValidationError, TransferscaleError) as err:
            note = f"; the stored spec does not validate ({str(err).splitlines()[0]}): the runs in the store"
    keys = [r.key for r in plan.runs] if plan else list(runs.index)
    names = {r.key: r.name for r in plan.runs} if plan else runs["name"].to_dict()
    counts: dict[str, int] = {}
    title = f"study {meta.get('name', '?')} at {study_dir}"
    table = Table(title=title) if len(keys) <= RICH_MAX_ROWS else PlainTable(title)
    for col in ("run", "status", "train s", "eval s", "params", "note"):
        table.add_column(col, justify="right" if col in ("train s", "eval s", "params") else "left")
    colours = {"done": "green", "failed": "red", "running": "yellow", "left": "dim"}
    plain = isinstance(table, PlainTable)
    records = runs.to_dict("index")
    for key in keys:
        row = records.get(key)
        state = "left" if row is None else row["status"]
        counts[state] = counts.get(state, 0) + 1
        label = "running / interrupted" if state == "running" else state
        error = None if row is None else row["error"]
        note_cell = error.splitlines()[0][:80] if isinstance(error, str) else ""
        params = None if row is None else row["params"]
        table.add_row(
            names[key], label if plain else f"[{colours.get(state, 'white')}]{label}[/]",
            _num(row, "train_seconds"), _num(row, "eval_seconds"),
            "" if params is None or params != params else f"{int(params):,}",
            note_cell,
        )
    table.caption = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + note
    return table


def _num(row, col: str) -> str:
    if row is None or row[col] is None or row[col] != row[col]:
        return ""
    return f"{row[col]:.0f}"


def results_summary(df, shots: int | None = None) -> Table:
    """Per run: upstream accuracy and each task's mean few-shot accuracy over seeds, at one shot count.

    `df` is a tidy table (`read_results`); `store_summary` shows a study the same way without reading it all.
    """
    if df.empty:
        return Table(title="no results yet")
    few = df[df.metric == "fewshot_accuracy"]
    available = sorted(few.shots.dropna().unique())
    if shots is None:
        shots = _default_shots(available)
    few = few[(few.shots == shots) & (few.layer == -1)]
    acc = few.groupby(["run", "task"], sort=False).value.mean().unstack("task")
    up = df[df.metric == "upstream_accuracy"].set_index("run").value
    runs = df.drop_duplicates("run").set_index("run")[["name", "kind"]]
    return _summary(runs, up, acc, list(dict.fromkeys(few.task)), shots, len(df))


def store_summary(study_dir: Path, shots: int | None = None) -> Table:
    """`results_summary(read_results(study_dir))`, asking the store only for the cells it shows: the seed
    means at one shot count on the final layer (aggregated in SQL), the upstream rows and the run list."""
    import numpy as np

    from transferscale.store import FEWSHOT, UPSTREAM

    with Store(study_dir, create=False) as store, store.snapshot():
        runs = store.runs_table()
        if runs.empty:
            return Table(title="no results yet")
        if shots is None:
            shots = _default_shots(store.shot_counts(FEWSHOT))
        up = store.tidy_rows("m.metric = ?", (UPSTREAM,)).set_index("run").value
        where, params = "m.shots = ? AND m.layer = -1", (-1 if shots is None else int(shots),)
        groups = store.seed_groups(FEWSHOT, where, params)
        if groups.several_rows.any():  # several l2 per seed: average the rows as the tidy table holds them
            few = store.tidy_rows(f"m.metric = ? AND {where}", (FEWSHOT, *params))
            acc = few.groupby(["run", "task"], sort=False).value.mean().unstack("task")
            tasks = list(dict.fromkeys(few.task))
        else:
            # a group's rows are contiguous in the tidy table, so pandas averaged them with add.reduceat
            keys, names = np.array(groups.runs, dtype=object), np.array(groups.tasks, dtype=object)
            acc = pd.Series(groups.mean("reduceat"), index=pd.MultiIndex.from_arrays(
                [keys[groups.run], names[groups.task]], names=["run", "task"])).unstack("task")
            rowid = runs.reset_index().set_index("run")["index"]
            first = np.lexsort((names[groups.task], rowid.reindex(keys[groups.run]).to_numpy()))
            tasks = list(dict.fromkeys(names[groups.task][first]))
        n_rows = int(runs["n_rows"].sum())
    return _summary(runs.set_index("run")[["name", "kind"]], up, acc, tasks, shots, n_rows)


def _default_shots(available):
    return 10 if 10 in available else (available[-1] if len(available) else None)


RICH_MAX_ROWS = 1000  # a longer summary prints as plain aligned text: rich lays out 5,000 rows in seconds


def _summary(runs, up, acc, tasks: list, shots, n_rows: int) -> Table | PlainTable:
    title = f"upstream accuracy and {shots}-shot accuracy (mean over seeds), final layer"
    table = Table(title=title) if len(runs) <= RICH_MAX_ROWS else PlainTable(title)
    table.add_column("run")
    table.add_column("upstream", justify="right")
    for task in tasks:
        table.add_column(task.replace("_", " "), justify="right")
    if not up.index.is_unique:  # several upstream rows for a run: their mean, as the fits take it
        up = up.groupby(level=0, sort=False).mean()
    up_index, acc_rows, acc_cols = set(up.index), set(acc.index), set(acc.columns)
    for run, name, kind in zip(runs.index, runs["name"], runs["kind"]):
        cells = [f"{up[run]:.3f}" if run in up_index else "-"]
        if run in acc_rows:
            values = acc.loc[run]
            # a task the run has no accuracy for (not probed, or its features recorded as degenerate): "-"
            cells += [f"{values[t]:.3f}" if t in acc_cols and values[t] == values[t] else "-" for t in tasks]
        else:
            cells += ["-"] * len(tasks)
        table.add_row(name, *cells, style="dim" if kind == "baseline" else None)
    table.caption = f"{n_rows} measurements; `--format csv` for all of them"
    return table


class PlainTable:
    """A long table as plain aligned text (title, header, rows, caption), for `Console.out`: the same cells
    a rich Table would show, without its per-cell layout."""

    def __init__(self, title: str):
        self.title, self.caption = title, ""
        self.columns: list[tuple[str, str]] = []  # (header, justify)
        self.rows: list[list[str]] = []

    def add_column(self, header: str, justify: str = "left") -> None:
        self.columns.append((header, justify))

    def add_row(self, *cells: str, style: str | None = None) -> None:
        self.rows.append(list(cells))

    def __str__(self) -> str:
        widths = [max([len(h), *(len(r[i]) for r in self.rows)]) for i, (h, _) in enumerate(self.columns)]

        def line(cells) -> str:
            return "  ".join(c.rjust(w) if j == "right" else c.ljust(w)
                             for c, w, (_, j) in zip(cells, widths, self.columns)).rstrip()

        header = line([h for h, _ in self.columns])
        return "\n".join([self.title, header, "-" * len(header), *map(line, self.rows), self.caption])
