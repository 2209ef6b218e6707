"""What each model costs (models/cost.py), the store's costs table and `transferscale cost`: closed-form
FLOP counts, parameter counts, throughput bookkeeping, one row per architecture, idempotent reruns."""
import json
import subprocess
import sys
import textwrap

import pytest
import torch
import typer
from torch import nn
from typer.testing import CliRunner

from transferscale.cli.cost import cost_command, measure_study
from transferscale.models.cost import (
    architecture_key,
    architecture_keys,
    count_params,
    forward_flops,
    throughput,
)
from transferscale.models.grid import build_model
from transferscale.plan import make_plan
from transferscale.spec import load_spec
from transferscale.store import COST_COLUMNS, Store

FAST = dict(repeats=1, warmup=1, min_seconds=0.0)


# ---- FLOPs and parameters: closed forms ---------------------------------------------------------------------


def test_flops_of_linear_layers_are_two_in_out_per_example():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(7, 5), nn.ReLU(), nn.Linear(5, 3))
    assert forward_flops(net, torch.randn(4, 7)) == 2 * 7 * 5 + 2 * 5 * 3  # biases and ReLU not counted
    assert forward_flops(net, torch.randn(1, 7)) == 2 * 7 * 5 + 2 * 5 * 3  # per example, whatever the batch


def test_flops_of_convolutions():
    conv = nn.Conv2d(3, 4, kernel_size=3, padding=1)
    # 2 x output elements (4 x 8 x 8) x input channels x kernel area
    assert forward_flops(conv, torch.randn(2, 3, 8, 8)) == 2 * (4 * 8 * 8) * 3 * 9
    grouped = nn.Conv2d(4, 6, kernel_size=3, stride=2, groups=2, bias=False)  # 9x9 -> 4x4, 2 inputs per group
    assert forward_flops(grouped, torch.randn(3, 4, 9, 9)) == 2 * (6 * 4 * 4) * 2 * 9


class Attention(nn.Module):
    def forward(self, x):  # x: (B, H, L, E), q = k = v
        return nn.functional.scaled_dot_product_attention(x, x, x)


def test_flops_of_attention_count_both_products():
    # Q K^T: 2 H L L E, then the weights times V: 2 H L L E, per example (torch's table lacks the CPU kernel)
    assert forward_flops(Attention(), torch.randn(2, 3, 5, 4)) == 2 * (2 * 3 * 5 * 5 * 4)


def test_flops_of_a_grid_vit_in_closed_form():
    shape = {"embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0, "patch_size": 7}
    model = build_model("vit", shape, num_classes=10)  # 28x28 grey: 16 tokens of 49 pixels
    t, d, h = 16, 32, 64
    patch = 2 * t * 49 * d
    block = 2 * t * d * 3 * d + 2 * t * d * d + 2 * t * d * h + 2 * t * h * d + 2 * (2 * t * t * d)
    assert forward_flops(model, torch.randn(3, 1, 28, 28)) == patch + 2 * block + 2 * d * 10
    assert model.training  # its mode is left as it was


def test_params_are_the_sum_of_numel_and_shared_tensors_count_once():
    assert count_params(nn.Linear(7, 5)) == 7 * 5 + 5
    shared = nn.Linear(4, 4)
    twice = nn.Sequential(shared, nn.Tanh(), shared)
    assert count_params(twice) == 4 * 4 + 4
    resnet = build_model("resnet", {"layers": [1, 1, 1, 1], "widths": [8, 16, 32, 64], "stem_width": 8}, 100)
    assert count_params(resnet) == sum(p.numel() for p in resnet.parameters()) == 86204  # as def2 recorded for resnet-s


# ---- throughput ---------------------------------------------------------------------------------------------


class ThreadSpy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 3)
        self.seen = set()

    def forward(self, x):
        self.seen.add(torch.get_num_threads())
        return self.fc(x)


@pytest.mark.parametrize("train", [False, True])
def test_throughput_counts_examples_over_the_best_repeat(train):
    torch.manual_seed(0)
    spy = ThreadSpy()
    before = {k: v.clone() for k, v in spy.state_dict().items()}
    threads_before = torch.get_num_threads()
    t = throughput(spy, torch.randn(10, 6), train=train, threads=1, warmup=1, repeats=3, min_seconds=0.02)
    assert t.calls >= 1 and t.examples == 10 * t.calls and len(t.seconds) == 3
    assert t.best == pytest.approx(t.examples / min(t.seconds)) and t.best >= t.median > 0
    assert sum(t.seconds) >= 3 * 0.02 * 0.5  # each repeat ran about min_seconds
    assert torch.get_num_threads() == threads_before
    if not train:
        assert spy.seen == {1} and spy.training  # pinned while measuring; mode restored
    else:  # trained on a copy: the module's own weights are untouched
        assert all(torch.equal(before[k], v) for k, v in spy.state_dict().items())


def test_training_throughput_takes_adamw_steps(monkeypatch):
    torch.manual_seed(0)
    net = nn.Linear(6, 3)
    steps = []
    original = torch.optim.AdamW.step

    def counting(self, *a, **k):
        steps.append(1)
        return original(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", counting)
    t = throughput(net, torch.randn(8, 6), torch.zeros(8, dtype=torch.long), train=True, warmup=2, repeats=3)
    assert len(steps) == 2 + 3 * t.calls


# ---- architectures --------------------------------------------------------------------------------------------


def test_runs_of_one_network_share_an_architecture_key():
    plan = make_plan(load_spec(None)[0])  # the default study: 3 families x 3 sizes
    keys = {run.name: architecture_key(run) for run in plan.runs}
    assert keys["pixels"] is None
    grid = {k for k in keys.values() if k is not None}
    assert len(grid) == 9
    vit_s = {k for name, k in keys.items() if name.startswith("vit-s-")}  # budgets, snapshots, random init
    assert len(vit_s) == 1 and len([n for n in keys if n.startswith("vit-s-")]) > 3
    assert architecture_keys({r.key: r.config for r in plan.runs}) == {
        r.key: keys[r.name] for r in plan.runs if keys[r.name] is not None}


def test_a_pretrained_model_and_its_random_init_share_an_architecture():
    weights = {"source": "timm:x", "options": {"weights": "/w.pth", "img_size": 64, "random_init": False}}
    random = {"source": "timm:x", "options": {"weights": None, "img_size": 64, "random_init": True}}
    other = {"source": "timm:x", "options": {"weights": None, "img_size": 96, "random_init": True}}
    assert architecture_key(weights) == architecture_key(random) != architecture_key(other)


def test_mapping_runs_to_architectures_does_not_import_torch(tmp_path):
    code = textwrap.dedent("""
        import sys
        from transferscale.models.cost import architecture_keys
        configs = {"r": {"family": "vit", "shape": {"depth": 2}, "upstream": {}}, "p": {"kind": "pixels"}}
        keys = architecture_keys(configs)
        assert list(keys) == ["r"], keys
        print(sorted({m.split(".")[0] for m in sys.modules} & {"torch", "timm", "transformers"}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


# ---- the store's costs table ------------------------------------------------------------------------------------


def _row(arch, params=10, **extra):
    return {"arch": arch, "label": arch, "family": "vit", "architecture": "{}", "params": params, "flops": 1.0,
            "batch_size": 8, "threads": 1, "measured": 0.0, **extra}


def test_an_older_store_is_migrated_to_hold_costs(tmp_path):
    with Store(tmp_path) as store:  # a store as written before the costs table existed
        store.conn.execute("DROP TABLE costs")
        store.conn.commit()
    with Store(tmp_path, create=False) as reader:  # a reader never migrates: the table reads as empty
        empty = reader.costs()
        assert list(empty.columns) == list(COST_COLUMNS) and len(empty) == 0
        assert "costs" not in reader._tables()
    with Store(tmp_path) as store:  # a writer adds it
        store.write_costs([_row("a", infer_throughput=5.0), _row("b", params=20)])
        store.write_costs([_row("a", params=30)])  # the same architecture again replaces its row
        df = store.costs()
    assert list(df["arch"]) == ["b", "a"] and list(df["params"]) == [20, 30]  # by family, then parameters
    assert df["infer_throughput"].isna().all() and df["train_throughput"].dtype == float


# ---- the command ----------------------------------------------------------------------------------------------


def _study(path, out):
    """A study directory with its spec stored as `transferscale run` stores it, nothing trained (costs need
    shapes only)."""
    spec, text = load_spec(path)
    with Store(out) as store:
        store.set_meta(name=spec.name, spec=text, spec_json=spec.model_dump_json())
    return spec


def _app():
    app = typer.Typer()
    app.command("cost")(cost_command)
    app.command("noop")(lambda: None)  # two commands: `cost` is named on the command line, as when registered
    return app


def test_the_cost_command_stores_one_row_per_architecture_and_is_idempotent(tiny_spec):
    path, out = tiny_spec()
    spec = _study(path, out)
    args = ["cost", str(out), "--repeats", "1", "--warmup", "1", "--min-time", "0"]
    first = CliRunner().invoke(_app(), args)
    assert first.exit_code == 0, first.output
    with Store(out, create=False) as store:
        df = store.costs()
    assert sorted(df["label"]) == ["resnet-s", "vit-s"]  # 2 trained runs + their 2 random inits; pixels: none
    plan = make_plan(spec)
    assert {architecture_key(r) for r in plan.runs} - {None} == set(df["arch"])
    assert (df["params"] > 0).all() and (df["flops"] > 0).all()
    assert (df["train_throughput"] > 0).all() and (df["infer_throughput"] > 0).all()
    assert (df["batch_size"] == spec.training.batch_size).all() and (df["threads"] == 1).all()
    vit = json.loads(df.set_index("label").loc["vit-s", "architecture"])
    assert vit["img_size"] == [28, 28] and vit["in_chans"] == 1 and vit["num_classes"] == 20
    assert "measured 2 architecture(s)" in first.output

    again = CliRunner().invoke(_app(), args)
    assert again.exit_code == 0 and "measured 0 architecture(s)" in again.output
    with Store(out, create=False) as store:
        assert store.costs()["measured"].tolist() == df["measured"].tolist()  # nothing measured again

    forced = measure_study(out, force=True, **FAST)
    assert sorted(forced.measured) == ["resnet-s", "vit-s"]
    with Store(out, create=False) as store:
        assert (store.costs().set_index("arch")["measured"] > df.set_index("arch")["measured"]).all()


SOURCES = """
name = "sources"
output_dir = "{out}"
[[models]]
source = "timm:test_resnet"
options = {{ img_size = 32, batch_size = 8, weights = "{good}" }}
[[models]]
source = "timm:test_resnet"
options = {{ img_size = 32, batch_size = 8, random_init = true }}
[[models]]
source = "timm:test_vit"
options = {{ img_size = 32, weights = "{broken}" }}
[downstream]
tasks = ["sklearn_digits"]
"""


def test_models_from_a_source_are_measured_without_their_weights_or_skipped(tmp_path, monkeypatch, data_cache):
    monkeypatch.setenv("TRANSFERSCALE_CACHE", str(data_cache))
    good = tmp_path / "resnet.pth"
    import timm

    torch.save(timm.create_model("test_resnet").state_dict(), good)
    broken = tmp_path / "vit.pth"
    broken.write_bytes(b"not a state dict")
    out = tmp_path / "study"
    path = tmp_path / "sources.toml"
    path.write_text(SOURCES.format(out=out, good=good, broken=broken))
    _study(path, out)
    result = measure_study(out, **FAST)
    assert result.measured == ["timm:test_resnet-img_size32"]  # the pretrained model and its random init: one
    assert [label for label, _ in result.skipped] == ["timm:test_vit-img_size32"]
    assert "cannot load it" in result.skipped[0][1]
    with Store(out, create=False) as store:
        row = store.costs().iloc[0]
    assert row["params"] == count_params(timm.create_model("test_resnet"))
    assert row["batch_size"] == 8 and row["flops"] > 0 and row["infer_throughput"] > 0
    assert row["train_throughput"] != row["train_throughput"]  # NaN: the study does not train it
    assert json.loads(row["architecture"])["input"] == [8, 3, 32, 32]
