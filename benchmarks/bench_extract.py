"""Every layer's features from one forward pass, against one pass per layer and a plain forward, as ratios.

For each family at size "l" (transferscale.models.build_named(family, "l"), freshly initialised, eval mode),
on the same 2,000 random 28x28 uint8 images, in batches of backbone.BATCH:
  - all layers: TimmBackbone(model).layers, what studies run (one forward_intermediates pass, every block
    pooled, plus the final pooled pre-logits features);
  - one pass per layer: for each block i, forward_intermediates(indices=[i], stop_early=True,
    intermediates_only=True) (the forward truncated after block i) pooled the same way, plus one plain forward
    for the final features: what a layer-by-layer probe without forward_intermediates would run;
  - plain forward: the pooled pre-logits features only, the least any probe of the final layer must run.
torch pinned to --threads for all sides (and BLAS too); best of --repeats, the sides taking turns. Target:
all layers within 1.15x of a plain forward. The outputs of the sides are checked to agree.

    python benchmarks/bench_extract.py [--repeats 5] [--threads 1]
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: spinning threads suffer most from noise

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _timing import best_times  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from transferscale.models.backbone import BATCH  # noqa: E402
from transferscale.models.grid import TimmBackbone, build_named, pooled_features, to_tensor  # noqa: E402


@torch.no_grad()
def extract(model: torch.nn.Module, x_uint8: np.ndarray) -> np.ndarray:
    """The final representation only: one plain forward per batch."""
    parts = [pooled_features(model, to_tensor(x_uint8[i:i + BATCH])).numpy() for i in range(0, len(x_uint8), BATCH)]
    return np.concatenate(parts)


def extract_layers(model: torch.nn.Module, x_uint8: np.ndarray) -> dict[int, np.ndarray]:
    return TimmBackbone(model).layers(x_uint8)

FAMILIES = ("vit", "mixer", "resnet")
N_IMAGES = 2000


@torch.no_grad()
def per_layer(model: torch.nn.Module, x_uint8: np.ndarray, n_layers: int) -> dict[int, np.ndarray]:
    """Every layer's pooled features, one (truncated) forward per layer, and one plain forward for layer -1."""
    out: dict[int, list[np.ndarray]] = {}
    for layer in range(n_layers):
        for i in range(0, len(x_uint8), BATCH):
            (fmap,) = model.forward_intermediates(to_tensor(x_uint8[i:i + BATCH]), indices=[layer],
                                                  stop_early=True, intermediates_only=True)
            out.setdefault(layer, []).append(fmap.mean(dim=(2, 3)).numpy())
    for i in range(0, len(x_uint8), BATCH):
        out.setdefault(-1, []).append(pooled_features(model, to_tensor(x_uint8[i:i + BATCH])).numpy())
    return {layer: np.concatenate(parts) for layer, parts in out.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = np.random.default_rng(0).integers(0, 256, size=(N_IMAGES, 28, 28), dtype=np.uint8)
    print(f"{N_IMAGES} random 28x28 images, batch {BATCH}, torch threads {args.threads}, best of {args.repeats}")
    print(f"  {'model':10s} {'layers':>6s} {'plain fwd':>10s} {'all layers':>11s} {'per layer':>10s}"
          f" {'all/plain':>10s} {'per-layer/all':>14s}  target all/plain <= 1.15")
    with threadpool_limits(args.threads):
        for family in FAMILIES:
            model = build_named(family, "l").eval()
            extract(model, x[:BATCH])  # warm up: first-call allocations are no side's cost
            n_layers = len(extract_layers(model, x[:2])) - 1
            sides = {"plain": lambda m=model: extract(m, x), "all": lambda m=model: extract_layers(m, x),
                     "each": lambda m=model, n=n_layers: per_layer(m, x, n)}
            t, out = best_times(sides, args.repeats)
            (t_plain, plain), (t_all, layers), (t_each, each) = ((t[k], out[k]) for k in ("plain", "all", "each"))
            for layer, feats in layers.items():  # the three sides compute the same features
                np.testing.assert_allclose(feats, each[layer], rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(layers[-1], plain, rtol=1e-4, atol=1e-4)
            ratio = t_all / t_plain
            print(f"  {family + ' l':10s} {n_layers:6d} {t_plain:9.3f}s {t_all:10.3f}s {t_each:9.3f}s"
                  f" {ratio:9.2f}x {t_each / t_all:13.2f}x  {'met' if ratio <= 1.15 else 'MISSED'}")


if __name__ == "__main__":
    main()
