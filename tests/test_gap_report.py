"""The report's "Pretrain or not" section (report/gap.py): shown with scratch rows, absent without them, and
saying what analysis/gap.py says on the same numbers."""
import re
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from test_report import write_study

from transferscale.analysis.gap import GapFit, crossing_size, gap_points
from transferscale.report import load_study, render
from transferscale.report.gap import gap_curves, gap_data, infer_classes
from transferscale.store import Measurement, Store, read_results

SIZES = (30, 90, 270, 810, 1350, 2430, 4050)  # 10 classes: 3, 9, 27, 81, 135, 243, 405 per class
PROBE_SHOTS = (3, 27, 81, 243)  # per class: n = 30, 270, 810, 2430
SEEDS = (0, 1)
# the gap of the pretrained arm over each scratch arm, a n^-b + c, per task: (a, b, c) for the strong scratch arm
# (scratch = s(n)); the weak one (s(n) - WEAK_OFFSET[task]) is behind by the offset as well
LAWS = {"near": (3.0, 0.8, 0.004), "far": (1.0, 0.5, 0.002)}
WEAK_OFFSET = {"near": 0.0, "far": 0.02}
WEAK_SLOPE = {"near": 1.0, "far": 0.0}  # near: the weak arm is further behind at small n, by 1.0 n^-0.8


def _s(n, seed: int) -> float:
    """The strong scratch arm's accuracy at n: a learning curve, a little different per seed."""
    return 0.9 - 1.5 * n ** -0.4 - 0.01 * seed


def _pretrained(task: str, n, seed: int) -> float:
    a, b, c = LAWS[task]
    return _s(n, seed) + a * n ** -b + c


def write_gap_study(study_dir):
    """The report fixture plus the text study's arms: a pretrained encoder (family hf) fine-tuned at SIZES and
    probed at PROBE_SHOTS per class, and two LSTMs from scratch (family lstm) at SIZES, two seeds each."""
    write_study(study_dir)
    runs = [("gk0", "minilm", "pretrained", "hf"), ("gk1", "lstm-minilm-emb", "random_init", "lstm"),
            ("gk2", "lstm-random", "random_init", "lstm")]
    with Store(study_dir) as store:
        for key, name, kind, family in runs:
            run = SimpleNamespace(key=key, name=name, kind=kind, family=family, size=None, config={})
            store.mark_running(run, versions={})
            rows = []
            for task in LAWS:
                for seed in SEEDS:
                    for n in SIZES:
                        if name == "minilm":
                            rows.append(Measurement("finetune_accuracy", task, _pretrained(task, n, seed), n, seed))
                        elif name == "lstm-minilm-emb":
                            rows.append(Measurement("scratch_accuracy", task, _s(n, seed), n, seed))
                        else:
                            weak = _s(n, seed) - WEAK_OFFSET[task] - WEAK_SLOPE[task] * n ** -0.8
                            rows.append(Measurement("scratch_accuracy", task, weak, n, seed))
                            rows.append(Measurement("scratch_budget_steps", task, 100.0, n, seed))
                    for k in PROBE_SHOTS if name == "minilm" else ():
                        rows.append(Measurement("fewshot_accuracy", task, _s(10 * k, seed) + 0.5 * (10 * k) ** -0.5,
                                                k, seed, -1, 1024.0))
            store.commit_run(key, rows, {}, params=1000, train_seconds=1.0, eval_seconds=1.0)
    return study_dir


def _section(page: str, key: str) -> str | None:
    m = re.search(f'<section id="{key}">(.*?)</section>', page, re.S)
    return None if m is None else m.group(1)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return write_gap_study(tmp_path_factory.mktemp("gap") / "study")


@pytest.fixture(scope="module")
def data(study):
    return load_study(study)


@pytest.fixture(scope="module")
def page(data):
    return render(data, n_bootstrap=0, jobs=1)


def _three(n: float) -> str:
    """An estimated size to 3 significant figures with thousands separators, as the page prints n*."""
    return f"{float(f'{n:.3g}'):,.0f}"


def _reference(study, task: str, scratch: str) -> GapFit:
    """analysis.gap on the same rows: the gap seed by seed, fitted with the section's bootstrap."""
    pts = gap_points(read_results(study), task=task, pretrained="minilm", scratch=scratch)
    return GapFit(n_bootstrap=1000, random_state=0).fit(pts["n"], pts["gap"])


def test_the_section_appears_with_a_figure_and_its_link(page):
    html = _section(page, "pretrain")
    assert html is not None and 'href="#pretrain"' in page
    assert len(re.findall(r'<img src="data:image/png;base64,', html)) == 1
    assert "paired with the scratch runs of its own architecture, or with every scratch run" in html
    # it sits after the fine-tuning section, the rest of the page as before
    assert page.index('<section id="finetune">') < page.index('<section id="pretrain">') < page.index(
        '<section id="reproduce">')


def test_the_crossing_is_the_closed_form_and_analysis_gap_on_the_same_numbers(study, data, page):
    html = _section(page, "pretrain")
    s = data.gap.summary.set_index(["task", "arm", "scratch"])
    near = s.loc[("near", "fine-tuned", "lstm-minilm-emb")]
    a, b, c = LAWS["near"]
    closed = crossing_size(a, b, c)  # (3 / 0.006)^(1 / 0.8) = 500^1.25 = 2,364: within the sizes (30 to 4,050)
    assert closed == pytest.approx(500 ** 1.25)
    assert (near.a, near.b, near.c) == pytest.approx((a, b, c), rel=1e-4)
    assert near.n_star == pytest.approx(closed, rel=1e-4) and near.verdict == "within the data"
    ref = _reference(study, "near", "lstm-minilm-emb")
    assert near.n_star == ref.n_star_ and (near.n_star_lo, near.n_star_hi) == ref.ci_["n_star"]
    assert near["pairing"] == "seed" and near["resample"] == "groups"
    lo, hi = (_three(v) for v in ref.ci_["n_star"])
    assert (f"On near, minilm fine-tuned against the strongest of its 2 scratch arms, lstm-minilm-emb: "
            f"{100 * (a * 30 ** -b + c):+.1f} points at n = 30 and {100 * (a * 4050 ** -b + c):+.1f} at n = 4,050; "
            "the gap narrows with data, as Wang et al. found; the gap falls under 1 point at "
            f"n* = {_three(ref.n_star_)} [{lo}, {hi}], within the sizes measured.") in html
    assert _three(ref.n_star_) == "2,360"  # 3 significant figures of 2,364
    # far: (1 / 0.008)^2 = 15,625, past the largest size: an extrapolation; the weak arm's floor (2.2 points)
    # never falls under one point
    far = s.loc[("far", "fine-tuned", "lstm-minilm-emb")]
    assert far.n_star == pytest.approx(crossing_size(*LAWS["far"]), rel=1e-3) and far.verdict == "beyond the data"
    assert "the law puts the gap under 1 point at n* = 15,600 [" in html
    assert "beyond the data (the largest size is 4,050): an extrapolation" in html
    weak = s.loc[("far", "fine-tuned", "lstm-random")]
    assert weak.verdict == "never" and weak.c == pytest.approx(0.022, rel=1e-4)
    near_weak = s.loc[("near", "fine-tuned", "lstm-random")]
    assert near_weak.a == pytest.approx(4.0, rel=1e-4)  # (3 + 1) n^-0.8 + 0.004
    assert near_weak.n_star == pytest.approx(crossing_size(4.0, 0.8, 0.004), rel=1e-4)


def test_the_measured_gaps_per_size(data, page):
    html = _section(page, "pretrain")
    table = re.search(r'<table class="gaps" data-task="near">(.*?)</table>', html, re.S).group(1)
    head = re.findall(r"<th>(.*?)</th>", table)
    assert head[:5] == ["n", "minilm (fine-tuned)", "minilm (probe)", "lstm-minilm-emb (scratch)",
                        "lstm-random (scratch)"]
    strong = head.index("gap: minilm (fine-tuned) − lstm-minilm-emb (pts)")
    weak = head.index("gap: minilm (fine-tuned) − lstm-random (pts)")
    rows = [re.findall(r"<td>(.*?)</td>", r) for r in re.findall(r"<tr>(<td>.*?)</tr>", table)]
    assert [r[0] for r in rows] == [f"{n:,}" for n in SIZES]
    for n, r in zip(SIZES, rows):
        assert r[strong] == f"{100 * (3.0 * n ** -0.8 + 0.004):+.1f}"
        assert r[weak] == f"{100 * (4.0 * n ** -0.8 + 0.004):+.1f}"
        assert r[3] == f"{np.mean([_s(n, seed) for seed in SEEDS]):.3f}"
    gaps = data.gap.gaps
    g = gaps[(gaps.task == "near") & (gaps.arm == "fine-tuned") & (gaps.scratch == "lstm-minilm-emb")]
    np.testing.assert_allclose(g["gap"], [3.0 * n ** -0.8 + 0.004 for n in SIZES], rtol=1e-9)
    assert g["points"].tolist() == [2] * len(SIZES)  # one gap per seed


def test_the_probe_arm_sits_at_shots_times_the_classes(data, page):
    assert data.gap.classes == {"near": 10, "far": 10}
    probe = data.gap.curves[data.gap.curves.arm == "probe"]
    assert sorted(set(probe.n)) == [10.0 * k for k in PROBE_SHOTS]
    s = data.gap.summary
    row = s[(s.task == "near") & (s.arm == "probe") & (s.scratch == "lstm-minilm-emb")].iloc[0]
    assert row.sizes == 4 and row.verdict in {"within the data", "below the data", "beyond the data", "never"}
    assert "(near: 10, far: 10)" in _section(page, "pretrain")


def test_without_scratch_rows_there_is_no_section(tmp_path):
    plain = write_study(tmp_path / "plain")
    data = load_study(plain)
    assert data.gap is None
    page = render(data, n_bootstrap=0, jobs=1)
    assert _section(page, "pretrain") is None and 'href="#pretrain"' not in page


def test_pairs_keep_to_an_architecture_when_the_task_has_one():
    rows = []
    for n in (10, 100, 1000):
        for name, family, size, metric, kind in (
                ("resnet-m-d1", "resnet", "m", "finetune_accuracy", "trained"),
                ("minilm", "hf", None, "finetune_accuracy", "pretrained"),
                ("resnet-m-random", "resnet", "m", "scratch_accuracy", "baseline"),
                ("lstm", "lstm", None, "scratch_accuracy", "baseline"),
                ("resnet-s-random", "resnet", "s", "finetune_accuracy", "baseline")):  # a baseline: never an arm
            rows.append(dict(name=name, family=family, size=size, kind=kind, metric=metric, task="t", shots=n,
                             seed=0, layer=-1, value=0.5))
    curves = gap_curves(pd.DataFrame(rows).astype({"shots": "Int64", "seed": "Int64"}))
    pairs = set(zip(curves.loc[curves.arm != "scratch", "pretrained"], curves.loc[curves.arm != "scratch", "scratch"]))
    assert pairs == {("resnet-m-d1", "resnet-m-random"), ("minilm", "resnet-m-random"), ("minilm", "lstm")}
    assert set(curves.loc[curves.arm == "scratch", "scratch"]) == {"resnet-m-random", "lstm"}


def test_an_ambiguous_class_count_leaves_the_probe_out_and_says_so():
    rows = [dict(name="p", metric="finetune_accuracy", task="t", shots=n, seed=0, layer=-1, value=0.9 - 1 / n)
            for n in (12, 24, 48)]
    rows += [dict(name="s", metric="scratch_accuracy", task="t", shots=n, seed=0, layer=-1, value=0.8 - 1 / n)
             for n in (12, 24, 48)]
    rows += [dict(name="p", metric="fewshot_accuracy", task="t", shots=k, seed=0, layer=-1, value=0.5)
             for k in (5, 7)]  # 5 and 7 per class land on no measured size whatever the count
    results = pd.DataFrame(rows).astype({"shots": "Int64", "seed": "Int64"})
    assert infer_classes(results) == {}
    gd = gap_data(results, n_bootstrap=0)
    assert set(gd.curves.arm) == {"fine-tuned", "scratch"} and "The probe on t is left out" in gd.notes[0]
    given = gap_data(results, classes={"t": 3}, n_bootstrap=0)
    assert sorted(set(given.curves.loc[given.curves.arm == "probe", "n"])) == [15.0, 21.0]


@pytest.mark.slow
def test_the_section_of_a_real_tiny_study(tiny_spec):
    """A tiny study that trains: ResNet-s fine-tuned at three sizes against the same ResNet-s from scratch."""
    from transferscale.engine.runner import run_study
    from transferscale.spec import parse_spec

    path, out = tiny_spec(steps=5)
    sizes = ("fractions = [0.2, 0.5, 1.0]\nepochs = 1\nmin_steps = 2\nmax_steps = 3\nevaluations = 2\n"
             "val_fraction = 0.1\n")
    text = path.read_text().replace("[finetune]\ntasks = [\"fractals_heldout\"]\nruns = [\"resnet-*\"]\nsteps = 10\n",
                                    "[finetune]\ntasks = [\"fractals_heldout\"]\nruns = [\"resnet-s-d*\"]\n" + sizes)
    text += "[scratch]\ntasks = [\"fractals_heldout\"]\nruns = [\"resnet-*\"]\n" + sizes
    assert run_study(parse_spec(text), text, out).failed == {}
    data = load_study(out)
    page = render(data, n_bootstrap=0, jobs=1)
    html = _section(page, "pretrain")
    assert html is not None and len(re.findall(r'<img src="data:image/png;base64,', html)) == 1
    s = data.gap.summary
    pair = ["resnet-s-d0.5-s5", "fine-tuned", "resnet-s-random"]  # the probe: shots 1 and 5 x 5 classes, and
    assert s[["pretrained", "arm", "scratch"]].values.tolist() == [pair]  # only 25 is a measured size: left out
    assert "The probe on fractals_heldout is left out" in html
    # the gaps the table prints are those of analysis.gap on the study's rows
    ref = gap_points(read_results(out), task="fractals_heldout", pretrained="resnet-s-d0.5-s5",
                     scratch="resnet-s-random")
    table = re.search(r'<table class="gaps" data-task="fractals_heldout">(.*?)</table>', html, re.S).group(1)
    rows = [re.findall(r"<td>(.*?)</td>", r) for r in re.findall(r"<tr>(<td>.*?)</tr>", table)]
    assert [r[0] for r in rows] == [f"{int(n):,}" for n in ref["n"]]
    assert [r[-1] for r in rows] == [f"{100 * g:+.1f}" for g in ref["gap"]]
    assert "On fractals_heldout, resnet-s-d0.5-s5 fine-tuned against its scratch arm, resnet-s-random:" in html


def test_a_probe_at_several_l2_values_keeps_one_and_says_which():
    arms = (("p", "finetune_accuracy", 0.9), ("s", "scratch_accuracy", 0.8))
    rows = [dict(name=name, metric=metric, task="t", shots=n, seed=0, layer=-1, l2=np.nan, value=v - 1 / n)
            for n in (20, 40, 80) for name, metric, v in arms]
    rows += [dict(name="p", metric="fewshot_accuracy", task="t", shots=k, seed=0, layer=-1, l2=l2, value=v)
             for k in (2, 4, 8) for l2, v in ((1.0, 0.5), (1024.0, 0.6))]
    gd = gap_data(pd.DataFrame(rows).astype({"shots": "Int64", "seed": "Int64"}), n_bootstrap=0)
    probe = gd.curves[gd.curves.arm == "probe"]
    assert gd.classes == {"t": 10} and probe["accuracy"].tolist() == [0.6] * 3  # 2, 4, 8 per class x 10
    assert "has 2 l2 values; the one with the highest mean test accuracy, l2 = 1024, is shown" in gd.notes[0]


def test_the_section_stays_torch_free(study):
    code = (f"import sys; from transferscale.report import load_study, render; "
            f"page = render(load_study({str(study)!r}), n_bootstrap=0, jobs=1); assert 'id=\"pretrain\"' in page; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'timm', 'transformers'}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_the_words_say_when_scratch_leads_and_when_the_law_disagrees_with_the_data():
    from transferscale.report.gap import crossing_words, trend_words

    behind = {"gap_at_smallest": -0.04, "gap_at_largest": -0.03, "a": 0.1, "a_lo": -0.2}
    assert trend_words(behind).startswith("scratch training is ahead at both ends")
    small = {"gap_at_smallest": 0.004, "gap_at_largest": -0.002, "a": 0.1, "a_lo": -0.2}
    assert trend_words(small).startswith("pretraining gains under 1 point at both ends")
    never = {"verdict": "never", "c": 0.021, "n_star_lo": 0.0, "n_star_hi": np.inf, "gap_at_largest": -0.03}
    text = crossing_words(never)
    assert "levels off at c = +2.1 points" in text and "already -3.0" in text and "fits these sizes poorly" in text
    assert "poorly" not in crossing_words({**never, "gap_at_largest": 0.05})
