"""Each kind of extension is one definition plus one registration (ARCHITECTURE.md shows the same toys).

A toy dataset, a toy model source, a toy protocol and a toy executor, each registered from this file only,
run together in a study spec end to end; the toy protocol is checked against scikit-learn, and the toy
executor (which runs jobs in reverse order) must give the local executor's rows exactly.
"""
import numpy as np
import pandas as pd
import pytest
from pydantic import BaseModel, ConfigDict

from transferscale.data import Dataset, register_dataset
from transferscale.data.registry import DATASETS
from transferscale.engine.executors import EXECUTORS, LocalExecutor
from transferscale.engine.runner import run_study
from transferscale.errors import TransferscaleError
from transferscale.models.backbone import Backbone
from transferscale.models.source import SOURCES, ModelSource
from transferscale.protocols import PROTOCOLS, Protocol
from transferscale.spec import parse_spec
from transferscale.store import Measurement, read_results


# ---- a dataset: one builder function, registered by name ----------------------------------------------
def toy_blobs(classes: int = 3, per_class: int = 30, seed: int = 0) -> Dataset:
    """Grey 10x10 blobs whose position depends on the class (a toy)."""
    rng = np.random.default_rng(seed)
    def split(n):
        y = np.repeat(np.arange(classes), n)
        x = rng.integers(0, 40, size=(len(y), 10, 10)).astype(np.uint8)
        for i, c in enumerate(y):
            x[i, 2 * c:2 * c + 3, 2 * c:2 * c + 3] += 200
        return x, y.astype(np.int64)
    x_tr, y_tr = split(per_class)
    x_te, y_te = split(per_class)
    return Dataset("toy_blobs", x_tr, y_tr, x_te, y_te, [f"c{i}" for i in range(classes)])


# ---- a model source: a Backbone and a ModelSource subclass ----------------------------------------------
class ProjectionBackbone(Backbone):
    """Layer 0: pixels times a seeded random matrix; final layer: that, rectified."""

    def __init__(self, seed: int, width: int, dead: bool = False):
        super().__init__(None)
        self.seed, self.width, self.dead = seed, width, dead

    def layers(self, x):
        flat = x.reshape(len(x), -1).astype(np.float32) / 255
        w = np.random.default_rng(self.seed).normal(size=(flat.shape[1], self.width)).astype(np.float32)
        first = np.zeros((len(x), self.width), np.float32) if self.dead else flat @ w
        return {0: first, -1: np.maximum(flat @ w, 0)}


class ProjectionOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    width: int = 16
    dead: bool = False  # layer 0 all zeros: features no probe can read


class ProjectionSource(ModelSource):
    prefix = "toyproj"
    Options = ProjectionOptions

    def check(self):
        if not self.ref.isdigit():
            raise TransferscaleError(f"toyproj:{self.ref}: the reference is the projection's seed, an integer")

    def load(self):
        return ProjectionBackbone(int(self.ref), self.options.width, self.options.dead)


# ---- a protocol: options, metric, key and measure ------------------------------------------------------
class CentroidOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    layer: int = -1


class NearestCentroid(Protocol):
    """Accuracy of the nearest class mean (Euclidean) on one layer's features."""

    name = "centroid"
    section = "centroid"
    metric = "centroid_accuracy"
    Options = CentroidOptions
    recipe = "centroid-v1"

    def tasks_for(self, plan, run):
        return [] if run.kind == "pixels" else super().tasks_for(plan, run)  # pixels have no layer 0

    def measure(self, ctx, run, backbone, task):
        ds = ctx.dataset(task)
        layer = self.options.layer
        train = ctx.features(run, backbone, task, "train", ds.x_train)[layer]
        test = ctx.features(run, backbone, task, "test", ds.x_test)[layer]
        means = np.stack([train[ds.y_train == c].mean(0) for c in range(ds.n_classes)])
        pred = ((test[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
        return [Measurement(self.metric, task.name, float((pred == ds.y_test).mean()), layer=layer)]


# ---- an executor: jobs in reverse order, in this process ------------------------------------------------
class ReversedExecutor(LocalExecutor):
    name = "reversed"

    def run(self, jobs, ctx, on_start):
        yield from super().run(list(reversed(jobs)), ctx, on_start)


@pytest.fixture
def toys():
    register_dataset("toy_blobs")(toy_blobs)
    SOURCES.register("toyproj", ProjectionSource)
    PROTOCOLS.register("centroid", NearestCentroid)
    EXECUTORS.register("reversed", ReversedExecutor)
    yield
    DATASETS.unregister("toy_blobs")
    SOURCES.unregister("toyproj")
    PROTOCOLS.unregister("centroid")
    EXECUTORS.unregister("reversed")


SPEC = """
name = "toys"
executor = "{executor}"
[[models]]
source = "toyproj:1"
upstream_accuracy = 0.5
[[models]]
source = "toyproj:2"
options = {{ width = 24 }}
upstream_accuracy = 0.7
[downstream]
tasks = ["toy_blobs"]
[probe]
shots = [1, 5]
seeds = [0, 1]
[centroid]
layer = 0
"""


def _rows(out):
    df = read_results(out)
    cols = ["name", "metric", "task", "shots", "seed", "layer", "value"]
    return df[cols].sort_values(cols[:-1]).reset_index(drop=True)


def test_one_file_of_toys_runs_a_study(toys, tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERSCALE_CACHE", str(tmp_path / "cache"))
    outs = {}
    for executor in ("local", "reversed"):
        text = SPEC.format(executor=executor)
        spec = parse_spec(text)
        outs[executor] = tmp_path / executor
        result = run_study(spec, text, outs[executor])
        assert result.failed == {} and sorted(result.done) == ["pixels", "toyproj-1", "toyproj-2"]
    pd.testing.assert_frame_equal(_rows(outs["local"]), _rows(outs["reversed"]), check_exact=True)
    df = read_results(outs["local"])
    # the given upstream accuracies place the models on the US axis; pixels have none
    up = df[df.metric == "upstream_accuracy"].set_index("name").value.to_dict()
    assert up == {"toyproj-1": 0.5, "toyproj-2": 0.7}
    assert set(df[df.metric == "upstream_accuracy"].task) == {"given"}
    # the protocol's rows, checked against scikit-learn's nearest centroid on the same features
    from sklearn.neighbors import NearestCentroid as SkCentroid

    ds = toy_blobs()
    backbone = ProjectionBackbone(2, 24)
    sk = SkCentroid().fit(backbone.layers(ds.x_train)[0], ds.y_train)
    expected = (sk.predict(backbone.layers(ds.x_test)[0]) == ds.y_test).mean()
    got = df[(df.metric == "centroid_accuracy") & (df.name == "toyproj-2")].value
    assert len(got) == 1 and got.iloc[0] == pytest.approx(expected, abs=1e-12)
    # the few-shot probe ran on both layers of each toy model, and on the pixels
    few = df[df.metric == "fewshot_accuracy"]
    assert few.groupby("name").layer.unique().map(sorted).to_dict() == {
        "pixels": [-1], "toyproj-1": [-1, 0], "toyproj-2": [-1, 0]}


def test_toy_names_fail_clearly(toys):
    with pytest.raises(TransferscaleError, match=r"toyproj:x: the reference is the projection's seed"):
        parse_spec(SPEC.format(executor="local").replace("toyproj:1", "toyproj:x"))
    with pytest.raises(TransferscaleError, match=r"unknown model source 'toyprj'.*did you mean 'toyproj'"):
        parse_spec(SPEC.format(executor="local").replace("toyproj:1", "toyprj:1"))
    with pytest.raises(TransferscaleError, match=r"unknown key 'centroid.layr'.*did you mean 'layer'"):
        parse_spec(SPEC.format(executor="local").replace("layer = 0", "layr = 0"))
    with pytest.raises(TransferscaleError, match=r"unknown executor 'reverse'.*did you mean 'reversed'"):
        parse_spec(SPEC.format(executor="reverse"))
    with pytest.raises(TransferscaleError, match=r"options of 'toyproj:2'.*width"):
        parse_spec(SPEC.format(executor="local").replace("width = 24", "width = 'wide'"))


def test_degenerate_features_are_recorded_not_probed(toys, tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERSCALE_CACHE", str(tmp_path / "cache"))
    text = SPEC.format(executor="local").replace("options = {{ width = 24 }}".replace("{{", "{").replace("}}", "}"),
                                                 "options = { width = 24, dead = true }")
    assert "dead = true" in text
    result = run_study(parse_spec(text), text, tmp_path / "study")
    assert result.failed == {}
    df = read_results(tmp_path / "study")
    dead = df[df.name == "toyproj-2"]
    flagged = dead[dead.metric == "degenerate_features"]
    assert flagged.layer.tolist() == [0] and flagged.value.tolist() == [1.0]
    assert set(dead[dead.metric == "fewshot_accuracy"].layer) == {-1}  # no accuracy for the dead layer
    assert any("toyproj-2 on toy_blobs, layer 0: training pool: constant features" in n for n in result.notes)
    alive = df[(df.name == "toyproj-1") & (df.metric == "fewshot_accuracy")]
    assert set(alive.layer) == {-1, 0}
