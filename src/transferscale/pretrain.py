"""Train one upstream model, with atomic checkpoints it can resume from.

Recipe: AdamW (the classifier head optionally with its own weight decay and learning-rate multiplier), linear
warmup then cosine decay to zero, cross-entropy, batch sampled from the run's data
fraction, every image shifted by up to `max_shift` pixels (zero fill). Each step draws its batch and its
shifts from a generator seeded by (seed, step), so a run resumed from a checkpoint at step s computes exactly
what the uninterrupted run would have from step s on.
"""
from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from transferscale.models.grid import PIXEL_SCALE, PIXEL_SHIFT, build_model, to_tensor

CHECKPOINT_SECONDS = 60.0  # checkpoint at least this often (seconds), whatever checkpoint_every says


class RunFailed(Exception):
    """A run that cannot finish (diverged loss, bad data); recorded as failed, the study goes on."""


def subset_indices(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """The first `fraction` of each class under a seeded shuffle: nested across fractions, stratified."""
    keep = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        perm = np.random.default_rng([seed, int(c), 7]).permutation(idx)
        keep.append(perm[: max(1, round(fraction * len(idx)))])
    return np.sort(np.concatenate(keep))


def lr_at(step: int, steps: int, base_lr: float, warmup_fraction: float) -> float:
    warmup = int(round(warmup_fraction * steps))
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by its own integer offset in [-max_shift, max_shift]^2, filling with background."""
    if max_shift == 0:
        return x
    n, _, h, w = x.shape
    pad = F.pad(x, (max_shift,) * 4, value=-PIXEL_SHIFT / PIXEL_SCALE)
    off = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=gen)
    rows = off[:, 0, None] + torch.arange(h)[None]  # [n, h]
    cols = off[:, 1, None] + torch.arange(w)[None]  # [n, w]
    batch = torch.arange(n)[:, None, None]
    if x.shape[1] == 1:
        return pad[:, 0][batch, rows[:, :, None], cols[:, None, :]].unsqueeze(1)
    # several channels: gather [n, h, w, C] from the channels-last view, then back to a plain NCHW layout
    shifted = pad.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    return shifted.clone(memory_format=torch.contiguous_format)


# ---- checkpoints ------------------------------------------------------------------------------------------


def save_checkpoint(path: Path, state: dict) -> None:
    """Write atomically: the state and its sha256 sidecar (which lets a reader detect a damaged file) each go
    to a temporary file first, fsynced, and only then are both renamed into place. A write that fails (a full
    disk, a read-only directory) leaves the previous checkpoint and its sidecar as they were, no temporary
    file behind, and raises an OSError naming the checkpoint."""
    import io

    from transferscale.files import replace, temp_beside, with_path

    buffer = io.BytesIO()
    torch.save(state, buffer)  # in memory: torch reports a failed file write as a RuntimeError, not an OSError
    data = buffer.getbuffer()
    sidecar = path.with_suffix(path.suffix + ".sha256")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise with_path(err, path.parent) from None
    _sweep_temporaries(path, sidecar)
    data_tmp = temp_beside(path, lambda fh: fh.write(data))
    try:
        sidecar_tmp = temp_beside(sidecar, lambda fh: fh.write(hashlib.sha256(data).hexdigest().encode()))
    except BaseException:
        data_tmp.unlink(missing_ok=True)
        raise
    try:
        replace(sidecar_tmp, sidecar)
    except BaseException:
        data_tmp.unlink(missing_ok=True)
        raise
    replace(data_tmp, path)  # a crash between the renames leaves a mismatch, which reads as "no checkpoint"


STALE_TMP_SECONDS = 600.0  # a checkpoint's temporary file this old was left by a process killed mid-write


def _sweep_temporaries(*paths: Path) -> None:
    """Remove temporary files of these checkpoint paths left by a process killed while writing them (only
    those older than STALE_TMP_SECONDS, so a write in progress elsewhere is never touched)."""
    now = time.time()
    for path in paths:
        for tmp in path.parent.glob(f".{path.name}.*.tmp"):
            try:
                if now - tmp.stat().st_mtime > STALE_TMP_SECONDS:
                    tmp.unlink()
            except FileNotFoundError:  # another process swept it first
                pass


def load_checkpoint(path: Path) -> dict | None:
    """The checkpoint's state, or None when it is missing, half-written or does not match its checksum."""
    sidecar = path.with_suffix(path.suffix + ".sha256")
    if not path.is_file() or not sidecar.is_file():
        return None
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != sidecar.read_text().strip():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # a file that hashes right but will not unpickle is as good as missing
        return None


def discard_checkpoint(path: Path) -> None:
    for p in (path, path.with_suffix(path.suffix + ".sha256")):
        p.unlink(missing_ok=True)


# ---- training ---------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    model: torch.nn.Module
    steps_done: int
    resumed_from: int
    final_loss: float


def step_generator(seed: int, step: int) -> torch.Generator:
    """The random stream of one training step: batch indices and shifts are drawn from it alone.

    Seeded with seed * 1_000_003 + step: 1,000,003 is a prime above any step count a run has, so two
    (seed, step) pairs share a stream only if they are equal, and a run resumed at step s draws exactly
    what the uninterrupted run drew at step s.
    """
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def sgd_steps(model: torch.nn.Module, opt: torch.optim.Optimizer, x_all: torch.Tensor, y_all: torch.Tensor, *,
              steps: int, start: int = 0, stop: int | None = None, seed: int, batch_size: int,
              max_shift: int, lr: float,
              warmup_fraction: float, check_loss: Callable[[float, int], None],
              update: Callable[[], None] | None = None,
              on_step: Callable[[int, int, float], None] | None = None,
              after_step: Callable[[int, float], None] | None = None,
              device=None, precision: str = "fp32") -> float:
    """The training loop both pre-training and fine-tuning run, from `start` to `stop` (default `steps`) of a
    `steps`-step schedule; returns the last loss.

    Each step: a batch of `batch_size` drawn with replacement and shifted by up to `max_shift` pixels (both
    from `step_generator(seed, step)`), the learning rate of `lr_at` (times a parameter group's `lr_mult`,
    when it has one), cross-entropy, `check_loss(loss, step)`
    (raises RunFailed to stop), backward, then `update()` (default `opt.step()`), `on_step(step + 1, stop,
    loss)` and `after_step(step + 1, loss)`.

    Batches are drawn and shifted on the CPU whatever the device (the same random stream everywhere), then
    moved to `device` (default: where they are), whose forward pass and loss run under `precision`'s
    autocast (transferscale.device; "fp32": none).
    """
    from transferscale.device import autocast, to_device

    model.train()
    loss_value = float("nan")
    end = steps if stop is None else stop
    for step in range(start, end):
        gen = step_generator(seed, step)
        batch = torch.randint(0, len(x_all), (batch_size,), generator=gen)
        x = random_shift(x_all[batch], max_shift, gen)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup_fraction) * group.get("lr_mult", 1.0)
        x, target = (x, y_all[batch]) if device is None else (to_device(x, device), to_device(y_all[batch], device))
        with autocast(device or "cpu", precision):
            loss = F.cross_entropy(model(x).float(), target)
        loss_value = loss.item()
        check_loss(loss_value, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        (update or opt.step)()
        if on_step is not None:
            on_step(step + 1, end, loss_value)
        if after_step is not None:
            after_step(step + 1, loss_value)
    return loss_value


def train(config: dict, x_train: np.ndarray, y_train: np.ndarray, num_classes: int, ckpt_path: Path, *,
          checkpoint_every: int = 200, checkpoint_seconds: float = CHECKPOINT_SECONDS,
          on_step: Callable[[int, int, float], None] | None = None,
          keep: dict[int, Path] | None = None, resume_from: tuple[Path, ...] = (), device=None,
          precision: str = "fp32") -> TrainResult:
    """Train the run described by `config` (see plan.make_plan), resuming from `ckpt_path` when it holds a
    valid checkpoint of the same run. The finished model is checkpointed with `complete=True`.

    A checkpoint is written every `checkpoint_every` steps and also whenever `checkpoint_seconds` have passed
    since the last one, so a kill loses at most that much work however slow the steps are. Checkpoints never
    change the result: a resumed run computes exactly what the uninterrupted one would.

    Snapshots: a config whose training table has `schedule_steps` stops after `steps` of a run of
    `schedule_steps` (same learning-rate schedule, same batches), giving the model that run has at that step.
    `keep` maps steps to paths where the full run saves its model as it passes them (complete checkpoints of
    those snapshots); `resume_from` lists other checkpoints of the same trajectory (the full run's) a snapshot
    may start from when they are not past its step. Every checkpoint records the full run's config.

    The network is built for the images' size and channel count (x_train: uint8 (N, H, W[, C])), and trained
    on `device` (default the CPU) under `precision` (see sgd_steps); checkpoints load onto that device.
    """
    from transferscale.plan import trajectory_config

    full = trajectory_config(config)
    t = full["training"]
    seed, steps, stop = t["seed"], t["steps"], config["training"]["steps"]
    torch.manual_seed(seed)
    model = build_model(config["family"], config["shape"], num_classes, **image_geometry(x_train))
    if device is not None:
        model.to(device)
    opt = torch.optim.AdamW(param_groups(model, t), lr=t["lr"], weight_decay=t["weight_decay"])
    start = 0
    state = _resume_state([ckpt_path, *resume_from], full, stop)
    if state is not None:
        model.load_state_dict(state["model"])
        if state.get("complete") and state["step"] == stop:
            model.eval()
            return TrainResult(model, stop, stop, state.get("loss", float("nan")))
        opt.load_state_dict(state["optimizer"])
        start = state["step"]
    idx = subset_indices(y_train, t["data_fraction"], seed)
    x_all, y_all = to_tensor(x_train[idx]), torch.from_numpy(y_train[idx].astype(np.int64))

    def check_loss(loss: float, step: int) -> None:
        if not math.isfinite(loss):
            raise RunFailed(f"loss diverged to {loss} at step {step}; lower the learning rate")

    last_save = time.monotonic()
    keep = keep or {}

    def checkpoint(done: int, loss: float) -> None:
        nonlocal last_save
        if done in keep and done < stop:
            save_checkpoint(keep[done], {"config": full, "model": model.state_dict(), "step": done,
                                         "complete": True, "loss": loss})
        due = done % checkpoint_every == 0 or time.monotonic() - last_save >= checkpoint_seconds
        if due and done < stop:
            save_checkpoint(ckpt_path, {"config": full, "model": model.state_dict(),
                                        "optimizer": opt.state_dict(), "step": done, "complete": False})
            last_save = time.monotonic()

    loss_value = sgd_steps(model, opt, x_all, y_all, steps=steps, start=start, stop=stop, seed=seed,
                           batch_size=t["batch_size"], max_shift=t["max_shift"], lr=t["lr"],
                           warmup_fraction=t["warmup_fraction"], check_loss=check_loss, on_step=on_step,
                           after_step=checkpoint, device=device, precision=precision)
    model.eval()
    save_checkpoint(ckpt_path, {"config": full, "model": model.state_dict(), "step": stop,
                                "complete": True, "loss": loss_value})
    return TrainResult(model, stop, start, loss_value)


def param_groups(model: torch.nn.Module, training: dict) -> list[dict]:
    """The optimiser's parameter groups: the body, and the classifier head with its own weight decay
    (`head_weight_decay`, default the body's) and learning-rate multiplier (`head_lr_mult`, default 1) when the
    training table sets either; one group of every parameter otherwise (the recipe as it always was)."""
    if "head_weight_decay" not in training and "head_lr_mult" not in training:
        return [{"params": list(model.parameters())}]
    head = {id(p) for p in model.get_classifier().parameters()}
    if not head:
        raise RunFailed("head_weight_decay / head_lr_mult are set but this model has no classifier head")
    body = [p for p in model.parameters() if id(p) not in head]
    return [{"params": body},
            {"params": [p for p in model.parameters() if id(p) in head],
             "weight_decay": training.get("head_weight_decay", training["weight_decay"]),
             "lr_mult": training.get("head_lr_mult", 1.0)}]


def _resume_state(paths: list[Path], full: dict, stop: int) -> dict | None:
    """The furthest valid checkpoint of the trajectory `full` among `paths` that a run stopping at `stop` can
    use: a complete one at exactly `stop`, or one with optimizer state at a step up to `stop`."""
    best = None
    for path in paths:
        state = load_checkpoint(path)
        if state is None or state.get("config") != full or state.get("step", 0) > stop:
            continue
        usable = (state.get("complete") and state["step"] == stop) or "optimizer" in state
        if usable and (best is None or state["step"] > best["step"]):
            best = state
    return best


def image_geometry(x: np.ndarray) -> dict:
    """build_model's img_size and in_chans for uint8 images (N, H, W) or (N, H, W, C)."""
    return {"img_size": (int(x.shape[1]), int(x.shape[2])), "in_chans": 1 if x.ndim == 3 else int(x.shape[3])}


@torch.no_grad()
def recompute_batchnorm(model: torch.nn.Module, x_uint8: np.ndarray, *, batches: int = 8, batch_size: int = 256,
                        seed: int = 0) -> None:
    """Reset BatchNorm running statistics and re-estimate them on a few batches (cumulative average).

    A randomly initialised network's running statistics are those of its initialisation (mean 0, var 1), far
    from its real activations, which puts eval-mode outputs at chance; this makes the random-init baseline fair.
    """
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    rng = np.random.default_rng(seed)
    for _ in range(batches):
        idx = np.sort(rng.choice(len(x_uint8), size=min(batch_size, len(x_uint8)), replace=False))
        model(to_tensor(x_uint8[idx]))
    model.eval()
