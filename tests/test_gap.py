"""The pretrained-vs-scratch gap law g(n) = a n^-b + c: known laws recovered, n* in closed form, the tables."""
import numpy as np
import pandas as pd
import pytest

from transferscale.analysis.gap import (
    GapFit,
    GapLaw,
    crossing_size,
    effective_data,
    fit_law,
    gap_points,
    profile_fit,
    verdict,
)
from transferscale.errors import TransferscaleError

WANG = np.array([0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0])


@pytest.mark.parametrize("a, b, c, pool", [(2.0, 0.6, -0.005, 500), (0.8, 0.35, 0.0, 4500),
                                           (5.0, 1.2, 0.004, 20_000), (0.3, 0.15, 0.02, 1000)])
def test_noiseless_gaps_recover_the_law(a, b, c, pool):
    n = np.round(WANG * pool)
    law = fit_law(n, a * n**-b + c)
    assert (law.a, law.b, law.c) == pytest.approx((a, b, c), rel=1e-4, abs=1e-6)


def test_crossing_size_in_closed_form():
    # (a / (t - c))^(1/b): 2 / (0.01 + 0.005) = 133.33..., to the power 1/0.6
    assert crossing_size(2.0, 0.6, -0.005) == pytest.approx((2.0 / 0.015) ** (1 / 0.6), rel=1e-12)
    assert crossing_size(1.0, 0.5, 0.0) == pytest.approx(1e4)  # 1 / sqrt(n) = 0.01 at n = 10,000
    assert crossing_size(1.0, 0.5, 0.01) == np.inf  # the floor sits on the threshold: never under it
    assert crossing_size(0.0, 0.5, 0.0) == 0.0  # flat at 0: under the threshold everywhere
    assert crossing_size(0.0, 0.5, 0.03) == np.inf
    np.testing.assert_allclose(crossing_size(np.array([1.0, 1.0]), 0.5, np.array([0.0, 0.02])), [1e4, np.inf])
    assert GapLaw(1.0, 0.5, 0.0).crossing(threshold=0.1) == pytest.approx(100.0)


def test_fit_reports_the_crossing_of_the_fitted_law_and_where_it_lies():
    n = np.round(WANG * 500)
    fit = GapFit(n_bootstrap=0).fit(n, 2.0 * n**-0.6 - 0.005)
    assert fit.n_star_ == pytest.approx((2.0 / 0.015) ** (1 / 0.6), rel=1e-3)  # 3,479: past the data (500)
    assert fit.verdict_ == "beyond the data" and np.isnan(fit.ci_["n_star"][0])
    n = np.round(WANG * 50_000)
    assert GapFit(n_bootstrap=0).fit(n, 2.0 * n**-0.6 - 0.005).verdict_ == "within the data"
    assert GapFit(n_bootstrap=0).fit(n, 0.5 * n**-0.3 + 0.02).verdict_ == "never"
    assert [verdict(v, (5, 500)) for v in (1, 5, 500, 501, np.inf)] == [
        "below the data", "within the data", "within the data", "beyond the data", "never"]


def test_a_gap_that_grows_with_data_fits_flat():
    n = np.round(WANG * 500)
    fit = GapFit(n_bootstrap=0).fit(n, 0.01 * np.log(n))  # rising: a >= 0 cannot follow it
    assert fit.a_ == 0 and fit.c_ == pytest.approx(np.mean(0.01 * np.log(n))) and "flat" in fit.flags_


def test_profile_fit_solves_many_resamples_at_once():
    n = np.round(WANG * 1000)
    laws = [(1.0, 0.5, 0.0), (3.0, 0.9, -0.01), (0.5, 0.2, 0.01)]
    g = np.array([a * n**-b + c for a, b, c in laws])
    a, b, c = profile_fit(n, g)
    np.testing.assert_allclose(np.column_stack([a, b, c]), laws, rtol=2e-3, atol=2e-4)


@pytest.mark.parametrize("seeds, sd, mode", [(3, 0.015, "groups"), (1, 0.01, "residuals")])
def test_bootstrap_intervals_cover_the_truth_in_most_draws(seeds, sd, mode):
    # 40 simulated studies of g = 1.5 n^-0.5 - 0.02 at Wang's fractions of 4,500 examples (n* = 2,500); nominal
    # 95%, measured on 150 draws 85-95% (analysis/gap.py): 40 draws should cover at least 3 times in 4
    rng = np.random.default_rng(5)
    n = np.repeat(np.round(WANG * 4500), seeds)
    truth = {"a": 1.5, "b": 0.5, "c": -0.02, "n_star": crossing_size(1.5, 0.5, -0.02)}
    hits = dict.fromkeys(truth, 0)
    for draw in range(40):
        fit = GapFit(n_bootstrap=200, random_state=draw).fit(n, 1.5 * n**-0.5 - 0.02 + rng.normal(0, sd, len(n)))
        assert fit.resample_ == mode and fit.boot_.shape == (200, 4)
        for name, value in truth.items():
            lo, hi = fit.ci_[name]
            hits[name] += lo <= value <= hi
    assert all(h >= 30 for h in hits.values()), hits


def test_bootstrap_is_reproducible_and_groups_need_repeats():
    n = np.repeat(np.round(WANG * 4500), 2)
    gap = 1.5 * n**-0.5 - 0.02 + np.random.default_rng(0).normal(0, 0.01, len(n))
    one, two = (GapFit(n_bootstrap=100, random_state=3).fit(n, gap) for _ in range(2))
    assert one.ci_ == two.ci_ and one.ci_["a"][0] < one.a_ < one.ci_["a"][1]
    with pytest.raises(TransferscaleError, match="two or more gaps at every data size"):
        GapFit(resample="groups").fit(n[::2], gap[::2])


def test_too_few_sizes_and_bad_points_raise():
    with pytest.raises(TransferscaleError, match="needs >= 3 distinct data sizes"):
        GapFit().fit([10, 10, 20], [0.1, 0.1, 0.05])
    with pytest.raises(TransferscaleError, match="finite and > 0"):
        GapFit().fit([0, 10, 20], [0.1, 0.1, 0.05])
    fit = GapFit(n_bootstrap=100).fit([10, 20, 40], [0.3, 0.2, 0.1])
    assert "few_sizes" in fit.flags_ and np.isnan(fit.ci_["a"]).all()  # no residual degree of freedom


def _results() -> pd.DataFrame:
    rows = []
    for n, seed, ft, sc in [(5, 0, 0.50, 0.20), (5, 1, 0.52, 0.24), (50, 0, 0.80, 0.60), (50, 1, 0.82, 0.62),
                            (500, 0, 0.90, 0.88)]:
        rows.append(dict(name="resnet-m-d1", metric="finetune_accuracy", task="t", shots=n, seed=seed, layer=-1,
                         l2=np.nan, value=ft))
        rows.append(dict(name="resnet-m-random", metric="scratch_accuracy", task="t", shots=n, seed=seed,
                         layer=-1, l2=np.nan, value=sc))
    rows.append(dict(name="resnet-m-random", metric="scratch_accuracy", task="t", shots=500, seed=1, layer=-1,
                     l2=np.nan, value=0.86))  # a seed the fine-tuning lacks
    for k, acc in ((1, 0.40), (5, 0.70)):  # probe: shots per class, 10 classes
        rows.append(dict(name="resnet-m-d1", metric="fewshot_accuracy", task="t", shots=k, seed=0, layer=-1,
                         l2=1024.0, value=acc))
    df = pd.DataFrame(rows)
    return df.astype({"shots": "Int64", "seed": "Int64"})


def test_gap_points_pair_the_arms_by_size_and_seed():
    pts = gap_points(_results(), task="t", pretrained="resnet-m-d1", scratch="resnet-m-random")
    assert list(pts["n"]) == [5, 5, 50, 50, 500] and list(pts["seed"]) == [0, 1, 0, 1, 0]
    np.testing.assert_allclose(pts["gap"], [0.30, 0.28, 0.20, 0.20, 0.02])
    means = gap_points(_results(), task="t", pretrained="resnet-m-d1", scratch="resnet-m-random", pair="mean")
    np.testing.assert_allclose(means["gap"], [0.29, 0.20, 0.90 - 0.87])
    probe = gap_points(_results(), task="t", pretrained="resnet-m-d1", scratch="resnet-m-random",
                       pretrained_metric="fewshot_accuracy", classes=10)
    assert list(probe["n"]) == [50] and probe["gap"].iloc[0] == pytest.approx(0.70 - 0.60)
    with pytest.raises(TransferscaleError, match="pass classes="):
        gap_points(_results(), task="t", pretrained="resnet-m-d1", scratch="resnet-m-random",
                   pretrained_metric="fewshot_accuracy")


def test_effective_data_transferred_reads_the_scratch_curve():
    scratch_n, scratch_acc = [10, 100, 1000], [0.3, 0.5, 0.7]
    eff = effective_data([10, 10, 100, 10, 10], [0.5, 0.6, 0.8, 0.2, 0.7], scratch_n, scratch_acc)
    # 0.5 is scratch's accuracy at 100; 0.6 lies halfway (in log n) from 100 to 1000: sqrt(100 * 1000)
    np.testing.assert_allclose(eff["effective_n"][:2], [100, np.sqrt(1e5)])
    np.testing.assert_allclose(eff["transferred"][:2], [90, np.sqrt(1e5) - 10])
    assert list(eff["status"]) == ["within the data", "within the data", "beyond the data", "below the data",
                                   "within the data"]
    assert eff["effective_n"].iloc[4] == 1000


def test_report_curves_summary_and_figure():
    from transferscale.report.gap import gap_curves, gap_figure, gap_summary

    rows = []
    for n in (10, 100, 1000, 10_000):
        for seed in (0, 1):
            scratch = 0.9 - 2.0 * n**-0.5 - 0.01 * seed
            rows += [dict(name="resnet-m-d1", family="resnet", size="m", metric="finetune_accuracy", task="t",
                          shots=n, seed=seed, layer=-1, value=scratch + 1.0 * n**-0.4 + 0.002),
                     dict(name="resnet-m-random", family="resnet", size="m", metric="scratch_accuracy", task="t",
                          shots=n, seed=seed, layer=-1, value=scratch)]
    rows.append(dict(name="vit-m-random", family="vit", size="m", metric="scratch_accuracy", task="t", shots=10,
                     seed=0, layer=-1, value=0.1))  # another architecture: paired with nothing here
    rows.append(dict(name="resnet-m-d1", family="resnet", size="m", metric="fewshot_accuracy", task="t", shots=1,
                     seed=0, layer=-1, value=0.3))
    results = pd.DataFrame(rows).astype({"shots": "Int64", "seed": "Int64"})
    curves = gap_curves(results, classes={"t": 10})
    arms = curves.groupby(["scratch", "arm"]).size().to_dict()
    assert arms == {("resnet-m-random", "fine-tuned"): 8, ("resnet-m-random", "probe"): 1,
                    ("resnet-m-random", "scratch"): 8, ("vit-m-random", "scratch"): 1}
    assert curves[curves.arm == "probe"].n.tolist() == [10.0]  # 1 shot x 10 classes
    summary = gap_summary(curves, n_bootstrap=50).set_index("arm")
    ft = summary.loc["fine-tuned"]
    assert (ft.a, ft.b, ft.c) == pytest.approx((1.0, 0.4, 0.002), rel=1e-3)  # seeds paired: the gap is exact
    assert ft["resample"] == "groups" and ft.verdict == "beyond the data"  # n* = (1 / 0.008)^(1 / 0.4) = 175,000
    assert ft.n_star == pytest.approx(crossing_size(1.0, 0.4, 0.002), rel=1e-3)
    assert summary.loc["probe"].verdict == "too few sizes"
    png = gap_figure(curves, summary.reset_index())
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert gap_figure(gap_curves(results[results.metric != "scratch_accuracy"])) is None
