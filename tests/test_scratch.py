"""Training from scratch and the data-size axis: the budget rule, early stopping, nested sizes, the protocol."""
import numpy as np
import pytest
import torch

from transferscale import finetune as ft
from transferscale.data import Dataset
from transferscale.errors import TransferscaleError
from transferscale.finetune import budget_steps, finetune, nested_subset, validation_split
from transferscale.models import build_named
from transferscale.models.grid import TimmBackbone, to_tensor
from transferscale.plan import Run, Task, config_key
from transferscale.pretrain import RunFailed, recompute_batchnorm, subset_indices
from transferscale.protocols.finetune import Finetune, FinetuneOptions, train_at_sizes
from transferscale.protocols.scratch import Scratch, ScratchOptions, fresh_statistics
from transferscale.store import NA


def textures(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Four classes of 28x28 texture, told apart by any patch: rows, columns, diagonals, a checkerboard, each at
    a random phase and with pixel noise."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(4), per_class)
    x = np.empty((len(y), 28, 28), np.uint8)
    for i, label in enumerate(y):
        r, c = np.mgrid[:28, :28] + rng.integers(0, 4, 2)[:, None, None]
        on = [(r % 4) < 2, (c % 4) < 2, ((r + c) % 4) < 2, ((r // 4 + c // 4) % 2) == 0][label]
        x[i] = np.where(on, 190, 40) + rng.integers(0, 50, (28, 28))
    return x, y


TOY = Dataset("toy", *textures(40, 0), *textures(10, 1), classes=["rows", "columns", "diagonals", "checks"])
TASK = Task("toy")
RANDOM = Run("k", "resnet-s-random", "random_init", "resnet", "s", {})


class FakeContext:
    """What a protocol's measure() asks of a job's context."""

    def __init__(self):
        self.steps = []

    def dataset(self, task):
        return TOY

    def phase(self, text):
        pass

    def train_step(self, step, steps, loss):
        self.steps.append((step, steps))


@pytest.fixture(scope="module")
def random_resnet():
    """A random-init run's module: built from a seed, BatchNorm statistics estimated on (upstream) images."""
    torch.manual_seed(0)
    model = build_named("resnet", "s", num_classes=10)
    recompute_batchnorm(model, textures(16, 9)[0])
    return model


# ---- the budget rule and the data sizes ---------------------------------------------------------------------


def test_budget_grows_with_the_data_between_its_bounds():
    rule = dict(batch_size=64, epochs=30, min_steps=100, max_steps=3000)
    assert budget_steps(640, **rule) == 300  # 30 passes over 640 examples, 64 at a time
    assert budget_steps(650, **rule) == 305  # 304.7 steps round up: never fewer than 30 passes
    assert budget_steps(5, **rule) == 100  # 2.3 steps would leave a tiny set untrained: the floor
    assert budget_steps(100_000, **rule) == 3000  # 46,875: the ceiling
    assert budget_steps(640, batch_size=64, epochs=0.1, min_steps=1, max_steps=10) == 1  # 0.1 * 640 / 64 = 1
    with pytest.raises(TransferscaleError, match="min_steps <= max_steps"):
        budget_steps(10, batch_size=64, epochs=1, min_steps=20, max_steps=10)


def test_validation_split_is_stratified_disjoint_and_keeps_every_class():
    y = np.repeat(np.arange(3), [50, 20, 2])
    pool, val = validation_split(y, 0.1, seed=0)
    assert np.bincount(y[val]).tolist() == [5, 2, 1] and np.bincount(y[pool]).tolist() == [45, 18, 1]
    assert np.intersect1d(pool, val).size == 0 and np.union1d(pool, val).tolist() == list(range(len(y)))
    assert np.array_equal(validation_split(y, 0.1, seed=0)[1], val)
    assert not np.array_equal(validation_split(y, 0.1, seed=1)[1], val)
    none_pool, none_val = validation_split(y, 0.0, seed=0)
    assert none_val.size == 0 and none_pool.tolist() == list(range(len(y)))


def test_sizes_are_nested_stratified_and_seeded():
    y = np.repeat(np.arange(4), [90, 90, 60, 30])
    fractions = [0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0]
    subsets = [nested_subset(y, 3, fraction=f) for f in fractions]
    for small, large in zip(subsets, subsets[1:]):
        assert np.isin(small, large).all() and len(small) < len(large)
    # each class keeps max(1, round(f * count)) of its examples; the same rule as the upstream data fractions
    assert np.bincount(y[subsets[2]]).tolist() == [27, 27, 18, 9]
    assert np.bincount(y[subsets[0]]).tolist() == [1, 1, 1, 1]
    assert all(np.array_equal(s, subset_indices(y, f, 3)) for s, f in zip(subsets, fractions))
    per = [nested_subset(y, 3, per_class=k) for k in (1, 5, 25)]
    assert np.isin(per[0], per[1]).all() and np.isin(per[1], per[2]).all()
    assert np.bincount(y[per[1]]).tolist() == [5, 5, 5, 5]
    # the first k per class are the first of the fraction's shuffle too: one order serves both axes
    assert np.isin(per[0], subsets[0]).all()
    assert not np.array_equal(nested_subset(y, 4, fraction=0.3), subsets[2])
    with pytest.raises(TransferscaleError, match="one of fraction or per_class"):
        nested_subset(y, 0, fraction=0.5, per_class=3)


# ---- early stopping -----------------------------------------------------------------------------------------


def scripted_accuracy(monkeypatch, values):
    """Replace the accuracy finetune() measures: validation checks return `values` in turn and record a
    fingerprint of the weights; the test call (after the last value) returns the fingerprint it sees."""
    seen, script = [], list(values)

    def fake(net, preprocess, x, y, batch=500, precision="fp32"):
        fingerprint = float(sum(p.double().sum() for p in net.state_dict().values() if p.is_floating_point()))
        if len(x) == len(TOY.x_test):  # the test split
            return fingerprint
        seen.append(fingerprint)
        return script.pop(0)

    monkeypatch.setattr(ft, "_accuracy", fake)
    return seen


def test_early_stopping_keeps_the_best_validation_checkpoint(monkeypatch, random_resnet):
    seen = scripted_accuracy(monkeypatch, [0.2, 0.5, 0.4, 0.5, 0.3, 0.9, 0.9])
    x_val, y_val = textures(2, 5)
    result = finetune(random_resnet, TOY.x_train, TOY.y_train, TOY.x_test, TOY.y_test, num_classes=4, steps=14,
                      lr=0.05, batch_size=16, validation=(x_val, y_val), patience=3, evaluations=7)
    # checks every 2 steps; 0.5 at step 4 is the best: a tie (step 8) is no improvement, and after three
    # checks without one (steps 6, 8, 10) training stops, before the 0.9 it would have seen at step 12
    assert (result.best_step, result.val_accuracy, result.steps) == (4, 0.5, 10)
    assert len(seen) == 5 and result.accuracy == seen[1]  # tested with the weights of the second check
    assert len(set(seen)) == 5  # the weights did move between checks


def test_early_stopping_that_never_stops_trains_as_without_it(monkeypatch, random_resnet):
    kw = dict(num_classes=4, steps=9, lr=0.05, batch_size=16, seed=2)
    scripted_accuracy(monkeypatch, [])
    plain = finetune(random_resnet, TOY.x_train, TOY.y_train, TOY.x_test, TOY.y_test, **kw)
    seen = scripted_accuracy(monkeypatch, [0.1, 0.2, 0.3])
    checked = finetune(random_resnet, TOY.x_train, TOY.y_train, TOY.x_test, TOY.y_test, **kw,
                       validation=textures(2, 5), patience=1, evaluations=4)
    assert (checked.best_step, checked.steps) == (9, 9) and len(seen) == 3  # every ceil(9 / 4) = 3 steps
    assert checked.accuracy == plain.accuracy and checked.final_loss == plain.final_loss  # the same weights


# ---- the scratch protocol -----------------------------------------------------------------------------------

SMALL = dict(tasks=["toy"], fractions=[0.25, 1.0], epochs=2, min_steps=3, max_steps=40, batch_size=32,
             val_fraction=0.25, patience=2, evaluations=3)


def rows_by(rows, metric):
    return {(r.shots, r.seed): r.value for r in rows if r.metric == metric}


def test_scratch_trains_every_size_on_its_budget_and_leaves_the_model_alone(random_resnet):
    before = {k: v.clone() for k, v in random_resnet.state_dict().items()}
    ctx = FakeContext()
    rows = Scratch(ScratchOptions(**SMALL)).measure(ctx, RANDOM, TimmBackbone(random_resnet), TASK)
    # 40 per class, 10 to validation, 30 in the pool: 0.25 keeps round(7.5) = 8 per class, 32 in all; all: 120
    budget = rows_by(rows, "scratch_budget_steps")
    assert budget == {(32, 0): 3.0, (120, 0): 8.0}  # ceil(2 * 32 / 32) = 2 < min_steps; ceil(2 * 120 / 32) = 8
    best = rows_by(rows, "scratch_best_step")
    assert best.keys() == budget.keys() and all(0 < best[k] <= budget[k] for k in best)
    acc = rows_by(rows, "scratch_accuracy")
    assert acc.keys() == budget.keys() and all(0 <= v <= 1 for v in acc.values())
    assert {steps for _, steps in ctx.steps} == {3, 8}
    after = random_resnet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_size_does_not_depend_on_the_other_sizes_in_the_sweep(random_resnet):
    both = Scratch(ScratchOptions(**SMALL)).measure(FakeContext(), RANDOM, TimmBackbone(random_resnet), TASK)
    alone = Scratch(ScratchOptions(**{**SMALL, "fractions": [0.25]})).measure(
        FakeContext(), RANDOM, TimmBackbone(random_resnet), TASK)
    assert {(r.metric, r.shots, r.seed, r.value) for r in alone} == {
        (r.metric, r.shots, r.seed, r.value) for r in both if r.shots == 32}


def test_scratch_learns_the_toy_task_with_a_budget_that_grows(random_resnet):
    options = ScratchOptions(**{**SMALL, "fractions": [1.0], "epochs": 16, "patience": 5, "seeds": [0, 1]})
    rows = Scratch(options).measure(FakeContext(), RANDOM, TimmBackbone(random_resnet), TASK)
    acc = rows_by(rows, "scratch_accuracy")
    assert acc.keys() == {(120, 0), (120, 1)} and rows_by(rows, "scratch_budget_steps")[(120, 0)] == 40
    assert min(acc.values()) >= 0.7, acc  # chance is 0.25


def test_an_lr_grid_keeps_the_best_on_validation_and_skips_divergence(random_resnet):
    grid = dict(SMALL, fractions=[0.25, 1.0], epochs=4)
    model = fresh_statistics(random_resnet)  # as the protocol trains it
    alone = {lr: train_at_sizes(model, TOY, ScratchOptions(**grid, lr=lr), preprocess=to_tensor)
             for lr in (0.02, 0.2)}
    chosen = train_at_sizes(model, TOY, ScratchOptions(**grid, lr=[0.02, 1e30, 0.2]), preprocess=to_tensor)
    for i, (_seed, _n, _steps, lr, result) in enumerate(chosen):
        runs = {v: alone[v][i][4] for v in alone}
        best = max(runs, key=lambda v: (runs[v].val_accuracy, -v))  # a tie keeps the first listed, 0.02
        assert lr == best and result.accuracy == runs[best].accuracy and result.best_step == runs[best].best_step
    rows = Scratch(ScratchOptions(**grid, lr=[0.02, 0.2])).measure(FakeContext(), RANDOM, TimmBackbone(random_resnet),
                                                                   TASK)
    assert rows_by(rows, "scratch_lr") == {(n, seed): lr for seed, n, _, lr, _ in chosen}
    with pytest.raises(ValueError, match="set val_fraction > 0"):
        FinetuneOptions(lr=[0.01, 0.1])
    with pytest.raises(RunFailed, match="every learning rate of the grid"):
        train_at_sizes(random_resnet, TOY, ScratchOptions(**grid, lr=[1e30, 1e31]), preprocess=to_tensor)


def test_fresh_statistics_owe_nothing_to_upstream(random_resnet):
    bn = [m for m in random_resnet.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bn and bn[0].momentum is None and bn[0].running_mean.abs().sum() > 0  # cumulative, on upstream images
    fresh = [m for m in fresh_statistics(random_resnet).modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.momentum == 0.1 and not m.running_mean.any() and bool((m.running_var == 1).all())
               and m.num_batches_tracked == 0 for m in fresh)
    fresh_weights = dict(fresh_statistics(random_resnet).named_parameters())
    assert all(torch.equal(p, fresh_weights[k]) for k, p in random_resnet.named_parameters())


def test_scratch_runs_only_on_random_init_runs():
    proto = Scratch(ScratchOptions(tasks=["toy"], runs=["resnet-*"]))

    class Plan:
        def tasks_of(self, run):
            return [TASK, Task("other")]

    trained = Run("t", "resnet-s-d1-s100", "trained", "resnet", "s", {})
    assert proto.tasks_for(Plan(), RANDOM) == [TASK] and proto.tasks_for(Plan(), trained) == []
    assert not Scratch(ScratchOptions()).enabled()
    with pytest.raises(ValueError, match="fractions or per_class, not both"):
        ScratchOptions(tasks=["toy"], per_class=[5])  # the default fractions are set
    assert ScratchOptions(tasks=["toy"], fractions=None, per_class=[5]).sizes() == [{"per_class": 5}]


# ---- fine-tuning's data-size axis -----------------------------------------------------------------------------


def test_finetune_defaults_keep_their_key_and_rows(random_resnet):
    options = FinetuneOptions(tasks=["toy"], steps=6, lr=0.05, batch_size=16)
    proto = Finetune(options)
    recipe = dict(steps=6, lr=0.05, batch_size=16, warmup_fraction=0.1, max_shift=2, momentum=0.9, clip_norm=1.0,
                  seed=0)
    assert proto.key(RANDOM, TASK) == config_key({"run": "k", "task": "toy", "options": {}, "finetune": recipe,
                                                 "recipe": "finetune-v1"})  # as before the size axis existed
    [row] = proto.measure(FakeContext(), RANDOM, TimmBackbone(random_resnet), TASK)
    direct = finetune(random_resnet, TOY.x_train, TOY.y_train, TOY.x_test, TOY.y_test, num_classes=4, **recipe)
    assert (row.metric, row.value, row.seed) == ("finetune_accuracy", direct.accuracy, 0) and row.shots == NA
    sized = Finetune(FinetuneOptions(tasks=["toy"], steps=6, lr=0.05, batch_size=16, per_class=[3, 40]))
    assert sized.key(RANDOM, TASK) != proto.key(RANDOM, TASK)
    rows = sized.measure(FakeContext(), RANDOM, TimmBackbone(random_resnet), TASK)
    assert [(r.shots, r.seed) for r in rows] == [(12, 0), (160, 0)]
    assert rows[1].value == direct.accuracy  # every example of every class: the whole pool, as the default


def test_per_class_beyond_a_class_fails_before_any_work():
    class Plan:
        tasks = [TASK]

    proto = Finetune(FinetuneOptions(tasks=["toy"], per_class=[35], val_fraction=0.2))
    with pytest.raises(TransferscaleError, match="has a class with 32 in its training pool"):
        proto.check(Plan(), lambda task: TOY)


# ---- in a study -----------------------------------------------------------------------------------------------


def test_a_study_with_a_scratch_table(tiny_spec):
    from transferscale.engine.runner import run_study
    from transferscale.spec import parse_spec
    from transferscale.store import read_results

    path, out = tiny_spec(steps=5)
    text = path.read_text() + (
        "[scratch]\ntasks = [\"fractals_heldout\"]\nruns = [\"resnet-*\"]\nfractions = [0.5, 1.0]\n"
        "epochs = 2\nmin_steps = 3\nmax_steps = 10\nevaluations = 3\n")
    result = run_study(parse_spec(text), text, out)
    assert result.failed == {}
    df = read_results(out)
    scratch = df[df.metric == "scratch_accuracy"]
    # 5 held-out classes x 25 training images; 10% (2 or 3 each: round(2.5) = 2) to validation, 23 left;
    # half of 23 rounds to 12
    assert scratch.name.unique().tolist() == ["resnet-s-random"]
    assert sorted(scratch.shots.tolist()) == [60, 115] and scratch.seed.tolist() == [0, 0]
    assert set(df[df.metric == "scratch_budget_steps"].value) == {3.0, 4.0}  # ceil(2 * 115 / 64) = 4
    ft_rows = df[df.metric == "finetune_accuracy"]
    assert ft_rows.shots.isna().all() and len(ft_rows) == 2  # fine-tuning as before: no size axis
    with pytest.raises(TransferscaleError, match="none matches scratch.runs"):
        bad = text.replace('runs = ["resnet-*"]\nfractions', 'runs = ["nothing"]\nfractions')
        run_study(parse_spec(bad), bad, out.with_name("bad"))
