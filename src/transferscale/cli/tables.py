"""Tables for the terminal: a study's status, and a summary of its results."""
from __future__ import annotations

from pathlib import Path

from rich.table import Table

from transferscale.store import Store


def status_table(study_dir: Path) -> Table:
    """One row per planned run: done, running (or interrupted), failed, or left."""
    from transferscale.plan import make_plan
    from transferscale.spec import StudySpec

    with Store(study_dir, create=False) as store:
        meta = store.meta()
        runs = store.runs_frame().set_index("key")
    plan = make_plan(StudySpec.model_validate_json(meta["spec_json"])) if "spec_json" in meta else None
    keys = [r.key for r in plan.runs] if plan else list(runs.index)
    names = {r.key: r.name for r in plan.runs} if plan else runs["name"].to_dict()
    counts: dict[str, int] = {}
    table = Table(title=f"study {meta.get('name', '?')} at {study_dir}")
    for col in ("run", "status", "train s", "eval s", "params", "note"):
        table.add_column(col, justify="right" if col in ("train s", "eval s", "params") else "left")
    colours = {"done": "green", "failed": "red", "running": "yellow", "left": "dim"}
    for key in keys:
        row = runs.loc[key] if key in runs.index else None
        state = "left" if row is None else row["status"]
        counts[state] = counts.get(state, 0) + 1
        label = "running / interrupted" if state == "running" else state
        note = "" if row is None or not isinstance(row["error"], str) else row["error"].splitlines()[0][:80]
        table.add_row(
            names[key], f"[{colours.get(state, 'white')}]{label}[/]",
            _num(row, "train_seconds"), _num(row, "eval_seconds"),
            "" if row is None or row["params"] != row["params"] or row["params"] is None else f"{int(row['params']):,}",
            note,
        )
    table.caption = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    return table


def _num(row, col: str) -> str:
    if row is None or row[col] is None or row[col] != row[col]:
        return ""
    return f"{row[col]:.0f}"


def results_summary(df, shots: int | None = None) -> Table:
    """Per run: upstream accuracy and each task's mean few-shot accuracy over seeds, at one shot count."""
    if df.empty:
        return Table(title="no results yet")
    few = df[df.metric == "fewshot_accuracy"]
    available = sorted(few.shots.dropna().unique())
    if shots is None:
        shots = 10 if 10 in available else (available[-1] if available else None)
    few = few[(few.shots == shots) & (few.layer == -1)]
    acc = few.groupby(["run", "task"], sort=False).value.mean().unstack("task")
    up = df[df.metric == "upstream_accuracy"].set_index("run").value
    runs = df.drop_duplicates("run").set_index("run")[["name", "kind"]]
    tasks = list(dict.fromkeys(few.task))
    table = Table(title=f"upstream accuracy and {shots}-shot accuracy (mean over seeds), final layer")
    table.add_column("run")
    table.add_column("upstream", justify="right")
    for task in tasks:
        table.add_column(task.replace("_", " "), justify="right")
    for run, meta in runs.iterrows():
        cells = [f"{up[run]:.3f}" if run in up.index else "-"]
        cells += [f"{acc.loc[run, t]:.3f}" if run in acc.index and t in acc.columns else "-" for t in tasks]
        style = "dim" if meta["kind"] == "baseline" else None
        table.add_row(meta["name"], *cells, style=style)
    table.caption = f"{len(df)} measurements; `--format csv` for all of them"
    return table
