"""The newcomer's path: after `transferscale run --quick`, `results`, `status`, `fit` and `report` with no
argument act on that study (the one run most recently under transferscale-runs/) and say which."""
import json
import os
import time
from types import SimpleNamespace

import pandas as pd
import pytest
from test_report import write_study
from typer.testing import CliRunner

from transferscale.cli import LAST_RUN, RUNS_ROOT, app, latest_study, record_run
from transferscale.store import Measurement, Store

cli = CliRunner()


def words(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def here(tmp_path, monkeypatch):
    """An empty working directory."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished study (the report tests' fixture, no layer-wise probes), to copy into a directory."""
    return write_study(tmp_path_factory.mktemp("newcomer") / "study", layers=False)


def _place(finished, name: str):
    import shutil

    target = RUNS_ROOT / name
    shutil.copytree(finished, target)
    return target


def _touch_store(study_dir, when: float):
    """Make `when` the latest write a store records (a run started then; every other write before it)."""
    with Store(study_dir) as store:
        store.mark_running(SimpleNamespace(key="late", name="late", kind="trained", family="vit", size="s",
                                           config={}), versions={})
        store.conn.execute("UPDATE runs SET started = ?, finished = NULL", (when,))
        store.conn.execute("UPDATE evaluations SET finished = ?", (when - 1,))
        store.conn.commit()


def test_every_command_without_a_study_uses_the_one_run_last(here, finished):
    _place(finished, "default-quick")
    using = "using transferscale-runs/default-quick ("
    for args in (["results"], ["status"], ["fit", "--n-bootstrap", "20"], ["report", "--n-bootstrap", "0"]):
        out = cli.invoke(app, args, terminal_width=200)
        assert out.exit_code == 0, (args, out.output)
        assert using in out.stderr and "most recently" in out.stderr, (args, out.stderr)
    assert (RUNS_ROOT / "default-quick" / "saturation_fits.csv").is_file()
    assert (RUNS_ROOT / "default-quick" / "report" / "index.html").is_file()
    csv = cli.invoke(app, ["results", "--format", "csv"])  # stdout stays a clean CSV: the note is on stderr
    assert csv.exit_code == 0 and csv.stdout.startswith("run,") and using in csv.stderr


def test_the_study_recorded_by_run_wins_until_another_store_is_written(here, finished):
    old, new = _place(finished, "old"), _place(finished, "new")
    now = time.time()
    _touch_store(old, now - 100)
    _touch_store(new, now - 50)
    assert latest_study() == (new, "the study whose results were written most recently")
    record_run(old)  # `run` on the old study (say with nothing left to do): it is the latest now
    assert latest_study() == (old, "the study run most recently")
    assert json.loads((RUNS_ROOT / LAST_RUN).read_text())["study"] == "old"
    _touch_store(old, time.time() + 5)  # the run goes on writing its store: still the study run most recently
    assert latest_study() == (old, "the study run most recently")
    _touch_store(new, time.time() + 10)  # then `probe` writes the other one
    assert latest_study() == (new, "the study whose results were written most recently")


def test_directories_without_a_store_are_never_chosen(here, finished):
    (RUNS_ROOT / "crashed" / "checkpoints").mkdir(parents=True)  # a run that failed before writing a store
    record_run(RUNS_ROOT / "crashed")
    assert latest_study() is None
    out = cli.invoke(app, ["status"])
    assert out.exit_code == 2 and "transferscale run --quick" in words(out.output)
    study = _place(finished, "done")
    assert latest_study()[0] == study  # the marked directory has no store: the one with a store
    (RUNS_ROOT / LAST_RUN).write_text("not json")  # a damaged marker is ignored too
    assert latest_study()[0] == study


def test_a_study_outside_transferscale_runs_is_not_recorded(here, tmp_path_factory):
    record_run(tmp_path_factory.mktemp("elsewhere") / "study")
    assert not (RUNS_ROOT / LAST_RUN).exists()


def test_with_no_study_each_command_says_what_to_do(here):
    for args in (["results"], ["status"], ["fit"], ["report"]):
        out = cli.invoke(app, args)
        text = words(out.output)
        assert out.exit_code == 2 and "transferscale run --quick" in text and "Traceback" not in text, args
    assert "--csv FILE" in words(cli.invoke(app, ["fit"]).output)


def test_run_records_its_study_for_the_other_commands(here, monkeypatch):
    """`transferscale run --quick` (its runner replaced by one that writes a store at once) notes the study,
    and `results` then finds it although an older study's store was written later than this one's."""
    import transferscale.engine.runner as runner

    def fake_run_study(spec, text, study_dir, **kwargs):
        with Store(study_dir) as store:
            store.set_meta(name=spec.name)
            run = SimpleNamespace(key="k", name="vit-s", kind="trained", family="vit", size="s", config={})
            store.mark_running(run, versions={})
            store.commit_run("k", [Measurement("upstream_accuracy", "fractals", 0.5)], [], params=1,
                             train_seconds=0, eval_seconds=0)
            store.conn.execute("UPDATE runs SET started = 1, finished = 2")  # written long ago
            store.conn.commit()
        return SimpleNamespace(seconds=0.0, done=["vit-s"], skipped=0, failed={}, left_failed={})

    monkeypatch.setattr(runner, "run_study", fake_run_study)
    _touch_store(RUNS_ROOT / "other", time.time() - 5)
    out = cli.invoke(app, ["run", "--quick"])
    assert out.exit_code == 0, out.output
    res = cli.invoke(app, ["results"], terminal_width=200)
    assert res.exit_code == 0 and "using transferscale-runs/default-quick (the study run most recently)" in res.stderr
    assert "vit-s" in res.stdout


def test_fit_with_extrapolation_on_the_latest_study(here, finished):
    _place(finished, "default-quick")
    out = cli.invoke(app, ["fit", "--n-bootstrap", "20", "--extrapolation"], terminal_width=200)
    assert out.exit_code == 0, out.output
    text = words(out.stdout)
    assert "fits support saturation" in text and "extrapolation: fitted below the 0.9 quantile" in text
    for task in ("near", "middle", "far"):
        assert f"{task}: the " in text or f"{task}: neither" in text or f"{task}: cannot compare" in text
    table = pd.read_csv(RUNS_ROOT / "default-quick" / "extrapolation.csv")
    assert len(table) == 3 * 3 * 2 and set(table["points"]) == {"upper_hull", "all"}  # tasks x shots x point sets
    fits = pd.read_csv(RUNS_ROOT / "default-quick" / "saturation_fits.csv")
    assert set(fits["verdict"]) <= {"supports", "cannot tell"} and "why" in fits.columns
    assert os.path.getsize(RUNS_ROOT / "default-quick" / "extrapolation.csv") > 0
