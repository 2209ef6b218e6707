"""US and DS at odds across an upstream hyper-parameter, and the best checkpoint per task (analysis/atodds.py):
hand-made tables with known correlations, settings and margins; Spearman against scipy's."""
import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from transferscale.analysis.atodds import at_odds, at_odds_sentences, best_checkpoints, best_sentences, spearman
from transferscale.errors import TransferscaleError

WD = [0.0, 0.1, 1.0, 10.0]


def _table() -> pd.DataFrame:
    """Two families x four head weight decays x two tasks. On `far` a stronger decay lowers US and raises DS
    (at odds) for both families; on `near` DS follows US. vit's far task has its DS peak at 1.0, not 10."""
    rows = []
    for family, shift in (("resnet", 0.0), ("vit", 0.05)):
        us = np.array([0.80, 0.78, 0.75, 0.70]) + shift
        far = {"resnet": [0.50, 0.52, 0.55, 0.60], "vit": [0.40, 0.45, 0.49, 0.47]}[family]
        for i, wd in enumerate(WD):
            name = f"{family}-wd{wd:g}"
            rows.append(dict(task="far", family=family, head_weight_decay=wd, name=name, us_acc=us[i],
                             ds_acc=far[i]))
            rows.append(dict(task="near", family=family, head_weight_decay=wd, name=name, us_acc=us[i],
                             ds_acc=us[i] - 0.1))
    return pd.DataFrame(rows)


def test_spearman_is_scipys_with_ties_and_constants():
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, y = rng.integers(0, 5, 12), rng.normal(size=12)  # many ties in x
        assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3])) and np.isnan(spearman([1], [2]))


def test_us_and_ds_at_odds_per_task_with_the_rest_fixed():
    df = _table()
    out = at_odds(df, "head_weight_decay", ["family"]).set_index(["task", "context"])
    assert list(out.index) == [("far", "family=resnet"), ("far", "family=vit"), ("near", "family=resnet"),
                               ("near", "family=vit")]
    for (task, context), r in out.iterrows():
        g = df[(df.task == task) & (df.family == context.split("=")[1])]
        assert r["rho_us_ds"] == pytest.approx(spearmanr(g.us_acc, g.ds_acc).statistic)
        assert r["rho_axis_us"] == pytest.approx(spearmanr(g.head_weight_decay, g.us_acc).statistic)
        assert r["rho_axis_ds"] == pytest.approx(spearmanr(g.head_weight_decay, g.ds_acc).statistic)
        assert r["n_runs"] == 4 and r["levels"] == 4
    assert out.loc[("far", "family=resnet"), "rho_us_ds"] == pytest.approx(-1.0)
    assert out.loc[("far", "family=vit"), "rho_us_ds"] == pytest.approx(-0.8)  # the ranks 4 3 2 1 vs 1 2 4 3
    assert out["at_odds"].tolist() == [True, True, False, False]
    # the best setting upstream is no decay everywhere; downstream on far: 10 for resnet, 1 for vit
    assert (out["best_us"] == "0").all()
    assert out["best_ds"].tolist() == ["10", "1", "0", "0"]
    assert out["loss"].tolist() == pytest.approx([10.0, 9.0, 0.0, 0.0])  # points: .60 - .50, .49 - .40


def test_contexts_need_enough_runs_and_two_settings():
    df = _table()
    few = df[~((df.family == "vit") & (df.head_weight_decay > 0.1))]  # vit keeps 2 runs per task
    out = at_odds(few, "head_weight_decay", ["family"])
    assert set(out["context"]) == {"family=resnet"}
    one = df[df.head_weight_decay == 1.0]
    assert at_odds(one, "head_weight_decay", ["family"]).empty
    pooled = at_odds(df, "head_weight_decay")  # nothing fixed: both families in one context per task
    assert pooled["context"].tolist() == ["", ""] and pooled["n_runs"].tolist() == [8, 8]
    with pytest.raises(TransferscaleError, match="no column"):
        at_odds(df, "head_lr_mult")


def test_at_odds_in_words():
    words = at_odds_sentences(at_odds(_table(), "head_weight_decay", ["family"])).set_index("task")["sentence"]
    assert words["far"] == ("On far, US and DS are at odds across head weight decay in 2 of 2 settings of the "
                            "other axes (median rho(US, DS) -0.90): the setting best upstream is not best "
                            "downstream in 2 of them (choosing head weight decay by US costs up to 10.0 points).")
    assert words["near"] == ("On near, US and DS are not at odds across head weight decay in any of 2 settings "
                             "of the other axes (median rho(US, DS) +1.00).")


def test_the_best_checkpoint_per_task_and_its_margins():
    best = best_checkpoints(_table()).set_index("task")
    # far: resnet-wd10 (.60) beats vit-wd1 (.49) by 11 points, and the best upstream run, vit-wd0 (US .85,
    # DS .40), by 20
    far = best.loc["far"]
    assert (far["best"], far["next_best"], far["best_upstream"]) == ("resnet-wd10", "resnet-wd1", "vit-wd0")
    assert far["best_ds"] == pytest.approx(0.60) and far["best_us_acc"] == pytest.approx(0.70)
    assert far["margin_next"] == pytest.approx(5.0) and far["margin_upstream"] == pytest.approx(20.0)
    near = best.loc["near"]  # DS follows US: the best checkpoint is the best upstream
    assert near["best"] == near["best_upstream"] == "vit-wd0" and near["margin_upstream"] == 0
    assert near["margin_next"] == pytest.approx(2.0) and near["next_best"] == "vit-wd0.1"
    words = best_sentences(best.reset_index())
    assert words[0] == ("On far, the best checkpoint is resnet-wd10 (DS 0.600), 5.0 points above the next best "
                        "(resnet-wd1); 20.0 points above the best upstream run, vit-wd0 (DS 0.400).")
    assert words[1].endswith("; it is also the best upstream.")


def test_ties_are_broken_by_us_then_label_and_one_run_has_no_runner_up():
    df = pd.DataFrame({"task": ["t"] * 3 + ["u"], "name": ["b", "a", "c", "solo"],
                       "us_acc": [0.5, 0.5, 0.9, 0.4], "ds_acc": [0.7, 0.7, 0.7, 0.3]})
    best = best_checkpoints(df).set_index("task")
    assert best.loc["t", "best"] == "c" and best.loc["t", "next_best"] == "a"  # c: higher US; a before b
    assert best.loc["t", "margin_next"] == 0
    assert pd.isna(best.loc["u", "next_best"]) and np.isnan(best.loc["u", "margin_next"])


def test_the_best_shape_per_budget_and_whether_upstream_picks_it():
    from transferscale.analysis.atodds import budget_sentences

    rows = []
    # per budget, four depths; at 20k the deepest wins DS but the shallowest wins US; at 60k one shape wins both
    for budget, us, ds in ((20000, [0.50, 0.45, 0.42, 0.40], [0.30, 0.31, 0.33, 0.36]),
                           (60000, [0.55, 0.60, 0.52, 0.50], [0.35, 0.40, 0.34, 0.33])):
        for depth, u, d in zip((1, 2, 4, 8), us, ds, strict=True):
            rows.append(dict(task="far", family="vit", matched_params=budget, depth=depth,
                             name=f"vit-depth{depth}-p{budget // 1000}k", us_acc=u, ds_acc=d))
    per = best_checkpoints(pd.DataFrame(rows), by=["task", "family", "matched_params"])
    assert per["best"].tolist() == ["vit-depth8-p20k", "vit-depth2-p60k"]
    assert per["best_upstream"].tolist() == ["vit-depth1-p20k", "vit-depth2-p60k"]
    assert per["margin_upstream"].round(6).tolist() == [6.0, 0.0]
    lines = budget_sentences(per, ["task"])
    assert lines[0].startswith("At equal parameters, the shape best downstream is also the best upstream in 1 of 2")
    assert "costs 6.0 points" in lines[0]
    assert lines[1] == ("On far, vit at 20,000 parameters: vit-depth8-p20k wins DS (0.360), not vit-depth1-p20k, "
                        "the best upstream (0.300).")
