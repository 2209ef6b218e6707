"""The analysis layer, the report and `transferscale fit --csv` never import torch (nor timm, transformers).

Each check runs in a fresh interpreter, so a module imported by another test cannot hide an import, and
ends by listing the heavy packages it finds in sys.modules: the list must be empty.
"""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from test_report import write_study

HEAVY = ("torch", "timm", "transformers")
REPORT_HEAVY = textwrap.dedent(f"""
    import json, sys
    heavy = sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r}))
    print("HEAVY=" + json.dumps(heavy))
""")


def _heavy_after(code: str, tmp_path) -> list[str]:
    """Run `code` in a new interpreter (cwd tmp_path) and return the heavy packages it left imported."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code) + REPORT_HEAVY], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("HEAVY=")][-1]
    return json.loads(line.removeprefix("HEAVY="))


def test_importing_the_analysis_and_the_report(tmp_path):
    code = """
        import transferscale.analysis, transferscale.report, transferscale.cli.fit, transferscale.cli.report
        from transferscale.analysis import fit_saturation, finetune_points, load_fit_table, study_points
        from transferscale.report import build_report, load_study, load_table, render
    """
    assert _heavy_after(code, tmp_path) == []


def test_building_a_report_from_a_study(tmp_path):
    study = write_study(tmp_path / "study", layers=True, finetune=True)
    code = f"""
        from transferscale.report import build_report, load_study
        path = build_report(load_study({str(study)!r}), {str(tmp_path / "index.html")!r}, n_bootstrap=0)
        assert path.stat().st_size > 10_000
    """
    assert _heavy_after(code, tmp_path) == []


@pytest.mark.parametrize("command", ["fit", "report"])
def test_the_command_line_on_a_csv(tmp_path, command):
    rng = np.random.default_rng(0)
    us = rng.uniform(0.5, 0.9, 40)
    ds = 0.8 - 0.6 * (1 - us) ** 1.5 - rng.uniform(0, 0.03, 40)
    pd.DataFrame({"model": [f"m{i}" for i in range(40)], "us": us, "ds": ds}).to_csv(tmp_path / "t.csv", index=False)
    extra = ["--n-bootstrap", "10"] + (["--out", "r.html"] if command == "report" else [])
    code = f"""
        from transferscale.cli import app
        try:
            app([{command!r}, "--csv", "t.csv", "--us", "us", "--ds", "ds", *{extra!r}], prog_name="transferscale")
        except SystemExit as done:
            assert done.code in (0, None), done.code
    """
    assert _heavy_after(code, tmp_path) == []
    assert (tmp_path / ("saturation_fits.csv" if command == "fit" else "r.html")).is_file()
