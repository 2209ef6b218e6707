"""The command line as a newcomer uses it: help, init, clear errors, results and status of a store."""
import pandas as pd
from typer.testing import CliRunner

from transferscale.cli import app
from transferscale.plan import make_plan
from transferscale.spec import load_spec
from transferscale.store import Measurement, Store

cli = CliRunner()


def test_help_lists_the_commands():
    out = cli.invoke(app, ["--help"])
    assert out.exit_code == 0
    for command in ("run", "init", "status", "results"):
        assert command in out.output


def test_init_writes_the_default_and_refuses_to_overwrite(tmp_path):
    path = tmp_path / "study.toml"
    assert cli.invoke(app, ["init", str(path)]).exit_code == 0
    spec, _ = load_spec(path)
    assert spec.name == "default"
    again = cli.invoke(app, ["init", str(path)])
    assert again.exit_code == 2 and "--force" in again.output


def test_bad_spec_is_one_clear_error_and_no_work(tmp_path):
    path = tmp_path / "bad.toml"
    cli.invoke(app, ["init", str(path)])
    path.write_text(path.read_text().replace('family = "resnet"', 'family = "resnett"'))
    out = cli.invoke(app, ["run", str(path), "--out", str(tmp_path / "out")])
    assert out.exit_code == 2
    assert "did you mean 'resnet'" in out.output and "Traceback" not in out.output
    assert not (tmp_path / "out").exists()


def _store(tmp_path):
    plan = make_plan(load_spec(None, quick=True)[0])
    with Store(tmp_path) as store:
        store.set_meta(name="fixture", spec_json=plan.spec.model_dump_json())
        for i, run in enumerate(plan.runs[:3]):
            store.mark_running(run, {})
            rows = [Measurement("upstream_accuracy", "fractals", 0.1 * (i + 1))]
            rows += [Measurement("fewshot_accuracy", "fashion_mnist", 0.2 + 0.1 * i + 0.01 * s, shots=10, seed=s,
                                 layer=-1, l2=1024.0) for s in range(3)]
            store.commit_run(run.key, rows, {}, params=100, train_seconds=1, eval_seconds=1)
        store.mark_running(plan.runs[3], {})
        store.mark_failed(plan.runs[4].key, "never started")
    return plan


def test_results_table_csv_and_parquet(tmp_path):
    plan = _store(tmp_path)
    out = cli.invoke(app, ["results", str(tmp_path)], terminal_width=200)
    assert out.exit_code == 0 and plan.runs[2].name in out.output and "0.300" in out.output  # mean over seeds
    csv = tmp_path / "r.csv"
    assert cli.invoke(app, ["results", str(tmp_path), "-f", "csv", "-o", str(csv)]).exit_code == 0
    df = pd.read_csv(csv)
    assert len(df) == 12 and set(df.metric) == {"upstream_accuracy", "fewshot_accuracy"}
    assert cli.invoke(app, ["results", str(tmp_path), "-f", "parquet"]).exit_code == 0
    assert len(pd.read_parquet(tmp_path / "results.parquet")) == 12
    bad = cli.invoke(app, ["results", str(tmp_path), "-f", "xlsx"])
    assert bad.exit_code == 2 and "'csv'" in bad.output


def test_status_counts_every_planned_run(tmp_path):
    plan = _store(tmp_path)
    out = cli.invoke(app, ["status", str(tmp_path)], terminal_width=200)
    assert out.exit_code == 0
    left = len(plan.runs) - 4  # the failed run was never marked running, so it is not in the store
    assert "3 done" in out.output and "1 running" in out.output and f"{left} left" in out.output


def test_results_of_a_missing_study_says_what_to_do(tmp_path):
    out = cli.invoke(app, ["results", str(tmp_path / "nothing")])
    assert out.exit_code == 2 and "transferscale run" in out.output


def test_results_output_file_picks_its_format_from_the_suffix_or_fails(tmp_path):
    import sqlite3

    from transferscale.plan import Evaluation

    plan = make_plan(load_spec(None, quick=True)[0])
    with Store(tmp_path) as store:
        store.mark_running(plan.runs[0], {})
        store.commit_run(plan.runs[0].key, [Measurement("upstream_accuracy", "fractals", 0.5)],
                         [Evaluation("fewshot", "fashion_mnist", "e1")], params=None, train_seconds=0, eval_seconds=0)
    done = cli.invoke(app, ["results", str(tmp_path), "-o", str(tmp_path / "all.csv")])
    assert done.exit_code == 0 and "wrote 1 rows" in done.output
    assert (tmp_path / "all.csv").read_text().splitlines()[1].endswith("0.5")
    bad = cli.invoke(app, ["results", str(tmp_path), "-o", str(tmp_path / "all.txt")])
    assert bad.exit_code == 2 and "give --format csv" in bad.output and not (tmp_path / "all.txt").exists()
    assert sqlite3.connect(tmp_path / "results.sqlite").execute("SELECT COUNT(*) FROM measurements").fetchone()[0] == 1
