"""Text: a `transformers` encoder (pre-trained from a local directory or hub name, or a small
model built from a config), pooled to one vector, and a decoder that predicts the token
sequence from the shared latent.

Tokenisation happens in the dataset (tokenizers are Python objects), so a batch carries token
ids `[B, max_length]`. Without a tokenizer or model path, a character tokenizer is used: it
needs no vocabulary file and no download.
"""

from __future__ import annotations

import reprlib
import string
from pathlib import Path
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmae.core.errors import ConfigError, DataError
from mmae.core.modality import Modality
from mmae.core.registry import MODALITIES

Pooling = Literal["mean", "cls"]
POOLINGS = get_args(Pooling)


class CharTokenizer:
    """Printable ASCII characters as tokens; id 0 pads, id 1 stands for any other character."""

    pad_token_id = 0

    def __init__(self):
        self.alphabet = string.printable[:95]
        self.ids = {c: i + 2 for i, c in enumerate(self.alphabet)}
        self.vocab_size = len(self.alphabet) + 2

    def encode(self, text: str, max_length: int) -> list[int]:
        ids = [self.ids.get(c, 1) for c in text[:max_length]]
        return ids + [self.pad_token_id] * (max_length - len(ids))

    def decode(self, ids: list[int]) -> str:
        return "".join(self.alphabet[i - 2] if i >= 2 else "" for i in ids)


class PretrainedTokenizer:
    """A `transformers` tokenizer behind the same two calls as `CharTokenizer`."""

    def __init__(self, name_or_path: str):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        if self.tokenizer.pad_token_id is None:
            raise ConfigError(f"tokenizer {name_or_path} has no pad token")
        self.pad_token_id = self.tokenizer.pad_token_id
        self.vocab_size = len(self.tokenizer)

    def encode(self, text: str, max_length: int) -> list[int]:
        return self.tokenizer(text, max_length=max_length, truncation=True, padding="max_length")["input_ids"]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


class TextEncoder(nn.Module):
    """Backbone -> pooled hidden state -> linear embedding; a frozen backbone stays in eval mode."""

    def __init__(self, backbone: nn.Module, pad_token_id: int, pooling: str, embed_dim: int,
                 freeze: bool):
        super().__init__()
        self.backbone = backbone
        self.pad_token_id = pad_token_id
        self.pooling = pooling
        self.freeze = freeze
        self.project = nn.Linear(backbone.config.hidden_size, embed_dim)
        self.backbone.requires_grad_(not freeze)
        self.train()  # from_pretrained returns eval mode; a trainable backbone needs its dropout

    def train(self, mode: bool = True) -> TextEncoder:
        super().train(mode)
        if self.freeze:
            self.backbone.eval()  # no dropout in a frozen feature extractor
        return self

    def forward(self, ids: Tensor) -> Tensor:
        mask = ids != self.pad_token_id
        hidden = self.backbone(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return self.project(pooled)


class TextDecoder(nn.Module):
    """Non-autoregressive: shared features -> one vector per position -> token logits."""

    def __init__(self, hidden_dim: int, max_length: int, vocab_size: int, width: int):
        super().__init__()
        self.max_length, self.width = max_length, width
        self.expand = nn.Linear(hidden_dim, max_length * width)
        self.positions = nn.Parameter(torch.randn(max_length, width) * 0.02)
        self.head = nn.Sequential(nn.GELU(), nn.LayerNorm(width), nn.Linear(width, vocab_size))

    def forward(self, hidden: Tensor) -> Tensor:
        per_position = self.expand(hidden).view(-1, self.max_length, self.width) + self.positions
        return self.head(per_position)



CLASS_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
FACTOR_WORDS = [["left", "middle", "right"], ["dim", "soft", "loud"], ["flat", "round", "sharp"]]
PRIVATE_WORDS = ["plain", "odd", "bold", "calm"]


@MODALITIES.register("text")
class TextModality(Modality):
    """Token sequences of `max_length` (padded / truncated).

    `model`: a local directory or hub name for `AutoModel`; or `model_config` (e.g.
    `{model_type: bert, hidden_size: 64, ...}`) for a model built from scratch. `tokenizer`
    defaults to `model`'s, else to a character tokenizer. `freeze` keeps the backbone's
    weights fixed. The reconstruction is per-token cross-entropy (padding positions included,
    so decoded strings end where the text does); token accuracy counts the text's tokens only.
    """

    dtype_kind = "long"
    preview_media = "text"

    def __init__(self, model: str | None = None, model_config: dict | None = None,
                 tokenizer: str | None = None, max_length: int = 32, freeze: bool = False,
                 pooling: Pooling = "mean", decoder_width: int = 64, column: str | None = None):
        super().__init__((max_length,), column=column)
        if (model is None) == (model_config is None):
            raise ConfigError("TextModality: give exactly one of model (a directory or hub name) "
                              "and model_config (a transformers config to build from scratch)")
        if pooling not in POOLINGS:
            raise ConfigError(f"TextModality: pooling must be one of {POOLINGS}, got '{pooling}'")
        self.model, self.model_config = model, dict(model_config or {})
        self.tokenizer_name = tokenizer or model
        self.tokenizer = PretrainedTokenizer(self.tokenizer_name) if self.tokenizer_name else CharTokenizer()
        self.max_length, self.freeze, self.pooling = max_length, freeze, pooling
        self.decoder_width = decoder_width

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def _backbone(self) -> nn.Module:
        from transformers import AutoConfig, AutoModel

        if self.model is not None:
            # transformers 5 would otherwise pick the checkpoint's dtype ("auto").
            return AutoModel.from_pretrained(self.model, dtype=torch.float32)
        options = dict(self.model_config)
        model_type = options.pop("model_type", "bert")
        options.setdefault("vocab_size", self.vocab_size)
        options.setdefault("pad_token_id", self.tokenizer.pad_token_id)
        options.setdefault("max_position_embeddings", max(self.max_length, 8))
        return AutoModel.from_config(AutoConfig.for_model(model_type, **options), dtype=torch.float32)

    def build_encoder(self, embed_dim: int) -> nn.Module:
        return TextEncoder(self._backbone(), self.tokenizer.pad_token_id, self.pooling, embed_dim,
                           self.freeze)

    def build_decoder(self, hidden_dim: int) -> nn.Module:
        return TextDecoder(hidden_dim, self.max_length, self.vocab_size, self.decoder_width)

    def encode_text(self, text: str) -> Tensor:
        return torch.tensor(self.tokenizer.encode(text, self.max_length), dtype=torch.long)

    def check_cell(self, value: Any) -> None:
        if not isinstance(value, str):  # JSONL / Parquet numbers, lists, objects: found up front
            raise DataError(f"expected text, got {type(value).__name__} {reprlib.repr(value)}")

    def load(self, value: Any, root: Path) -> Tensor:
        self.check_cell(value)
        return self.encode_text(value)

    def decode(self, logits: Tensor) -> list[str]:
        """Reconstructed logits `[B, L, V]` (or ids `[B, L]`) -> strings."""
        ids = logits.argmax(-1) if logits.dim() == 3 else logits
        return [self.tokenizer.decode(row) for row in ids.tolist()]

    def as_features(self, reconstruction: Tensor) -> Tensor:
        return reconstruction.argmax(-1)

    def preview(self, features: Tensor) -> list[str]:
        """The decoded strings (token ids, or a reconstruction's logits)."""
        return self.decode(features.detach())

    def reconstruction_loss(self, reconstruction: Tensor, target: Tensor) -> Tensor:
        losses = F.cross_entropy(reconstruction.transpose(1, 2), target, reduction="none")
        return losses.mean(dim=1)

    def metrics(self, reconstruction: Tensor, target: Tensor) -> dict[str, Tensor]:
        tokens = target != self.tokenizer.pad_token_id
        correct = (reconstruction.argmax(-1) == target) & tokens
        return {"token_accuracy": correct.sum(1) / tokens.sum(1).clamp_min(1)}

    def baseline_sum(self, targets: Tensor) -> Tensor:
        counts = torch.zeros(self.max_length, self.vocab_size, dtype=torch.float64, device=targets.device)
        return counts.scatter_add_(1, targets.T, torch.ones_like(targets.T, dtype=torch.float64))

    def baseline_prediction(self, mean: Tensor) -> Tensor:
        return torch.log(mean.float() + 1e-8)  # logits of the per-position token frequencies

    def export_assets(self, encoder: nn.Module, folder: Path, name: str) -> dict:
        """The backbone's architecture (its weights are in the safetensors file) and the
        tokenizer, so the export needs neither the original model directory nor the hub."""
        assets = {"model": None, "model_config": encoder.backbone.config.to_dict()}
        if self.tokenizer_name is not None:
            target = Path("tokenizers") / name
            self.tokenizer.tokenizer.save_pretrained(folder / target)
            assets["tokenizer"] = target.as_posix()
        return assets

    @classmethod
    def from_export(cls, config: dict, root: Path | None) -> TextModality:
        if root is not None and config.get("tokenizer"):
            config = {**config, "tokenizer": str(root / config["tokenizer"])}
        return cls(**config)

    def synthetic_view(self, labels: Tensor, factors: Tensor, private: Tensor,
                       num_classes: int, g: torch.Generator) -> Tensor:
        """A short phrase: a private word, the class, and one of three words per shared factor."""
        bins = ((factors + 1.0) / 2.0 * 3).long().clamp(0, 2)
        words = len(PRIVATE_WORDS)
        private_bin = ((private[:, 0] + 1.0) / 2.0 * words).long().clamp(0, words - 1)
        phrases = []
        for i, label in enumerate(labels.tolist()):
            words = [PRIVATE_WORDS[private_bin[i]], CLASS_WORDS[label] if label < 10 else f"class{label}"]
            words += [FACTOR_WORDS[j][bins[i, j]] for j in range(min(3, factors.shape[1]))]
            phrases.append(" ".join(words))
        return torch.stack([self.encode_text(p) for p in phrases])

    def config(self) -> dict:
        return {"model": self.model, "model_config": self.model_config,
                "tokenizer": self.tokenizer_name, "max_length": self.max_length,
                "freeze": self.freeze, "pooling": self.pooling, "decoder_width": self.decoder_width,
                "column": self.column}
