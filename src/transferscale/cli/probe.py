"""`transferscale probe`: evaluate models a user already has (no training), store it like a study, print the
per-layer few-shot table."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from transferscale.errors import TransferscaleError


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TransferscaleError(f"cannot write {value!r} into a study spec")


def probe_spec_text(name: str, models: list[dict], tasks: list[str], shots: list[int], seeds: list[int],
                    layers: str, pixels: bool, task_options: dict[str, dict]) -> str:
    """The study spec (TOML) that `transferscale probe` runs: evaluate-only models, probes, no training."""
    lines = [f"name = {_toml_value(name)}",
             'description = "written by transferscale probe: given models, few-shot probes, no training"', ""]
    for model in models:
        lines.append("[[models]]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in model.items()]
        lines.append("")
    lines += ["[downstream]", f"tasks = {_toml_value(tasks)}"]
    if task_options:
        lines += ["", "[downstream.options]"] + [f"{t} = {_toml_value(o)}" for t, o in task_options.items()]
    lines += ["", "[probe]", f"shots = {_toml_value(shots)}", f"seeds = {_toml_value(seeds)}",
              f"layers = {_toml_value(layers)}", "", "[baselines]", f"pixels = {_toml_value(pixels)}",
              "random_init = false", ""]
    return "\n".join(lines)


def _parse_options(pairs: list[str]) -> dict:
    """KEY=VALUE pairs, each VALUE read as JSON when it parses (numbers, true/false, lists), else a string."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise TransferscaleError(f"--option {pair!r}: write KEY=VALUE, e.g. --option img_size=160")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def layer_table(df, task: str, metric: str = "fewshot_accuracy") -> Table:
    """Per model and layer: mean few-shot accuracy over seeds at every shot count, for one task."""
    rows = df[(df.metric == metric) & (df.task == task)]
    shots = sorted(int(s) for s in rows.shots.dropna().unique())
    table = Table(title=f"{task}: few-shot accuracy (mean over seeds) per layer")
    for col in ("model", "layer", "depth", *[f"{k}-shot" for k in shots]):
        table.add_column(col, justify="left" if col == "model" else "right")
    means = rows.groupby(["name", "layer", "shots"]).value.mean()
    depth = rows.groupby(["name", "layer"]).depth.first()
    for name in dict.fromkeys(rows.name):
        layers = sorted({layer for (n, layer, _) in means.index if n == name}, key=lambda v: (v == -1, v))
        for layer in layers:
            cells = [f"{means.get((name, layer, k), float('nan')):.3f}" for k in shots]
            label = "final" if layer == -1 else str(layer)
            table.add_row(name, label, f"{depth.get((name, layer), float('nan')):.2f}", *cells)
    return table


def probe_command(
    model: Annotated[list[str], typer.Option("--model", "-m", help="A model source, e.g. timm:tf_efficientnet_lite0, "
                                             "hf:sentence-transformers/all-MiniLM-L6-v2, file:ckpt.pt; repeat "
                                             "for several.")],
    task: Annotated[list[str], typer.Option("--task", "-t", help="A downstream dataset; repeat for several.")],
    weights: Annotated[str | None, typer.Option(help="Weights file (or package) for a single timm: --model.")] = None,
    option: Annotated[list[str] | None, typer.Option(
        "--option", "-O", help="A model-source option KEY=VALUE for every --model (e.g. img_size=160); repeat.")
    ] = None,
    shots: Annotated[list[int] | None, typer.Option("--shots", help="Shot counts; repeat. Default 1 5 10 25.")] = None,
    seeds: Annotated[int, typer.Option("--seeds", help="Number of few-shot seeds.")] = 3,
    layers: Annotated[str, typer.Option(help="all (every layer) or final.")] = "all",
    pixels: Annotated[bool, typer.Option(help="Also probe raw pixels on image tasks, as a baseline.")] = True,
    name: Annotated[str | None, typer.Option(help="The study's name. Default: probe-<first model>.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Study directory. Default: "
                                             "transferscale-runs/<name>.")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Where datasets are cached.")] = None,
) -> None:
    """Probe models you already have on downstream tasks, layer by layer; no training.

    Stored like a study (results, status, fit and report work on it), so a second call with more tasks or
    models evaluates only what is new.

    Example: transferscale probe --model timm:tf_efficientnet_lite0 --task sklearn_digits --option img_size=160
    """
    from transferscale.cli.progress import RichProgress
    from transferscale.engine.runner import run_study
    from transferscale.spec import parse_spec
    from transferscale.store import read_results

    console = Console() if Console().is_terminal else Console(width=160)
    try:
        if weights is not None and len(model) != 1:
            raise TransferscaleError("--weights names one model's weights; with several --model, give each its "
                                     "weights in a study spec ([[models]] ... options = { weights = ... })")
        options = _parse_options(option or [])
        entries = []
        for ref in model:
            opts = dict(options)
            if weights is not None:
                opts["weights"] = weights
            entries.append({"source": ref, **({"options": opts} if opts else {})})
        study = name or "probe-" + "".join(c if c.isalnum() or c in "._-" else "-" for c in model[0].split(":", 1)[-1])
        text = probe_spec_text(study, entries, list(task), sorted(set(shots or [1, 5, 10, 25])),
                               list(range(seeds)), layers, pixels, {})
        spec = parse_spec(text, source="transferscale probe")
        study_dir = out or spec.study_dir()
        console.print(f"[bold]probe[/] {', '.join(model)} on {', '.join(task)}  ->  {study_dir}")
        with RichProgress(console) as progress:
            result = run_study(spec, text, study_dir, progress=progress, cache_dir=cache_dir)
        for run_name, reason in result.failed.items():
            console.print(f"  [red]failed[/] {run_name}: {reason}")
        df = read_results(study_dir)
    except TransferscaleError as err:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(err))}", highlight=False)
        raise typer.Exit(2) from None
    for t in task:
        console.print(layer_table(df, t))
    console.print(f"results: {study_dir / 'results.sqlite'}   (`transferscale results {study_dir}`, "
                  f"`transferscale report {study_dir}`)")
