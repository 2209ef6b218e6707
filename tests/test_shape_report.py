"""The report's "Same curve?" and "Cost and shape" sections (report/shape.py): shown with their data, absent
without it, and saying what the analysis functions say."""
import re
import subprocess
import sys

import pytest
from test_axes_cli import write_hp_study

from transferscale.analysis.pareto import attach_costs, pareto_frontier
from transferscale.analysis.tables import axis_points
from transferscale.models.cost import architecture_keys
from transferscale.report import load_study, load_table, render
from transferscale.store import Store


def _section(page: str, key: str) -> str | None:
    m = re.search(f'<section id="{key}">(.*?)</section>', page, re.S)
    return None if m is None else m.group(1)


@pytest.fixture(scope="module")
def costly(tmp_path_factory):
    return write_hp_study(tmp_path_factory.mktemp("shape") / "study", costs=True)


@pytest.fixture(scope="module")
def page(costly):
    return render(load_study(costly), n_bootstrap=0, jobs=1)


def test_the_same_curve_section_says_the_test_in_words(page):
    html = _section(page, "samecurve")
    assert html is not None and 'href="#samecurve"' in page
    assert "On far, 10-shot, head weight decay adds information beyond US" in html
    assert "On near, 10-shot, family, size, steps, embed dim, head weight decay: no information beyond" in html
    assert "widths: cannot tell" in html
    assert "US and DS at odds across head weight decay" in html
    assert "On far, 10-shot, US and DS are at odds across head weight decay in 8 of 8 settings" in html
    assert "The best checkpoint per task" in html and "resnet-m-d1-s300-hwd10" in html


def test_the_cost_section_draws_the_frontiers_and_names_the_dominated(costly, page):
    html = _section(page, "cost")
    assert html is not None and len(re.findall(r'<img src="data:image/png;base64,', html)) == 1
    assert "only the best of them can be on the frontier" in html
    # the table agrees with pareto_frontier on each architecture's best checkpoint
    pts = axis_points(costly, shots=10).points
    with Store(costly, create=False) as store:
        costs, configs = store.costs(), store.run_configs()
    with_costs = attach_costs(pts, costs, architecture_keys(configs))
    best = with_costs.sort_values("ds_acc", ascending=False).drop_duplicates(["task", "arch"])
    best = best.merge(costs[["arch", "label"]], on="arch")
    ref = pareto_frontier(best, "params", "ds_acc", by=["task"], label="label")
    rows = re.findall(r"<tr><td class=\"l\">(\w+)</td><td class=\"l\">([\w-]+)</td>.*?</td><td>[\d.]+</td>"
                      r"<td>\d+</td><td class='l'>(.*?)</td>", html)
    assert len(rows) == len(ref) == 8
    for task, label, cell in rows:
        r = ref[(ref["task"] == task) & (ref["label"] == label)].iloc[0]
        if r["on_frontier"]:
            assert "on the frontier" in cell
        else:
            assert f"&minus;{100 * r['margin']:.1f} pts vs {r['dominated_by']}" in cell
    assert "vit-s" in {label for _, label, cell in rows if "on the frontier" not in cell}


def test_without_costs_or_for_a_table_the_sections_are_absent(tmp_path):
    study = write_hp_study(tmp_path / "nocost")
    page = render(load_study(study), n_bootstrap=0, jobs=1)
    assert _section(page, "cost") is None and 'href="#cost"' not in page
    assert _section(page, "samecurve") is not None
    pts = axis_points(study, shots=10).points
    pts.pivot_table(index="name", columns="task", values="ds_acc").join(
        pts.groupby("name")["us_acc"].first()).reset_index().to_csv(tmp_path / "t.csv", index=False)
    table = load_table(tmp_path / "t.csv", us="us_acc", ds=["far", "near"], by=[], join=None, on=[], percent=None)
    assert table.shape is None
    csv_page = render(table, n_bootstrap=0, jobs=1)
    assert _section(csv_page, "samecurve") is None and _section(csv_page, "cost") is None


def test_the_sections_and_the_axes_analysis_stay_torch_free(costly):
    code = (f"import sys; from transferscale.report import load_study, render; "
            f"from transferscale.analysis.atodds import analyse_axes; "
            f"from transferscale.analysis.tables import axis_points; "
            f"render(load_study({str(costly)!r}), n_bootstrap=0, jobs=1); "
            f"analyse_axes(axis_points({str(costly)!r}, shots=10), n_permutations=99); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'timm', 'transformers'}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_frontier_labels_are_short_and_say_their_abbreviations():
    from transferscale.report.shape import label_key, short_label

    assert short_label("mixer-s-embed_dim21-num_blocks8") == "mixer-s ed21 nb8"
    assert short_label("vit-s-depth8-embed_dim16") == "vit-s d8 ed16"
    assert short_label("vit-s") == "vit-s"
    assert short_label("timm:tf_efficientnet_lite0-img_size128") == "timm:tf_efficientnet_lite0-img_size128"
    assert label_key(["mixer-s-embed_dim21-num_blocks8", "vit-s-depth8-embed_dim16", "vit-s"]) == \
        "d = depth, ed = embed_dim, nb = num_blocks"


def test_labels_of_a_tight_cluster_do_not_overlap_and_stay_in_the_panel():
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from transferscale.report.shape import _label_points

    fig, ax = plt.subplots(figsize=(2.2, 1.6), dpi=150)
    x = np.array([1e4, 1.05e4, 1.1e4, 1.12e4, 5e4, 9.8e4, 1e5])
    y = np.array([0.60, 0.601, 0.603, 0.599, 0.5, 0.62, 0.621])
    ax.scatter(x, y)
    ax.set_xscale("log")
    _label_points(ax, x, y, [f"mixer-s ed{i}{i} nb{i}" for i in range(len(x))])
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    from matplotlib.text import Text

    boxes = [Text.get_window_extent(t, renderer) for t in ax.texts]  # the text, not its leader line
    panel = ax.get_window_extent(renderer)
    assert len(boxes) == len(x)
    for i, a in enumerate(boxes):
        assert a.x0 >= panel.x0 - 1 and a.x1 <= panel.x1 + 1 and a.y0 >= panel.y0 - 1 and a.y1 <= panel.y1 + 1
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), (a, b)
    plt.close(fig)
