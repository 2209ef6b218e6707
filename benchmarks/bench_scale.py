"""Results at the paper's scale: `transferscale results`, `fit` and `report` on synthetic stores of 500 and
5,000 runs (20 tasks x 4 shots x 3 seeds x 6 layers: 1,440 rows a run), each command in a fresh process.

For each size it writes the store through `Store.commit_runs` (100 runs a transaction), prints its size on
disk (the database and its WAL), then runs every
command in its own subprocess and records wall time and peak memory: the largest process's peak RSS
(os.wait4's rusage: the child and the workers it waited for) and, sampled every 50 ms, the peak of the
summed PSS of the whole process tree (what a pool of workers takes together). The floor is a fresh
process that runs the SQL aggregation the report needs (its seed groups of the final layer and of the
blocks at the largest shot count, the upstream, baseline and run rows) and nothing else.

Targets, printed as met / MISSED:
  - peak memory of results, fit, report under 1 GB at the largest size;
  - time grows at most linearly from the smallest size to the largest (ratio <= size ratio);
  - report at the largest size at most 5x the time of the SQL floor.

    python benchmarks/bench_scale.py [--sizes 500 5000] [--jobs N] [--keep DIR] [--before OLD_SRC]

--before OLD_SRC runs the same commands with another checkout's sources (e.g. `git archive HEAD src | tar
-x -C /tmp/old`, then --before /tmp/old/src) on the smallest store, for a before-and-after table; it
skips sizes above --before-max-runs (default 500: the old readers hold the whole table, several GB).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
GB = 1024**3
COMMANDS = ("results", "fit", "report")

FLOOR = r"""
import sqlite3, sys, time
t = time.perf_counter()
conn = sqlite3.connect(sys.argv[1])
if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'measurement_rows'").fetchone():  # coded store
    code = dict(conn.execute("SELECT name, code FROM name_codes"))
    few, up = code.get("fewshot_accuracy"), code.get("upstream_accuracy")
    rows = "measurement_rows"
    runs = "runs r CROSS JOIN run_codes k ON k.key = r.key CROSS JOIN measurement_rows m ON m.run = k.code"
    count = "(SELECT COUNT(*) FROM measurement_rows m WHERE m.run = (SELECT code FROM run_codes WHERE key = r.key))"
    names = len(conn.execute("SELECT * FROM run_codes").fetchall()) + len(code)
else:  # the layout with strings in every row
    few, up, rows, names = "'fewshot_accuracy'", "'upstream_accuracy'", "measurements", 0
    pk = next(r[1] for r in conn.execute("PRAGMA index_list(measurements)") if r[3] == "pk")
    runs = f"runs r CROSS JOIN measurements m INDEXED BY {pk} ON r.key = m.run"
    count = "(SELECT COUNT(*) FROM measurements m WHERE m.run = r.key)"
f = f"m.metric = {few}"
first = f"(SELECT run FROM {rows} LIMIT 1)"
seeds = [s for (s,) in conn.execute(f"SELECT DISTINCT seed FROM {rows} WHERE run = {first} AND metric = {few}")]
cols = ", ".join(f"MAX(CASE WHEN m.seed = {s} THEN m.value END)" for s in seeds)
group = (f"SELECT m.run, m.task, m.shots, m.layer, COUNT(*), MIN(m.depth), MAX(m.depth), {cols} FROM {rows} m "
         "WHERE {} GROUP BY m.run, m.task, m.shots, m.layer")
n = names + len(conn.execute(group.format(f + " AND m.layer = -1")).fetchall())
(top,) = conn.execute(f"SELECT MAX(shots) FROM {rows} WHERE metric = {few} AND layer = -1").fetchone()
blocks = [b for (b,) in conn.execute(f"SELECT DISTINCT layer FROM {rows} WHERE run = {first} AND layer >= 0")]
at_top = f" AND m.layer IN ({','.join(map(str, blocks))}) AND m.shots = {top}"
n += len(conn.execute(group.format(f + at_top)).fetchall())
n += len(conn.execute(f"SELECT m.* FROM {rows} m WHERE m.metric = {up}").fetchall())
n += len(conn.execute(f"SELECT m.* FROM {runs} WHERE {f} AND m.layer = -1 AND r.kind IN ('random_init', 'pixels', "
                      "'words')").fetchall())
n += len(conn.execute(f"SELECT key, name, kind, family, size, {count} FROM runs r").fetchall())
print(f"floor rows {n} in {time.perf_counter() - t:.2f} s")
"""

WRITE = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from _synthetic_store import write_synthetic_store
write_synthetic_store(Path(sys.argv[2]), int(sys.argv[3]))
"""


def measure(cmd: list[str], env: dict | None = None, out=subprocess.DEVNULL) -> dict:
    """Run `cmd` in a fresh process: wall seconds, CPU seconds (user + system, the process and the workers it
    waited for: what a busy machine's wall time hides), the largest process's peak RSS, the tree's peak PSS."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, env=env)
    peak = {"pss": 0}
    done = threading.Event()

    def sample():
        while not done.wait(0.05):
            peak["pss"] = max(peak["pss"], _tree_pss(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{err[-3000:]}")
    return {"s": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss": usage.ru_maxrss * 1024, "pss": peak["pss"],
            "stderr": err}


def _tree_pss(pid: int) -> int:
    """Summed PSS (bytes) of a process and its descendants, from /proc (0 where it cannot be read)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                total += next(int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:"))
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (OSError, StopIteration, ValueError):
            continue
    return total


def command(name: str, study: Path, work: Path, jobs: int | None) -> list[str]:
    base = [PYTHON, "-m", "transferscale", name, str(study)]
    extra = {"results": [],
             "fit": ["-o", str(work / "fits.csv")],
             "report": ["-o", str(work / "report.html")]}[name]
    if jobs and name in ("fit", "report"):
        extra += ["--jobs", str(jobs)]
    return base + extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 5000])
    parser.add_argument("--jobs", type=int, default=None, help="--jobs for fit and report (default: theirs)")
    parser.add_argument("--keep", type=Path, help="keep the stores here (and reuse them when present)")
    parser.add_argument("--before", type=Path, help="another checkout's src/ to run the same commands with")
    parser.add_argument("--before-max-runs", type=int, default=500)
    args = parser.parse_args()

    rows, before, disk = [], {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        for n in args.sizes:
            study = root / f"synthetic-{n}"
            if not (study / "results.sqlite").is_file():
                w = measure([PYTHON, "-c", WRITE, str(HERE), str(study), str(n)])
                rows.append((n, "write (commit)", w))
            disk[n] = store_bytes(study)
            print(f"{n} runs: {disk[n] / 1e6:.0f} MB store", flush=True)
            work = Path(tempfile.mkdtemp(dir=tmp))
            rows.append((n, "floor (SQL)", measure([PYTHON, "-c", FLOOR, str(study / "results.sqlite")])))
            for name in COMMANDS:
                rows.append((n, name, measure(command(name, study, work, args.jobs))))
                print(f"  {name}: {rows[-1][2]['s']:.1f} s", flush=True)
            export = ["results", str(study), "-f", "parquet", "-o", str(work / "r.parquet")]
            rows.append((n, "results --format parquet", measure([PYTHON, "-m", "transferscale", *export])))
            if args.before and n <= args.before_max_runs:
                env = {**os.environ, "PYTHONPATH": str(args.before)}
                for name in COMMANDS:
                    before[(n, name)] = measure(command(name, study, work, None), env=env)
                    print(f"  before {name}: {before[(n, name)]['s']:.1f} s", flush=True)
    _print(rows, before, args.sizes, disk)


def store_bytes(study: Path) -> int:
    """The store's size on disk: the database file and its write-ahead log, if any."""
    return sum(p.stat().st_size for p in (study / "results.sqlite", study / "results.sqlite-wal") if p.is_file())


def _print(rows, before, sizes, disk) -> None:
    print()
    print(f"{'runs':>5}  {'step':<26}{'wall s':>8}{'CPU s':>8}{'peak RSS MB':>13}{'tree PSS MB':>13}"
          f"{'before s':>10}{'before RSS MB':>15}")
    for n, name, r in rows:
        b = before.get((n, name))
        old = f"{b['s']:>10.1f}{b['rss'] / 2**20:>15.0f}" if b else ""
        print(f"{n:>5}  {name:<26}{r['s']:>8.1f}{r['cpu']:>8.1f}{r['rss'] / 2**20:>13.0f}{r['pss'] / 2**20:>13.0f}"
              f"{old}")
    table = {(n, name): r for n, name, r in rows}
    small, large = min(sizes), max(sizes)
    print()
    for n in sizes:
        print(f"store   at {n} runs: {disk[n] / 1e6:7.0f} MB on disk ({disk[n] / n / 1e3:.0f} kB a run)")
    verdict = lambda ok: "met" if ok else "MISSED"  # noqa: E731
    for name in COMMANDS:
        r = table[(large, name)]
        mem = max(r["rss"], r["pss"])
        print(f"memory  {name:<8} at {large} runs: {mem / 2**20:6.0f} MB (under 1024 MB)   {verdict(mem < GB)}")
    if small != large:
        for name in COMMANDS:
            ratio = table[(large, name)]["s"] / table[(small, name)]["s"]
            limit = large / small
            print(f"time    {name:<8} {small} -> {large} runs: {ratio:5.1f}x (at most {limit:.0f}x)   "
                  f"{verdict(ratio <= limit)}")
    floor = table[(large, "floor (SQL)")]["s"]
    report = table[(large, "report")]["s"]
    print(f"report  at {large} runs: {report:.1f} s = {report / floor:.1f}x the SQL floor ({floor:.1f} s; "
          f"at most 5x)   {verdict(report <= 5 * floor)}")


if __name__ == "__main__":
    main()
