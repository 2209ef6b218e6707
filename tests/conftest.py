import pytest

TINY = """
name = "tiny"
output_dir = "{out}"
[upstream]
dataset = "fractals"
options = {{ classes = 20, heldout = 5, train_per_class = 40, test_per_class = 10 }}
[[models]]
family = "resnet"
sizes = ["s"]
[[models]]
family = "vit"
sizes = ["s"]
[training]
budgets = [{{ data_fraction = 0.5, steps = {steps} }}]
checkpoint_every = 10
[downstream]
tasks = ["fractals_heldout", "sklearn_digits_shifted"]
[downstream.options]
fractals_heldout = {{ classes = 20, heldout = 5, train_per_class = 25, test_per_class = 20 }}
sklearn_digits_shifted = {{ test_size = 200 }}
[probe]
shots = [1, 5]
seeds = [0, 1]
[finetune]
tasks = ["fractals_heldout"]
runs = ["resnet-*"]
steps = 10
"""


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("data-cache")


@pytest.fixture
def tiny_spec(tmp_path, data_cache, monkeypatch):
    """Write a tiny study (2 trained runs, 3 baselines, 2 tasks) and return a function making more of them."""
    monkeypatch.setenv("TRANSFERSCALE_CACHE", str(data_cache))

    def make(name="study", steps=30):
        out = tmp_path / name
        path = tmp_path / f"{name}.toml"
        path.write_text(TINY.format(out=out, steps=steps))
        return path, out

    return make
