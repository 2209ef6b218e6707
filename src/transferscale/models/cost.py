"""What a model costs: parameters, forward FLOPs per example, and training / inference throughput on this machine.

Tay et al. 2021 (*Scale Efficiently*) compare model shapes at equal cost; this module measures the costs.

- `count_params(module)`: sum of `numel()` over the module's parameters (buffers such as BatchNorm statistics
  are not parameters and are not counted).
- `forward_flops(module, x)`: FLOPs of one forward pass, per example, counted by `torch.utils.flop_counter`
  (see its docstring for what is counted), not by a formula of the shape.
- `throughput(module, x, y, train=...)`: examples per second on this machine, threads pinned, warm-up excluded,
  the best of several timed repeats.

A study measures each distinct *architecture* once, not each run: the runs of one family and shape (every
budget, every snapshot, the random-init baseline) share one network, so `architecture_key(run)` gives them one
key, and the `costs` table of the results store holds one row per key (`transferscale cost` fills it).

Importing this module does not import torch: `architecture_key` and `architecture_keys` work on plain configs,
so torch-free readers can map runs to their cost rows.
"""
from __future__ import annotations

import copy
import math
import platform
import statistics
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from transferscale.plan import config_key, shape_label

if TYPE_CHECKING:
    import torch

    from transferscale.data.dataset import Dataset
    from transferscale.plan import Run

# Source options that change a model's weights or how it is batched, never its network: runs that differ only
# in these share an architecture (a pretrained model and its random-init baseline).
NOT_ARCHITECTURE = ("weights", "random_init", "batch_size")


# ---- architectures ----------------------------------------------------------------------------------------


def architecture(config: Mapping) -> dict | None:
    """The fields of a run's config that fix its network, hence its cost; None for a run with no network
    (raw pixels, bag of words).

    A grid run (trained, a snapshot, or its random init): family, shape and the upstream dataset with its
    options (which fix the input size, channel count and the classes the head has). A model from a source:
    the source reference and its options, less those in NOT_ARCHITECTURE.
    """
    if "source" in config:
        options = {k: v for k, v in dict(config.get("options") or {}).items() if k not in NOT_ARCHITECTURE}
        return {"source": config["source"], "options": options}
    if "family" in config and "shape" in config:
        return {"family": config["family"], "shape": config["shape"], "upstream": config.get("upstream")}
    return None


def architecture_key(run: Run | Mapping) -> str | None:
    """`plan.config_key` of `architecture(run.config)`: the same for every run of one network, None for a run
    without one. Accepts a Run or its config."""
    config = run if isinstance(run, Mapping) else run.config
    arch = architecture(config)
    return None if arch is None else config_key(arch)


def architecture_keys(configs: Mapping[str, Mapping]) -> dict[str, str]:
    """{run key: architecture key} for the runs in `configs` ({run key: config}, e.g. `Store.run_configs()`)
    that have a network."""
    out = {}
    for run, config in configs.items():
        key = architecture_key(config)
        if key is not None:
            out[run] = key
    return out


def architecture_label(run: Run) -> str:
    """A short readable name of a run's architecture: `family-size[-shape overrides]`, or the source with
    its architecture options, e.g. `vit-s`, `resnet-m-stem_width8`, `timm:tf_efficientnet_lite0-img_size128`."""
    arch = architecture(run.config)
    if arch is None:
        return run.name
    if "source" in arch:
        return arch["source"] + "".join(f"-{k}{v}" for k, v in sorted(arch["options"].items()))
    if run.size is None:
        return arch["family"]
    return f"{arch['family']}-{shape_label(arch['family'], run.size, arch['shape'])}"


# ---- measuring --------------------------------------------------------------------------------------------


def count_params(module: torch.nn.Module) -> int:
    """Number of parameters: sum over `module.parameters()` of `p.numel()` (shared tensors counted once, as
    `parameters()` yields them once; buffers not counted)."""
    return int(sum(p.numel() for p in module.parameters()))


def _cpu_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """torch's own count for scaled_dot_product_attention (`sdpa_flop_count`: 2 b h L S E for Q K^T plus
    2 b h L S Ev for the weighted sum of V), for the CPU's fused kernel, which torch's table leaves out."""
    from torch.utils.flop_counter import sdpa_flop_count

    return int(sdpa_flop_count(query_shape, key_shape, value_shape))


def _batch_len(x: Any) -> int:
    if isinstance(x, Mapping):
        x = next(iter(x.values()))
    return int(x.shape[0]) if hasattr(x, "shape") else len(x)


def forward_flops(module: torch.nn.Module, example_batch: Any) -> float:
    """FLOPs of one forward pass per example: the total `torch.utils.flop_counter.FlopCounterMode` counts over
    one pass of `module(example_batch)` (eval mode, no gradients), divided by the batch size.

    What is counted is torch's table: matrix products (mm, addmm, bmm, baddbmm: 2 m n k, one multiply and one
    add per multiply-accumulate), convolutions (2 x output elements x input channels per group x kernel area;
    biases not counted) and attention (`scaled_dot_product_attention`: Q K^T and the weighted sum of V; the
    CPU's fused kernel is counted with torch's same formula, which torch 2.x's table lacks). Element-wise
    operations, normalisation, softmax and pooling are not counted; in these networks they are a few percent.
    The module's train/eval mode is restored afterwards.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    extra = {}
    cpu_sdpa = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_sdpa is not None:
        extra[cpu_sdpa] = _cpu_attention_flops
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=extra) as counter:
            module(example_batch)
    finally:
        module.train(was_training)
    return counter.get_total_flops() / _batch_len(example_batch)


@contextmanager
def pinned_threads(threads: int) -> Iterator[None]:
    """torch's intra-op threads and the BLAS / OpenMP pools (threadpoolctl) limited to `threads` for the body,
    restored afterwards. (engine.executors pins jobs the same way; models/ sits above engine/, so it cannot
    import it.)"""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        with threadpool_limits(int(threads)):
            yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class Throughput:
    """A throughput measurement: `examples` examples per timed repeat, `seconds` each repeat's wall time.

    best = examples / min(seconds) (the reported figure); median = examples / median(seconds)."""

    examples: int
    seconds: tuple[float, ...]
    calls: int  # forward (or training) steps per repeat

    @property
    def best(self) -> float:
        return self.examples / min(self.seconds)

    @property
    def median(self) -> float:
        return self.examples / statistics.median(self.seconds)


def throughput(module: torch.nn.Module, x: Any, y: torch.Tensor | None = None, *, train: bool, threads: int = 1,
               warmup: int = 2, repeats: int = 5, min_seconds: float = 0.0, lr: float = 1e-3) -> Throughput:
    """Examples per second of `module` on batch `x` on this machine, with torch and BLAS pinned to `threads`.

    train=False: a forward pass in eval mode under `torch.inference_mode`. train=True: one training step,
    a forward pass in train mode, cross-entropy against `y` (default: fixed pseudo-random labels over the
    output's last dimension), backward, and an AdamW step; it runs on a deep copy, so `module` is unchanged.

    `warmup` steps run first and are not timed (the first allocates AdamW's state and warms the caches).
    Each of `repeats` timed repeats runs `calls` steps back to back, enough to last `min_seconds` (found by
    running more and more steps until they last that long, untimed; at least one), so a repeat holds
    examples = calls x batch size. The result's `best` is examples / the shortest repeat: the best of k,
    because other tenants of a shared machine only ever slow a repeat down, so the fastest is the closest to
    the uncontended cost; `median` is kept to show the spread. Data loading and augmentation are not part
    of it: the network's compute only.
    """
    import torch

    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    batch = _batch_len(x)
    with pinned_threads(threads):
        if train:
            model = copy.deepcopy(module).train()
            opt = torch.optim.AdamW(model.parameters(), lr=lr)
            if y is None:
                with torch.no_grad():
                    classes = int(model(x).shape[-1])
                y = torch.randint(classes, (batch,), generator=torch.Generator().manual_seed(0))

            def step() -> None:
                opt.zero_grad(set_to_none=True)
                loss = torch.nn.functional.cross_entropy(model(x), y)
                loss.backward()
                opt.step()
        else:
            model = module
            was_training = module.training
            model.eval()

            def step() -> None:
                with torch.inference_mode():
                    model(x)
        try:
            for _ in range(warmup):
                step()
            calls = _calls_lasting(step, min_seconds)
            seconds = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                for _ in range(calls):
                    step()
                seconds.append(time.perf_counter() - t0)
        finally:
            if not train:
                module.train(was_training)
    return Throughput(calls * batch, tuple(seconds), calls)


def _calls_lasting(step, min_seconds: float) -> int:
    """How many back-to-back calls of `step` last at least `min_seconds` (1 for 0): calls are run and timed,
    n growing by at least 1 and by the ratio still missing, until n of them last that long (untimed warm-up)."""
    n = 1
    while min_seconds > 0:
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds:
            break
        n = max(n + 1, math.ceil(n * 1.2 * min_seconds / max(elapsed, 1e-9)))
    return n


def machine() -> str:
    """This machine, as a cost row records it: host name, CPU model (or processor / architecture)."""
    cpu = ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "")
    except OSError:
        pass
    return f"{platform.node()} ({cpu or platform.processor() or platform.machine()})"


# ---- one architecture -------------------------------------------------------------------------------------


def _layers_module(backbone) -> torch.nn.Module:
    """A source's Backbone as a module for the measurements: forward = its `forward_layers` (every layer's
    features from one pass, what the study runs on such a model); its network is the one submodule."""
    import torch

    class LayersForward(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = backbone.module

        def forward(self, inputs):
            return backbone.forward_layers(inputs)

    return LayersForward()


def _repeat_to(x, n: int):
    """The first n items of x, cycling through it when it holds fewer."""
    import numpy as np

    return x[:n] if len(x) >= n else x[np.resize(np.arange(len(x)), n)]


def measure_architecture(run: Run, data: Dataset, *, batch_size: int, threads: int = 1, warmup: int = 2,
                         repeats: int = 5, min_seconds: float = 0.25, backbone=None) -> dict:
    """Measure a run's architecture; returns the `costs` row (see `Store.write_costs`).

    A grid run: its network built afresh (seeded) for `data`, the upstream dataset (input size, channels,
    classes), measured on a batch of `batch_size` of its training images: parameters, forward FLOPs per
    example of the whole network (logits), training throughput (forward + backward + AdamW) and inference
    throughput (forward, eval mode). A model from a source: `backbone` (loaded by the caller) on a batch
    of `data` (a dataset of its modality) through its own preprocessing (not timed), forward = its
    `forward_layers`; its batch is its own batch size, and it has no training throughput (the study does not
    train it).
    """
    import json

    import torch

    arch = architecture(run.config)
    if arch is None:
        raise ValueError(f"run {run.name!r} has no network to measure")
    t0 = time.perf_counter()
    if "source" in arch:
        if backbone is None:
            raise ValueError("a model from a source needs its loaded backbone")
        batch_size = int(backbone.batch_size)
        x = backbone.preprocess(_repeat_to(data.x_train, batch_size))
        module = _layers_module(backbone)
        params = count_params(backbone.module) if backbone.module is not None else 0
        train = None
        shape = list(x.shape) if hasattr(x, "shape") else {k: list(v.shape) for k, v in x.items()}
        described = {**arch, "input": shape}
    else:
        from transferscale.models.grid import build_model, to_tensor

        spec = data.input_spec
        geometry = {"img_size": tuple(spec.size), "in_chans": int(spec.channels)}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            module = build_model(arch["family"], arch["shape"], data.n_classes, **geometry)
        x = to_tensor(_repeat_to(data.x_train, batch_size))
        y = torch.from_numpy(_repeat_to(data.y_train, batch_size))
        params = count_params(module)
        train = throughput(module, x, y, train=True, threads=threads, warmup=warmup, repeats=repeats,
                           min_seconds=min_seconds)
        described = {"family": arch["family"], "shape": arch["shape"], "img_size": list(spec.size),
                     "in_chans": int(spec.channels), "num_classes": int(data.n_classes)}
    with pinned_threads(threads):
        flops = forward_flops(module, x)
    infer = throughput(module, x, train=False, threads=threads, warmup=warmup, repeats=repeats,
                       min_seconds=min_seconds)
    return {
        "arch": architecture_key(run), "label": architecture_label(run),
        "family": arch.get("family") or arch["source"].split(":", 1)[0],
        "architecture": json.dumps(described, sort_keys=True), "params": int(params), "flops": float(flops),
        "train_throughput": None if train is None else train.best,
        "train_throughput_median": None if train is None else train.median,
        "infer_throughput": infer.best, "infer_throughput_median": infer.median,
        "batch_size": int(batch_size), "threads": int(threads), "repeats": int(repeats), "warmup": int(warmup),
        "torch": torch.__version__, "machine": machine(), "measured": time.time(),
        "seconds": time.perf_counter() - t0,
    }
