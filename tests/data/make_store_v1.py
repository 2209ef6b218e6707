"""Write tests/data/store_v1.sql, the fixture of tests/test_store_codes.py: the SQL (`iterdump`) of the study of
tests/test_report.py's `write_study(finetune=True)` (layer-wise probes, baselines, fine-tuning) as the
store wrote it before run keys, metrics and tasks became integer codes, i.e. with the sources of commit
d3d33d9 or earlier (text, so that a diff shows it; the test loads it into a database file):

    git archive d3d33d9 src | tar -x -C /tmp/v1
    PYTHONPATH=/tmp/v1/src python tests/data/make_store_v1.py

It refuses to run with the sources that write the coded layout (they would write the wrong fixture).
"""
import sqlite3
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from test_report import write_study  # noqa: E402


def main() -> None:
    out = HERE / "store_v1.sql"
    with tempfile.TemporaryDirectory() as tmp:
        write_study(Path(tmp), finetune=True)
        with sqlite3.connect(Path(tmp) / "results.sqlite") as conn:
            kinds = dict(conn.execute("SELECT name, type FROM sqlite_master WHERE name = 'measurements'"))
            if kinds.get("measurements") != "table":
                raise SystemExit("these sources write the coded layout; run with an older checkout's sources "
                                 "(see the docstring)")
            out.write_text("".join(f"{line}\n" for line in conn.iterdump()))
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
