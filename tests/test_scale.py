"""Readers at scale: the store-side readers give the numbers `read_results` + pandas give, bit for bit;
exports stream the same table; fits in several processes equal fits in one."""
import hashlib
import io
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import typer
from test_report import write_study
from typer.testing import CliRunner

from transferscale.analysis import fit_saturation
from transferscale.analysis.saturation import group_seed
from transferscale.analysis.tables import finetune_points, store_points, study_mean_mode, study_points
from transferscale.cli.fit import fit_command
from transferscale.report import load_study, render
from transferscale.store import Measurement, Store, export_results, read_results


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """Stores whose tidy tables pandas averages in both of its ways (see SeedGroups.mean)."""
    root = tmp_path_factory.mktemp("scale")
    return {"layers": write_study(root / "layers"), "flat": write_study(root / "flat", layers=False),
            "finetune": write_study(root / "finetune", finetune=True),
            "flat-ft": write_study(root / "flat-ft", layers=False, finetune=True),
            "shuffled": _shuffled_study(root / "shuffled")}


def _shuffled_study(path, n_runs=12):
    """Final-layer probes only, run keys (hashes) out of rowid order, one run with two upstream rows, a
    seed missing here and there, and a baseline: the tidy table's groups are contiguous but not in order."""
    rng = np.random.default_rng(3)
    with Store(path) as store:
        store.set_meta(name="shuffled")
        for i in range(n_runs):
            name = f"mixer-{'sml'[i % 3]}-{i}" if i < n_runs - 1 else "mixer-s-random"
            run = SimpleNamespace(key=hashlib.sha256(name.encode()).hexdigest(), name=name, family="mixer",
                                  kind="trained" if i < n_runs - 1 else "random_init", size="sml"[i % 3],
                                  config={"training": {"data_fraction": 0.1 * (i % 4 + 1), "steps": 100}})
            store.mark_running(run, {})
            rows = [Measurement("upstream_accuracy", "fractals", float(rng.uniform(0.1, 0.9)))]
            if i == 2:
                rows.append(Measurement("upstream_accuracy", "imagenet_like", float(rng.uniform(0.1, 0.9))))
            for task in ("a", "b", "c"):
                for shots in (1, 5):
                    for seed in range(3 if (i + shots) % 4 else 2):
                        rows.append(Measurement("fewshot_accuracy", task, float(rng.uniform(0.1, 0.9)), shots, seed,
                                                -1, 1024.0, 1.0))
            store.commit_run(run.key, rows, [], params=1, train_seconds=0, eval_seconds=0)
    return path


@pytest.mark.parametrize("name", ["layers", "flat", "finetune", "shuffled"])
def test_store_points_are_study_points_bit_for_bit(studies, name):
    old = study_points(read_results(studies[name]))
    pd.testing.assert_frame_equal(store_points(studies[name]), old, check_exact=True)
    final = old[old["layer"] == -1].reset_index(drop=True)
    pd.testing.assert_frame_equal(store_points(studies[name], layers="final"), final, check_exact=True)


def test_the_mean_follows_the_arithmetic_pandas_would_use(studies):
    """Layer-wise probes scatter a group's rows (compensated sum); final-only probes of runs stored in key
    order leave them contiguous (numpy's add.reduceat); keys out of order scatter them again."""
    modes = {}
    for name in ("layers", "flat", "shuffled"):
        with Store(studies[name], create=False) as store:
            modes[name] = study_mean_mode(store, store.runs_table())
    assert modes == {"layers": "kahan", "flat": "reduceat", "shuffled": "kahan"}


def _legacy_report_frames(study):
    """What the report read from `read_results` before: final-layer points, baselines, layer rows at the
    largest shot count, fine-tuning (the formulas of the earlier load_study)."""
    res = read_results(study)
    pts = study_points(res)
    pts = pts[pts["run"].map(res.drop_duplicates("run").set_index("run")["kind"]) != "baseline"]
    base = res[(res["kind"] == "baseline") & (res["metric"] == "fewshot_accuracy") & (res["layer"] == -1)]
    base = base.groupby(["name", "run_kind", "family", "task", "shots"], as_index=False, dropna=False).agg(
        ds_acc=("value", "mean"))
    top = pts.loc[pts["layer"] == -1, "shots"].max()  # the largest shot count, which the layer figure draws
    lay = pts[(pts["layer"] >= 0) & (pts["shots"] == top)].rename(columns={"name": "model"})
    return pts[pts["layer"] == -1], base, lay, finetune_points(res), res


@pytest.mark.parametrize("name", ["layers", "flat", "finetune", "flat-ft", "shuffled"])
def test_the_report_reads_the_same_numbers(studies, name):
    final, base, lay, ft, res = _legacy_report_frames(studies[name])
    data = load_study(studies[name])
    got = data.points[["model", "task", "shots", "us_acc", "ds_acc"]].reset_index(drop=True)
    want = final.rename(columns={"name": "model"})[["model", "task", "shots", "us_acc", "ds_acc"]]
    pd.testing.assert_frame_equal(got, want.reset_index(drop=True), check_exact=True)
    pd.testing.assert_frame_equal(data.baselines, base, check_exact=True)
    cols = ["model", "task", "shots", "layer", "ds_acc"]
    assert len(data.layers) == len(lay)
    if len(lay):
        pd.testing.assert_frame_equal(data.layers[cols], lay[cols].reset_index(drop=True), check_exact=True)
        depth = res[res["layer"] >= 0].groupby(["name", "layer"])["depth"].mean()
        expect = depth.reindex(pd.MultiIndex.from_frame(data.layers[["model", "layer"]])).to_numpy()
        assert np.allclose(data.layers["depth"], expect, rtol=1e-12, atol=0)
    mine = data.finetune.set_index(["model", "task"]).sort_index()
    theirs = ft.rename(columns={"name": "model"}).set_index(["model", "task"]).sort_index()
    for col in ("ft_acc", "us_acc", "fewshot_acc", "fewshot_shots", "n_seeds"):
        pd.testing.assert_series_equal(mine[col], theirs[col], check_exact=True, check_dtype=False)
    facts = dict(data.facts)
    assert facts["measurements"].startswith(f"{len(res):,} rows; {res['seed'].dropna().nunique()} probe seed")


@pytest.mark.parametrize("name", ["layers", "shuffled"])
@pytest.mark.parametrize("plain", [False, True])
def test_results_summary_shows_the_same_cells(studies, name, plain, monkeypatch):
    from transferscale.cli import tables

    old = tables.results_summary(read_results(studies[name]))
    if plain:
        monkeypatch.setattr(tables, "RICH_MAX_ROWS", 1)
    new = tables.store_summary(studies[name])
    old_cells = [list(c._cells) for c in old.columns]
    if plain:
        assert isinstance(new, tables.PlainTable)
        new_cells = [list(col) for col in zip(*new.rows)]
        assert [h for h, _ in new.columns] == [c.header for c in old.columns]
        assert "0." in str(new) and new.caption in str(new)
    else:
        new_cells = [list(c._cells) for c in new.columns]
        assert [c.header for c in new.columns] == [c.header for c in old.columns]
        assert [r.style for r in new.rows] == [r.style for r in old.rows]
    assert new_cells == old_cells and new.title == old.title and new.caption == old.caption


def test_exports_stream_the_whole_table(studies, tmp_path):
    study = studies["finetune"]
    df = read_results(study)
    with Store(study, create=False) as store:
        chunks = list(store.iter_results(chunk_rows=50))
    assert len(chunks) > 3
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), df, check_exact=True)
    text = io.StringIO()
    assert export_results(study, text, "csv", chunk_rows=50) == len(df)
    assert text.getvalue() == df.to_csv(index=False)
    path = tmp_path / "r.parquet"
    assert export_results(study, path, "parquet", chunk_rows=50) == len(df)
    pd.testing.assert_frame_equal(pd.read_parquet(path), df, check_exact=True)
    df.to_parquet(tmp_path / "legacy.parquet", index=False)
    assert pq.read_schema(path).equals(pq.read_schema(tmp_path / "legacy.parquet"), check_metadata=True)
    assert pq.ParquetFile(path).num_row_groups == len(chunks)


def test_exports_keep_the_dtypes_when_a_chunk_has_no_sizes(studies, tmp_path):
    study = studies["layers"]  # raw pixels, the last run, has no size: its chunk's size column is all None
    df = read_results(study)
    path = tmp_path / "r.parquet"
    export_results(study, path, "parquet", chunk_rows=1)
    pd.testing.assert_frame_equal(pd.read_parquet(path), df, check_exact=True)


def _table():
    rng = np.random.default_rng(0)
    frames = []
    for task, alpha in (("near", 2.0), ("far", 1.4), ("mid", 1.7)):
        for shots in (1, 10):
            us = rng.uniform(0.1, 0.9, 40)
            ds = 0.9 - 0.7 * (1 - us) ** alpha - np.abs(rng.normal(0, 0.02, 40))
            frames.append(pd.DataFrame({"task": task, "shots": shots, "us_acc": us, "ds_acc": ds}))
    return pd.concat(frames, ignore_index=True)


def test_fits_in_several_processes_equal_one_and_ignore_the_other_groups():
    table = _table()
    one = fit_saturation(table, by=["task", "shots"], n_bootstrap=60, random_state=5, jobs=1)
    two = fit_saturation(table, by=["task", "shots"], n_bootstrap=60, random_state=5, jobs=2)
    pd.testing.assert_frame_equal(one, two, check_exact=True)
    alone = fit_saturation(table[table["task"] == "mid"], by=["task", "shots"], n_bootstrap=60, random_state=5)
    pd.testing.assert_frame_equal(alone, one[one["task"] == "mid"].reset_index(drop=True), check_exact=True)
    other_seed = fit_saturation(table, by=["task", "shots"], n_bootstrap=60, random_state=6)
    assert not other_seed["e_ir_low"].equals(one["e_ir_low"])


def test_a_groups_seed_comes_from_its_key_alone():
    assert group_seed(0, ("near", 10)) == group_seed(0, ("near", np.int64(10))) == group_seed(0, ("near", 10.0))
    assert group_seed(0, ("near", 10)) != group_seed(0, ("near", 25)) != group_seed(1, ("near", 25))
    assert group_seed(None, ("near", 10)) is None and group_seed(0, ("x", pd.NA)) == group_seed(0, ("x", None))


def test_hulls_of_many_resamples_are_the_hulls_one_by_one():
    from transferscale.analysis.hull import upper_hull, upper_hulls

    rng = np.random.default_rng(0)
    for trial in range(60):
        n = int(rng.integers(1, 200))
        us = np.round(rng.uniform(0, 1, n) * [10, 100, 1000][trial % 3]) / [10, 100, 1000][trial % 3]  # ties
        ds = rng.uniform(0, 1, (8, n))
        if trial % 2:
            ds = np.round(ds * 20) / 20
        for d, got in zip(ds, upper_hulls(us, ds)):
            np.testing.assert_array_equal(got, upper_hull(us, d))


def test_fit_command_reads_the_store_and_any_job_count_agrees(studies, tmp_path):
    app = typer.Typer()
    app.command("fit")(fit_command)
    app.command("noop")(lambda: None)
    outs = []
    for jobs in ("1", "2"):
        out = tmp_path / f"fits-{jobs}.csv"
        res = CliRunner().invoke(app, ["fit", str(studies["layers"]), "--n-bootstrap", "40", "--jobs", jobs,
                                       "-o", str(out)])
        assert res.exit_code == 0, res.output
        outs.append(out.read_text())
    assert outs[0] == outs[1]
    pts = study_points(read_results(studies["layers"]))
    want = fit_saturation(pts[pts["layer"] == -1], by=["upstream", "task", "shots", "layer"], n_bootstrap=40)
    written = pd.read_csv(tmp_path / "fits-1.csv")
    assert {"verdict", "why"} <= set(written.columns)  # the verdict in words, beside the fitted numbers
    pd.testing.assert_frame_equal(written.drop(columns=["verdict", "why"]), pd.read_csv(io.StringIO(want.to_csv(
        index=False))), check_exact=True)


def test_dense_panels_draw_densities_and_bands(studies, monkeypatch):
    from transferscale.report import figures, figures_axes, figures_tasks, html

    for module in (figures, figures_axes, html):
        monkeypatch.setattr(module, "DENSE_POINTS", 3)
    for module in (figures_tasks, html):
        monkeypatch.setattr(module, "DENSE_MODELS", 2)
    page = render(load_study(studies["layers"]), n_bootstrap=0)
    assert "shade where the models are" in page and "mean of the axis" in page and "middle half" in page
    assert page.count("data:image/png;base64,") == 6


def test_a_store_gets_the_readers_index(tmp_path):
    import sqlite3

    with sqlite3.connect(tmp_path / "results.sqlite") as conn:  # a store from before the index
        conn.execute("CREATE TABLE measurements (run TEXT NOT NULL, metric TEXT NOT NULL, task TEXT NOT NULL, "
                     "shots INTEGER NOT NULL, seed INTEGER NOT NULL, layer INTEGER NOT NULL, l2 REAL NOT NULL, "
                     "value REAL NOT NULL, depth REAL NOT NULL DEFAULT -1, "
                     "PRIMARY KEY (run, metric, task, shots, seed, layer, l2))")
    with Store(tmp_path) as store:
        assert store._indexed()
        plan = store.conn.execute("EXPLAIN QUERY PLAN SELECT * FROM measurements WHERE metric = ? AND layer = -1",
                                  ("x",)).fetchall()
    assert "measurements_by_metric" in json.dumps(plan)


def test_figures_drawn_in_several_processes_are_the_same(studies):
    from transferscale.report import analyse, draw_figures

    data = load_study(studies["finetune"])
    res = analyse(data, n_bootstrap=20, jobs=2)
    one, two = draw_figures(data, res, jobs=1), draw_figures(data, res, jobs=2)
    assert one.keys() == two.keys() and all(one[k] == two[k] for k in one)
    assert sum(v is not None for v in one.values()) == 7


def _page_without_timing(path) -> str:
    import re

    return re.sub(r"Made by transferscale .*? in [0-9.]+ s\.", "", path.read_text(encoding="utf-8"))


@pytest.mark.parametrize(("name", "jobs"), [("finetune", 2), ("shuffled", 2), ("layers", 4)])
def test_the_overlapped_report_is_the_one_process_page(studies, name, jobs, tmp_path):
    """jobs=4: the forked fits start a process pool of their own, and the parent draws in two processes."""
    from transferscale.report import build_report, build_study_report

    data, two = build_study_report(studies[name], tmp_path / "two.html", n_bootstrap=20, jobs=jobs)
    _, one = build_study_report(studies[name], tmp_path / "one.html", n_bootstrap=20, jobs=1)
    plain = build_report(load_study(studies[name]), tmp_path / "plain.html", n_bootstrap=20, jobs=2)
    assert _page_without_timing(one) == _page_without_timing(two) == _page_without_timing(plain)
    assert "<img" in _page_without_timing(two) and len(data.points)


def test_the_report_survives_its_background_process_dying(studies, tmp_path, monkeypatch):
    import os

    import transferscale.report as report

    monkeypatch.setattr(report, "_background_work", lambda *args: os._exit(1))
    _, died = report.build_study_report(studies["layers"], tmp_path / "died.html", n_bootstrap=20, jobs=2)
    _, one = report.build_study_report(studies["layers"], tmp_path / "one.html", n_bootstrap=20, jobs=1)
    assert _page_without_timing(died) == _page_without_timing(one)


def test_an_error_in_the_background_fits_reaches_the_caller(studies, tmp_path, monkeypatch):
    import transferscale.report as report
    from transferscale.errors import TransferscaleError

    def broken(*args, **kwargs):
        raise TransferscaleError("the fits broke here")

    monkeypatch.setattr(report, "analyse", broken)
    with pytest.raises(TransferscaleError, match="the fits broke here"):
        report.build_study_report(studies["layers"], tmp_path / "x.html", n_bootstrap=20, jobs=2)
    assert not (tmp_path / "x.html").exists()


def _block_reads_here(monkeypatch) -> list:
    """The layer-wise (depth=True) seed-group reads this process makes; a forked child's go to its own copy."""
    calls = []
    original = Store.seed_groups

    def counted(self, *args, **kwargs):
        if kwargs.get("depth"):
            calls.append(args)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Store, "seed_groups", counted)
    return calls


def test_prefetched_layer_rows_are_used_only_from_the_same_state_of_the_store(studies, monkeypatch):
    import os

    import transferscale.report.data as report_data

    want = load_study(studies["layers"])
    reads = _block_reads_here(monkeypatch)
    got = load_study(studies["layers"], prefetch=True)
    assert reads == []  # the forked reader's groups were used
    pd.testing.assert_frame_equal(got.layers, want.layers, check_exact=True)
    monkeypatch.setattr(report_data, "_store_state", lambda store: os.getpid())  # as if a writer committed between
    again = load_study(studies["layers"], prefetch=True)
    assert len(reads) == 1  # read here instead
    pd.testing.assert_frame_equal(again.layers, want.layers, check_exact=True)


def test_a_commit_between_the_two_snapshots_is_seen(studies, tmp_path, monkeypatch):
    """The forked reader's snapshot is taken before this process opens the store; a run committed in between
    must not leave the layer-wise rows older than the rest of the page."""
    import shutil

    import transferscale.report.data as report_data

    study = tmp_path / "live"
    shutil.copytree(studies["layers"], study)
    with Store(study, create=False) as store:
        rows = store.tidy_rows("m.layer >= 0 AND m.metric = ?", ("fewshot_accuracy",))
    key = rows["run"].iloc[0]
    mine = rows[rows["run"] == key]
    bumped = [Measurement("fewshot_accuracy", r.task, float(r.value) / 2, int(r.shots), int(r.seed), int(r.layer),
                          float(r.l2), float(r.depth)) for r in mine.itertuples()]
    original = report_data._BlockPrefetch.__init__

    def prefetch_then_commit(self, study_dir):
        original(self, study_dir)
        self.job.get("blocks", lambda: None)  # the child's snapshot is read and sent
        with Store(study_dir) as writer:
            writer.commit_run(key, bumped, [], params=None, train_seconds=0, eval_seconds=0)

    monkeypatch.setattr(report_data._BlockPrefetch, "__init__", prefetch_then_commit)
    reads = _block_reads_here(monkeypatch)
    got = load_study(study, prefetch=True)
    assert len(reads) == 1  # the prefetched rows were stale: read again here
    monkeypatch.undo()
    pd.testing.assert_frame_equal(got.layers, load_study(study).layers, check_exact=True)
    assert not got.layers.equals(load_study(studies["layers"]).layers)
