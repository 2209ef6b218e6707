"""Soak test: the quick study survives kill -9 of its driver, and of its Ray workers, with nothing lost or doubled.

Phase "driver" (local executor). `transferscale run --quick` runs once, uninterrupted, into a reference
directory. Then the same command runs into a second directory and is killed with SIGKILL (its whole process
group) at `--kills` random moments, and started again after each kill, until the study finishes. A few kills
(15%) are aimed at the start-up (until the first job starts: imports, the plan, the store); the rest at
points drawn uniformly over the reference run's timeline (each run's end, in seconds after it printed its
plan), up to the second-last run's end so that the last kill still finds work to interrupt. Each attempt
tracks where it is on that timeline from the runs it finds done and the ends it prints, so the kills spread
over the whole study. Each kill is classified from what it left behind: start-up (no job of the attempt had
started), between runs, training (the running run's checkpoint is not its finished model; the first loading
of the data happens in the first job and counts here) or evaluation.

Phase "ray". The quick study pinned to one thread per job (an `[executor]` table with num_cpus = 1, so that
Ray's rows are the local executor's bit for bit) runs once under the local executor as its reference, then
once with `--executor ray` (a local Ray instance started by that driver), during which `--worker-kills` Ray
worker processes running a transferscale job are killed with SIGKILL at random moments. Workers are found as
descendants of the driver this script started whose process title is `ray::<run name>`; no job is killed more
than `max_retries` times, so Ray must retry each one and the study must finish without a failed run.

Checks, for each phase, against its reference: the driver's last attempt exits 0; `read_results` gives the
same rows (sorted by run, metric, task, shots, seed, layer, l2; every column compared exactly); no duplicate
keys; the runs and evaluations tables hold the reference's runs and evaluations, every run `done` (none left
`running` or `failed`); no `*.tmp` file under checkpoints/ or features/; every kill landed. Phase "driver"
also checks that a run found finished at a kill is never run again (its `finished` time is unchanged), and
that each resume reports as already done the runs the store held done when it was killed. The script exits
1 when any check fails.

    python benchmarks/soak.py [--kills 20] [--worker-kills 5] [--seed 0] [--only driver|ray] [--keep]
                              [--root DIR] [--cache DIR]

Everything goes to a fresh temporary directory under /tmp (removed at the end unless --keep or --root);
the generated datasets are cached there once (or in --cache) and shared by every study. On a loaded 2-core
machine (load average 4) the default 20 + 5 kills took 7.5 minutes.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

KEYS = ["run", "metric", "task", "shots", "seed", "layer", "l2"]
PLANNED = re.compile(r"(\d+) runs x \d+ tasks planned; (\d+) already done, (\d+) to do")
ENDED = re.compile(r"^\s+(?:done|failed) (\S+) \(\d+ s\)", re.MULTILINE)  # a run's end, as the CLI prints it
FINISHED = re.compile(r"done in \d+ s: (\d+) run\(s\) finished, (\d+) already done, (\d+) failed")
STARTUP_SHARE = 0.15  # of the driver kills, this share is aimed at the start-up
POLL_S = 0.05
PHASES = ("start-up", "between runs", "training", "evaluation")


def say(text: str) -> None:
    print(text, flush=True)


# ---- the study and its processes ----------------------------------------------------------------------------


@dataclass
class Study:
    """A spec (None: the embedded default) with `--quick`, its plan, and where the studies go."""

    spec_path: Path | None
    root: Path
    env: dict[str, str]
    runs: dict[str, Any] = field(default_factory=dict)  # key -> plan Run
    max_retries: int = 2

    def __post_init__(self) -> None:
        from transferscale.plan import make_plan
        from transferscale.spec import load_spec

        spec, _ = load_spec(self.spec_path, quick=True)
        self.spec = spec
        self.plan = make_plan(spec)
        self.runs = {run.key: run for run in self.plan.runs}
        self.max_retries = spec.executor.max_retries

    def command(self, out: Path, *extra: str) -> list[str]:
        spec = [str(self.spec_path)] if self.spec_path else []
        return [sys.executable, "-m", "transferscale", "run", *spec, "--quick", "--out", str(out), *extra]

    def start(self, out: Path, log: Path, *extra: str) -> subprocess.Popen:
        """The driver, in a session (and process group) of its own, its output to `log`."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as fh:
            return subprocess.Popen(self.command(out, *extra), stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=self.root, env=self.env, start_new_session=True)

    def warm_cache(self, cache: Path) -> None:
        """Generate every dataset the study reads into the shared cache, so no timed run pays for it."""
        from transferscale.engine.context import JobContext

        ctx = JobContext(self.spec, self.root / "warm-up", cache)
        ctx.upstream()
        for task in self.plan.tasks:
            ctx.dataset(task)

    def phase_of(self, out: Path, key: str | None) -> str:
        """'training' when the run still has training to do (its checkpoint is not the finished model),
        'evaluation' otherwise (a finished checkpoint, a snapshot the full run saved, a baseline)."""
        from transferscale.engine.context import JobContext
        from transferscale.pretrain import load_checkpoint

        run = self.runs.get(key or "")
        if run is None:
            return "between runs"
        if run.kind != "trained":
            return "evaluation"
        state = load_checkpoint(JobContext(self.spec, out).checkpoint_path(run))
        done = state is not None and state.get("complete") and state.get("step") == run.config["training"]["steps"]
        return "evaluation" if done else "training"


def read_log(log: Path) -> str:
    try:
        return log.read_text(errors="replace")
    except FileNotFoundError:
        return ""


@dataclass
class Through:
    """An uninterrupted driver's run: exit status, wall seconds, seconds until it printed its plan and until
    its first job started, and each run's end (its 'done' line) in seconds after the plan."""

    rc: int
    wall: float
    planned: float
    first_job: float
    timeline: dict[str, float]


def run_through(study: Study, out: Path, log: Path, *extra: str) -> Through:
    """Run a driver to its end."""
    t0, epoch0 = time.perf_counter(), time.time()
    proc = study.start(out, log, *extra)
    planned, timeline = None, {}
    while proc.poll() is None:
        text, now = read_log(log), time.perf_counter()
        if planned is None and PLANNED.search(text):
            planned = now - t0
        for name in ENDED.findall(text):
            timeline.setdefault(name, now - t0 - (planned or 0.0))
        time.sleep(POLL_S)
    wall = time.perf_counter() - t0
    planned = wall if planned is None else planned
    for name in ENDED.findall(read_log(log)):
        timeline.setdefault(name, wall - planned)
    first = query(out, "SELECT MIN(started) FROM runs")
    first_job = first[0][0] - epoch0 if first and first[0][0] is not None else planned
    return Through(proc.returncode, wall, planned, first_job, timeline)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the driver's process group (the driver and anything it started in it), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, session id), from /proc."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        out[int(entry)] = (int(fields[1]), int(fields[3]))
    return out


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for child, (parent, _) in processes().items():
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def busy_workers(driver: int, names: set[str]) -> dict[int, str]:
    """The Ray workers under `driver` running a job of the study: pid -> run name (from `ray::NAME`)."""
    out = {}
    for pid in descendants(driver):
        text = title(pid)
        if text.startswith("ray::") and text[5:].split(" ")[0] in names:
            out[pid] = text[5:].split(" ")[0]
    return out


def reap_session(driver: int, grace_s: float = 10.0) -> list[int]:
    """Kill, by pid, whatever is left of the session this script started for `driver` once `grace_s` have
    passed (Ray takes a moment to stop its processes); their pids."""
    deadline = time.monotonic() + grace_s
    while (left := [pid for pid, (_, sid) in processes().items() if sid == driver]) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


# ---- reading a study ------------------------------------------------------------------------------------


def query(out: Path, sql: str) -> list[tuple]:
    path = out / "results.sqlite"
    if not path.is_file():
        return []
    conn = sqlite3.connect(path, timeout=30)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:  # no tables yet
        return []
    finally:
        conn.close()


def done_runs(out: Path) -> dict[str, float]:
    return dict(query(out, "SELECT key, finished FROM runs WHERE status = 'done'"))


def table(out: Path) -> pd.DataFrame:
    from transferscale.store import read_results

    return read_results(out).sort_values(KEYS).reset_index(drop=True)


def tmp_files(out: Path) -> list[str]:
    found = []
    for sub in ("checkpoints", "features"):
        base = out / sub
        if base.is_dir():
            found += [str(p.relative_to(out)) for p in base.rglob("*") if p.name.endswith(".tmp")
                      or p.name.startswith(".tmp-")]
    return sorted(found)


def compare(out: Path, reference: Path) -> dict[str, Any]:
    """The checks every phase shares, of `out` against `reference`."""
    import pandas as pd

    got, want = table(out), table(reference)
    try:
        pd.testing.assert_frame_equal(got, want, check_exact=True)
        identical, why = True, ""
    except AssertionError as err:
        identical, why = False, str(err).strip().splitlines()[0:6]
    runs = query(out, "SELECT key, name, status FROM runs")
    status = Counter(s for _, _, s in runs)
    want_runs = {k for (k,) in query(reference, "SELECT key FROM runs WHERE status = 'done'")}
    evals = {k for (k,) in query(out, "SELECT key FROM evaluations")}
    want_evals = {k for (k,) in query(reference, "SELECT key FROM evaluations")}
    return {
        "rows": len(got), "reference rows": len(want), "identical": identical, "difference": why,
        "duplicates": int(got.duplicated(KEYS).sum()),
        "running": status.get("running", 0), "failed": status.get("failed", 0),
        "runs": len(runs), "missing runs": len(want_runs - {k for k, _, _ in runs}),
        "extra runs": len({k for k, _, _ in runs} - want_runs),
        "missing evaluations": len(want_evals - evals), "extra evaluations": len(evals - want_evals),
        "tmp files": tmp_files(out),
    }


# ---- phase: kill the driver -----------------------------------------------------------------------------


@dataclass
class Kill:
    attempt: int
    aim: str  # 'start-up' or 'work'
    after_s: float  # since the attempt's start
    phase: str = ""
    run: str = ""
    done_runs: int = 0


def driver_phase(study: Study, root: Path, kills: int, rng: random.Random) -> dict[str, Any]:
    """Kill the driver `kills` times, resuming after each, then compare with an uninterrupted run.

    Where the kills land: the reference run gives a timeline, each run's end in seconds after the start-up.
    The kills not aimed at the start-up are aimed at points drawn uniformly over that timeline. An attempt
    starts at the timeline position of the last run the store holds done, counts its seconds after its own
    start-up as progress, and jumps to a run's position when it prints that run's end; it is killed when it
    reaches its point (so a restart's overhead and a resumed run's head start even out run by run)."""
    reference = root / "reference"
    say(f"[driver] reference run: {' '.join(study.command(reference))}")
    ref = run_through(study, reference, root / "logs" / "reference.log")
    if ref.rc != 0:
        raise SystemExit(f"the reference run failed (exit {ref.rc}); see {root / 'logs' / 'reference.log'}")
    say(f"[driver] reference: {ref.wall:.1f} s (its plan after {ref.planned:.1f} s, its first job started after "
        f"{ref.first_job:.1f} s)")
    key_of = {run.name: key for key, run in study.runs.items()}
    position = {key_of[name]: t for name, t in ref.timeline.items()}  # run key -> where it ends on the timeline
    # up to the second-last run's end: a kill aimed at the last run could find the study finished
    ends = sorted(position.values())
    work = ends[-2] if len(ends) > 1 else max(ends, default=1.0)
    startup_kills = set(rng.sample(range(kills), round(kills * STARTUP_SHARE)))
    points = iter(sorted(rng.uniform(0, work) for _ in range(kills - len(startup_kills))))

    out = root / "killed"
    t_phase = time.perf_counter()
    done_at_kill: dict[str, float] = {}
    landed: list[Kill] = []
    startups: list[float] = []
    resume_mismatch: list[str] = []
    attempt, rc = 0, -1
    while True:
        attempt += 1
        log = root / "logs" / f"driver-{attempt:02d}.log"
        killing = len(landed) < kills
        aim = "start-up" if len(landed) in startup_kills else "work"
        target = rng.uniform(0.05, ref.first_job) if aim == "start-up" else next(points, 0.0)
        before = done_runs(out)
        at = max((position.get(k, 0.0) for k in before), default=0.0)  # the timeline position resumed from
        if killing and aim == "work" and target <= at:  # already past its point: somewhere in the next run
            target = min(at + rng.uniform(0, work / max(kills, 1)), max(work, at))
        t0, epoch0 = time.perf_counter(), time.time()
        proc = study.start(out, log)
        startup, anchor, ended = None, 0.0, 0
        while proc.poll() is None:
            now = time.perf_counter()
            text = read_log(log)
            if startup is None and (line := PLANNED.search(text)):
                startup, anchor = now - t0, now
                startups.append(startup)
                if int(line.group(2)) != len(before):
                    resume_mismatch.append(f"attempt {attempt}: says {line.group(2)} already done, the store "
                                           f"held {len(before)} done runs")
            names = ENDED.findall(text)
            if len(names) > ended:
                at, anchor, ended = max(at, *(position.get(key_of.get(n, ""), 0.0) for n in names)), now, len(names)
            if killing and aim == "start-up" and now - t0 >= target:
                break
            if killing and aim == "work" and startup is not None and at + (now - anchor) >= target:
                break
            time.sleep(POLL_S)
        if proc.poll() is not None:  # it finished (or failed) before its kill
            rc = proc.returncode
            break
        kill_group(proc)
        kill = Kill(attempt, aim, time.perf_counter() - t0)
        running = query(out, f"SELECT key, name FROM runs WHERE status = 'running' AND started >= {epoch0 - 1}")
        if startup is None or (not running and not ENDED.search(read_log(log))):
            kill.phase = "start-up"  # no job of this attempt had started yet
        else:
            key = running[-1][0] if running else None
            kill.phase, kill.run = study.phase_of(out, key), running[-1][1] if running else ""
        finished = done_runs(out)
        kill.done_runs = len(finished)
        for key, t in finished.items():
            done_at_kill.setdefault(key, t)
        landed.append(kill)
        say(f"[driver] kill {len(landed):2d}/{kills} (aimed at {aim} {target:5.1f} s) {kill.after_s:5.1f} s into "
            f"attempt {attempt}: {kill.phase}{' of ' + kill.run if kill.run else ''}; {kill.done_runs} runs done")
    wall = time.perf_counter() - t_phase
    say(f"[driver] finished on attempt {attempt} (exit {rc}) after {wall:.0f} s")
    result = compare(out, reference)
    final = done_runs(out)
    result.update({
        "kills": len(landed), "kills asked": kills, "resumes": attempt - 1, "exit": rc,
        "phases": Counter(k.phase for k in landed), "wall": wall, "reference wall": ref.wall,
        "redone": sorted(study.runs[k].name for k, t in done_at_kill.items() if final.get(k) != t),
        "resume mismatch": resume_mismatch, "start-up mean": sum(startups) / max(len(startups), 1),
        "done runs at kills": [k.done_runs for k in landed],
    })
    return result


# ---- phase: kill Ray workers ----------------------------------------------------------------------------


def ray_phase(study: Study, root: Path, kills: int, rng: random.Random) -> dict[str, Any]:
    reference = root / "reference-1thread"
    say(f"[ray] reference run (local, 1 thread): {' '.join(study.command(reference))}")
    ref = run_through(study, reference, root / "logs" / "reference-1thread.log")
    if ref.rc != 0:
        raise SystemExit(f"the 1-thread reference run failed (exit {ref.rc}); see the log in {root / 'logs'}")
    say(f"[ray] reference: {ref.wall:.1f} s (its first job started after {ref.first_job:.1f} s)")
    # two workers share the work (the long jobs first): aim the kills over what that leaves, about 0.6 of it
    span = max(0.6 * (ref.wall - ref.first_job), 5.0)
    points = sorted(rng.uniform(0, span) for _ in range(kills))
    names = {run.name for run in study.plan.runs}
    out, log = root / "ray", root / "logs" / "ray.log"
    say(f"[ray] killed run: {' '.join(study.command(out, '--executor', 'ray'))}")
    t0 = time.perf_counter()
    proc = study.start(out, log, "--executor", "ray")
    per_job: Counter[str] = Counter()
    landed: list[Kill] = []
    t_first = None
    try:
        while proc.poll() is None and len(landed) < kills:
            busy = busy_workers(proc.pid, names)
            eligible = {pid: name for pid, name in busy.items() if per_job[name] < study.max_retries}
            now = time.perf_counter()
            if t_first is None and busy:
                t_first = now
            if t_first is not None and eligible and now - t_first >= points[len(landed)]:
                pid = rng.choice(sorted(eligible))
                name = eligible[pid]
                if title(pid).startswith(f"ray::{name}"):  # still that job's worker
                    os.kill(pid, signal.SIGKILL)
                    per_job[name] += 1
                    key = next(k for k, r in study.runs.items() if r.name == name)
                    kill = Kill(0, "work", now - t0, study.phase_of(out, key), name)
                    landed.append(kill)
                    say(f"[ray] kill {len(landed)}/{kills} {kill.after_s:5.1f} s into the run: worker {pid}, "
                        f"{kill.phase} of {name} (that job's kill {per_job[name]})")
            time.sleep(POLL_S)
        proc.wait()
    finally:
        if proc.poll() is None:
            kill_group(proc)
        left = reap_session(proc.pid)
    wall = time.perf_counter() - t0
    text = log.read_text(errors="replace")
    summary = FINISHED.search(text)
    say(f"[ray] finished (exit {proc.returncode}) after {wall:.0f} s: {summary.group(0) if summary else '?'}")
    result = compare(out, reference)
    result.update({
        "kills": len(landed), "kills asked": kills, "exit": proc.returncode, "wall": wall,
        "reference wall": ref.wall, "phases": Counter(k.phase for k in landed),
        "jobs killed": dict(per_job), "driver says failed": int(summary.group(3)) if summary else -1,
        "left over processes": left,
    })
    return result


# ---- the summary ----------------------------------------------------------------------------------------


def checks(name: str, r: dict[str, Any]) -> list[str]:
    """The failed checks of one phase's result."""
    bad = []
    if r["exit"] != 0:
        bad.append(f"{name}: the last driver exited {r['exit']}")
    if r["kills"] != r["kills asked"]:
        bad.append(f"{name}: only {r['kills']} of {r['kills asked']} kills landed before the study finished")
    if not r["identical"]:
        bad.append(f"{name}: rows differ from the reference: {r['difference']}")
    for k in ("duplicates", "running", "failed", "missing runs", "extra runs", "missing evaluations",
              "extra evaluations"):
        if r[k]:
            bad.append(f"{name}: {k}: {r[k]}")
    if r["tmp files"]:
        bad.append(f"{name}: temporary files left: {', '.join(r['tmp files'])}")
    for k in ("redone", "resume mismatch", "left over processes"):
        if r.get(k):
            bad.append(f"{name}: {k}: {r[k]}")
    if r.get("driver says failed", 0):
        bad.append(f"{name}: the driver reports {r['driver says failed']} failed run(s)")
    return bad


def summary(results: dict[str, dict[str, Any]]) -> str:
    cols = list(results)
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, fn) -> None:
        rows.append((label, [fn(results[c]) if c in results else "" for c in cols]))

    row("kills landed", lambda r: f"{r['kills']} / {r['kills asked']}")
    row("resumes (driver restarts)", lambda r: str(r["resumes"]) if "resumes" in r else "-")
    for phase in PHASES:
        row(f"  kills in {phase}", lambda r, p=phase: str(r["phases"].get(p, 0)))
    row("runs done at the kills", lambda r: " ".join(map(str, r["done runs at kills"])) if "done runs at kills"
        in r else "-")
    row("jobs killed: once / twice", lambda r: " / ".join(str(Counter(r["jobs killed"].values()).get(n, 0))
                                                        for n in (1, 2)) if "jobs killed" in r else "-")
    row("final rows (reference)", lambda r: f"{r['rows']} ({r['reference rows']})")
    row("identical to reference", lambda r: "yes" if r["identical"] else "NO")
    row("duplicate keys", lambda r: str(r["duplicates"]))
    row("runs: done / running / failed", lambda r: f"{r['runs'] - r['running'] - r['failed']} / {r['running']} / "
        f"{r['failed']}")
    row("missing / extra runs", lambda r: f"{r['missing runs']} / {r['extra runs']}")
    row("missing / extra evaluations", lambda r: f"{r['missing evaluations']} / {r['extra evaluations']}")
    row("finished runs redone", lambda r: str(len(r["redone"])) if "redone" in r else "-")
    row("resume counts wrong", lambda r: str(len(r["resume mismatch"])) if "resume mismatch" in r else "-")
    row("tmp files left", lambda r: str(len(r["tmp files"])))
    row("mean time to the plan, per attempt", lambda r: f"{r['start-up mean']:.1f} s" if "start-up mean" in r
        else "-")
    row("wall time (reference)", lambda r: f"{r['wall']:.0f} s ({r['reference wall']:.0f} s)")
    width = max(len(label) for label, _ in rows)
    widths = [max(len(c), *(len(v[i]) for _, v in rows)) for i, c in enumerate(cols)]
    lines = [" " * width + "  " + "  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += [label.ljust(width) + "  " + "  ".join(v.ljust(w) for v, w in zip(vals, widths)) for label, vals in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="driver kills (phase driver)")
    parser.add_argument("--worker-kills", type=int, default=5, help="Ray worker kills (phase ray)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=["driver", "ray"], help="run one phase only")
    parser.add_argument("--root", type=Path, help="work here instead of a fresh temporary directory (kept)")
    parser.add_argument("--cache", type=Path, help="the data cache (TRANSFERSCALE_CACHE); default: under the root")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)

    root = args.root or Path(tempfile.mkdtemp(prefix="transferscale-soak-", dir="/tmp"))
    root.mkdir(parents=True, exist_ok=True)
    cache = args.cache or root / "cache"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(TRANSFERSCALE_CACHE=str(cache), RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    os.environ["TRANSFERSCALE_CACHE"] = str(cache)
    rng = random.Random(args.seed)
    say(f"soak: root {root}, data cache {cache}, seed {args.seed}")
    t0 = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    quick = Study(None, root, env)
    say("warming the data cache ...")
    quick.warm_cache(cache)
    if args.only in (None, "driver"):
        results["driver kill -9 (local)"] = driver_phase(quick, root, args.kills, rng)
    if args.only in (None, "ray") and importlib.util.find_spec("ray") is None:
        say('phase ray skipped: Ray is not installed (pip install -e ".[ray]")')
    elif args.only in (None, "ray"):
        from transferscale.spec import builtin_spec_text

        spec = root / "quick-1thread.toml"
        spec.write_text(builtin_spec_text("default") + "\n[executor]\nnum_cpus = 1\n")
        results["Ray worker kill -9"] = ray_phase(Study(spec, root, env), root, args.worker_kills, rng)
    failed = [msg for name, r in results.items() for msg in checks(name, r)]
    say("\n" + summary(results))
    say(f"\ntotal wall time {time.perf_counter() - t0:.0f} s")
    (root / "summary.json").write_text(json.dumps(results, indent=1, default=str))
    for msg in failed:
        say(f"FAILED {msg}")
    say("all checks passed" if not failed else f"{len(failed)} check(s) failed")
    if args.keep or args.root:
        say(f"kept {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
