"""The same spec and seeds give the same numbers, bit for bit, in a fresh study directory with a fresh data
cache: nothing a study computes depends on where it runs or what ran before."""
import hashlib

import pandas as pd
import pytest
from conftest import TINY

from transferscale.engine.runner import run_study
from transferscale.spec import load_spec
from transferscale.store import read_results

pytestmark = pytest.mark.slow


def _fresh_study(root, monkeypatch):
    root.mkdir()
    monkeypatch.setenv("TRANSFERSCALE_CACHE", str(root / "cache"))  # the datasets are generated again too
    spec = root / "study.toml"
    spec.write_text(TINY.format(out=root / "study", steps=30))
    result = run_study(*load_spec(spec), root / "study")
    assert result.failed == {} and len(result.done) == 5
    checkpoints = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                   for p in sorted((root / "study" / "checkpoints").iterdir())}
    return read_results(root / "study"), checkpoints


def test_the_same_spec_gives_the_same_rows_in_a_fresh_study_directory(tmp_path, monkeypatch):
    first, first_checkpoints = _fresh_study(tmp_path / "a", monkeypatch)
    second, second_checkpoints = _fresh_study(tmp_path / "b", monkeypatch)
    assert len(first) == 158
    pd.testing.assert_frame_equal(first, second, check_exact=True)  # every row, in order, to the bit
    assert first_checkpoints == second_checkpoints  # the trained weights, byte for byte
