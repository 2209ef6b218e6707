"""The results store: one SQLite file per study (WAL), runs with their provenance, and a tidy measurement table.

Tables
  meta          key/value: the spec text, when the study was created, versions
  runs          one row per run key: name, kind, family, size, config (JSON), status, error, timings, versions
  evaluations   one row per finished evaluation key: run, task, protocol; a changed probe re-runs only what changed
  measurements  (run, metric, task, shots, seed, layer, l2) -> value, and the layer's relative depth in (0, 1]

Everything a run produces is written in one transaction, so a study killed at any moment holds either all
of a run's results or none of them. Columns that do not apply are stored as -1 (SQLite treats NULLs in a
primary key as distinct, which would let a row be written twice); `read_results` turns them back into NA.
`layer` -1 means the final representation (the pooled pre-logits features), the same label for every model
whatever its depth, so final-layer probes of different architectures group together.
"""
from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from transferscale.errors import TransferscaleError

RESULTS_FILE = "results.sqlite"
NA = -1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY, name TEXT NOT NULL, kind TEXT NOT NULL, family TEXT NOT NULL, size TEXT,
    config TEXT NOT NULL, status TEXT NOT NULL, error TEXT, params INTEGER,
    started REAL, finished REAL, train_seconds REAL, eval_seconds REAL, versions TEXT
);
CREATE TABLE IF NOT EXISTS evaluations (
    key TEXT PRIMARY KEY, run TEXT NOT NULL, task TEXT NOT NULL, finished REAL, protocol TEXT
);
CREATE TABLE IF NOT EXISTS measurements (
    run TEXT NOT NULL, metric TEXT NOT NULL, task TEXT NOT NULL, shots INTEGER NOT NULL,
    seed INTEGER NOT NULL, layer INTEGER NOT NULL, l2 REAL NOT NULL, value REAL NOT NULL,
    depth REAL NOT NULL DEFAULT -1,
    PRIMARY KEY (run, metric, task, shots, seed, layer, l2)
);
"""


@dataclass(frozen=True)
class Measurement:
    metric: str
    task: str
    value: float
    shots: int = NA
    seed: int = NA
    layer: int = NA
    l2: float = NA
    depth: float = NA


class Store:
    """A study's SQLite file. Open with `Store(study_dir)`; it is created on first use."""

    def __init__(self, study_dir: str | Path, *, create: bool = True):
        self.dir = Path(study_dir)
        self.path = self.dir / RESULTS_FILE
        if not create and not self.path.is_file():
            raise TransferscaleError(
                f"no results store at {self.path}; run a study first (`transferscale run`) or pass its directory"
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, timeout=30)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        if not create:  # a reader never changes the file, not even to migrate it
            return
        self.conn.executescript(_SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Bring a store written by an older version up to this schema, in place."""
        if "depth" not in self._columns():  # a store written before layer-wise probes: final layers only
            with self.conn:
                self.conn.execute("ALTER TABLE measurements ADD COLUMN depth REAL NOT NULL DEFAULT -1")
                self.conn.execute("UPDATE measurements SET depth = 1.0 WHERE layer = -1 AND shots != -1")
        if "protocol" not in self._columns("evaluations"):  # evaluations once stored 'probe:TASK' as the task
            with self.conn:
                self.conn.execute("ALTER TABLE evaluations ADD COLUMN protocol TEXT")
                for old, new in (("probe:", "fewshot"), ("finetune:", "finetune")):
                    self.conn.execute("UPDATE evaluations SET protocol = ?, task = substr(task, ?) "
                                      "WHERE task LIKE ?", (new, len(old) + 1, old + "%"))

    def _columns(self, table: str = "measurements") -> set[str]:
        return {row[1] for row in self.conn.execute(f"PRAGMA table_info({table})")}

    def close(self) -> None:
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- meta -----------------------------------------------------------------------------------------
    def set_meta(self, **values: str) -> None:
        with self.conn:
            self.conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(values.items()))

    def meta(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT key, value FROM meta"))

    # ---- runs -----------------------------------------------------------------------------------------
    def run_status(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT key, status FROM runs"))

    def done_evaluations(self) -> set[str]:
        return {row[0] for row in self.conn.execute("SELECT key FROM evaluations")}

    def mark_running(self, run, versions: dict) -> None:
        """Record that a run started (or restarted); its results, if any, are untouched."""
        with self.conn:
            self.conn.execute(
                """INSERT INTO runs (key, name, kind, family, size, config, status, started, versions)
                   VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?)
                   ON CONFLICT(key) DO UPDATE SET status='running', error=NULL, started=excluded.started,
                   name=excluded.name""",
                (run.key, run.name, run.kind, run.family, run.size, json.dumps(run.config, sort_keys=True),
                 time.time(), json.dumps(versions, sort_keys=True)),
            )

    def mark_failed(self, run_key: str, error: str) -> None:
        with self.conn:
            self.conn.execute(
                "UPDATE runs SET status='failed', error=?, finished=? WHERE key=?", (error, time.time(), run_key)
            )

    def commit_run(self, run_key: str, measurements: list[Measurement], evaluations: list, *,
                   stale: list[tuple[str, str]] = (), params: int | None, train_seconds: float,
                   eval_seconds: float) -> None:
        """Write a run's measurements, record its finished evaluations and mark it done, in one transaction.

        `evaluations` are the plan's Evaluation records (protocol, task, key) this commit completes; `stale`
        lists the (task, metric) pairs whose earlier rows for this run the new ones replace (an earlier
        setting of the same evaluation), so old and new results never sit side by side.
        """
        now = time.time()
        with self.conn:
            self.conn.executemany("DELETE FROM measurements WHERE run=? AND task=? AND metric=?",
                                  [(run_key, task, metric) for task, metric in stale])
            self.conn.executemany(
                "INSERT OR REPLACE INTO measurements VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_key, m.metric, m.task, int(m.shots), int(m.seed), int(m.layer), float(m.l2), float(m.value),
                  float(m.depth)) for m in measurements],
            )
            self.conn.executemany(
                "INSERT OR REPLACE INTO evaluations (key, run, task, finished, protocol) VALUES (?, ?, ?, ?, ?)",
                [(e.key, run_key, e.task, now, e.protocol) for e in evaluations],
            )
            self.conn.execute(
                """UPDATE runs SET status='done', error=NULL, finished=?, params=COALESCE(?, params),
                   train_seconds=COALESCE(train_seconds, 0) + ?, eval_seconds=COALESCE(eval_seconds, 0) + ?
                   WHERE key=?""",
                (now, params, train_seconds, eval_seconds, run_key),
            )

    # ---- reading --------------------------------------------------------------------------------------
    def runs_frame(self):
        import pandas as pd

        return pd.read_sql_query(
            "SELECT key, name, kind, family, size, status, error, params, train_seconds, eval_seconds, "
            "started, finished FROM runs ORDER BY rowid",
            self.conn,
        )

    def run_configs(self) -> dict[str, dict]:
        """Each run's config (the dict its key hashes), by run key."""
        return {key: json.loads(config) for key, config in self.conn.execute("SELECT key, config FROM runs")}

    def results_frame(self):
        """The tidy table: one row per measurement, joined with the run's name, kind and family."""
        import pandas as pd

        df = pd.read_sql_query(
            """SELECT m.run, r.name,
                      CASE WHEN r.kind IN ('random_init', 'pixels', 'words') THEN 'baseline' ELSE r.kind END AS kind,
                      r.kind AS run_kind, r.family, r.size, m.metric, m.task, m.shots, m.seed, m.layer, {depth},
                      m.l2, m.value
               FROM measurements m JOIN runs r ON r.key = m.run ORDER BY r.rowid, m.metric, m.task, m.shots,
                      m.seed, m.layer, m.l2""".format(depth="m.depth" if "depth" in self._columns() else
                                                      "CASE WHEN m.layer = -1 THEN 1.0 ELSE -1 END AS depth"),
            self.conn,
        )
        for col in ("shots", "seed"):
            df[col] = df[col].astype("Int64").mask(df[col] == NA)
        df["l2"] = df["l2"].mask(df["l2"] == NA)
        df["depth"] = df["depth"].mask(df["depth"] == NA)
        return df


def read_results(study_dir: str | Path):
    """The tidy measurement table of a finished (or partly finished) study, as a pandas DataFrame."""
    with Store(study_dir, create=False) as store:
        return store.results_frame()
