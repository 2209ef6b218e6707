"""The store's integer codes: run keys, metrics and tasks stored once (run_codes, name_codes), the rows in a
WITHOUT ROWID table; a store of the layout before them read as it is and converted, atomically, when a
writer opens it; the `measurements` view for SQL written against the old table."""
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_report import write_study

from transferscale.analysis.tables import store_points, study_points
from transferscale.report import load_study
from transferscale.store import Measurement, Store, read_results

FIXTURE = Path(__file__).parent / "data" / "store_v1.sql"  # written by tests/data/make_store_v1.py


def old_store(study_dir: Path) -> Path:
    """The fixture as a study directory: a store file of the layout before the codes, in WAL mode as the
    store kept it."""
    study_dir.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(study_dir / "results.sqlite")
    conn.executescript(FIXTURE.read_text())
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    return study_dir


def layout(study_dir: Path) -> dict[str, str]:
    with sqlite3.connect(f"file:{study_dir / 'results.sqlite'}?mode=ro", uri=True) as conn:
        return dict(conn.execute("SELECT name, type FROM sqlite_master WHERE name IN "
                                 "('measurements', 'measurement_rows', 'run_codes', 'name_codes')"))


def raw_rows(study_dir: Path) -> list[tuple]:
    """`SELECT * FROM measurements`, as SQL written against the old table reads it, sorted."""
    with sqlite3.connect(f"file:{study_dir / 'results.sqlite'}?mode=ro", uri=True) as conn:
        return sorted(conn.execute("SELECT * FROM measurements"))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def coded(tmp_path_factory) -> Path:
    """The fixture's study, written by today's store."""
    return write_study(tmp_path_factory.mktemp("coded") / "study", finetune=True)


def test_the_fixture_is_the_old_layout_of_the_same_study(tmp_path, coded):
    old = old_store(tmp_path / "old")
    assert layout(old) == {"measurements": "table"}
    assert layout(coded) == {"measurements": "view", "measurement_rows": "table", "run_codes": "table",
                             "name_codes": "table"}
    assert raw_rows(old) == raw_rows(coded)
    assert len(raw_rows(old)) == 777


def test_an_old_store_reads_as_it_is_and_the_readers_agree(tmp_path, coded):
    old = old_store(tmp_path / "old")
    before = sha(old / "results.sqlite")
    tidy = read_results(coded)
    pd.testing.assert_frame_equal(read_results(old), tidy, check_exact=True)
    pd.testing.assert_frame_equal(store_points(old), study_points(tidy), check_exact=True)
    pd.testing.assert_frame_equal(store_points(old), store_points(coded), check_exact=True)
    a, b = load_study(old), load_study(coded)
    for field in ("points", "baselines", "layers", "finetune"):
        pd.testing.assert_frame_equal(getattr(a, field), getattr(b, field), check_exact=True)
    with Store(old, create=False) as store:
        assert not store.coded and store.shot_counts("fewshot_accuracy") == [1, 5, 10]
        assert store.layers_of("fewshot_accuracy") == [-1, 0, 1, 2, 3]
    assert sha(old / "results.sqlite") == before and layout(old) == {"measurements": "table"}  # not touched


def test_a_writer_codes_an_old_store_and_nothing_reads_differently(tmp_path, coded):
    old = old_store(tmp_path / "old")
    tidy, raw = read_results(old), raw_rows(old)
    with Store(old) as store:
        assert store.coded
        names = dict(store.conn.execute("SELECT name, code FROM name_codes ORDER BY code"))
        runs = [k for (k,) in store.conn.execute("SELECT key FROM run_codes ORDER BY code")]
        assert runs == [k for (k,) in store.conn.execute("SELECT key FROM runs ORDER BY rowid")]
    assert list(names) == sorted(names) == ["far", "fewshot_accuracy", "finetune_accuracy", "fractals", "middle",
                                            "near", "upstream_accuracy"]
    assert layout(old) == layout(coded)
    pd.testing.assert_frame_equal(read_results(old), tidy, check_exact=True)
    pd.testing.assert_frame_equal(store_points(old), study_points(tidy), check_exact=True)
    assert raw_rows(old) == raw
    with Store(old) as store:  # a second open finds nothing to do
        assert raw_rows(old) == raw and store.count_measurements() == len(tidy)


KILLER = r"""
import os, signal, sys
from transferscale import store

code = store.Store._code_measurements
steps, commit = [0], [None]

def dying(self):
    def tick():
        steps[0] += 1
        if steps[0] == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)
        return 0
    self.conn.set_progress_handler(tick, 50)
    self.conn.set_trace_callback(lambda sql: commit.__setitem__(0, steps[0]) if sql == "COMMIT" else None)
    code(self)
    self.conn.set_progress_handler(None, 0)
    print(commit[0], steps[0])

store.Store._code_measurements = dying
store.Store(sys.argv[1]).close()
"""


def test_a_conversion_killed_at_any_point_leaves_the_store_whole(tmp_path):
    """kill -9 during the conversion (SQLite's progress handler counts its steps): killed before it
    commits, the next reader finds the old layout and every row of it, and the next writer converts it;
    killed after (in VACUUM), the store is converted."""
    reference = old_store(tmp_path / "reference")
    tidy, raw = read_results(reference), raw_rows(reference)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    dry = subprocess.run([sys.executable, "-c", KILLER, str(old_store(tmp_path / "dry")), "0"], env=env,
                         capture_output=True, text=True, check=True)
    commit, total = map(int, dry.stdout.split()[-2:])  # progress callbacks until the commit, and in all
    assert 20 < commit < total
    for i, at in enumerate((1, commit // 4, commit // 2, commit - 1, (commit + total) // 2)):
        study = old_store(tmp_path / f"killed-{i}")
        proc = subprocess.run([sys.executable, "-c", KILLER, str(study), str(at)], env=env, capture_output=True)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
        assert layout(study) == ({"measurements": "table"} if at < commit else layout(tmp_path / "dry"))
        pd.testing.assert_frame_equal(read_results(study), tidy, check_exact=True)
        assert raw_rows(study) == raw
        Store(study).close()
        assert layout(study)["measurement_rows"] == "table" and raw_rows(study) == raw


def test_a_failed_conversion_rolls_back(tmp_path, monkeypatch):
    from transferscale import store as store_module

    old = old_store(tmp_path / "old")
    raw = raw_rows(old)
    real = store_module._statements

    def failing(script):
        if "CREATE VIEW" in script:  # after the rows moved and the old table was dropped
            raise sqlite3.OperationalError("disk I/O error")
        return real(script)

    monkeypatch.setattr(store_module, "_statements", failing)
    with pytest.raises(sqlite3.OperationalError):
        Store(old)
    assert layout(old) == {"measurements": "table"} and raw_rows(old) == raw


def test_each_string_is_stored_once(coded):
    with sqlite3.connect(coded / "results.sqlite") as conn:
        n_rows = conn.execute("SELECT COUNT(*) FROM measurement_rows").fetchone()[0]
        assert conn.execute("SELECT COUNT(*) FROM name_codes").fetchone()[0] == 7
        assert conn.execute("SELECT COUNT(*) FROM run_codes").fetchone()[0] == 10
        assert {type(v) for row in conn.execute("SELECT run, metric, task FROM measurement_rows") for v in row} == {int}
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'measurement_rows'").fetchone()[0]
    assert "WITHOUT ROWID" in sql and n_rows == 777


def _study_with_runs(path: Path, n_runs: int, n_rows: int) -> Path:
    from types import SimpleNamespace

    with Store(path) as store:
        for i in range(n_runs):
            key = hashlib.sha256(f"run-{i}".encode()).hexdigest()
            store.mark_running(SimpleNamespace(key=key, name=f"run-{i}", kind="trained", family="vit", size="s",
                                               config={}), {})
            rows = [Measurement("fewshot_accuracy", f"task{t:02d}", 0.001 * (j % 997), shots, seed, layer, 1024.0,
                                (layer + 1) / 6 if layer >= 0 else 1.0)
                    for j, (t, shots, seed, layer) in enumerate(
                        (t, s, sd, la) for t in range(n_rows // 72) for s in (1, 5, 10, 25) for sd in range(3)
                        for la in range(-1, 5))]
            store.commit_run(key, rows, [], params=1, train_seconds=0, eval_seconds=0)
    return path


def test_a_row_takes_tens_of_bytes(tmp_path):
    """What the codes are for: the old layout took about 270 bytes a row (64-character run keys twice, the
    metric three times, the task twice); coded, under 80 with the index."""
    study = _study_with_runs(tmp_path / "s", 20, 1440)
    with sqlite3.connect(study / "results.sqlite") as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages, size = (conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "page_size"))
        (n,) = conn.execute("SELECT COUNT(*) FROM measurement_rows").fetchone()
    assert n == 20 * 1440 and pages * size / n < 80


def test_the_index_serves_seed_groups_without_a_sort(coded):
    """One index range per question, the groups' rows in group order (no temporary b-tree to group them)."""
    with Store(coded, create=False) as store:
        queries = []
        trace = store.conn.set_trace_callback
        trace(lambda sql: queries.append(sql) if "GROUP BY m.run_code" in sql else None)
        groups = store.seed_groups("fewshot_accuracy", "m.layer = -1")
        trace(None)
        assert len(groups) == 10 * 3 * 3
        code = store.conn.execute("SELECT code FROM name_codes WHERE name = 'fewshot_accuracy'").fetchone()[0]
        sql = queries[-1]  # with its parameters in place, or not
        plan = json.dumps(store.conn.execute("EXPLAIN QUERY PLAN " + sql, (code,) if "?" in sql else ()).fetchall())
    assert "measurements_by_metric (metric=? AND layer=?)" in plan and "TEMP B-TREE" not in plan


def test_the_view_takes_writes_as_the_old_table_did(tmp_path):
    """SQL written against the old table (tests, users' scripts) writes through the view's triggers; a row
    written twice is recorded once, and a new string gets a new code while the old codes stay."""
    study = _study_with_runs(tmp_path / "s", 2, 72)
    key = hashlib.sha256(b"run-0").hexdigest()
    with sqlite3.connect(study / "results.sqlite") as conn:
        codes = conn.execute("SELECT * FROM name_codes ORDER BY code").fetchall()
        row = (key, "fewshot_accuracy", "task00", 1, 0, -1, 1024.0)
        conn.execute("INSERT OR REPLACE INTO measurements VALUES (?, ?, ?, ?, ?, ?, ?, 0.5, 1.0)", row)
        conn.execute("INSERT OR REPLACE INTO measurements VALUES (?, ?, ?, ?, ?, ?, ?, 0.75, 1.0)", row)
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("INSERT INTO measurements VALUES (?, ?, ?, ?, ?, ?, ?, 0.5, 1.0)", row)
        conn.execute("INSERT INTO measurements (run, metric, task, shots, seed, layer, l2, value) "
                     "VALUES (?, 'linear_accuracy', 'new_task', 5, 0, -1, -1, 0.25)", (key,))
        conn.execute("UPDATE measurements SET depth = 0.5 WHERE layer = 2")
        conn.execute("DELETE FROM measurements WHERE run = ? AND layer = 3", (key,))
        assert conn.execute("SELECT * FROM name_codes ORDER BY code").fetchall()[:len(codes)] == codes
    df = read_results(study)
    mine = df[df.run == key]
    assert mine[(mine.task == "task00") & (mine.shots == 1) & (mine.seed == 0) & (mine.layer == -1)].value.tolist() \
        == [0.75]
    new = mine[mine.metric == "linear_accuracy"]
    assert new.task.tolist() == ["new_task"] and new.value.tolist() == [0.25] and new.depth.isna().all()
    assert set(df[df.layer == 2].depth) == {0.5} and not ((df.run == key) & (df.layer == 3)).any()
    assert ((df.run != key) & (df.layer == 3)).sum() == 12


def test_a_rolled_back_commit_leaves_no_codes(tmp_path):
    study = _study_with_runs(tmp_path / "s", 1, 72)
    key = hashlib.sha256(b"run-0").hexdigest()
    with Store(study) as store:
        before = store.conn.execute("SELECT * FROM name_codes").fetchall()
        with pytest.raises(TypeError):
            store.commit_run(key, [Measurement("brand_new", "other", 0.5), Measurement("x", "t", None)], [],
                             params=1, train_seconds=0, eval_seconds=0)
        assert store.conn.execute("SELECT * FROM name_codes").fetchall() == before


def test_a_store_from_before_depths_reads_and_converts(tmp_path, coded):
    """Older still: no depth column (final layers only). Read as it is, then added and coded by a writer."""
    old = old_store(tmp_path / "old")
    with sqlite3.connect(old / "results.sqlite") as conn:
        conn.execute("DELETE FROM measurements WHERE layer != -1")
        conn.execute("ALTER TABLE measurements DROP COLUMN depth")
    tidy = read_results(coded)
    want = tidy[tidy.layer == -1].drop(columns="depth").reset_index(drop=True)
    read = read_results(old)
    assert (read.depth == 1.0).all()  # the readers' rule for a layer -1 row without one
    pd.testing.assert_frame_equal(read.drop(columns="depth"), want, check_exact=True)
    pd.testing.assert_frame_equal(store_points(old), study_points(read), check_exact=True)
    Store(old).close()
    assert layout(old)["measurement_rows"] == "table"
    converted = read_results(old)
    pd.testing.assert_frame_equal(converted.drop(columns="depth"), want, check_exact=True)
    assert (converted.depth[converted.shots.notna()] == 1.0).all()  # as the depth migration sets it
