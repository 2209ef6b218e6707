"""`transferscale report`: the HTML page of a study or a table, built from a small store written here."""
import base64
import io
import json
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from transferscale.cli.report import report_command
from transferscale.report import build_report, load_study, render
from transferscale.store import Measurement, Store

CHROMIUM = Path("/usr/bin/chromium")
TIMM = Path(__file__).resolve().parents[2] / "shared" / "data" / "external" / "timm"
TASKS = {"near": (0.92, 0.5, 2.0), "middle": (0.8, 0.6, 1.6), "far": (0.6, 0.35, 1.3)}  # 1 - e_IR, k, alpha
SHOTS = (1, 5, 10)
# fine-tuned accuracy per (run, task) and seed, in the fixture with `finetune=True`
FINETUNE = {("resnet-m-d1-s300", "near"): (0.902, 0.904), ("vit-m-d1-s300", "near"): (0.861, 0.881),
            ("vit-s-random", "near"): (0.612, 0.632), ("resnet-m-d1-s300", "far"): (0.655, 0.659),
            ("vit-m-d1-s300", "far"): (0.701, 0.711), ("vit-s-random", "far"): (0.48, 0.5)}


def _law(task, us, shots):
    sat, k, alpha = TASKS[task]
    return sat - 0.12 / shots - k * (1 - us) ** alpha


def write_study(study_dir: Path, layers: bool = True, finetune: bool = False) -> Path:
    """A finished study in the store's format: ViT and ResNet at two sizes and two budgets, raw pixels and
    random-init baselines, three tasks (near to far), three shot counts, two seeds, layer-wise probes
    (layers 0..3 plus the final layer -1) when `layers`, and the FINETUNE rows (two seeds) when `finetune`."""
    rng = np.random.default_rng(0)
    with Store(study_dir) as store:
        store.set_meta(name="fixture", spec='name = "fixture"\n', created="2026-01-02T03:04:05+0000",
                       spec_json=json.dumps({"name": "fixture", "description": "a report test",
                                             "downstream": {"tasks": list(TASKS)}}))
        runs = []
        for family, base in (("vit", 0.45), ("resnet", 0.5)):
            for size, plus in (("s", 0.0), ("m", 0.12)):
                for frac, steps, more in ((0.3, 100, 0.0), (1.0, 300, 0.15)):
                    runs.append((f"{family}-{size}-d{frac:g}-s{steps}", "trained", family, size,
                                 {"training": {"data_fraction": frac, "steps": steps}}, base + plus + more))
        runs += [("vit-s-random", "random_init", "vit", "s", {}, 0.01), ("pixels", "pixels", "pixels", None, {}, None)]
        for i, (name, kind, family, size, config, us) in enumerate(runs):
            run = SimpleNamespace(key=f"k{i:02d}", name=name, kind=kind, family=family, size=size, config=config)
            store.mark_running(run, versions={})
            rows = [] if us is None else [Measurement("upstream_accuracy", "fractals", us)]
            for task in TASKS:
                for shots in SHOTS:
                    for seed in (0, 1):
                        noise = 0.06 if task == "far" else 0.02  # a far task follows upstream loosely
                        acc = _law(task, us or 0.05, shots) - abs(rng.normal(0, noise))
                        if task == "far" and name == "vit-m-d0.3-s100":
                            acc += 0.15  # US and DS at odds: a weaker upstream model is best on the far task
                        if kind != "trained":
                            acc = 0.25 if kind == "pixels" else 0.15
                        rows.append(Measurement("fewshot_accuracy", task, acc, shots, seed, -1, 1024.0))
                        for layer in range(4) if layers and kind == "trained" else ():
                            depth = (layer + 1) / 4  # as the runner records it: 1 is the last block
                            shape = depth if task == "near" else 1 - 3 * (depth - 0.5) ** 2  # far: peaks midway
                            rows.append(Measurement("fewshot_accuracy", task, acc - 0.15 * (1 - shape), shots,
                                                    seed, layer, 1024.0, depth=depth))
                for seed, acc in enumerate(FINETUNE.get((name, task), ()) if finetune else ()):
                    rows.append(Measurement("finetune_accuracy", task, acc, seed=seed))
            store.commit_run(run.key, rows, {}, params=1000, train_seconds=1.0, eval_seconds=1.0)
    return study_dir


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return write_study(tmp_path_factory.mktemp("report") / "study")


@pytest.fixture(scope="module")
def page(study):
    return render(load_study(study), n_bootstrap=20, command="transferscale report STUDY")


def _images(html: str) -> list[np.ndarray]:
    import matplotlib.image as mpimg

    return [mpimg.imread(io.BytesIO(base64.b64decode(b)), format="png")
            for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def test_every_section_is_on_the_page(page):
    for anchor in ("frontier", "summary", "shots", "axes", "correlations", "layers", "finetune", "reproduce"):
        assert f'<section id="{anchor}">' in page and f'href="#{anchor}"' in page
    assert "fixture" in page and "2026-01-02" in page and "transferscale report STUDY" in page
    assert "20 bootstrap resamples" in page or "20-resample" in page
    images = _images(page)
    assert len(images) == 6  # frontier, extrapolation, shots, axes, correlations, layers; no fine-tuning here
    for img in images:
        assert img.shape[0] > 200 and img.shape[1] > 500 and img[..., :3].std() > 0.05  # drawn, not blank


def test_baselines_are_lines_not_fit_points(study):
    data = load_study(study)
    assert set(data.points["model"]) == {n for n in data.points["model"] if "random" not in n and n != "pixels"}
    assert len(data.points["model"].unique()) == 8
    assert set(data.baselines["run_kind"]) == {"pixels", "random_init"}


def test_summary_names_the_best_checkpoint_per_task(page):
    assert "best checkpoint" in page
    assert re.search(r"resnet-m-d1-s300 \(0\.\d{3}\)", page)  # the strongest US model wins the near task
    assert re.search(r"vit-m-d0.3-s100 \(0\.\d{3}\)", page)  # and a weaker one the far task
    assert "No single checkpoint is best for all tasks: 2 different models" in page


def test_layer_section_says_how_to_get_layers_when_a_study_has_none(tmp_path):
    html = render(load_study(write_study(tmp_path / "flat", layers=False)), n_bootstrap=0)
    assert "no layer-wise probes" in html and len(_images(html)) == 5  # no layer figure


def test_layers_use_relative_depth(study, tmp_path):
    data = load_study(study)
    assert sorted(data.layers["depth"].unique()) == pytest.approx([0.25, 0.5, 0.75, 1])  # as recorded
    assert set(data.points["shots"]) == set(SHOTS)
    assert (data.points.groupby(["model", "task", "shots"]).size() == 1).all()  # the final layer only
    copy = tmp_path / "no-depth"
    shutil.copytree(study, copy, ignore=shutil.ignore_patterns("report"))
    with sqlite3.connect(copy / "results.sqlite") as conn:  # depths recorded apart from the layer rule ...
        conn.execute("UPDATE measurements SET depth = 0.1 * (layer + 1) WHERE layer >= 0")
    assert sorted(load_study(copy).layers["depth"].unique()) == pytest.approx([0.1, 0.2, 0.3, 0.4])  # ... are used
    with sqlite3.connect(copy / "results.sqlite") as conn:  # no depths (-1 is NA): the engine's rule (i + 1) / L
        conn.execute("UPDATE measurements SET depth = -1 WHERE layer >= 0")
    assert sorted(load_study(copy).layers["depth"].unique()) == pytest.approx([0.25, 0.5, 0.75, 1])


def test_a_study_without_fine_tuning_says_how_to_turn_it_on(page):
    section = re.search(r'<section id="finetune">(.*?)</section>', page, re.DOTALL).group(1)
    assert "No fine-tuning results" in section and "<code>[finetune]</code>" in section
    assert "<img" not in section and "<table" not in section


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    study = write_study(tmp_path_factory.mktemp("report-ft") / "study", layers=False, finetune=True)
    return study, render(load_study(study), n_bootstrap=0)


def _table_rows(html: str, cls: str) -> list[list[str]]:
    table = re.search(rf'<table class="{cls}">(.*?)</table>', html, re.DOTALL).group(1)
    return [[re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table.split("<tbody>")[1], re.DOTALL)]


def test_fine_tuning_section_lists_each_runs_accuracies(finetuned):
    study, html = finetuned
    section = re.search(r'<section id="finetune">(.*?)</section>', html, re.DOTALL).group(1)
    assert len(_images(section)) == 1  # the figure
    assert "baseline" in section and "y = x" in section
    rows = _table_rows(section, "finetune")
    assert len(rows) == len(FINETUNE)
    from transferscale.store import read_results

    res = read_results(study)
    few = res[(res.metric == "fewshot_accuracy") & (res.layer == -1) & (res.shots == max(SHOTS))]
    us = res[res.metric == "upstream_accuracy"].set_index("name")["value"]
    for task, model, _family, kind, us_cell, few_cell, ft_cell, gain, seeds in rows:
        ft = np.mean(FINETUNE[(model, task)])
        fs = few[(few.name == model) & (few.task == task)]["value"].mean()
        assert float(ft_cell) == pytest.approx(ft, abs=5e-4) and seeds == "2"
        assert few_cell == f"{fs:.3f} ({max(SHOTS)}-shot)" and float(gain) == pytest.approx(ft - fs, abs=1e-3)
        if "random" in model:
            assert kind == "baseline (random_init)" and us_cell == "-"  # a reference, not a point on the US axis
        else:
            assert kind == "trained" and float(us_cell) == pytest.approx(us[model], abs=5e-4)
    # per task in the spec's order (near before far), trained runs by fine-tuned accuracy, then the baseline
    assert [(r[0], r[1]) for r in rows] == [
        ("near", "resnet-m-d1-s300"), ("near", "vit-m-d1-s300"), ("near", "vit-s-random"),
        ("far", "vit-m-d1-s300"), ("far", "resnet-m-d1-s300"), ("far", "vit-s-random")]


def _section(html: str, key: str) -> str:
    return re.search(rf'<section id="{key}">(.*?)</section>', html, re.DOTALL).group(1)


def test_summary_says_per_task_whether_the_study_supports_saturation(study, page):
    from html import escape

    from transferscale.analysis import count_sentence, saturation_verdicts, task_sentences
    from transferscale.report import analyse

    section = _section(page, "summary")
    assert "Does the study support saturation?" in section
    items = re.findall(r"<li>(.*?)</li>", section)
    assert [i.split(":")[0] for i in items] == list(TASKS)  # one statement per task, in the spec's order
    verdicts = saturation_verdicts(analyse(load_study(study), n_bootstrap=20).hull)
    assert escape(count_sentence(verdicts)) in section and "of 9 fits support saturation" in section
    for line in task_sentences(verdicts)["sentence"]:
        assert f"<li>{escape(line)}</li>" in section
    assert all(("supports saturation" in i) or ("cannot tell" in i) for i in items)


def test_the_extrapolation_section_compares_hull_and_all_points(study, page):
    from transferscale.analysis import extrapolation_table

    section = _section(page, "extrapolation")
    assert 'href="#extrapolation"' in page and "0.9 quantile of US accuracy" in section
    verdicts = re.findall(r"<li>(.*?)</li>", section)
    assert [v.split(":")[0] for v in verdicts] == list(TASKS)
    assert all("predicts the strongest runs" in v or "cannot compare" in v or "neither fit" in v for v in verdicts)
    rows = _table_rows(section, "extrapolation")
    assert len(rows) == len(TASKS) * len(SHOTS)
    expected = extrapolation_table(load_study(study).points, by=["task", "shots"])
    near = expected[(expected.task == "near") & (expected.shots == 1)].set_index("points")
    row = next(r for r in rows if r[0] == "near" and r[1] == "1-shot")
    assert row[3] == f"{near.loc['upper_hull', 'rmse_frontier']:.3f}"
    assert row[4] == f"{near.loc['all', 'rmse_frontier']:.3f}"
    assert row[5] == f"{near.loc['upper_hull', 'bias_frontier']:+.3f}"
    assert len(_images(section)) == 1  # errors and biases, hull against all points


def test_the_extrapolation_figure_counts_the_groups_the_hull_wins(study, monkeypatch):
    from transferscale.report import analyse
    from transferscale.report.figures_tasks import extrapolation_scatter

    data = load_study(study)
    res = analyse(data, n_bootstrap=0)
    wide = res.extrapolation.pivot_table(index=["task", "shots"], columns="points", values="rmse_frontier")
    both = wide.dropna()
    assert len(both) > 0 and extrapolation_scatter(data, res) is not None
    wins = int((both["upper_hull"] < both["all"]).sum())
    import matplotlib.axes

    titles, original = [], matplotlib.axes.Axes.set_title

    def record(self, label, *args, **kwargs):
        titles.append(label)
        return original(self, label, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "set_title", record)
    extrapolation_scatter(data, res)
    monkeypatch.undo()
    assert f"hull predicts better in {wins} of {len(both)} groups" in titles
    res.extrapolation = res.extrapolation.iloc[:0]
    assert extrapolation_scatter(data, res) is None


def test_report_command_writes_the_page_and_prints_its_path(study):
    app = typer.Typer()
    app.command()(report_command)
    result = CliRunner().invoke(app, [str(study), "--n-bootstrap", "10"])
    assert result.exit_code == 0, result.output
    out = study / "report" / "index.html"
    assert out.is_file() and str(out) in result.output.replace("\n", "")


def test_report_of_a_csv_table(tmp_path):
    rng = np.random.default_rng(1)
    us = rng.uniform(50, 90, 30)
    pd.DataFrame({"model": [f"m{i}" for i in range(30)], "imagenet": us,
                  "sketch": 100 * (0.7 - 0.6 * (1 - us / 100) ** 1.5) - rng.uniform(0, 3, 30),
                  "v2": 100 * (0.9 - 0.5 * (1 - us / 100) ** 1.2) - rng.uniform(0, 3, 30)}).to_csv(tmp_path / "t.csv")
    app = typer.Typer()
    app.command()(report_command)
    out = tmp_path / "r.html"
    # the table is percent: it used to be guessed with a note, now --percent says so (and the page notes it)
    result = CliRunner().invoke(app, ["--csv", str(tmp_path / "t.csv"), "--us", "imagenet", "--ds", "sketch",
                                      "--ds", "v2", "--out", str(out), "--n-bootstrap", "10", "--percent"])
    assert result.exit_code == 0, result.output
    html = out.read_text()
    assert "divided by 100" in html and "sketch" in html and "v2" in html and "An external table" in html
    summary = _section(html, "summary")  # no shots: one statement per DS column
    assert re.search(r"<li>(sketch|v2): (supports saturation \(|cannot tell: )", summary) and "shot" not in summary
    assert len(_images(html)) == 2  # the scatter and the correlations; shots, axes and layers say why not


def test_report_needs_a_study_or_a_table(tmp_path):
    app = typer.Typer()
    app.command()(report_command)
    result = CliRunner().invoke(app, [str(tmp_path / "nowhere")])
    assert result.exit_code != 0 and "no results store" in result.output


def screenshot(page: Path, png: Path, profile: Path, size=(1280, 2400)) -> tuple[Path, list[str]]:
    """Render a page in headless Chromium; returns the screenshot and every console message it printed.

    The page has no scripts, so any console message (an error, a blocked resource) is a fault.
    """
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--hide-scrollbars",
           f"--window-size={size[0]},{size[1]}", f"--screenshot={png}", page.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert png.is_file(), proc.stderr[-2000:]
    return png, [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (Debian package `chromium`) to render "
                    "the page in a real browser")
def test_the_page_renders_in_chromium(study, tmp_path):
    path = build_report(load_study(study), tmp_path / "index.html", n_bootstrap=10)
    shot, console = screenshot(path, tmp_path / "shot.png", tmp_path / "profile")
    assert console == [], console
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)[..., :3]
    rows_with_ink = (img.std(axis=(1, 2)) > 0.02).mean()
    assert img.std() > 0.05 and rows_with_ink > 0.3, "the screenshot is blank"
