"""The results store: one SQLite file per study (WAL), runs with their provenance, and a tidy measurement table.

Tables
  meta          key/value: the spec text, when the study was created, versions
  runs          one row per run key: name, kind, family, size, config (JSON), status, error, timings, versions
  evaluations   one row per finished evaluation key: run, task, protocol; a changed probe re-runs only what changed
  measurement_rows  (run, metric, task, shots, seed, layer, l2) -> value, and the layer's relative depth in (0, 1];
                run, metric and task as integer codes into
  run_codes     run key <-> code, and
  name_codes    metric or task name <-> code (a study's millions of rows repeat a few dozen strings)
  costs         one row per architecture key (models/cost.py): parameters, forward FLOPs per example, training
                and inference throughput measured on a named machine (`transferscale cost` fills it)

`measurements` is a view of measurement_rows with the strings looked up: the table as stores before the codes
held it (run, metric, task, shots, seed, layer, l2, value, depth), for SQL written against it; its triggers
let INSERT, UPDATE and DELETE through. A writer (`Store(dir)`) converts a store of that older layout in one
transaction when it opens it; a reader (`create=False`) reads it as it is.

Everything a run produces is written in one transaction, so a study killed at any moment holds either all
of a run's results or none of them. Columns that do not apply are stored as -1 (SQLite treats NULLs in a
primary key as distinct, which would let a row be written twice); `read_results` turns them back into NA.
`layer` -1 means the final representation (the pooled pre-logits features), the same label for every model
whatever its depth, so final-layer probes of different architectures group together.
"""
from __future__ import annotations

import errno
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from transferscale.errors import TransferscaleError
from transferscale.files import with_path, write_problem

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

RESULTS_FILE = "results.sqlite"
SQLITE_MAGIC = b"SQLite format 3\x00"
QUICK_CHECK_BYTES = 64 << 20  # readers check every page of stores up to this size when they open them
NA = -1
UPSTREAM, FEWSHOT, FINETUNE = "upstream_accuracy", "fewshot_accuracy", "finetune_accuracy"
BASELINE_KINDS = ("random_init", "pixels", "words")  # run kinds read as kind 'baseline'
_KIND = f"CASE WHEN r.kind IN {BASELINE_KINDS!r} THEN 'baseline' ELSE r.kind END"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY, name TEXT NOT NULL, kind TEXT NOT NULL, family TEXT NOT NULL, size TEXT,
    config TEXT NOT NULL, status TEXT NOT NULL, error TEXT, params INTEGER,
    started REAL, finished REAL, train_seconds REAL, eval_seconds REAL, versions TEXT, attempted TEXT
);
CREATE TABLE IF NOT EXISTS evaluations (
    key TEXT PRIMARY KEY, run TEXT NOT NULL, task TEXT NOT NULL, finished REAL, protocol TEXT
);
-- what each architecture costs (models/cost.py); added after the others: CREATE creates it in older stores
CREATE TABLE IF NOT EXISTS costs (
    arch TEXT PRIMARY KEY, label TEXT NOT NULL, family TEXT, architecture TEXT NOT NULL, params INTEGER NOT NULL,
    flops REAL NOT NULL, train_throughput REAL, train_throughput_median REAL, infer_throughput REAL,
    infer_throughput_median REAL, batch_size INTEGER NOT NULL, threads INTEGER NOT NULL, repeats INTEGER,
    warmup INTEGER, torch TEXT, machine TEXT, measured REAL NOT NULL, seconds REAL
);
"""
# The measurements, coded (see the module's docstring). A WITHOUT ROWID table is its primary key's b-tree:
# each row is stored once, in (run, metric, task, ...) order. The index serves the readers' questions (one
# metric, the final layer or every other, one shot count); it holds the primary key's other columns too, so
# the rows of a (run, task, shots, layer) group come out of it together, in order, with no sort to group them.
_CODED_TABLES = """
CREATE TABLE IF NOT EXISTS run_codes (code INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS name_codes (code INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS measurement_rows (
    run INTEGER NOT NULL, metric INTEGER NOT NULL, task INTEGER NOT NULL, shots INTEGER NOT NULL,
    seed INTEGER NOT NULL, layer INTEGER NOT NULL, l2 REAL NOT NULL, value REAL NOT NULL,
    depth REAL NOT NULL DEFAULT -1,
    PRIMARY KEY (run, metric, task, shots, seed, layer, l2)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS measurements_by_metric ON measurement_rows (metric, layer, shots);
"""
def _code_of(table: str, col: str, value: str) -> str:
    return f"(SELECT code FROM {table} WHERE {col} = {value})"


def _codes_of(row: str) -> str:
    """SQL for the codes of a `measurements` row's strings (NEW or OLD, in a trigger)."""
    return ", ".join((_code_of("run_codes", "key", f"{row}.run"), _code_of("name_codes", "name", f"{row}.metric"),
                      _code_of("name_codes", "name", f"{row}.task")))


# codes for a new row's strings: a plain INSERT ... WHERE NOT EXISTS, which the conflict clause of the
# statement that fired the trigger (INSERT OR REPLACE INTO measurements) cannot turn into a REPLACE, which
# would renumber a code
_INTERN = " ".join(f"INSERT INTO {table} ({col}) SELECT NEW.{new} WHERE NOT EXISTS "
                   f"(SELECT 1 FROM {table} WHERE {col} = NEW.{new});"
                   for table, col, new in (("run_codes", "key", "run"), ("name_codes", "name", "metric"),
                                           ("name_codes", "name", "task")))
_OLD_ROW = (f"(run, metric, task) = ({_codes_of('OLD')}) AND shots = OLD.shots AND seed = OLD.seed "
            "AND layer = OLD.layer AND l2 = OLD.l2")
_MEASUREMENTS_VIEW = f"""
CREATE VIEW IF NOT EXISTS measurements AS
    SELECT k.key AS run, a.name AS metric, b.name AS task, x.shots, x.seed, x.layer, x.l2, x.value, x.depth
    FROM measurement_rows x LEFT JOIN run_codes k ON k.code = x.run LEFT JOIN name_codes a ON a.code = x.metric
    LEFT JOIN name_codes b ON b.code = x.task;
CREATE TRIGGER IF NOT EXISTS measurements_insert INSTEAD OF INSERT ON measurements BEGIN
    {_INTERN}
    INSERT INTO measurement_rows VALUES ({_codes_of('NEW')}, NEW.shots, NEW.seed, NEW.layer, NEW.l2, NEW.value,
                                         COALESCE(NEW.depth, -1));
END;
CREATE TRIGGER IF NOT EXISTS measurements_update INSTEAD OF UPDATE ON measurements BEGIN
    {_INTERN}
    UPDATE measurement_rows SET (run, metric, task, shots, seed, layer, l2, value, depth) =
        ({_codes_of('NEW')}, NEW.shots, NEW.seed, NEW.layer, NEW.l2, NEW.value, NEW.depth) WHERE {_OLD_ROW};
END;
CREATE TRIGGER IF NOT EXISTS measurements_delete INSTEAD OF DELETE ON measurements BEGIN
    DELETE FROM measurement_rows WHERE {_OLD_ROW};
END;
"""
_CODED_SCHEMA = _CODED_TABLES + _MEASUREMENTS_VIEW
# What the store's own queries read as `m`: the view's columns and the codes (run_code, metric_code,
# task_code) to group and seek by. A temporary view (the connection's, not the file's); LEFT JOINs, which
# SQLite may leave out of a query that uses none of their columns (at worst, a lookup in a small table).
_CODED_VIEW = """CREATE TEMP VIEW coded_measurements AS
    SELECT k.key AS run, a.name AS metric, b.name AS task, x.shots, x.seed, x.layer, x.l2, x.value, x.depth,
           x.run AS run_code, x.metric AS metric_code, x.task AS task_code
    FROM main.measurement_rows x LEFT JOIN main.run_codes k ON k.code = x.run
    LEFT JOIN main.name_codes a ON a.code = x.metric LEFT JOIN main.name_codes b ON b.code = x.task"""
# A store of the older layout, opened to read: the same names over its table, each string its own code.
_STRING_VIEWS = """
CREATE TEMP VIEW measurement_rows AS SELECT * FROM main.measurements;
CREATE TEMP VIEW run_codes AS SELECT key AS code, key FROM main.runs;
CREATE TEMP VIEW coded_measurements AS
    SELECT *, run AS run_code, metric AS metric_code, task AS task_code FROM main.measurements;
"""
# The costs table's columns (`Store.write_costs`, `Store.costs`): arch (models.cost.architecture_key), label
# (a readable name), family, architecture (JSON: family, shape, input size, channels, classes; or the source),
# params, flops (forward, per example), train_throughput / infer_throughput (examples/s, best of `repeats`
# after `warmup` steps; NULL where the study trains nothing) and their medians, batch_size, threads, the torch
# version, the machine, when it was measured (Unix time) and how long measuring took (s).
COST_COLUMNS = ("arch", "label", "family", "architecture", "params", "flops", "train_throughput",
                "train_throughput_median", "infer_throughput", "infer_throughput_median", "batch_size", "threads",
                "repeats", "warmup", "torch", "machine", "measured", "seconds")

_COST_FLOATS = ("flops", "train_throughput", "train_throughput_median", "infer_throughput",
                "infer_throughput_median", "measured", "seconds")
_COST_INTS = ("params", "batch_size", "threads", "repeats", "warmup")


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


class RunCommit(NamedTuple):
    """One run's results for `Store.commit_runs` (the arguments of `Store.commit_run`)."""

    run_key: str
    measurements: Sequence[Measurement]
    evaluations: Sequence = ()
    stale: Sequence[tuple[str, str]] = ()
    params: int | None = None
    train_seconds: float = 0.0
    eval_seconds: float = 0.0


class Store:
    """A study's SQLite file. Open with `Store(study_dir)`; it is created on first use.

    `coded` says whether its measurements have the coded layout (False: a store of the older layout, opened
    to read with `create=False`; a writer converts it)."""

    def __init__(self, study_dir: str | Path, *, create: bool = True):
        self.dir = Path(study_dir)
        self.path = self.dir / RESULTS_FILE
        if not create and not self.path.is_file():
            raise TransferscaleError(
                f"no results store at {self.path}; run a study first (`transferscale run`) or pass its directory"
            )
        existing = self.path.is_file() and self.path.stat().st_size > 0
        if not create and not existing:
            raise self._no_study()
        if existing:
            self._check_header()
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise TransferscaleError(write_problem(with_path(err, self.dir), "the study directory")) from None
        try:
            self.conn = sqlite3.connect(self.path, timeout=30)
        except sqlite3.Error as err:
            raise self._problem(err) or err from None
        try:
            self._open(create, existing)
        except sqlite3.Error as err:
            self.conn.close()
            raise self._problem(err) or err from None
        except BaseException:
            self.conn.close()
            raise

    def _open(self, create: bool, existing: bool) -> None:
        # A damaged file is refused before anything is written to it: a writer checks every page (a run is
        # long; the check takes about 0.2 s per 100 MB), a reader the small stores, where it is as cheap.
        if existing and (create or self.path.stat().st_size <= QUICK_CHECK_BYTES):
            problems = [row[0] for row in self.conn.execute("PRAGMA quick_check(3)")]
            if problems != ["ok"]:
                raise self._damaged("; ".join(problems))
        if not create:  # a reader never changes the file, not even to migrate it
            tables = self._tables()
            if "runs" not in tables or not {"measurement_rows", "measurements"} & tables:
                raise self._no_study()
            self.conn.execute("PRAGMA journal_mode=WAL")  # a no-op on a study's store: it is WAL already
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.coded = "measurement_rows" in tables
            # the older layout, strings in every row, is read as it is, through views that give its table
            # the names of the coded one (each string is its own code)
            self.conn.executescript(_CODED_VIEW + ";" if self.coded else _STRING_VIEWS)
            return
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(_SCHEMA)
        self._migrate()
        if "measurements" in self._tables():  # the older layout: code it
            self._code_measurements()
        self.conn.executescript(_CODED_SCHEMA)
        self.conn.execute(_CODED_VIEW)
        self.coded = True

    def _tables(self) -> set[str]:
        return {row[0] for row in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def _check_header(self) -> None:
        """Refuse a file that is not a SQLite database, or is shorter than its header says (truncated), without
        opening it: SQLite would only say "file is not a database" or "database disk image is malformed",
        later, on some query."""
        size = self.path.stat().st_size
        with open(self.path, "rb") as fh:
            header = fh.read(100)
        if len(header) < 100 or not header.startswith(SQLITE_MAGIC):
            raise self._damaged("it is not a SQLite database" if not header.startswith(SQLITE_MAGIC[:len(header)])
                                else f"it is cut short ({size} bytes)")
        page_size = int.from_bytes(header[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
        pages = int.from_bytes(header[28:32], "big")
        counted = header[24:28] == header[92:96] and pages > 0  # SQLite keeps the page count valid this way
        wal = self.path.with_name(self.path.name + "-wal")
        unmerged = wal.is_file() and wal.stat().st_size > 0  # pages still in the WAL: the file may lag its header
        if counted and not unmerged and size < pages * page_size:
            raise self._damaged(f"it is cut short: {size} bytes of the {pages * page_size} its header says")

    def _damaged(self, why: str) -> TransferscaleError:
        aside = self.path.with_name(self.path.name + ".damaged")
        return TransferscaleError(
            f"the results store {self.path} is damaged ({why}); nothing was written to it. Move it aside "
            f"(`mv {self.path} {aside}`, with its -wal and -shm files if any) and run the study again: its "
            "checkpoints and feature cache rebuild the rows far faster than the first time")

    def _no_study(self) -> TransferscaleError:
        return TransferscaleError(
            f"{self.path} holds no study (it is empty, or another program's database); run the study again "
            "(`transferscale run SPEC`) to rebuild it from the checkpoints, or pass another study's directory")

    def _problem(self, err: sqlite3.Error) -> TransferscaleError | None:
        """The error to show for what SQLite raised on this store, or None for one that is not the user's to fix."""
        code = getattr(err, "sqlite_errorcode", None)
        primary = None if code is None else code & 0xFF
        if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
            return self._damaged(str(err))
        if primary == sqlite3.SQLITE_FULL:
            return TransferscaleError(write_problem(OSError(errno.ENOSPC, "No space left on device", str(self.path)),
                                                    "the results store"))
        if primary in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM, sqlite3.SQLITE_CANTOPEN):
            return TransferscaleError(
                f"cannot write the results store {self.path} ({err}); make the study directory and the files in "
                "it writable, or choose another output directory (--out), then run again")
        if primary == sqlite3.SQLITE_IOERR:
            return TransferscaleError(
                f"the disk failed reading or writing the results store {self.path} ({err}); check the disk (and "
                "its free space), then run again: every committed run is kept")
        if primary == sqlite3.SQLITE_BUSY:
            return TransferscaleError(
                f"the results store {self.path} stayed locked by another process for 30 s; let it finish (or stop "
                "it), then run again")
        return None

    def _migrate(self) -> None:
        """Bring a store written by an older version up to this schema, in place.

        Tables added since (costs) need no step here: `_SCHEMA` creates what is missing (CREATE TABLE IF NOT
        EXISTS) each time a writer opens the store. Readers never migrate; they read a missing table as empty.
        The measurements of the layout before the codes are brought up to date here, then coded
        (`_code_measurements`).
        """
        if "attempted" not in self._columns("runs"):  # a store written before failures recorded their evaluations
            with self.conn:
                self.conn.execute("ALTER TABLE runs ADD COLUMN attempted TEXT")
        if "measurements" in self._tables() and "depth" not in self._columns("measurements"):
            # a store written before layer-wise probes: final layers only
            with self.conn:
                self.conn.execute("ALTER TABLE measurements ADD COLUMN depth REAL NOT NULL DEFAULT -1")
                self.conn.execute("UPDATE measurements SET depth = 1.0 WHERE layer = -1 AND shots != -1")
        if "protocol" not in self._columns("evaluations"):  # evaluations once stored 'probe:TASK' as the task
            with self.conn:
                self.conn.execute("ALTER TABLE evaluations ADD COLUMN protocol TEXT")
                for old, new in (("probe:", "fewshot"), ("finetune:", "finetune")):
                    self.conn.execute("UPDATE evaluations SET protocol = ?, task = substr(task, ?) "
                                      "WHERE task LIKE ?", (new, len(old) + 1, old + "%"))

    def _code_measurements(self) -> None:
        """Move the rows of the older layout's `measurements` table (run key, metric and task strings in each
        row) into the coded tables, and put the view in its place: all of it in one transaction, so a store
        killed meanwhile is left as it was and converted at the next open. Then VACUUM gives the pages the
        strings took back to the disk (itself atomic; skipped where it cannot run, e.g. short of disk space).
        Codes follow the runs' order, names their sorted order."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(_CODED_TABLES):
                conn.execute(statement)  # one by one: executescript would commit first
            conn.execute("INSERT INTO run_codes (key) SELECT key FROM runs ORDER BY rowid")
            conn.execute("INSERT OR IGNORE INTO run_codes (key) SELECT DISTINCT run FROM measurements ORDER BY run")
            conn.execute("INSERT OR IGNORE INTO name_codes (name) SELECT metric FROM measurements UNION "
                         "SELECT task FROM measurements ORDER BY 1")
            conn.execute("""INSERT INTO measurement_rows
                SELECT k.code, a.code, b.code, m.shots, m.seed, m.layer, m.l2, m.value, m.depth
                FROM measurements m JOIN run_codes k ON k.key = m.run JOIN name_codes a ON a.name = m.metric
                JOIN name_codes b ON b.name = m.task ORDER BY 1, 2, 3, 4, 5, 6, 7""")
            conn.execute("DROP TABLE measurements")
            for statement in _statements(_MEASUREMENTS_VIEW):
                conn.execute(statement)  # the view and its triggers in the table's place
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        with suppress(sqlite3.Error):
            conn.execute("VACUUM")

    def _columns(self, table: str = "measurement_rows") -> set[str]:
        return {row[1] for row in self.conn.execute(f"PRAGMA table_info({table})")}

    def close(self) -> None:
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, kind, err, tb):
        self.close()
        cause = _sqlite_cause(err)
        if cause is not None:  # what a query in the `with` block hit (pandas wraps it): one clear message
            problem = self._problem(cause)
            if problem is not None:
                raise problem from None

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
                   ON CONFLICT(key) DO UPDATE SET status='running', error=NULL, attempted=NULL,
                   started=excluded.started, name=excluded.name""",
                (run.key, run.name, run.kind, run.family, run.size, json.dumps(run.config, sort_keys=True),
                 time.time(), json.dumps(versions, sort_keys=True)),
            )

    def mark_failed(self, run_key: str, error: str, attempted: Iterable[str] | None = None) -> None:
        """Record that a run failed, with why and the keys of the evaluations it was attempting (None: not
        known), so that the runner can tell whether a later spec asks something else of it."""
        keys = None if attempted is None else json.dumps(sorted(attempted))
        with self.conn:
            self.conn.execute("UPDATE runs SET status='failed', error=?, finished=?, attempted=? WHERE key=?",
                              (error, time.time(), keys, run_key))

    def failed_attempts(self) -> dict[str, frozenset[str] | None]:
        """For each failed run, the evaluation keys its failed attempt owed (None: recorded before attempts
        were, so not known)."""
        if "attempted" not in self._columns("runs"):  # an older store, opened to read
            return {key: None for (key,) in self.conn.execute("SELECT key FROM runs WHERE status = 'failed'")}
        return {key: None if keys is None else frozenset(json.loads(keys))
                for key, keys in self.conn.execute("SELECT key, attempted FROM runs WHERE status = 'failed'")}

    def commit_run(self, run_key: str, measurements: list[Measurement], evaluations: list, *,
                   stale: list[tuple[str, str]] = (), params: int | None, train_seconds: float,
                   eval_seconds: float) -> None:
        """Write a run's measurements, record its finished evaluations and mark it done, in one transaction.

        `evaluations` are the plan's Evaluation records (protocol, task, key) this commit completes; `stale`
        lists the (task, metric) pairs whose earlier rows for this run the new ones replace (an earlier
        setting of the same evaluation), so old and new results never sit side by side.
        """
        self.commit_runs([RunCommit(run_key, measurements, evaluations, stale, params, train_seconds,
                                    eval_seconds)])

    def commit_runs(self, commits: Iterable[RunCommit]) -> None:
        """`commit_run` for several runs in one transaction: all of them are written, or none.

        For bulk writes (an import, a benchmark's synthetic store), where a transaction per run would cost
        more than the rows; the runner commits one run at a time, as each finishes.
        """
        now = time.time()
        with self.conn:
            for c in commits:
                self._write_run(c, now)

    def _write_run(self, c: RunCommit, now: float) -> None:
        key = c.run_key
        run = self._intern("run_codes", "key", [key])[key]
        names = self._intern("name_codes", "name", [s for pair in c.stale for s in pair]
                             + [s for m in c.measurements for s in (m.metric, m.task)])
        self.conn.executemany("DELETE FROM measurement_rows WHERE run=? AND task=? AND metric=?",
                              [(run, names[task], names[metric]) for task, metric in c.stale])
        self.conn.executemany(
            "INSERT OR REPLACE INTO measurement_rows VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(run, names[m.metric], names[m.task], int(m.shots), int(m.seed), int(m.layer), float(m.l2),
              float(m.value), float(m.depth)) for m in c.measurements],
        )
        self.conn.executemany(
            "INSERT OR REPLACE INTO evaluations (key, run, task, finished, protocol) VALUES (?, ?, ?, ?, ?)",
            [(e.key, key, e.task, now, e.protocol) for e in c.evaluations],
        )
        self.conn.execute(
            """UPDATE runs SET status='done', error=NULL, finished=?, params=COALESCE(?, params),
               train_seconds=COALESCE(train_seconds, 0) + ?, eval_seconds=COALESCE(eval_seconds, 0) + ?
               WHERE key=?""",
            (now, c.params, c.train_seconds, c.eval_seconds, key),
        )

    def _intern(self, table: str, col: str, items: Iterable[str]) -> dict[str, int]:
        """The codes of these strings in `table` (run_codes or name_codes), new ones added: in the caller's
        transaction, so a commit that rolls back takes its new codes with it."""
        items = list(dict.fromkeys(items))
        if not items:
            return {}
        for item in items:
            if not isinstance(item, str):
                raise TypeError(f"a {col} must be a string, not {item!r}")
        self.conn.executemany(f"INSERT OR IGNORE INTO {table} ({col}) VALUES (?)", [(i,) for i in items])
        codes: dict[str, int] = {}
        for start in range(0, len(items), 500):
            part = items[start:start + 500]
            codes.update(self.conn.execute(f"SELECT {col}, code FROM {table} WHERE {col} IN "
                                           f"({', '.join('?' * len(part))})", part))
        return codes

    # ---- costs ----------------------------------------------------------------------------------------
    def write_costs(self, rows: Iterable[dict]) -> None:
        """Write cost rows (dicts keyed by COST_COLUMNS; a missing optional one is NULL), replacing any earlier
        row of the same architecture, all in one transaction."""
        cols = ", ".join(COST_COLUMNS)
        marks = ", ".join("?" * len(COST_COLUMNS))
        with self.conn:
            self.conn.executemany(f"INSERT OR REPLACE INTO costs ({cols}) VALUES ({marks})",
                                  [tuple(row.get(c) for c in COST_COLUMNS) for row in rows])

    def costs(self) -> pd.DataFrame:
        """The costs table, one row per architecture (COST_COLUMNS), by family then parameters; empty (with
        those columns) for a store written before it existed. Throughputs not measured read as NaN."""
        import pandas as pd

        if "costs" not in self._tables():  # an older store, opened to read
            return pd.DataFrame({c: pd.Series(dtype="float64" if c in _COST_FLOATS else "int64" if c in _COST_INTS
                                              else "object") for c in COST_COLUMNS})
        df = pd.read_sql_query(f"SELECT {', '.join(COST_COLUMNS)} FROM costs ORDER BY family, params, label, arch",
                               self.conn)
        return df.astype({c: "float64" for c in _COST_FLOATS})

    # ---- reading --------------------------------------------------------------------------------------
    def runs_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.read_sql_query(
            "SELECT key, name, kind, family, size, status, error, params, train_seconds, eval_seconds, "
            "started, finished FROM runs ORDER BY rowid",
            self.conn,
        )

    def run_configs(self) -> dict[str, dict]:
        """Each run's config (the dict its key hashes), by run key."""
        return {key: json.loads(config) for key, config in self.conn.execute("SELECT key, config FROM runs")}

    def results_frame(self) -> pd.DataFrame:
        """The tidy table: one row per measurement, joined with the run's name, kind and family."""
        return self._tidy("1", ())

    # ---- reading only what a reader shows --------------------------------------------------------------
    # The commands (`results`, `fit`, `report`) never hold the tidy table: they ask for seed means, one
    # metric or layer at a time (`seed_groups`), for the few raw rows whose legacy arithmetic they repeat
    # (`tidy_rows`), or stream every row in chunks (`iter_results`). The index on (metric, layer, shots)
    # serves those questions. `where` clauses are SQL over `m`, the view `coded_measurements` (the columns
    # of `measurements`, and the codes run_code, metric_code, task_code), and the runs `r`.

    def runs_table(self) -> pd.DataFrame:
        """Every run with at least one measurement, in the order `read_results` lists them (by rowid):
        run (its key), name, kind ('baseline' for BASELINE_KINDS), run_kind, family, size, n_rows (how many
        measurements), fewshot (whether any of them is a few-shot probe)."""
        import pandas as pd

        df = pd.read_sql_query(
            f"""SELECT r.key AS run, name, {_KIND} AS kind, kind AS run_kind, family, size,
                       (SELECT COUNT(*) FROM measurement_rows x WHERE x.run = k.code) AS n_rows,
                       EXISTS (SELECT 1 FROM measurement_rows x WHERE x.run = k.code AND x.metric = ?) AS fewshot
                FROM runs r LEFT JOIN run_codes k ON k.key = r.key ORDER BY r.rowid""", self.conn,
            params=(self._name_code(FEWSHOT),))
        df["fewshot"] = df["fewshot"].astype(bool)
        return df[df["n_rows"] > 0].reset_index(drop=True)

    def count_measurements(self) -> int:
        """How many rows `read_results` returns (measurements of runs the store knows)."""
        return int(self.runs_table()["n_rows"].sum())

    def tidy_rows(self, where: str, params: Sequence = (), *, runs_first: bool = False) -> pd.DataFrame:
        """The rows of `read_results` that satisfy `where` (SQL over the measurements `m` and runs `r`),
        with its columns, dtypes and order: for questions whose answer is a handful of rows.

        runs_first: when `where` picks a few runs (e.g. by their kind), walk the runs and seek each one's
        rows, rather than the rows of the metric or layer and look up each one's run."""
        return self._tidy(where, params, runs_first)

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads inside see one state of the store, whatever a writer commits meanwhile (a WAL read
        transaction); nested, the outer one holds."""
        if self.conn.in_transaction:
            yield
            return
        self.conn.execute("BEGIN")
        try:
            yield
        finally:
            self.conn.rollback()

    def iter_results(self, chunk_rows: int = 100_000) -> Iterator[pd.DataFrame]:
        """`read_results` in pieces of about `chunk_rows` rows (whole runs; one run's rows stay together):
        concatenated, the pieces are the same table, in the same order, all read from one snapshot."""
        with self.snapshot():
            yield from self._chunks(chunk_rows)

    def _chunks(self, chunk_rows: int) -> Iterator[pd.DataFrame]:
        runs = self.conn.execute(
            "SELECT r.rowid, (SELECT COUNT(*) FROM measurement_rows x WHERE x.run = k.code) "
            "FROM runs r LEFT JOIN run_codes k ON k.key = r.key ORDER BY r.rowid").fetchall()
        start, size = None, 0
        for rowid, n in runs:
            if not n:
                continue
            start = rowid if start is None else start
            size += n
            if size >= chunk_rows:
                yield self._tidy("r.rowid BETWEEN ? AND ?", (start, rowid))
                start, size = None, 0
        if start is not None:
            yield self._tidy("r.rowid BETWEEN ? AND ?", (start, runs[-1][0]))

    def _tidy(self, where: str, params: Sequence, runs_first: bool = False) -> pd.DataFrame:
        import pandas as pd

        # runs first: each run's rows by the primary key (run, metric, ...), named, since the planner may
        # otherwise pick the metric index and scan a metric's rows once per run
        if not runs_first:
            tables = "coded_measurements m JOIN runs r ON r.key = m.run"
        elif self.coded:
            tables = "runs r CROSS JOIN coded_measurements m ON m.run = r.key"
        else:
            tables = f"runs r CROSS JOIN main.measurements m INDEXED BY {self._pk_index()} ON r.key = m.run"
        depth = "m.depth" if "depth" in self._columns() else "CASE WHEN m.layer = -1 THEN 1.0 ELSE -1 END AS depth"
        df = pd.read_sql_query(
            f"""SELECT m.run, r.name, {_KIND} AS kind, r.kind AS run_kind, r.family, r.size, m.metric, m.task,
                       m.shots, m.seed, m.layer, {depth}, m.l2, m.value
               FROM {tables} WHERE {where}
               ORDER BY r.rowid, m.metric, m.task, m.shots, m.seed, m.layer, m.l2""",
            self.conn, params=tuple(params))
        for col in ("shots", "seed"):
            df[col] = df[col].astype("Int64").mask(df[col] == NA)
        df["l2"] = df["l2"].mask(df["l2"] == NA)
        df["depth"] = df["depth"].mask(df["depth"] == NA)
        return df

    def shot_counts(self, metric: str) -> list[int]:
        """The shot counts `metric` has rows at (NA left out), ascending: a few index seeks per layer."""
        code = self._name_code(metric)
        if not self._indexed():
            return [s for (s,) in self.conn.execute(
                "SELECT DISTINCT shots FROM measurement_rows WHERE metric = ? AND shots != -1 ORDER BY shots",
                (code,))]
        shots: set[int] = set()
        for layer in self.layers_of(metric):
            shots.update(self._distinct("shots", "metric = ? AND layer = ?", (code, layer)))
        return sorted(s for s in shots if s != NA)

    def layers_of(self, metric: str) -> list[int]:
        """The layers `metric` has rows at (-1, the final representation, first), by index seeks."""
        code = self._name_code(metric)
        if not self._indexed():
            return [v for (v,) in self.conn.execute(
                "SELECT DISTINCT layer FROM measurement_rows WHERE metric = ? ORDER BY layer", (code,))]
        return self._distinct("layer", "metric = ?", (code,))

    def _distinct(self, col: str, where: str, params: tuple) -> list:
        """Distinct values of the indexed `col` under `where`, one seek each (a skip scan)."""
        out, last = [], None
        while True:
            more = "" if last is None else f" AND {col} > ?"
            (value,) = self.conn.execute(f"SELECT MIN({col}) FROM measurement_rows WHERE {where}{more}",
                                         params if last is None else (*params, last)).fetchone()
            if value is None:
                return out
            out.append(value)
            last = value

    def _pk_index(self) -> str:
        """The name SQLite gave the index of the primary key of the older layout's measurements table."""
        return next(row[1] for row in self.conn.execute("PRAGMA main.index_list(measurements)") if row[3] == "pk")

    def _indexed(self) -> bool:
        return self.coded or any(row[1] == "measurements_by_metric"
                                 for row in self.conn.execute("PRAGMA main.index_list(measurements)"))

    def _name_code(self, name: str) -> int | str | None:
        """The code of a metric or task name (None: no row has it); in the older layout, the name itself."""
        if not self.coded:
            return name
        row = self.conn.execute("SELECT code FROM name_codes WHERE name = ?", (name,)).fetchone()
        return None if row is None else row[0]

    def _decode(self, table: str, col: str, codes: list) -> list[str]:
        """The strings of these codes (run_codes: run keys, name_codes: tasks); the older layout's are theirs."""
        if not self.coded or not codes:
            return list(codes)
        found: dict = {}
        for start in range(0, len(codes), 500):
            part = codes[start:start + 500]
            found.update(self.conn.execute(f"SELECT code, {col} FROM {table} WHERE code IN "
                                           f"({', '.join('?' * len(part))})", part))
        return [found[c] for c in codes]

    def has_rows(self, where: str, params: Sequence = ()) -> bool:
        """Whether any measurement `m` satisfies `where` (an index seek for the questions the readers ask)."""
        return self.conn.execute(f"SELECT 1 FROM coded_measurements m WHERE {where} LIMIT 1",
                                 tuple(params)).fetchone() is not None

    def top_shots(self, metric: str, where: str = "1", params: Sequence = ()) -> int | None:
        """The largest shot count of `metric`'s rows satisfying `where` (SQL over `m`; None: no such row)."""
        (top,) = self.conn.execute(f"SELECT MAX(m.shots) FROM coded_measurements m WHERE m.metric_code = ? AND "
                                   f"({where})", (self._name_code(metric), *params)).fetchone()
        return None if top is None else int(top)

    def seed_groups(self, metric: str, where: str = "1", params: Sequence = (), *, depth: bool = False,
                    chunk: int = 20_000) -> SeedGroups:
        """One row per (run, task, shots, layer) of `metric` among the rows satisfying `where` (SQL over
        the measurements `m`): each seed's value in its own column, so that a caller can average seeds with
        the arithmetic it needs, and how many rows the group has (more than its seeds: several l2).

        Aggregated in SQL and fetched in chunks of `chunk` groups; run keys and tasks come back as codes.
        """
        import numpy as np

        cond = f"m.metric_code = ? AND ({where})"
        args = (self._name_code(metric), *params)
        seeds = self._seeds_of_first_group(cond, args)
        while True:
            cols = ", ".join(f"MAX(CASE WHEN m.seed = {int(s)} THEN m.value END)" for s in seeds) or "NULL"
            known = ", ".join(str(int(s)) for s in seeds) or "NULL"
            has_depth = depth and "depth" in self._columns()
            extra = ", MIN(NULLIF(m.depth, -1)), MAX(NULLIF(m.depth, -1))" if has_depth else ", NULL, NULL"
            cur = self.conn.execute(
                f"""SELECT m.run_code, m.task_code, m.shots, m.layer, COUNT(*),
                           COUNT(CASE WHEN m.seed IN ({known}) THEN 1 END) {extra}, {cols}
                    FROM coded_measurements m WHERE {cond}
                    GROUP BY m.run_code, m.task_code, m.shots, m.layer""", args)
            runs, tasks, parts = _Codes(), _Codes(), []
            complete = True
            while rows := cur.fetchmany(chunk):
                run, task, *rest = zip(*rows)
                nums = np.array(rest, dtype=float).T  # None (a seed the group lacks) -> NaN
                if (nums[:, 3] < nums[:, 2]).any():
                    complete = False  # a seed the first group did not have: ask for every seed
                    break
                parts.append((runs.encode(run), tasks.encode(task), nums))
            if complete:
                break
            cur.close()
            seeds = [s for (s,) in self.conn.execute(
                f"SELECT DISTINCT m.seed FROM coded_measurements m WHERE {cond} ORDER BY m.seed", args)]
        return SeedGroups.build(parts, self._decode("run_codes", "key", runs.values),
                                self._decode("name_codes", "name", tasks.values), list(seeds))

    def _seeds_of_first_group(self, cond: str, args: tuple) -> list[int]:
        """The seeds of one group (a guess at every group's, checked by `seed_groups`): two index seeks."""
        first = self.conn.execute(f"SELECT m.run_code, m.task_code, m.shots, m.layer FROM coded_measurements m "
                                  f"WHERE {cond} LIMIT 1", args).fetchone()
        if first is None:
            return []
        return [s for (s,) in self.conn.execute(
            "SELECT DISTINCT seed FROM measurement_rows WHERE run = ? AND metric = ? AND task = ? AND shots = ? "
            "AND layer = ? ORDER BY seed", (first[0], args[0], *first[1:]))]


def _statements(script: str) -> list[str]:
    """The SQL statements of `script`, one by one (a trigger's body and all)."""
    out, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            out.append(pending.strip())
            pending = ""
    return out


def _sqlite_cause(err: BaseException | None) -> sqlite3.Error | None:
    """The sqlite3 error `err` is or was raised from (pandas' read_sql_query raises its own, from SQLite's)."""
    seen = 0
    while err is not None and seen < 8:
        if isinstance(err, sqlite3.Error):
            return err
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None


class _Codes:
    """Values (the store's codes, or strings) to integer codes in order of first appearance (the run keys and
    tasks of a query's result)."""

    def __init__(self):
        self.index: dict[str, int] = {}
        self.values: list[str] = []

    def encode(self, items) -> np.ndarray:
        import numpy as np

        index = self.index
        for item in set(items) - index.keys():
            index[item] = len(self.values)
            self.values.append(item)
        return np.fromiter((index[i] for i in items), dtype=np.int64, count=len(items))


@dataclass
class SeedGroups:
    """What `Store.seed_groups` returns, sorted by (run key, task, shots, layer) as pandas sorts them.

    run, task: codes into `runs` / `tasks` (sorted, so codes order as the strings do); shots, layer, rows
    (the group's measurements); values: (groups, seeds) with NaN where a group lacks a seed, columns in
    `seeds` order (ascending, as the tidy table orders a group's rows); depth_min / depth_max: the
    recorded depths (NaN where none), when asked for.
    """

    runs: list
    tasks: list
    seeds: list
    run: np.ndarray
    task: np.ndarray
    shots: np.ndarray
    layer: np.ndarray
    rows: np.ndarray
    values: np.ndarray
    depth_min: np.ndarray
    depth_max: np.ndarray

    @classmethod
    def build(cls, parts, runs: list, tasks: list, seeds: list) -> SeedGroups:
        import numpy as np

        def ranks(values):  # code in order of appearance -> code in sorted order
            order = sorted(range(len(values)), key=values.__getitem__)
            rank = np.empty(len(values), dtype=np.int64)
            rank[order] = np.arange(len(values))
            return [values[i] for i in order], rank

        runs_sorted, run_rank = ranks(runs)
        tasks_sorted, task_rank = ranks(tasks)
        if parts:
            run = run_rank[np.concatenate([p[0] for p in parts])]
            task = task_rank[np.concatenate([p[1] for p in parts])]
            nums = np.concatenate([p[2] for p in parts])
            parts.clear()
        else:
            run = task = np.zeros(0, dtype=np.int64)
            nums = np.zeros((0, 6 + len(seeds)))
        shots, layer = nums[:, 0].astype(np.int64), nums[:, 1].astype(np.int64)
        order = np.lexsort((layer, shots, task, run))
        nums = nums[order]
        return cls(runs_sorted, tasks_sorted, seeds, run[order], task[order], shots[order], layer[order],
                   nums[:, 2].astype(np.int64), nums[:, 6:], nums[:, 4], nums[:, 5])

    def __len__(self) -> int:
        return len(self.run)

    @property
    def several_rows(self) -> np.ndarray:
        """Groups with more rows than seeds (several l2 values for one seed)."""
        import numpy as np

        return self.rows > np.isfinite(self.values).sum(axis=1)

    def seeds_present(self) -> list:
        """The seeds some group has a value for."""
        import numpy as np

        return [s for s, any_ in zip(self.seeds, np.isfinite(self.values).any(axis=0)) if any_]

    def take(self, mask) -> SeedGroups:
        """The groups where `mask` holds (same codes)."""
        return SeedGroups(self.runs, self.tasks, self.seeds, *(getattr(self, f)[mask] for f in (
            "run", "task", "shots", "layer", "rows", "values", "depth_min", "depth_max")))

    def mean(self, how: str) -> np.ndarray:
        """Each group's mean over its seeds, with the arithmetic pandas' groupby uses on the tidy table.

        how="kahan": compensated summation in row order, pandas' kernel when a group's rows are scattered
        through the table (e.g. a study with layer-wise probes); how="reduceat": numpy's add.reduceat, the
        path pandas takes when every group's rows are contiguous and in order. The two can differ in the
        last bit, so each reader asks for the one `read_results` + pandas would have used.
        """
        import numpy as np

        v = self.values
        ok = np.isfinite(v)
        n = ok.sum(axis=1)
        if how == "reduceat":
            flat = v[ok]  # row-major: each group's seeds in order, groups one after another
            starts = np.concatenate(([0], np.cumsum(n)[:-1])) if len(n) else np.zeros(0, dtype=np.int64)
            return np.add.reduceat(flat, starts) / n if len(n) else np.zeros(0)
        s, c = np.zeros(len(v)), np.zeros(len(v))
        for j in range(v.shape[1]):
            x = v[:, j]
            y = x - c
            t = s + y
            comp = (t - s) - y
            comp[np.isnan(comp)] = 0.0
            s, c = np.where(ok[:, j], t, s), np.where(ok[:, j], comp, c)
        with np.errstate(invalid="ignore", divide="ignore"):
            return s / n


def read_results(study_dir: str | Path):
    """The tidy measurement table of a finished (or partly finished) study, as a pandas DataFrame.

    It holds every row at once; to write them all out, `export_results` streams them instead."""
    with Store(study_dir, create=False) as store:
        return store.results_frame()


TIDY_DTYPES = {"run": "str", "name": "str", "kind": "str", "run_kind": "str", "family": "str", "size": "str",
               "metric": "str", "task": "str", "shots": "Int64", "seed": "Int64", "layer": "int64",
               "depth": "float64", "l2": "float64", "value": "float64"}


def export_results(study_dir: str | Path, out, format: str, chunk_rows: int = 100_000) -> int:
    """Write `read_results(study_dir)` as CSV or Parquet, `chunk_rows` rows at a time; returns the row count.

    `out` is a path, or a text stream for CSV. The file is the one `read_results(...).to_csv(out, index=False)`
    or `.to_parquet(out, index=False)` writes (Parquet: one row group per chunk, the same schema and pandas
    metadata, so `pandas.read_parquet` gives the same frame back), without the table ever in memory.
    """
    if format not in ("csv", "parquet"):
        raise TransferscaleError(f"unknown export format {format!r}; valid: 'csv', 'parquet'")
    with Store(study_dir, create=False) as store, store.snapshot():
        try:
            return _export(store, out, format, chunk_rows)
        except OSError as err:
            if isinstance(out, str | Path):  # a partial table must not pass for the whole one
                with suppress(OSError):
                    Path(out).unlink(missing_ok=True)
            err = with_path(err, out) if isinstance(out, str | Path) else err
            raise TransferscaleError(f"cannot write the {format} export {err.filename or ''}: "
                                     f"{err.strerror or err}; choose another output file (-o) in an existing, "
                                     "writable directory with free space") from None


def _export(store: Store, out, format: str, chunk_rows: int) -> int:
    chunks = (_conform(c) for c in store.iter_results(chunk_rows))
    template = _conform(store.tidy_rows("0"))  # no rows: the tidy table's columns and dtypes
    n = 0
    if format == "csv":
        stream = open(out, "w", newline="") if isinstance(out, str | Path) else out
        try:
            for chunk in chunks:
                chunk.to_csv(stream, index=False, header=n == 0)
                n += len(chunk)
            if n == 0:  # the header alone, as an empty table writes it
                template.to_csv(stream, index=False)
        finally:
            if stream is not out:
                stream.close()
        return n
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.Schema.from_pandas(template, preserve_index=False)
    with pq.ParquetWriter(out, schema) as writer:
        for chunk in chunks:
            writer.write_table(pa.Table.from_pandas(chunk, schema=schema, preserve_index=False))
            n += len(chunk)
        if n == 0:
            writer.write_table(pa.Table.from_pandas(template, schema=schema, preserve_index=False))
    return n


def _conform(df):
    """A chunk with the tidy table's dtypes, whatever its own values let pandas infer (a chunk whose
    sizes are all None reads as object)."""
    return df.astype({c: t for c, t in TIDY_DTYPES.items() if str(df[c].dtype) != t})
