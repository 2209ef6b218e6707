"""The results store: one SQLite file per study (WAL), runs with their provenance, and a tidy measurement table.

Tables
  meta          key/value: the spec text, when the study was created, versions
  runs          one row per run key: name, kind, family, size, config (JSON), status, error, timings, versions
  evaluations   one row per finished evaluation key: run, task, protocol; a changed probe re-runs only what changed
  measurements  (run, metric, task, shots, seed, layer, l2) -> value, and the layer's relative depth in (0, 1]
  costs         one row per architecture key (models/cost.py): parameters, forward FLOPs per example, training
                and inference throughput measured on a named machine (`transferscale cost` fills it)

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
CREATE TABLE IF NOT EXISTS measurements (
    run TEXT NOT NULL, metric TEXT NOT NULL, task TEXT NOT NULL, shots INTEGER NOT NULL,
    seed INTEGER NOT NULL, layer INTEGER NOT NULL, l2 REAL NOT NULL, value REAL NOT NULL,
    depth REAL NOT NULL DEFAULT -1,
    PRIMARY KEY (run, metric, task, shots, seed, layer, l2)
);
-- the readers ask for one metric, the final layer or every other, one shot count: this finds those rows
CREATE INDEX IF NOT EXISTS measurements_by_metric ON measurements (metric, layer, shots);
-- what each architecture costs (models/cost.py); added after the others: CREATE creates it in older stores
CREATE TABLE IF NOT EXISTS costs (
    arch TEXT PRIMARY KEY, label TEXT NOT NULL, family TEXT, architecture TEXT NOT NULL, params INTEGER NOT NULL,
    flops REAL NOT NULL, train_throughput REAL, train_throughput_median REAL, infer_throughput REAL,
    infer_throughput_median REAL, batch_size INTEGER NOT NULL, threads INTEGER NOT NULL, repeats INTEGER,
    warmup INTEGER, torch TEXT, machine TEXT, measured REAL NOT NULL, seconds REAL
);
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
    """A study's SQLite file. Open with `Store(study_dir)`; it is created on first use."""

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
            if "runs" not in self._tables():
                raise self._no_study()
            self.conn.execute("PRAGMA journal_mode=WAL")  # a no-op on a study's store: it is WAL already
            self.conn.execute("PRAGMA synchronous=NORMAL")
            return
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(_SCHEMA)
        self._migrate()

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
        """
        if "attempted" not in self._columns("runs"):  # a store written before failures recorded their evaluations
            with self.conn:
                self.conn.execute("ALTER TABLE runs ADD COLUMN attempted TEXT")
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
        self.conn.executemany("DELETE FROM measurements WHERE run=? AND task=? AND metric=?",
                              [(c.run_key, task, metric) for task, metric in c.stale])
        key = c.run_key
        self.conn.executemany(
            "INSERT OR REPLACE INTO measurements VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(key, m.metric, m.task, int(m.shots), int(m.seed), int(m.layer), float(m.l2), float(m.value),
              float(m.depth)) for m in c.measurements],
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
    # serves those questions.

    def runs_table(self) -> pd.DataFrame:
        """Every run with at least one measurement, in the order `read_results` lists them (by rowid):
        run (its key), name, kind ('baseline' for BASELINE_KINDS), run_kind, family, size, n_rows (how many
        measurements), fewshot (whether any of them is a few-shot probe)."""
        import pandas as pd

        df = pd.read_sql_query(
            f"""SELECT key AS run, name, {_KIND} AS kind, kind AS run_kind, family, size,
                       (SELECT COUNT(*) FROM measurements m WHERE m.run = r.key) AS n_rows,
                       EXISTS (SELECT 1 FROM measurements m WHERE m.run = r.key AND m.metric = '{FEWSHOT}')
                           AS fewshot
                FROM runs r ORDER BY rowid""", self.conn)
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
            "SELECT rowid, (SELECT COUNT(*) FROM measurements m WHERE m.run = r.key) FROM runs r ORDER BY rowid"
        ).fetchall()
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
        tables = f"runs r CROSS JOIN measurements m INDEXED BY {self._pk_index()} ON r.key = m.run" if runs_first \
            else "measurements m JOIN runs r ON r.key = m.run"
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
        if not self._indexed():
            return [s for (s,) in self.conn.execute(
                "SELECT DISTINCT shots FROM measurements WHERE metric = ? AND shots != -1 ORDER BY shots", (metric,))]
        shots: set[int] = set()
        for layer in self.layers_of(metric):
            shots.update(self._distinct("shots", "metric = ? AND layer = ?", (metric, layer)))
        return sorted(s for s in shots if s != NA)

    def layers_of(self, metric: str) -> list[int]:
        """The layers `metric` has rows at (-1, the final representation, first), by index seeks."""
        if not self._indexed():
            return [v for (v,) in self.conn.execute(
                "SELECT DISTINCT layer FROM measurements WHERE metric = ? ORDER BY layer", (metric,))]
        return self._distinct("layer", "metric = ?", (metric,))

    def _distinct(self, col: str, where: str, params: tuple) -> list:
        """Distinct values of the indexed `col` under `where`, one seek each (a skip scan)."""
        out, last = [], None
        while True:
            more = "" if last is None else f" AND {col} > ?"
            (value,) = self.conn.execute(f"SELECT MIN({col}) FROM measurements WHERE {where}{more}",
                                         params if last is None else (*params, last)).fetchone()
            if value is None:
                return out
            out.append(value)
            last = value

    def _pk_index(self) -> str:
        """The name SQLite gave the index of the measurements' primary key."""
        return next(row[1] for row in self.conn.execute("PRAGMA index_list(measurements)") if row[3] == "pk")

    def _indexed(self) -> bool:
        return any(row[1] == "measurements_by_metric" for row in self.conn.execute("PRAGMA index_list(measurements)"))

    def has_rows(self, where: str, params: Sequence = ()) -> bool:
        """Whether any measurement `m` satisfies `where` (an index seek for the questions the readers ask)."""
        return self.conn.execute(f"SELECT 1 FROM measurements m WHERE {where} LIMIT 1", tuple(params)).fetchone() \
            is not None

    def seed_groups(self, metric: str, where: str = "1", params: Sequence = (), *, depth: bool = False,
                    chunk: int = 20_000) -> SeedGroups:
        """One row per (run, task, shots, layer) of `metric` among the rows satisfying `where` (SQL over
        the measurements `m`): each seed's value in its own column, so that a caller can average seeds with
        the arithmetic it needs, and how many rows the group has (more than its seeds: several l2).

        Aggregated in SQL and fetched in chunks of `chunk` groups; run keys and tasks come back as codes.
        """
        import numpy as np

        cond = f"m.metric = ? AND ({where})"
        args = (metric, *params)
        seeds = self._seeds_of_first_group(cond, args)
        while True:
            cols = ", ".join(f"MAX(CASE WHEN m.seed = {int(s)} THEN m.value END)" for s in seeds) or "NULL"
            known = ", ".join(str(int(s)) for s in seeds) or "NULL"
            has_depth = depth and "depth" in self._columns()
            extra = ", MIN(NULLIF(m.depth, -1)), MAX(NULLIF(m.depth, -1))" if has_depth else ", NULL, NULL"
            cur = self.conn.execute(
                f"""SELECT m.run, m.task, m.shots, m.layer, COUNT(*), COUNT(CASE WHEN m.seed IN ({known}) THEN 1 END)
                           {extra}, {cols}
                    FROM measurements m WHERE {cond} GROUP BY m.run, m.task, m.shots, m.layer""", args)
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
                f"SELECT DISTINCT m.seed FROM measurements m WHERE {cond} ORDER BY m.seed", args)]
        return SeedGroups.build(parts, runs.values, tasks.values, list(seeds))

    def _seeds_of_first_group(self, cond: str, args: tuple) -> list[int]:
        """The seeds of one group (a guess at every group's, checked by `seed_groups`): two index seeks."""
        first = self.conn.execute(f"SELECT m.run, m.task, m.shots, m.layer FROM measurements m WHERE {cond} LIMIT 1",
                                  args).fetchone()
        if first is None:
            return []
        return [s for (s,) in self.conn.execute(
            "SELECT DISTINCT seed FROM measurements WHERE run = ? AND metric = ? AND task = ? AND shots = ? "
            "AND layer = ? ORDER BY seed", (first[0], args[0], *first[1:]))]


def _sqlite_cause(err: BaseException | None) -> sqlite3.Error | None:
    """The sqlite3 error `err` is or was raised from (pandas' read_sql_query raises its own, from SQLite's)."""
    seen = 0
    while err is not None and seen < 8:
        if isinstance(err, sqlite3.Error):
            return err
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None


class _Codes:
    """Strings to integer codes in order of first appearance (run keys and tasks of a query's result)."""

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
