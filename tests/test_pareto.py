"""Pareto frontiers of accuracy against cost (analysis/pareto.py): hand-made points with known frontiers, the
throughput direction, groups, ties, missing values, and the definition checked point by point."""
import numpy as np
import pandas as pd
import pytest

from transferscale.analysis import attach_costs, pareto_frontier

# cost:   1    2    3    2    4    3    5
# value: .50  .70  .60  .70  .90  .80  .85
# Frontier: a (cheapest), b and d (tied at cost 2, value .70), f (.80 at 3), e (.90 at 4).
# c (3, .60): f has the same cost and .20 more -> margin .20, dominated by f; b matches .60 at cost 2 -> 3/2.
# g (5, .85): e is cheaper and better -> margin .05, dominated by e; the cheapest frontier model with >= .85 is
# e (cost 4) -> 5/4.
POINTS = pd.DataFrame({"model": list("abcdefg"), "cost": [1, 2, 3, 2, 4, 3, 5],
                       "acc": [0.50, 0.70, 0.60, 0.70, 0.90, 0.80, 0.85]})


def _by_model(out):
    return out.set_index("model")


def test_a_hand_made_frontier():
    out = _by_model(pareto_frontier(POINTS, "cost", "acc", label="model"))
    assert out["on_frontier"].to_dict() == dict(a=True, b=True, c=False, d=True, e=True, f=True, g=False)
    assert out.loc[["c", "g"], "margin"].tolist() == pytest.approx([0.20, 0.05])
    assert (out.loc[out.on_frontier, "margin"] == 0).all()
    assert out["dominated_by"].to_dict() == dict(a=None, b=None, c="f", d=None, e=None, f=None, g="e")
    assert out.loc[["c", "g"], "cost_factor"].tolist() == pytest.approx([1.5, 1.25])
    assert out.loc[["c", "g"], "matched_by"].tolist() == ["b", "e"]
    assert (out.loc[out.on_frontier, "cost_factor"] == 1).all()
    assert (out.loc[out.on_frontier, "matched_by"] == out.index[out.on_frontier]).all()  # itself
    assert list(out.index) == list("abcdefg")  # rows keep their order


def test_throughput_is_a_cost_where_higher_is_better():
    # throughput 12 / cost: the same order reversed, so the same frontier, margins and factors
    fast = POINTS.assign(rate=12 / POINTS["cost"]).drop(columns="cost")
    out = _by_model(pareto_frontier(fast, "rate", "acc", lower_cost_is_better=False, label="model"))
    ref = _by_model(pareto_frontier(POINTS, "cost", "acc", label="model"))
    assert out["on_frontier"].equals(ref["on_frontier"]) and out["dominated_by"].equals(ref["dominated_by"])
    assert out["margin"].tolist() == pytest.approx(ref["margin"].tolist())
    # g runs at 12/5 = 2.4/s; e, as good, at 3/s: 1.25 times faster
    assert out["cost_factor"].tolist() == pytest.approx(ref["cost_factor"].tolist())
    # read as a cost instead, the fastest model would look dearest: a different frontier
    wrong = pareto_frontier(fast, "rate", "acc", label="model")
    assert not wrong["on_frontier"].equals(out["on_frontier"].reset_index(drop=True))


def test_each_group_has_its_own_frontier():
    two = pd.DataFrame({"task": ["t1"] * 3 + ["t2"] * 3, "protocol": "fewshot", "model": list("xyz") * 2,
                        "params": [1, 2, 3] * 2, "acc": [0.5, 0.4, 0.9, 0.1, 0.2, 0.3]})
    out = pareto_frontier(two, "params", "acc", by=("task", "protocol"), label="model")
    assert out["on_frontier"].tolist() == [True, False, True, True, True, True]
    assert out["margin"].tolist() == pytest.approx([0, 0.1, 0, 0, 0, 0])
    assert out["dominated_by"].tolist() == [None, "x", None, None, None, None]


def test_ties_and_missing_values():
    df = pd.DataFrame({"cost": [1.0, 1.0, 2.0, np.nan, 3.0], "acc": [0.5, 0.5, 0.5, 0.9, np.nan]},
                      index=["p", "q", "r", "s", "t"])
    out = pareto_frontier(df, "cost", "acc")  # labels: the index
    assert out["on_frontier"].tolist() == [True, True, False, False, False]  # identical points share the frontier
    assert out.loc["r", "margin"] == 0 and out.loc["r", "dominated_by"] == "p"  # as good, dearer: dominated
    assert out.loc["r", "cost_factor"] == 2 and out.loc["r", "matched_by"] == "p"
    assert out.loc[["s", "t"], "margin"].isna().all() and out.loc[["s", "t"], "dominated_by"].isna().all()


def test_matches_the_definition_point_by_point():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"task": rng.choice(["a", "b"], 300), "cost": rng.integers(1, 30, 300).astype(float),
                       "acc": np.round(rng.uniform(0.2, 0.9, 300), 2)})  # rounded: many ties on both axes
    out = pareto_frontier(df, "cost", "acc", by=["task"])
    for task, g in df.groupby("task"):
        c, v = g["cost"].to_numpy(), g["acc"].to_numpy()
        better_eq = (c[None, :] <= c[:, None]) & (v[None, :] >= v[:, None])
        strictly = (c[None, :] < c[:, None]) | (v[None, :] > v[:, None])
        dominated = (better_eq & strictly).any(axis=1)
        front = ~dominated
        o = out.loc[g.index]
        assert (o["on_frontier"].to_numpy() == front).all(), task
        for i, label in enumerate(g.index):
            cheaper = front & (c <= c[i])
            assert o.loc[label, "margin"] == pytest.approx(v[cheaper].max() - v[i])
            good = front & (v >= v[i])
            assert o.loc[label, "cost_factor"] == pytest.approx(c[i] / c[good].min())
            if dominated[i]:
                j = g.index.get_loc(o.loc[label, "dominated_by"])
                assert better_eq[i, j] and strictly[i, j] and v[j] == v[cheaper].max()


def test_a_missing_column_is_named():
    with pytest.raises(KeyError, match="flops"):
        pareto_frontier(POINTS, "flops", "acc")


def test_attach_costs_maps_runs_through_their_architecture():
    points = pd.DataFrame({"run": ["r1", "r2", "r3", "pix"], "task": "t", "acc": [0.5, 0.6, 0.7, 0.4]})
    costs = pd.DataFrame({"arch": ["A", "B"], "params": [10, 20], "flops": [1e6, 3e6],
                          "train_throughput": [100.0, 50.0], "infer_throughput": [300.0, np.nan]})
    out = attach_costs(points, costs, {"r1": "A", "r2": "A", "r3": "B"})
    assert out["arch"].iloc[:3].tolist() == ["A", "A", "B"] and pd.isna(out["arch"].iloc[3])
    assert out["params"].iloc[:3].tolist() == [10, 10, 20] and np.isnan(out["params"].iloc[3])
    assert out["flops"].iloc[2] == 3e6 and np.isnan(out["infer_throughput"].iloc[2])
    front = pareto_frontier(out, "params", "acc", by=["task"], label="run")
    assert front["on_frontier"].tolist() == [False, True, True, False]  # r1 and r2 share A's 10 params
