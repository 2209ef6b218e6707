"""Bad input and I/O faults: one clear error (exit code 2, a message naming what to change, no traceback), and
nothing a study already holds lost or changed.

One tiny study is built per module; each case works on its own copy of it and compares a digest of the copy
(every row of results.sqlite, the bytes of each checkpoint and feature file) before and after.
"""
import errno
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import TINY
from typer.testing import CliRunner

from transferscale.cli import app
from transferscale.engine.runner import run_study
from transferscale.errors import TransferscaleError
from transferscale.spec import load_spec
from transferscale.store import Measurement, Store

cli = CliRunner()


@pytest.fixture(scope="module")
def built(tmp_path_factory, data_cache):
    """The tiny study, run once: 5 runs done, checkpoints and features beside the store."""
    root = tmp_path_factory.mktemp("built")
    spec = root / "study.toml"
    spec.write_text(TINY.format(out=root / "study", steps=30))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRANSFERSCALE_CACHE", str(data_cache))
        result = run_study(*load_spec(spec), root / "study")
    assert result.failed == {} and len(result.done) == 5
    return root / "study"


@dataclass
class Study:
    dir: Path
    spec: Path

    def edit(self, old: str, new: str) -> None:
        text = self.spec.read_text()
        assert old in text, old
        self.spec.write_text(text.replace(old, new, 1))


@pytest.fixture
def study(built, tmp_path, data_cache, monkeypatch) -> Study:
    """A copy of the built study and its spec, for one case to break."""
    monkeypatch.setenv("TRANSFERSCALE_CACHE", str(data_cache))
    shutil.copytree(built, tmp_path / "study")
    spec = tmp_path / "study.toml"
    spec.write_text(TINY.format(out=tmp_path / "study", steps=30))
    return Study(tmp_path / "study", spec)


def rows(study_dir: Path) -> dict:
    """Every row of the store's tables, sorted; None when the file cannot be read as a database."""
    try:
        with sqlite3.connect(f"file:{study_dir / 'results.sqlite'}?mode=ro", uri=True) as conn:
            return {t: sorted(map(repr, conn.execute(f"SELECT * FROM {t}")))
                    for t in ("meta", "runs", "evaluations", "measurements")}
    except sqlite3.Error:
        return None


def files(study_dir: Path) -> dict:
    """sha256 of every file of the study but its lock and SQLite's transient -wal / -shm files."""
    return {str(p.relative_to(study_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(study_dir.rglob("*")) if p.is_file() and not p.name.endswith((".lock", "-wal", "-shm"))}


def measurements(study_dir: Path, where: str = "1", params: tuple = ()) -> set:
    """The measurement rows satisfying `where`, as tuples."""
    with sqlite3.connect(f"file:{study_dir / 'results.sqlite'}?mode=ro", uri=True) as conn:
        return set(conn.execute(f"SELECT * FROM measurements WHERE {where}", params))


def digest(study_dir: Path) -> tuple:
    return rows(study_dir), files(study_dir)


def results(study_dir: Path) -> dict:
    """What a failed run must not touch: the measurements and finished evaluations (a started run's row in
    `runs` says it was interrupted), and the checkpoints and features already written."""
    r = rows(study_dir)
    return {"measurements": r["measurements"], "evaluations": r["evaluations"],
            "files": {k: v for k, v in files(study_dir).items() if k != "results.sqlite"}}


def clean_failure(out, phrase: str, code: int = 2) -> None:
    """The command failed with `code`, said `phrase` in one error message, and printed no traceback."""
    assert out.exit_code == code, out.output
    assert out.exception is None or isinstance(out.exception, SystemExit), repr(out.exception)
    text = " ".join(out.output.split())  # rich wraps long lines
    assert phrase in text, text
    assert text.count("error:") <= 1, text  # never the same error twice (an interrupt is not an error)
    assert "Traceback" not in out.output


# ---- the table ----------------------------------------------------------------------------------------------


def edit(old, new):
    """A case: the spec with `old` replaced by `new`, run."""
    def make(s: Study):
        s.edit(old, new)
        return ["run", str(s.spec)]
    return make


def add_to_probe(line):
    return edit("[probe]\n", f"[probe]\n{line}\n")


def damage_store(how, *command):
    """A case: the store damaged by `how(path)`, then `command` run on the study (`run` runs its spec)."""
    def make(s: Study):
        how(s.dir / "results.sqlite")
        return ["run", str(s.spec)] if command == ("run",) else [*command, str(s.dir)]
    return make


def garbage(path):
    path.write_bytes(os.urandom(16384))


def truncated(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def pages_overwritten(path):
    data = bytearray(path.read_bytes())
    data[4096 * 2: 4096 * 4] = os.urandom(4096 * 2)  # b-tree pages past the header: the schema reads fine
    path.write_bytes(bytes(data))


def middle_pages_overwritten(path):
    data = bytearray(path.read_bytes())
    middle = len(data) // 4096 // 2
    data[4096 * (middle - 1): 4096 * (middle + 1)] = os.urandom(4096 * 2)  # the schema and header read fine
    path.write_bytes(bytes(data))


def emptied(path):
    path.write_bytes(b"")


def latin1(s: Study):
    s.spec.write_bytes(s.spec.read_bytes().replace(b'name = "tiny"', b'name = "tiny"\ndescription = "caf\xe9"'))
    return ["run", str(s.spec)]


def out_is_a_file(s: Study):
    (s.dir.parent / "afile").write_text("not a directory")
    return ["run", str(s.spec), "--out", str(s.dir.parent / "afile")]


def out_under_a_file(s: Study):
    (s.dir.parent / "afile").write_text("not a directory")
    return ["run", str(s.spec), "--out", str(s.dir.parent / "afile" / "study")]


def cut_model_file(s: Study):
    """A `file:` model whose checkpoint (one of the study's own) was copied only half-way."""
    whole = next((s.dir / "checkpoints").glob("*.pt")).read_bytes()
    cut = s.dir.parent / "cut.pt"
    cut.write_bytes(whole[: len(whole) // 2])
    s.edit('[[models]]\nfamily = "vit"', f'[[models]]\nsource = "file:{cut}"\n[[models]]\nfamily = "vit"')
    return ["run", str(s.spec)]


def fit_csv(*args):
    def make(s: Study):
        (s.dir.parent / "us.csv").write_text("model,top1\na,0.5\nb,0.6\nc,0.7\n")
        (s.dir.parent / "ds.csv").write_text("name,top1\na,0.3\nb,0.4\nc,0.45\n")
        return ["fit", *(str(s.dir.parent / a) if a.endswith(".csv") else a for a in args)]
    return make


CASES = [
    # spec: keys, names, values
    ("unknown key", add_to_probe("shotz = [1]"), "unknown key 'probe.shotz' in the study spec; did you mean 'shots'?"),
    ("unknown top-level key", edit('name = "tiny"', 'name = "tiny"\nmodles = 1'), "did you mean 'models'?"),
    ("typo'd family", edit('"vit"', '"vitt"'), "unknown model family 'vitt'; did you mean 'vit'?"),
    ("unknown size", edit('sizes = ["s"]', 'sizes = ["xl"]'), "unknown size 'xl' for family 'resnet'"),
    ("typo'd task", edit('tasks = ["fractals_heldout", "sk', 'tasks = ["fractals_heldot", "sk'),
     "unknown dataset 'fractals_heldot'; did you mean 'fractals_heldout'"),
    ("typo'd dataset option", edit("{ test_size = 200 }", "{ test_sise = 200 }"),
     "unknown option(s) ['test_sise'] for dataset 'sklearn_digits_shifted'; valid:"),
    ("typo'd upstream option", edit("{ classes = 20, heldout", "{ clases = 20, heldout"),
     "unknown option(s) ['clases'] for dataset 'fractals'"),
    ("typo'd upstream dataset", edit('dataset = "fractals"', 'dataset = "fractal"'), "did you mean 'fractals'"),
    ("zero steps", edit("steps = 30", "steps = 0"), "training.budgets[0].steps: Input should be greater than 0"),
    ("negative steps", edit("steps = 30", "steps = -5"), "steps: Input should be greater than 0 (got -5)"),
    ("data fraction 0", edit("data_fraction = 0.5", "data_fraction = 0"),
     "data_fraction: Input should be greater than 0"),
    ("data fraction 1.5", edit("data_fraction = 0.5", "data_fraction = 1.5"),
     "data_fraction: Input should be less than or equal to 1"),
    ("zero shots", edit("shots = [1, 5]", "shots = [0, 5]"), "shots must be positive integers"),
    ("more shots than a class has", edit("shots = [1, 5]", "shots = [1, 30]"),
     "has 25 training examples, fewer than the 30 the probe needs"),
    ("shots not a number", edit("shots = [1, 5]", 'shots = ["five"]'),
     "probe.shots[0]: Input should be a valid integer"),
    ("negative seed", edit("seeds = [0, 1]", "seeds = [-1]"), "seeds must be integers >= 0"),
    ("negative l2", add_to_probe("l2 = [-1.0]"), "l2 values must be finite and > 0"),
    ("unknown layers", add_to_probe('layers = "last"'), "probe.layers: Input should be 'all' or 'final'"),
    ("zero fine-tuning steps", edit("\nsteps = 10\n", "\nsteps = 0\n"),
     "finetune.steps: Input should be greater than 0"),
    ("fine-tuning task not downstream", edit('tasks = ["fractals_heldout"]\n', 'tasks = ["fashion_mnist"]\n'),
     "are not in downstream.tasks"),
    ("zero batch size", edit("checkpoint_every = 10", "checkpoint_every = 10\nbatch_size = 0"),
     "training.batch_size: Input should be greater than 0"),
    ("negative learning rate", edit("checkpoint_every = 10", "checkpoint_every = 10\nlr = -1"),
     "training.lr: Input should be greater than 0"),
    ("zero checkpoint interval", edit("checkpoint_every = 10", "checkpoint_every = 0"),
     "training.checkpoint_every: Input should be greater than 0"),
    ("warmup of the whole run", edit("checkpoint_every = 10", "checkpoint_every = 10\nwarmup_fraction = 1.0"),
     "warmup_fraction: Input should be less than 1"),
    ("shift too large", edit("checkpoint_every = 10", "checkpoint_every = 10\nmax_shift = 20"),
     "max_shift: Input should be less than or equal to 8"),
    ("snapshot at the end", edit("steps = 30 }", "steps = 30, snapshots = [1.0] }"), "strictly between 0 and 1"),
    ("no budgets", edit("budgets = [{ data_fraction = 0.5, steps = 30 }]", "budgets = []"),
     "no budgets for the resnet, vit models"),
    ("no tasks", edit('tasks = ["fractals_heldout", "sklearn_digits_shifted"]', "tasks = []"),
     "downstream.tasks: List should have at least 1 item"),
    ("held-out classes overlap the upstream",
     edit("fractals_heldout = { classes = 20", "fractals_heldout = { classes = 30"),
     "must equal upstream.options.classes = 20"),
    ("bad study name", edit('name = "tiny"', 'name = "a b"'), "name: String should match pattern"),
    ("typo'd executor", edit('name = "tiny"', 'name = "tiny"\nexecutor = "rey"'),
     "unknown executor 'rey'; did you mean 'ray'?"),
    ("typo'd protocol table", edit("[probe]", "[probx]"),
     "unknown key 'probx' in the study spec; did you mean 'probe'?"),
    ("missing model file", edit('[[models]]\nfamily = "vit"', '[[models]]\nsource = "file:/nonexistent.pt"\n'
                                '[[models]]\nfamily = "vit"'), "no checkpoint file at /nonexistent.pt"),
    ("truncated model file", cut_model_file,
     "cut.pt is not a readable torch checkpoint: it is cut short or damaged (File is not a zip file); save it again"),
    ("a model twice", edit('[[models]]\nfamily = "vit"', '[[models]]\nfamily = "resnet"\nsizes = ["s"]\n'
                           '[[models]]\nfamily = "vit"'), "have the same config; remove the duplicate from the spec"),
    ("not TOML", edit("[probe]", "[probe"), "is not valid TOML"),
    ("non-UTF-8 spec", latin1, "is not UTF-8 text (byte 0xe9 on line 3)"),
    ("missing spec", lambda s: ["run", str(s.dir.parent / "nothing.toml")], "no study spec at"),
    ("--quick without [quick]", lambda s: ["run", str(s.spec), "--quick"], "has no [quick] table"),
    ("--executor typo", lambda s: ["run", str(s.spec), "--executor", "rey"], "did you mean 'ray'?"),
    # files: the store, the output directory
    ("garbage results.sqlite, run", damage_store(garbage, "run"), "is damaged (it is not a SQLite database)"),
    ("garbage results.sqlite, status", damage_store(garbage, "status"), "Move it aside"),
    ("truncated results.sqlite, run", damage_store(truncated, "run"), "is damaged (it is cut short"),
    ("truncated results.sqlite, results", damage_store(truncated, "results"), "nothing was written to it"),
    ("truncated results.sqlite, fit", damage_store(truncated, "fit"), "is damaged"),
    ("overwritten pages, status", damage_store(pages_overwritten, "status"), "is damaged"),
    ("overwritten pages, run", damage_store(pages_overwritten, "run"), "is damaged"),
    ("empty results.sqlite, status", damage_store(emptied, "status"), "holds no study"),
    ("--out is a file", out_is_a_file, "is a file; choose another output directory"),
    ("--out under a file", out_under_a_file, "a file stands where a directory should be"),
    ("export into a missing directory", lambda s: ["results", str(s.dir), "-f", "csv", "-o",
                                                   str(s.dir.parent / "nodir" / "x.csv")],
     "cannot write the csv export"),
    ("results of no study", lambda s: ["results", str(s.dir.parent / "elsewhere")], "no results store at"),
    ("unknown export format", lambda s: ["results", str(s.dir), "-f", "xml"], "unknown format 'xml'"),
    # external tables (the percent, one-row and constant-column cases are tests/test_fit_tables.py's)
    ("fit: a missing column", fit_csv("--csv", "us.csv", "--us", "top5", "--ds", "top1"),
     "column 'top5' is not in the table; did you mean 'top1'?"),
    ("fit: a join key missing", fit_csv("--csv", "us.csv", "--us", "top1", "--join", "ds.csv", "--ds", "top1",
                                        "--on", "model"), "column 'model' is not in"),
    ("fit: no such CSV", fit_csv("--csv", "missing.csv", "--us", "top1", "--ds", "top1"), "no such CSV file"),
]


# Cases the command line turns into a message itself (an OSError around a file it writes).
CLI_CASES = [
    ("init into a missing directory", lambda s: ["init", str(s.dir.parent / "nodir" / "study.toml")],
     "No such file or directory"),
    ("fit -o into a missing directory", lambda s: ["fit", str(s.dir), "--n-bootstrap", "0", "-o",
                                                   str(s.dir.parent / "nodir" / "fits.csv")],
     "does not exist; create it or choose another -o"),
]


@pytest.mark.parametrize("make, phrase", [pytest.param(*c[1:], id=c[0]) for c in CASES]
                         + [pytest.param(*c[1:], id=c[0]) for c in CLI_CASES])
def test_bad_input_is_one_clear_error_and_changes_nothing(study, make, phrase):
    args = make(study)
    before = digest(study.dir)
    out = cli.invoke(app, args, terminal_width=200)
    clean_failure(out, phrase)
    assert digest(study.dir) == before  # the study's rows, checkpoints and features, and a damaged file's bytes
    if rows(study.dir) is not None:
        assert not list(study.dir.rglob("*.tmp"))


def test_table_has_at_least_30_cases():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


def test_a_model_file_is_refused_for_its_structure_and_a_legacy_one_let_through(tmp_path):
    import torch

    from transferscale.models.source import make_source

    state = {"w": torch.arange(4096.0)}
    legacy, flipped, text = tmp_path / "legacy.pt", tmp_path / "flipped.pt", tmp_path / "notes.pt"
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    torch.save(state, flipped)
    data = bytearray(flipped.read_bytes())
    at = data.find(torch.arange(4096.0)[1000:1002].numpy().tobytes())
    data[at] ^= 0xFF  # one weight's byte: the archive reads, torch.load too, the member's checksum fails
    flipped.write_bytes(bytes(data))
    text.write_text("not a checkpoint")
    make_source(f"file:{legacy}", {"model": "resnet18"})  # torch's old format: not refused
    with pytest.raises(TransferscaleError, match=r"flipped\.pt is not a readable torch checkpoint: it is damaged: "
                                                 r"\S+/data/0 in it fails its checksum; save it again"):
        make_source(f"file:{flipped}", {"model": "resnet18"})
    with pytest.raises(TransferscaleError, match="neither the zip archive torch.save writes nor"):
        make_source(f"file:{text}", {"model": "resnet18"})


def test_a_damaged_store_is_a_clear_error_in_a_real_process(study):
    """Exit code and stderr of the installed command itself, not of the test runner's capture."""
    garbage(study.dir / "results.sqlite")
    before = files(study.dir)
    proc = subprocess.run([sys.executable, "-m", "transferscale", "status", str(study.dir)], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "is damaged" in proc.stderr and "move it aside" in proc.stderr.lower()
    assert files(study.dir) == before


@pytest.mark.parametrize("command", [["fit", "--n-bootstrap", "0"], ["axes"], ["results"]],
                         ids=["fit", "axes", "results"])
def test_damage_first_met_by_a_query_is_the_stores_clear_error(study, monkeypatch, command):
    """A store larger than QUICK_CHECK_BYTES is opened by readers without a page check (here the limit is 0), so
    damage in its middle is first met by some query: the command still ends with the store's own message."""
    import transferscale.store as store_module

    monkeypatch.setattr(store_module, "QUICK_CHECK_BYTES", 0)
    middle_pages_overwritten(study.dir / "results.sqlite")
    before = digest(study.dir)
    out = cli.invoke(app, [command[0], str(study.dir), *command[1:]], terminal_width=300)
    clean_failure(out, f"error: the results store {study.dir / 'results.sqlite'} is damaged (database disk image is "
                       "malformed); nothing was written to it. Move it aside")
    assert digest(study.dir) == before


def test_only_a_malformed_database_is_called_damaged(study, monkeypatch):
    import transferscale.store as store_module
    from transferscale.cli import damaged_store_error

    monkeypatch.setattr(store_module, "QUICK_CHECK_BYTES", 0)
    middle_pages_overwritten(study.dir / "results.sqlite")
    store = Store(study.dir, create=False)  # opened outside a `with`: the error reaches the caller as SQLite's
    try:
        with pytest.raises(sqlite3.DatabaseError) as raw:
            store.conn.execute("SELECT * FROM measurement_rows").fetchall()
            store.conn.execute("SELECT * FROM run_codes").fetchall()
        with pytest.raises(sqlite3.OperationalError) as other:
            store.conn.execute("SELECT * FROM no_such_table")
    finally:
        store.close()
    assert str(damaged_store_error(raw.value)) == str(store._damaged(str(raw.value)))
    assert damaged_store_error(other.value) is None and damaged_store_error(ValueError("malformed")) is None


# ---- disk full, read-only, Ctrl-C -------------------------------------------------------------------------------


def fail_fsync_under(monkeypatch, part: str, code: int) -> list:
    """Make fsync of any file whose path contains `part` fail with errno `code`, as a full disk or a read-only
    mount makes the write before it (which a test cannot arrange on this machine: it runs as root, which
    ignores permission bits, on a disk it must not fill). Returns the paths refused."""
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc to tell which file is being written")
    real, refused = os.fsync, []

    def fsync(fd):
        target = os.readlink(f"/proc/self/fd/{fd}")
        if part in target:
            refused.append(target)
            raise OSError(code, os.strerror(code))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return refused


WRITE_FAULTS = [(errno.ENOSPC, "no space left on the device to write"),
                (errno.EROFS, "the file system is read-only"),
                (errno.EACCES, "permission denied on")]


@pytest.mark.parametrize("code, phrase", WRITE_FAULTS, ids=["ENOSPC", "EROFS", "EACCES"])
def test_a_checkpoint_the_disk_refuses_stops_the_study_and_keeps_what_was_done(study, monkeypatch, code, phrase):
    study.edit("budgets = [{ data_fraction = 0.5, steps = 30 }]",
               "budgets = [{ data_fraction = 0.5, steps = 30 }, { data_fraction = 0.5, steps = 20 }]")
    before = results(study.dir)
    refused = fail_fsync_under(monkeypatch, "/checkpoints/", code)
    out = cli.invoke(app, ["run", str(study.spec)], terminal_width=300)
    clean_failure(out, phrase)
    assert refused and "checkpoints/" in out.output
    assert not list(study.dir.rglob("*.tmp"))  # no half-written checkpoint left behind
    assert results(study.dir) == before
    if code == errno.ENOSPC:  # space freed: the same command finishes the study
        monkeypatch.undo()
        again = cli.invoke(app, ["run", str(study.spec)], terminal_width=300)
        assert again.exit_code == 0 and "2 run(s) finished" in again.output, again.output


def test_a_feature_file_the_disk_refuses_stops_the_study_and_keeps_what_was_done(study, monkeypatch):
    study.edit("{ test_size = 200 }", "{ test_size = 150 }")  # new test features for every run
    before = results(study.dir)
    refused = fail_fsync_under(monkeypatch, "/features/", errno.ENOSPC)
    out = cli.invoke(app, ["run", str(study.spec)], terminal_width=300)
    clean_failure(out, "no space left on the device to write")
    assert refused and "features/" in out.output
    assert not list(study.dir.rglob("*.tmp")) and not list(study.dir.rglob(".tmp-*"))
    assert results(study.dir) == before


def test_a_data_cache_that_cannot_be_written_costs_the_cache_not_the_study(tmp_path, caplog, monkeypatch):
    import numpy as np

    from transferscale.data.cache import cached
    from transferscale.data.dataset import Dataset

    x, y = np.zeros((4, 8, 8), np.uint8), np.arange(4) % 2
    built = Dataset("toy", x, y, x, y, ["a", "b"])
    fail_fsync_under(monkeypatch, str(tmp_path), errno.EROFS)
    got = cached(tmp_path, "toy", {}, "v1", lambda: built)
    assert got is built and "cannot write" in caplog.text and "TRANSFERSCALE_CACHE" in caplog.text
    assert list(tmp_path.iterdir()) == []  # neither a temporary file nor a half entry


def full_disk_error() -> sqlite3.OperationalError:
    """The error SQLite raises when the disk fills up mid-transaction (a page limit makes it here)."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (x)")
    conn.execute("PRAGMA max_page_count = 2")
    try:
        conn.executemany("INSERT INTO t VALUES (?)", [("x" * 100,)] * 1000)
    except sqlite3.OperationalError as err:
        assert err.sqlite_errorcode == sqlite3.SQLITE_FULL
        return err
    finally:
        conn.close()
    raise AssertionError("the page limit did not fill the database")


def test_a_full_disk_under_the_store_rolls_the_commit_back(study):
    with Store(study.dir, create=False) as store:
        (run_key,) = store.conn.execute("SELECT key FROM runs LIMIT 1").fetchone()
    before = rows(study.dir)
    big = [Measurement("fewshot_accuracy", "t", 0.5, shots=i, seed=0, layer=-1, l2=1.0) for i in range(20000)]
    with pytest.raises(TransferscaleError, match="no space left on the device to write the results store"):
        with Store(study.dir) as store:
            pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
            store.conn.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full from here on
            store.commit_run(run_key, big, [], params=None, train_seconds=0, eval_seconds=0)
    assert rows(study.dir) == before


def test_a_full_disk_while_the_runner_commits_stops_the_study_and_keeps_what_was_done(study, monkeypatch):
    study.edit("shots = [1, 5]", "shots = [1, 3]")  # every run owes a new probe; its features are cached
    before = results(study.dir)

    def commit_run(self, *args, **kwargs):
        raise full_disk_error()

    monkeypatch.setattr(Store, "commit_run", commit_run)
    out = cli.invoke(app, ["run", str(study.spec)], terminal_width=300)
    clean_failure(out, "no space left on the device to write the results store")
    assert results(study.dir) == before


def test_a_read_only_study_directory_is_a_clear_error(study, monkeypatch):
    """Simulated: the tests run as root, for whom chmod 0o555 changes nothing; the lock file is the first
    thing `run` writes, and refusing it is what a read-only directory does."""
    import transferscale.engine.runner as runner

    def locked_open(path, *args, **kwargs):
        if str(path).endswith(".lock"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return open(path, *args, **kwargs)

    monkeypatch.setattr(runner, "open", locked_open, raising=False)
    before = digest(study.dir)
    out = cli.invoke(app, ["run", str(study.spec)], terminal_width=300)
    clean_failure(out, "permission denied on")
    assert ".lock" in out.output and "--out" in out.output
    assert digest(study.dir) == before


def test_ctrl_c_mid_run_keeps_every_finished_run_and_the_next_run_finishes(study, monkeypatch):
    import transferscale.engine.executors as executors

    study.edit("shots = [1, 5]", "shots = [1, 3]")
    real, started = executors.execute_job, []

    def interrupted(job, ctx):
        started.append(job.run.name)
        if len(started) == 3:
            raise KeyboardInterrupt
        return real(job, ctx)

    monkeypatch.setattr(executors, "execute_job", interrupted)
    out = cli.invoke(app, ["run", str(study.spec)], terminal_width=300)
    clean_failure(out, "interrupted; run the same command again", code=130)
    finished = _keys(study.dir, started[:2])
    where = f"run IN ({', '.join('?' * len(finished))})"
    kept = measurements(study.dir, where, tuple(finished))
    monkeypatch.setattr(executors, "execute_job", real)
    again = cli.invoke(app, ["run", str(study.spec)], terminal_width=300)
    assert again.exit_code == 0 and "3 run(s) finished, 2 already done" in again.output, again.output
    assert kept and measurements(study.dir, where, tuple(finished)) == kept  # finished before Ctrl-C: untouched
    with Store(study.dir, create=False) as store:
        assert set(store.run_status().values()) == {"done"}
        shots = {s for (s,) in store.conn.execute("SELECT DISTINCT shots FROM measurements WHERE metric = ?",
                                                  ("fewshot_accuracy",))}
    assert shots == {1, 3}
    assert not list(study.dir.rglob("*.tmp"))


def _keys(study_dir: Path, names: list[str]) -> list[str]:
    with Store(study_dir, create=False) as store:
        frame = store.runs_frame()
    return list(frame[frame.name.isin(names)].key)


def test_a_checkpoint_write_that_fails_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    import torch

    from transferscale.pretrain import load_checkpoint, save_checkpoint

    path = tmp_path / "checkpoints" / "run.pt"
    save_checkpoint(path, {"w": torch.arange(3.0), "step": 1})
    monkeypatch.setattr("transferscale.files.os.fsync", _raise(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(OSError) as err:
        save_checkpoint(path, {"w": torch.arange(3.0), "step": 2})
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(path)
    monkeypatch.setattr("transferscale.files.os.fsync", _raise(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"w": torch.arange(3.0), "step": 3})
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1  # the last good checkpoint, still matching its checksum
    assert sorted(p.name for p in path.parent.iterdir()) == ["run.pt", "run.pt.sha256"]


def _raise(err: BaseException):
    def fail(*args, **kwargs):
        raise err
    return fail


def test_garbage_in_the_feature_cache_is_recomputed_never_trusted(study, caplog):
    one_shot = "metric = 'fewshot_accuracy' AND shots = 1"
    before = measurements(study.dir, one_shot)
    for path in (study.dir / "features").glob("*.npz"):
        path.write_bytes(os.urandom(path.stat().st_size))
    study.edit("shots = [1, 5]", "shots = [1, 3]")
    out = cli.invoke(app, ["run", str(study.spec)], terminal_width=300)
    assert out.exit_code == 0 and "5 run(s) finished" in out.output, out.output
    assert "discarding" in caplog.text
    # every probe is scored on its own: the 1-shot rows from recomputed features are the ones stored before
    assert before and measurements(study.dir, one_shot) == before


# ---- a failure the spec caused does not outlive the spec ----------------------------------------------------


def test_a_failure_the_spec_caused_is_retried_once_the_spec_changes(study):
    original = study.spec.read_text()
    before = rows(study.dir)["measurements"]
    study.edit("\nsteps = 10\n", "\nsteps = 10\nlr = 1e30\n")  # fine-tuning diverges: the resnets fail
    failed = run_study(*load_spec(study.spec), study.dir)
    assert sorted(failed.failed) == ["resnet-s-d0.5-s30", "resnet-s-random"]
    assert all("diverged" in reason for reason in failed.failed.values())
    same = run_study(*load_spec(study.spec), study.dir)  # the same spec: the same failure, not tried again
    assert same.done == [] and sorted(same.left_failed) == sorted(failed.failed)
    assert same.skipped == 5  # the 3 done and the 2 left failed
    study.spec.write_text(original)  # the mistake fixed: the failed runs are tried again, unasked
    fixed = run_study(*load_spec(study.spec), study.dir)
    assert sorted(fixed.done) == sorted(failed.failed) and fixed.failed == {} and fixed.left_failed == {}
    with Store(study.dir, create=False) as store:
        assert set(store.run_status().values()) == {"done"}
    assert rows(study.dir)["measurements"] == before  # the fine-tuning rows of the fixed spec, as they were


def test_a_truncated_checkpoint_is_trained_again_to_the_same_bytes(study):
    """A finished run's checkpoint cut short: the next evaluation it owes retrains it (never trusting the
    file), to the very same weights, so its features come from the cache and its numbers are unchanged."""
    with Store(study.dir, create=False) as store:
        (key,) = store.conn.execute("SELECT key FROM runs WHERE name = 'resnet-s-d0.5-s30'").fetchone()
    ckpt = study.dir / "checkpoints" / f"{key}.pt"
    good = ckpt.read_bytes()
    ckpt.write_bytes(good[: len(good) // 2])
    one_shot = "metric = 'fewshot_accuracy' AND shots = 1 AND run = ?"
    before = measurements(study.dir, one_shot, (key,))
    study.edit("shots = [1, 5]", "shots = [1, 3]")
    out = cli.invoke(app, ["run", str(study.spec)], terminal_width=300)
    assert out.exit_code == 0 and "5 run(s) finished" in out.output, out.output
    assert ckpt.read_bytes() == good
    assert before and measurements(study.dir, one_shot, (key,)) == before


def test_run_does_not_call_a_run_left_failed_already_done(study):
    study.edit("\nsteps = 10\n", "\nsteps = 10\nlr = 1e30\n")  # fine-tuning diverges: the two resnets fail
    assert cli.invoke(app, ["run", str(study.spec)]).exit_code == 0
    again = cli.invoke(app, ["run", str(study.spec)], terminal_width=300)
    assert again.exit_code == 0
    assert "3 already done" in again.output and "2 failed before" in again.output, again.output
