"""Devices and precision (issue 9): what a spec and the command line accept, what resolves on a machine
without CUDA, and the GPU paths run on the CPU where they can (the probe's torch products, bf16 autocast)."""
import numpy as np
import pytest
import torch

from transferscale.device import autocast_dtype, check_device, resolve_device, to_device
from transferscale.errors import TransferscaleError
from transferscale.probe import fewshot_probe
from transferscale.spec import parse_spec

SPEC = """
name = "dev"
[[models]]
family = "vit"
sizes = ["s"]
[training]
budgets = [{{ data_fraction = 1.0, steps = 4 }}]
[downstream]
tasks = ["fractals_heldout"]
{executor}
"""


def test_the_spec_takes_a_device_and_a_precision():
    spec = parse_spec(SPEC.format(executor='[executor]\ndevice = "cuda:1"\nprecision = "bf16"'))
    assert spec.executor.device == "cuda:1" and spec.executor.precision == "bf16"
    assert parse_spec(SPEC.format(executor="")).executor.device == "auto"
    with pytest.raises(TransferscaleError, match="device 'gpu'"):
        parse_spec(SPEC.format(executor='[executor]\ndevice = "gpu"'))
    with pytest.raises(TransferscaleError, match="precision"):
        parse_spec(SPEC.format(executor='[executor]\nprecision = "fp16"'))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_auto_is_the_cpu_here_and_cuda_fails_clearly():
    assert resolve_device("auto").type == "cpu" and resolve_device("cpu").type == "cpu"
    with pytest.raises(TransferscaleError, match="no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(ValueError):
        check_device("cuda:x")
    assert autocast_dtype("cpu", "auto") is None and autocast_dtype("cpu", "fp32") is None
    assert autocast_dtype("cuda", "auto") is torch.bfloat16 and autocast_dtype("cuda", "fp32") is None
    x = torch.ones(2)
    assert to_device(x, "cpu") is x


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_run_with_device_cuda_fails_before_any_work(tmp_path, data_cache, monkeypatch):
    from typer.testing import CliRunner

    from transferscale.cli import app

    monkeypatch.setenv("TRANSFERSCALE_CACHE", str(data_cache))
    path = tmp_path / "dev.toml"
    path.write_text(SPEC.format(executor=""))
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "out"), "--device", "cuda"])
    assert result.exit_code == 2 and "no CUDA device" in result.output
    assert not (tmp_path / "out" / "checkpoints").exists()
    bad = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "out"), "--device", "tpu"])
    assert bad.exit_code == 2 and "--device" in bad.output


def test_the_probe_scores_the_same_with_its_products_in_torch():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 40)) * 0.3
    y_train, y_test = np.repeat(np.arange(6), 30), np.repeat(np.arange(6), 400)
    x_train = (centres[y_train] + rng.normal(size=(len(y_train), 40))).astype(np.float32)
    x_test = (centres[y_test] + rng.normal(size=(len(y_test), 40))).astype(np.float32)
    kw = dict(shots=[1, 5, 25], seeds=[0, 1], l2=[0.1, 1024.0])
    ref = fewshot_probe(x_train, y_train, x_test, y_test, **kw)
    got = fewshot_probe(x_train, y_train, x_test, y_test, device=torch.device("cpu"), **kw)
    assert 0.2 < ref.accuracy.mean() < 0.99
    # the same products in another library: a score may round differently, so at most a tie in a thousand flips
    assert np.abs(ref.accuracy.to_numpy() - got.accuracy.to_numpy()).max() <= 1e-3


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_bf16_is_refused_off_cuda_before_any_work(tmp_path, data_cache, monkeypatch):
    from typer.testing import CliRunner

    from transferscale.cli import app

    with pytest.raises(TransferscaleError, match="needs a CUDA device"):
        autocast_dtype("cpu", "bf16")
    monkeypatch.setenv("TRANSFERSCALE_CACHE", str(data_cache))
    path = tmp_path / "dev.toml"
    path.write_text(SPEC.format(executor='[executor]\nprecision = "bf16"'))
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "needs a CUDA device" in result.output
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_fine_tuning_moves_token_batches_and_keeps_the_cpu_path():
    from transferscale.models.hf_text import TokenBatch

    batch = TokenBatch({"input_ids": torch.ones(2, 3, dtype=torch.long), "attention_mask": torch.ones(2, 3)})
    assert to_device(batch, "cpu") is batch  # the CPU moves nothing
    moved = batch.to("cpu")
    assert isinstance(moved, TokenBatch) and len(moved) == 2
    assert torch.equal(moved.tensors["input_ids"], batch.tensors["input_ids"])
