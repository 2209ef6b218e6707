"""Full fine-tuning: a network learns a toy task, the caller's model is untouched, runs repeat bit for bit."""
import dataclasses
import inspect

import numpy as np
import pytest
import torch

from transferscale.finetune import DEFAULT, FinetuneRecipe, clipped_step, finetune, with_zero_head
from transferscale.models import build_named
from transferscale.pretrain import RunFailed


def stripes(counts, seed):
    """Four textures, one per class: horizontal, vertical and diagonal stripes, and a checkerboard, each at a
    random phase with pixel noise, so every 7x7 patch (and every shifted copy) says which class it is."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(counts)), counts)
    x = np.empty((len(y), 28, 28), np.uint8)
    for i, label in enumerate(y):
        r, c = np.mgrid[:28, :28] + rng.integers(0, 4)
        bright = (r % 4 < 2, c % 4 < 2, (r + c) % 4 < 2, (r // 4 + c // 4) % 2 == 0)[label]
        x[i] = np.where(bright, 200, 30) + rng.integers(0, 40, (28, 28))
    return x, y


TRAIN = stripes([40, 40, 40, 40], seed=0)
TEST = stripes([14, 10, 8, 8], seed=1)  # class 0 is 14/40 = 35% of the test set, not a quarter
FAST = dict(num_classes=4, lr=0.2, batch_size=32)  # random-init backbones want a larger lr than pretrained


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return build_named("resnet", "s", num_classes=10)


def test_zero_head_predicts_class_zero(resnet):
    result = finetune(resnet, *TRAIN, *TEST, steps=0, **FAST)
    assert result.accuracy == 14 / 40 and result.steps == 0 and np.isnan(result.final_loss)
    head = with_zero_head(resnet, 4).get_classifier()
    assert head.out_features == 4 and not head.weight.any() and not head.bias.any()


@pytest.mark.parametrize("family, steps", [("resnet", 20), ("vit", 30)])
def test_learns_a_toy_task_and_leaves_the_callers_model_alone(family, steps):
    torch.manual_seed(0)
    model = build_named(family, "s", num_classes=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []
    result = finetune(model, *TRAIN, *TEST, steps=steps, on_step=lambda s, n, loss: seen.append((s, n)), **FAST)
    assert result.accuracy >= 0.75, result  # chance is 0.25, the zero head 0.35
    assert result.final_loss < np.log(4)
    assert seen == [(s, steps) for s in range(1, steps + 1)]
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert model.get_classifier().out_features == 10 and model.training


def test_same_seed_same_result_bit_for_bit(resnet):
    a, b = (finetune(resnet, *TRAIN, *TEST, steps=4, seed=3, **FAST) for _ in range(2))
    assert (a.accuracy, a.final_loss) == (b.accuracy, b.final_loss)


def test_clipping_bounds_the_update():
    layer = torch.nn.Linear(10, 10)
    grads = [torch.randn(p.shape, generator=torch.Generator().manual_seed(i)) * 1e6
             for i, p in enumerate(layer.parameters())]
    for clip_norm, expected in ((1.0, 1.0), (None, float(torch.cat([g.flatten() for g in grads]).norm()))):
        before = [p.detach().clone() for p in layer.parameters()]
        for p, g in zip(layer.parameters(), grads):
            p.grad = g.clone()
        opt = torch.optim.SGD(layer.parameters(), lr=1.0, momentum=0.9)
        norm = clipped_step(opt, layer.parameters(), clip_norm)
        moved = torch.cat([(p.detach() - b).flatten() for p, b in zip(layer.parameters(), before)]).norm()
        assert norm > 1e6  # the norm before clipping
        assert moved.item() == pytest.approx(expected, rel=1e-4)


def test_divergence_raises_run_failed(resnet):
    with pytest.raises(RunFailed, match="lower the fine-tuning learning rate"):
        finetune(resnet, *TRAIN, *TEST, steps=10, **{**FAST, "lr": 1e30})


def test_a_recipe_runs_as_keyword_arguments():
    assert DEFAULT == FinetuneRecipe(steps=100, lr=0.01, batch_size=64, warmup_fraction=0.1, max_shift=2,
                                     momentum=0.9, clip_norm=1.0, seed=0)
    defaults = inspect.signature(finetune).parameters
    assert all(defaults[k].default == v for k, v in dataclasses.asdict(DEFAULT).items())
    result = finetune(build_named("vit", "s"), *TRAIN, *TEST, num_classes=4,
                      **{**dataclasses.asdict(DEFAULT), "steps": 2})
    assert result.steps == 2 and np.isfinite(result.final_loss)
