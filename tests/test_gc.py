"""`transferscale gc` removes exactly the feature files the study's spec no longer reads."""
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from transferscale.cli import app
from transferscale.engine.runner import run_study
from transferscale.gc import collect_garbage
from transferscale.spec import load_spec
from transferscale.store import read_results

pytestmark = pytest.mark.slow


def _run(path):
    spec, text = load_spec(path)
    result = run_study(spec, text, spec.study_dir())
    assert result.failed == {}
    return result


def _layers_per_file(out):
    return sorted(sum(n.startswith("layer_") for n in np.load(f).files) for f in (out / "features").glob("*.npz"))


def test_gc_removes_what_the_spec_dropped_and_nothing_it_reads(tiny_spec):
    path, out = tiny_spec("gc")
    text = path.read_text().replace("budgets = [{ data_fraction = 0.5, steps = 30 }]",
                                    "budgets = [{ data_fraction = 0.5, steps = 30, snapshots = [0.5] }]")
    path.write_text(text)
    _run(path)
    n_all = len(list((out / "features").glob("*.npz")))
    # 7 runs (2 trained, 2 snapshots, 2 random inits, pixels) x 2 tasks x 2 splits
    assert n_all == 7 * 2 * 2
    assert collect_garbage(out).removed == []  # everything is read
    # the spec drops a task and probes the snapshots at the final layer only
    both = 'tasks = ["fractals_heldout", "sklearn_digits_shifted"]'
    path.write_text(text.replace(both, 'tasks = ["fractals_heldout"]')
                    .replace("sklearn_digits_shifted = { test_size = 200 }\n", "")
                    .replace("[probe]\n", '[probe]\nsnapshot_layers = "final"\n'))
    _run(path)
    before = read_results(out)
    dry = CliRunner().invoke(app, ["gc", str(out), "--dry-run"])
    assert dry.exit_code == 0 and "would remove 18" in " ".join(dry.output.split())
    assert len(list((out / "features").glob("*.npz"))) == n_all + 2 * 2  # nothing removed yet; 2 snapshots' finals
    res = CliRunner().invoke(app, ["gc", str(out)])
    assert res.exit_code == 0, res.output
    # kept: 7 runs x 1 task x 2 splits; removed: the dropped task's 14 files, the snapshots' all-layer 4
    assert len(list((out / "features").glob("*.npz"))) == 14
    assert _layers_per_file(out).count(1) == 2 * 2 + 2  # the snapshots' finals, and the pixels' single layer
    # the store is untouched, and a rerun finds every feature it needs: nothing to do, nothing recomputed
    pd.testing.assert_frame_equal(read_results(out), before)
    again = _run(path)
    assert again.done == [] and len(list((out / "features").glob("*.npz"))) == 14
