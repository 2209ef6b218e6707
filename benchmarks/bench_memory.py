"""Peak memory of a study run against what any run must hold anyway, as a ratio.

Reference: a process that imports the engine, loads the study's upstream and downstream datasets and runs
the largest model of the grid forward on one batch: the floor of any evaluation. Study: a process that runs
the study spec from scratch (training, extraction, probes, fine-tuning) in a temporary directory. Each child
reports its own peak resident set size (ru_maxrss). Features are cached on disk per (checkpoint, task,
split), so the study's peak should stay near the reference however many runs it has.

    python benchmarks/bench_memory.py            # the --quick variant of the default study (about 2 minutes)
    python benchmarks/bench_memory.py --full     # the whole default study (about 12 minutes)
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile

REFERENCE = """
import resource
from transferscale.spec import load_spec
from transferscale.engine.context import JobContext
from transferscale.models.grid import TimmBackbone, build_model
spec, text = load_spec(None, quick={quick})
ctx = JobContext(spec, {out!r})
for task in ctx.plan.tasks:  # every downstream task, loaded as a study loads them
    ctx.dataset(task)
up = ctx.upstream()
largest = max((r for r in ctx.plan.runs if r.kind == "trained"),
              key=lambda r: sum(1 for _ in build_model(r.family, r.config["shape"], 100).parameters()))
TimmBackbone(build_model(largest.family, largest.config["shape"], up.n_classes)).layers(up.x_test[:500])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

STUDY = """
import resource, sys
from transferscale.cli import app
try:
    app(["run", "--out", {out!r}] + (["--quick"] if {quick} else []), standalone_mode=False)
finally:
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_kib(code: str) -> int:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the whole default study, not --quick")
    args = parser.parse_args()
    quick = not args.full
    with tempfile.TemporaryDirectory() as tmp:
        ref = peak_kib(REFERENCE.format(quick=quick, out=f"{tmp}/ref"))
        study = peak_kib(STUDY.format(quick=quick, out=f"{tmp}/study"))
    name = "default --quick" if quick else "default"
    print(f"peak RSS, reference (engine + datasets + largest model): {ref / 1024:7.0f} MiB")
    print(f"peak RSS, the {name} study from scratch:           {study / 1024:7.0f} MiB")
    print(f"ratio study / reference: {study / ref:.2f}x   (target: study under 2048 MiB: "
          f"{'met' if study / 1024 < 2048 else 'MISSED'})")


if __name__ == "__main__":
    main()
