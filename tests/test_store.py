"""The results store: idempotent commits, one transaction per run, tidy reads."""
import pytest

from transferscale.errors import TransferscaleError
from transferscale.plan import Evaluation, make_plan
from transferscale.spec import load_spec
from transferscale.store import Measurement, Store, read_results


@pytest.fixture
def runs():
    return make_plan(load_spec(None, quick=True)[0]).runs


def _rows(n=3):
    return [Measurement("upstream_accuracy", "fractals", 0.5)] + [
        Measurement("fewshot_accuracy", "fashion_mnist", 0.1 * i, shots=5, seed=i, layer=-1, l2=1024.0)
        for i in range(n)
    ]


E1 = [Evaluation("fewshot", "fashion_mnist", "e1")]
E2 = [Evaluation("fewshot", "fashion_mnist", "e2")]
STALE = [("fashion_mnist", "fewshot_accuracy")]


def test_commit_is_idempotent(tmp_path, runs):
    with Store(tmp_path) as store:
        store.mark_running(runs[0], {"torch": "x"})
        store.commit_run(runs[0].key, _rows(), E1, params=10, train_seconds=1.0, eval_seconds=2.0)
        first = store.results_frame()
        store.mark_running(runs[0], {"torch": "x"})  # a restart leaves earlier results alone
        store.commit_run(runs[0].key, _rows(), E1, params=10, train_seconds=1.0, eval_seconds=2.0)
        second = store.results_frame()
        assert len(first) == len(second) == 4
        assert store.run_status() == {runs[0].key: "done"}
        assert store.done_evaluations() == {"e1"}


def test_not_applicable_columns_read_back_as_na(tmp_path, runs):
    with Store(tmp_path) as store:
        store.mark_running(runs[0], {})
        store.commit_run(runs[0].key, _rows(1), [], params=None, train_seconds=0, eval_seconds=0)
    df = read_results(tmp_path)
    up = df[df.metric == "upstream_accuracy"].iloc[0]
    assert up.shots is __import__("pandas").NA and up.seed is __import__("pandas").NA
    few = df[df.metric == "fewshot_accuracy"].iloc[0]
    assert few.shots == 5 and few.layer == -1 and few.l2 == 1024.0
    assert list(df.columns[:6]) == ["run", "name", "kind", "run_kind", "family", "size"]


def test_a_failed_commit_changes_nothing(tmp_path, runs):
    with Store(tmp_path) as store:
        store.mark_running(runs[0], {})
        store.commit_run(runs[0].key, _rows(2), E1, stale=STALE, params=1, train_seconds=0,
                         eval_seconds=0)
        first = store.results_frame()
        store.mark_running(runs[0], {})
        # the old probe rows are deleted, then a bad row fails mid-transaction: all of it must roll back
        bad = _rows(2) + [Measurement("fewshot_accuracy", "fashion_mnist", None, shots=25, seed=0)]
        with pytest.raises(TypeError):
            store.commit_run(runs[0].key, bad, E2, stale=STALE, params=1, train_seconds=0,
                             eval_seconds=0)
        __import__("pandas").testing.assert_frame_equal(store.results_frame(), first)
        assert store.run_status()[runs[0].key] == "running"
        assert store.done_evaluations() == {"e1"}


def test_wal_and_missing_store(tmp_path):
    with Store(tmp_path) as store:
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(TransferscaleError, match="no results store"):
        read_results(tmp_path / "elsewhere")


def test_evaluations_record_task_and_protocol(tmp_path, runs):
    with Store(tmp_path) as store:
        store.mark_running(runs[0], {})
        store.commit_run(runs[0].key, _rows(1), E1, params=None, train_seconds=0, eval_seconds=0)
        rows = store.conn.execute("SELECT key, run, task, protocol FROM evaluations").fetchall()
    assert rows == [("e1", runs[0].key, "fashion_mnist", "fewshot")]


def test_an_old_store_is_migrated_to_task_and_protocol(tmp_path, runs):
    """Stores written before protocols kept 'probe:TASK' / 'finetune:TASK' labels in evaluations.task."""
    import sqlite3

    with sqlite3.connect(tmp_path / "results.sqlite") as conn:
        conn.execute("CREATE TABLE evaluations (key TEXT PRIMARY KEY, run TEXT NOT NULL, task TEXT NOT NULL, "
                     "finished REAL)")
        conn.executemany("INSERT INTO evaluations VALUES (?, 'r', ?, 0)",
                         [("a", "probe:fashion_mnist"), ("b", "finetune:fractals_heldout")])
    with Store(tmp_path) as store:
        rows = sorted(store.conn.execute("SELECT key, task, protocol FROM evaluations").fetchall())
        assert store.done_evaluations() == {"a", "b"}
    assert rows == [("a", "fashion_mnist", "fewshot"), ("b", "fractals_heldout", "finetune")]


def test_commit_runs_writes_several_runs_in_one_transaction(tmp_path, runs):
    from transferscale.store import RunCommit

    with Store(tmp_path) as store:
        for run in runs[:3]:
            store.mark_running(run, {})
        store.commit_runs([RunCommit(run.key, _rows(2), [], params=1) for run in runs[:2]])
        assert len(store.results_frame()) == 6 and store.count_measurements() == 6
        bad = [RunCommit(runs[2].key, _rows(2)), RunCommit(runs[0].key, [Measurement("x", "t", None)])]
        with pytest.raises(TypeError):  # the second run's bad row rolls the first run back too
            store.commit_runs(bad)
        assert len(store.results_frame()) == 6 and store.run_status()[runs[2].key] == "running"
