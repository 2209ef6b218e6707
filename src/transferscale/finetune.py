"""Full fine-tuning: the other transfer protocol, every weight trained on the downstream task.

The recipe follows the ViT paper's transfer defaults (Dosovitskiy et al. 2021), which Abnar et al. 2021 use for
their fine-tuning results, scaled to tiny networks on a 2-core CPU:

- a new linear head of `num_classes` outputs, weights and bias set to zero;
- every parameter trained, on softmax cross-entropy, by SGD with momentum 0.9 and no weight decay;
- before each update, the gradients of all parameters together are scaled so their global L2 norm is at
  most 1: g <- g * min(1, clip_norm / ||g||_2), with ||g||_2 over the concatenation of every gradient;
- learning rate warms up linearly over the first `warmup_fraction` of the steps, then decays to zero on a
  cosine (`pretrain.lr_at`, the same schedule as upstream);
- batches of `batch_size` drawn with replacement, each image shifted by up to `max_shift` pixels, both from
  a generator seeded by (seed, step), as upstream.

Why the head starts at zero: the logits are all 0, so the first loss is exactly log(num_classes) and the
gradient that reaches the backbone, dL/dfeatures = W^T (softmax - onehot), is zero at the first step. Only
the head moves at first; the backbone starts to change once the head points somewhere useful. A randomly
initialised head would instead send large, random gradients into the pretrained features in the early steps
and spoil what transfer is meant to measure. It also gives a known answer: with a zero head (no steps) every
logit ties and argmax picks class 0, so accuracy is the share of class 0 in the test set.

BatchNorm (ResNet): train mode while fine-tuning, so each batch is normalised with its own statistics and
the running statistics move towards the downstream data (momentum 0.1, PyTorch's default: after 30 steps
they are 96% downstream); eval mode for the test accuracy, which uses those running statistics, as the
upstream evaluation does. ViT and MLP-Mixer use
LayerNorm and are unaffected.

Early stopping (`validation=(x_val, y_val)`), which the data-size axis of protocols/finetune.py and the
scratch protocol use: the schedule (warmup and cosine over all `steps`) is unchanged; every
e = ceil(steps / evaluations) steps, and after the last, the model's accuracy on the validation split is
measured (eval mode, as the test accuracy); a checkpoint replaces the best so far only when its accuracy is
strictly higher (on a tie the earlier, shorter-trained one stays); training stops once `patience`
evaluations in a row have not improved on the best, and the test accuracy is that of the best checkpoint.
The steps run in chunks of e through the same `sgd_steps`, each step seeded by (seed, step) as before, so a
run that never stops early computes the same weights as one without validation.

The budget rule for a training set of n examples (`budget_steps`): steps(n) = clip(ceil(epochs * n / B),
min_steps, max_steps) with B the batch size, so the number of passes over the data, not the number of
updates, is what stays fixed as the data grows; `min_steps` keeps a tiny set from getting a handful of
updates (its warmup would be under one step), `max_steps` bounds the cost of a large one.

The data-size axis (`validation_split`, `nested_subset`): a validation split is carved from each class's
training pool first (the same for every size, as a fixed dev set), then each size takes the first
fraction (or the first k) of every class under one seeded shuffle of the rest, so a smaller set is a subset of
every larger one (nested) and each class keeps its share (stratified).
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

from transferscale.errors import TransferscaleError
from transferscale.models.grid import to_tensor
from transferscale.pretrain import RunFailed, sgd_steps


@dataclass(frozen=True)
class FinetuneRecipe:
    """The fine-tuning hyper-parameters; `finetune(..., **dataclasses.asdict(recipe))` runs one."""

    steps: int = 100
    lr: float = 0.01
    batch_size: int = 64
    warmup_fraction: float = 0.1
    max_shift: int = 2
    momentum: float = 0.9
    clip_norm: float | None = 1.0  # None: no clipping
    seed: int = 0


DEFAULT = FinetuneRecipe()

# The first loss is exactly log(num_classes) (zero head). Clipping bounds each update and BatchNorm or LayerNorm
# undo the scale of the weights before them, so a run with far too high a learning rate can keep a finite loss
# of 1e30 for many steps; a loss this many times the first one counts as diverged too.
DIVERGED = 1000.0


@dataclass
class FinetuneResult:
    accuracy: float  # test top-1 of the fine-tuned model (the best checkpoint under early stopping), eval mode
    final_loss: float  # training loss of the last step trained; nan when steps == 0
    steps: int  # steps trained (fewer than asked when early stopping ended the run)
    seconds: float  # wall time of training and test evaluation
    best_step: int | None = None  # the step of the checkpoint kept (early stopping); None without validation
    val_accuracy: float | None = None  # its validation accuracy


def budget_steps(n: int, *, batch_size: int, epochs: float, min_steps: int, max_steps: int) -> int:
    """steps(n) = clip(ceil(epochs * n / batch_size), min_steps, max_steps): `epochs` passes over n examples."""
    if n < 1 or batch_size < 1 or epochs <= 0 or not 1 <= min_steps <= max_steps:
        raise TransferscaleError(f"the budget rule needs n >= 1, batch_size >= 1, epochs > 0 and 1 <= min_steps <= "
                                 f"max_steps; got n={n}, batch_size={batch_size}, epochs={epochs}, "
                                 f"min_steps={min_steps}, max_steps={max_steps}")
    # round first: epochs * n / batch_size in floating point can land a hair above an integer
    return int(min(max_steps, max(min_steps, math.ceil(round(epochs * n / batch_size, 9)))))


def _class_order(y: np.ndarray, c: int, seed: int, salt: int) -> np.ndarray:
    """Class c's indices into y under the shuffle seeded by (seed, c, salt)."""
    return np.random.default_rng([seed, int(c), salt]).permutation(np.flatnonzero(y == c))


def validation_split(y: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(pool, val): indices into y, sorted. Each class gives max(1, round(val_fraction * count)) examples to
    val, never all of them (at least one stays in the pool); val_fraction = 0 gives an empty val."""
    if not 0 <= val_fraction < 1:
        raise TransferscaleError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    if val_fraction == 0:
        return np.arange(len(y)), np.empty(0, dtype=np.int64)
    val = []
    for c in np.unique(y):
        order = _class_order(y, c, seed, 11)  # its own salt: apart from the subsets' shuffle
        take = min(len(order) - 1, max(1, round(val_fraction * len(order))))
        val.append(order[:take])
    val_idx = np.sort(np.concatenate(val))
    return np.setdiff1d(np.arange(len(y)), val_idx), val_idx


def nested_subset(y: np.ndarray, seed: int, *, fraction: float | None = None,
                  per_class: int | None = None) -> np.ndarray:
    """Indices into y, sorted: the first max(1, round(fraction * count)) of each class, or its first
    min(per_class, count), under the shuffle `pretrain.subset_indices` uses; nested across sizes."""
    from transferscale.pretrain import subset_indices

    if (fraction is None) == (per_class is None):
        raise TransferscaleError("nested_subset takes one of fraction or per_class")
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise TransferscaleError(f"a data fraction must lie in (0, 1], got {fraction}")
        return subset_indices(y, fraction, seed)
    if per_class < 1:
        raise TransferscaleError(f"per_class must be >= 1, got {per_class}")
    return np.sort(np.concatenate([_class_order(y, c, seed, 7)[:per_class] for c in np.unique(y)]))


def clipped_step(optimizer: torch.optim.Optimizer, params: Iterable[torch.Tensor], clip_norm: float | None) -> float:
    """Scale the gradients to a global L2 norm of at most `clip_norm`, then step; returns the norm before."""
    params = list(params)
    if clip_norm is None:
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params
                                                     if p.grad is not None]))
    else:
        norm = torch.nn.utils.clip_grad_norm_(params, clip_norm)
    optimizer.step()
    return float(norm)


def with_zero_head(model: torch.nn.Module, num_classes: int) -> torch.nn.Module:
    """A deep copy of `model` with a new `num_classes`-way linear head whose weights and bias are zero.

    Every parameter is set to train, except those the model's own `frozen_parameters()` names when it has
    one (e.g. an LSTM's copied pretrained embeddings, `models/lstm_text.py`).
    """
    if not hasattr(model, "reset_classifier"):
        raise TransferscaleError(f"cannot fine-tune a {type(model).__name__}: it has no timm `reset_classifier`; "
                                 "pass a timm model")
    model = copy.deepcopy(model)
    model.reset_classifier(num_classes)
    with torch.no_grad():
        for p in model.get_classifier().parameters():
            p.zero_()
    for p in model.parameters():
        p.requires_grad_(True)
    frozen = getattr(model, "frozen_parameters", None)
    for p in (frozen() if callable(frozen) else ()):
        p.requires_grad_(False)
    return model


def is_image_batch(x) -> bool:
    """True for an image tensor [N, C, H, W], the only input random pixel shifts apply to."""
    return isinstance(x, torch.Tensor) and x.dim() == 4


def _check_inputs(x_train, y_train, x_test, y_test, num_classes: int, steps: int, batch_size: int) -> None:
    if num_classes < 2:
        raise TransferscaleError(f"fine-tuning needs num_classes >= 2, got {num_classes}")
    if steps < 0 or batch_size < 1:
        raise TransferscaleError(f"fine-tuning needs steps >= 0 and batch_size >= 1, got {steps} and {batch_size}")
    if len(x_train) == 0 or len(x_train) != len(y_train) or len(x_test) == 0 or len(x_test) != len(y_test):
        raise TransferscaleError(
            f"fine-tuning needs non-empty train and test sets with one label per image; got train "
            f"{len(x_train)} images / {len(y_train)} labels, test {len(x_test)} images / {len(y_test)} labels")
    for name, y in (("train", y_train), ("test", y_test)):
        if y.min() < 0 or y.max() >= num_classes:
            raise TransferscaleError(f"{name} labels must lie in [0, {num_classes}); got {y.min()}..{y.max()}: "
                                     "set num_classes to the task's number of classes")


def finetune(model: torch.nn.Module, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
             y_test: np.ndarray, *, num_classes: int, steps: int = DEFAULT.steps, lr: float = DEFAULT.lr,
             batch_size: int = DEFAULT.batch_size, warmup_fraction: float = DEFAULT.warmup_fraction,
             max_shift: int = DEFAULT.max_shift, momentum: float = DEFAULT.momentum,
             clip_norm: float | None = DEFAULT.clip_norm, seed: int = DEFAULT.seed,
             on_step: Callable[[int, int, float], None] | None = None,
             preprocess: Callable[[np.ndarray], torch.Tensor] = to_tensor,
             validation: tuple[np.ndarray, np.ndarray] | None = None, patience: int = 5,
             evaluations: int = 10, precision: str = "fp32") -> FinetuneResult:
    """Fine-tune a copy of `model` on (x_train, y_train) and report its test accuracy.

    `preprocess` maps a batch of the dataset's raw inputs to the model's input: by default the grid models'
    `to_tensor` for uint8 images (N, H, W[, C]); for texts (a 1-D array of str) a tokenizer returning a
    `models.hf_text.TokenBatch`, which the loop indexes as it does an image tensor. Augmentation follows the
    input: random shifts of up to `max_shift` pixels for image tensors, none for token batches (a text has no
    pixels to shift; `max_shift` is then ignored). The caller's model is left as it was. Raises `RunFailed` when the
    loss or the weights stop being finite, or the loss grows to `DIVERGED` times its first value, log(num_classes).
    `validation` (images, labels) turns on early stopping (module docstring): a check every
    ceil(steps / evaluations) steps, a stop after `patience` checks in a row without a new best; the best
    checkpoint is tested. The copy trains where `model`'s parameters are (a CUDA device, say), batches moved
    there as they are drawn, forward passes under `precision`'s autocast (transferscale.device).
    """
    _check_inputs(x_train, y_train, x_test, y_test, num_classes, steps, batch_size)
    if validation is not None and (len(validation[0]) == 0 or len(validation[0]) != len(validation[1])
                                   or patience < 1 or evaluations < 1):
        raise TransferscaleError(f"early stopping needs a non-empty validation split with one label per image, "
                                 f"patience >= 1 and evaluations >= 1; got {len(validation[0])} images / "
                                 f"{len(validation[1])} labels, patience={patience}, evaluations={evaluations}")
    start = time.perf_counter()
    # A private global RNG: any dropout is seeded too, and the caller's random state is left alone.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        device = next(model.parameters()).device
        net = with_zero_head(model, num_classes).to(device)  # the new head is built on the CPU
        train = dict(num_classes=num_classes, steps=steps, lr=lr, batch_size=batch_size,
                     warmup_fraction=warmup_fraction, max_shift=max_shift, momentum=momentum,
                     clip_norm=clip_norm, seed=seed, on_step=on_step, precision=precision)
        x_all, y_all = preprocess(x_train), torch.from_numpy(y_train.astype(np.int64))
        if not is_image_batch(x_all):
            train["max_shift"] = 0
        if validation is None:
            loss_value, done, best = _train(net, x_all, y_all, **train), steps, None
        else:
            loss_value, done, best = _train_early_stopped(net, x_all, y_all, preprocess, validation, patience,
                                                          evaluations, **train)
        acc = _accuracy(net, preprocess, x_test, y_test, precision=precision)
    return FinetuneResult(accuracy=acc, final_loss=loss_value, steps=done, seconds=time.perf_counter() - start,
                          best_step=None if best is None else best[0], val_accuracy=None if best is None else best[1])


def _train(net: torch.nn.Module, x_all: torch.Tensor, y_all: torch.Tensor, *, num_classes: int, steps: int,
           lr: float, batch_size: int, warmup_fraction: float, max_shift: int, momentum: float, clip_norm: float | None,
           seed: int, on_step: Callable[[int, int, float], None] | None, start: int = 0, stop: int | None = None,
           opt: torch.optim.Optimizer | None = None, precision: str = "fp32") -> float:
    """Steps `start` to `stop` (default: all) of the `steps`-step schedule; `opt` carries momentum between calls.
    Only the parameters that require gradients are updated (and clipped together)."""
    params = [p for p in net.parameters() if p.requires_grad]
    if opt is None:
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=0.0)

    def check_loss(loss: float, step: int) -> None:
        if not math.isfinite(loss) or loss > DIVERGED * math.log(num_classes):
            raise RunFailed(f"fine-tuning loss diverged to {loss:.4g} at step {step} of {steps} with lr={lr}; "
                            "lower the fine-tuning learning rate")

    report = None if on_step is None else (lambda step, _end, loss: on_step(step, steps, loss))
    loss_value = sgd_steps(net, opt, x_all, y_all, steps=steps, start=start, stop=stop, seed=seed,
                           batch_size=batch_size, max_shift=max_shift, lr=lr, warmup_fraction=warmup_fraction,
                           check_loss=check_loss, update=lambda: clipped_step(opt, params, clip_norm),
                           on_step=report, device=_device_of(net), precision=precision)
    if not all(bool(torch.isfinite(p).all()) for p in params):
        raise RunFailed(f"fine-tuning weights became non-finite in the last step with lr={lr}; "
                        "lower the fine-tuning learning rate")
    return loss_value


def _train_early_stopped(net: torch.nn.Module, x_all: torch.Tensor, y_all: torch.Tensor, preprocess,
                         validation: tuple[np.ndarray, np.ndarray], patience: int, evaluations: int,
                         **train) -> tuple[float, int, tuple[int, float]]:
    """Train in chunks of ceil(steps / evaluations) steps, validating after each; leave `net` at the best
    checkpoint. Returns the last loss, the steps trained and (best step, its validation accuracy)."""
    steps = train["steps"]
    every = max(1, math.ceil(steps / evaluations))
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=train["lr"],
                          momentum=train["momentum"], weight_decay=0.0)
    best_step, best_acc, best_state = 0, -1.0, None
    done, stale, loss_value = 0, 0, float("nan")
    while done < steps and stale < patience:
        stop = min(steps, done + every)
        loss_value = _train(net, x_all, y_all, start=done, stop=stop, opt=opt, **train)
        done = stop
        acc = _accuracy(net, preprocess, *validation, precision=train["precision"])
        if acc > best_acc:
            best_step, best_acc, stale = done, acc, 0
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        else:
            stale += 1
    if best_state is None:  # steps == 0: the zero-head model is the only checkpoint
        best_acc = _accuracy(net, preprocess, *validation, precision=train["precision"])
    else:
        net.load_state_dict(best_state)
    return loss_value, done, (best_step, best_acc)


def _device_of(net: torch.nn.Module):
    """Where `net` computes: None on the CPU (the training loop then moves nothing), else its device."""
    device = next(net.parameters()).device
    return None if device.type == "cpu" else device


@torch.no_grad()
def _accuracy(net: torch.nn.Module, preprocess, x: np.ndarray, y: np.ndarray, batch: int = 500,
              precision: str = "fp32") -> float:
    """Top-1 accuracy of `net` on (x, y), in eval mode (BatchNorm on its running statistics), on its device."""
    from transferscale.device import autocast, to_device

    net.eval()
    device = next(net.parameters()).device
    correct = 0
    for i in range(0, len(x), batch):
        with autocast(device, precision):
            logits = net(to_device(preprocess(x[i:i + batch]), device))
        correct += int((logits.float().argmax(1).cpu().numpy() == y[i:i + batch]).sum())
    return correct / len(x)
