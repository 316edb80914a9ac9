"""Text: a `transformers` encoder (pre-trained from a local directory or hub name, or a small
model built from a config), pooled to one vector, and a decoder that predicts the token
sequence from the shared latent.

Tokenisation happens in the dataset (tokenizers are Python objects), so a batch carries token
ids `[B, max_length]`. Without a tokenizer or model path, text is tokenised as its UTF-8 bytes:
any Unicode text, no vocabulary file, no download.
"""

from __future__ import annotations

import logging
import reprlib
import string
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmae.core.backbone import Backbone, Pooling, load_pretrained
from mmae.core.errors import ConfigError, DataError
from mmae.core.modality import Modality
from mmae.core.registry import MODALITIES

log = logging.getLogger(__name__)


class ByteTokenizer:
    """UTF-8 bytes as tokens: id 0 pads, byte b is id b + 1. Any Unicode text is represented
    (there is no unknown token) with a fixed vocabulary of 257 that needs no fitting."""

    pad_token_id = 0
    unk_token_id = None
    vocab_size = 257
    #: What augmentation masks a token with: byte 0xFF, which UTF-8 never holds (it decodes as
    #: U+FFFD), so it means "some unknown byte" and is never a text's own token.
    mask_token_id = 256
    special_ids = (0,)

    @staticmethod
    def _bytes(text: str) -> bytes:
        return text.encode("utf-8", errors="replace")  # (a lone surrogate, e.g. from JSON, becomes "?")

    def encode(self, text: str, max_length: int) -> list[int]:
        """Whole characters while their bytes fit in `max_length`: a character is never cut in
        half, so a truncated text still decodes to valid text."""
        data = self._bytes(text)
        if len(data) > max_length:
            cut = max_length
            while cut > 0 and data[cut] & 0xC0 == 0x80:  # the first byte left out continues a character
                cut -= 1
            data = data[:cut]
        return [b + 1 for b in data] + [self.pad_token_id] * (max_length - len(data))

    def decode(self, ids: list[int]) -> str:
        """Padding dropped; invalid UTF-8 (a reconstruction may be) becomes U+FFFD."""
        return bytes(i - 1 for i in ids if 0 < i <= 256).decode("utf-8", errors="replace")

    def survey(self, texts: list[str]) -> tuple[list[int], int]:
        return [len(self._bytes(t)) for t in texts], 0


class CharTokenizer:
    """Printable ASCII characters as tokens; id 0 pads, id 1 stands for any other character.
    No longer the default (`tokenizer: ascii`): kept for models trained with it."""

    pad_token_id = 0
    unk_token_id = 1
    mask_token_id = 1  # augmentation masks a character as the unknown character
    special_ids = (0,)

    def __init__(self):
        self.alphabet = string.printable[:95]
        self.ids = {c: i + 2 for i, c in enumerate(self.alphabet)}
        self.vocab_size = len(self.alphabet) + 2

    def encode(self, text: str, max_length: int) -> list[int]:
        ids = [self.ids.get(c, 1) for c in text[:max_length]]
        return ids + [self.pad_token_id] * (max_length - len(ids))

    def decode(self, ids: list[int]) -> str:
        return "".join(self.alphabet[i - 2] if i >= 2 else "" for i in ids)

    def survey(self, texts: list[str]) -> tuple[list[int], int]:
        return [len(t) for t in texts], sum(c not in self.ids for t in texts for c in t)


class PretrainedTokenizer:
    """A `transformers` tokenizer behind the same calls as `ByteTokenizer`."""

    def __init__(self, name_or_path: str):
        from transformers import AutoTokenizer

        self.tokenizer = load_pretrained("TextModality", "tokenizer", AutoTokenizer, name_or_path)
        if self.tokenizer.pad_token_id is None:
            raise ConfigError(f"tokenizer {name_or_path} has no pad token")
        self.pad_token_id = self.tokenizer.pad_token_id
        self.unk_token_id = self.tokenizer.unk_token_id
        self.vocab_size = len(self.tokenizer)
        # Augmentation masks with the mask token, else the unknown one (None: no masking).
        mask = self.tokenizer.mask_token_id
        self.mask_token_id = mask if mask is not None else self.unk_token_id
        self.special_ids = tuple(sorted({self.pad_token_id, *self.tokenizer.all_special_ids}))

    def encode(self, text: str, max_length: int) -> list[int]:
        return self.tokenizer(text, max_length=max_length, truncation=True, padding="max_length")["input_ids"]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def survey(self, texts: list[str]) -> tuple[list[int], int]:
        """Untruncated lengths (special tokens included, as `encode` counts them) and unknowns."""
        rows = self.tokenizer(texts, verbose=False)["input_ids"] if texts else []
        unknown = self.unk_token_id
        return [len(r) for r in rows], 0 if unknown is None else sum(r.count(unknown) for r in rows)


#: `tokenizer` settings that name a built-in tokenizer rather than a transformers one.
BUILTIN_TOKENIZERS = {"bytes": ByteTokenizer, "ascii": CharTokenizer}
#: How many training texts `TextModality.fit` tokenises to estimate its rates.
SURVEY_TEXTS = 10_000


def build_tokenizer(name: str) -> ByteTokenizer | CharTokenizer | PretrainedTokenizer:
    builtin = BUILTIN_TOKENIZERS.get(name)
    return builtin() if builtin is not None else PretrainedTokenizer(name)


#: Shares of a text's tokens that augmentation changes at strength 1 (each scales with it):
#: replaced by the tokenizer's mask id, and dropped (the rest close up, padding at the end).
MASK_SHARE = 0.15
DROP_SHARE = 0.1


def _drop_tokens(ids: Tensor, drop: Tensor, pad_token_id: int) -> Tensor:
    """Remove the `drop` tokens of each row and close up the rest, padding at the end: one
    sort of the kept positions, then a gather."""
    length = ids.shape[1]
    position = torch.arange(length, device=ids.device)
    keep = (ids != pad_token_id) & ~drop
    order = torch.where(keep, position, position + length).argsort(dim=1)
    closed = ids.gather(1, order)
    return closed.masked_fill(position >= keep.sum(dim=1, keepdim=True), pad_token_id)


class TokenInputs(nn.Module):
    """Token ids -> a text backbone's `input_ids` and `attention_mask`; padding is left out of
    the pooling."""

    def __init__(self, pad_token_id: int):
        super().__init__()
        self.pad_token_id = pad_token_id

    def forward(self, ids: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        mask = ids != self.pad_token_id
        return {"input_ids": ids, "attention_mask": mask.long()}, mask


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
    """Token sequences of `max_length` tokens (padded / truncated).

    `model`: a local directory or hub name for `AutoModel`; or `model_config` (e.g.
    `{model_type: bert, hidden_size: 64, ...}`) for a model built from scratch. `tokenizer`:
    "bytes" (UTF-8 bytes, so `max_length` counts bytes: a Greek or Arabic letter takes 2, a
    Chinese character 3, an emoji 4), "ascii" (printable ASCII characters, anything else
    unknown: what mmae used before, kept for the models trained with it), or a transformers
    tokenizer's directory or hub name ("./bytes" for a directory of that name); None: `model`'s,
    else "bytes". `config()` names the tokenizer always, so a rebuilt model never depends on
    what None meant when it was written (see `from_export`). `freeze` keeps the backbone's
    weights fixed (default: frozen when pretrained, trained when built from a config);
    `pooling`, `trainable_blocks`, `gradient_checkpointing`: see `mmae.core.backbone.Backbone`.
    The reconstruction is per-token cross-entropy (padding positions included, so decoded
    strings end where the text does); token accuracy counts the text's tokens only.
    """

    dtype_kind = "long"
    preview_media = "text"
    decoding_keys = ("tokenizer", "max_length")  # (config() names the tokenizer None stood for)

    def __init__(self, model: str | None = None, model_config: dict | None = None,
                 tokenizer: str | None = None, max_length: int = 32, freeze: bool | None = None,
                 pooling: Pooling = "mean", decoder_width: int = 64, column: str | None = None,
                 trainable_blocks: int | None = None, gradient_checkpointing: bool = False):
        super().__init__((max_length,), column=column)
        self.tokenizer_name = tokenizer or model or "bytes"
        self.tokenizer = build_tokenizer(self.tokenizer_name)
        if model is not None and not model_config:
            model_config = None  # (mmae 0.3 checkpoints wrote {} beside a pretrained model)
        if model_config is not None:  # sized to the tokenizer and the sequence unless told otherwise
            model_config = {"model_type": "bert", "vocab_size": self.vocab_size,
                            "pad_token_id": self.tokenizer.pad_token_id,
                            "max_position_embeddings": max(max_length, 8), **model_config}
        self.backbone = Backbone("TextModality", model, model_config, freeze, pooling, trainable_blocks,
                                 gradient_checkpointing)
        self.max_length, self.decoder_width = max_length, decoder_width

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def build_encoder(self, embed_dim: int) -> nn.Module:
        example = torch.full((1, self.max_length), self.tokenizer.pad_token_id)
        example[0, 0] = 1 if self.tokenizer.pad_token_id != 1 else 2
        return self.backbone.encoder(TokenInputs(self.tokenizer.pad_token_id), embed_dim, example)

    def build_decoder(self, hidden_dim: int) -> nn.Module:
        return TextDecoder(hidden_dim, self.max_length, self.vocab_size, self.decoder_width)

    def augment(self, features: Tensor, strength: float, generator: torch.Generator | None) -> Tensor:
        """Token dropping, then token masking, of the text's own tokens (never padding or a
        pretrained tokenizer's special tokens): a sentence with a few words gone or unreadable
        still says the same. The mask id is `ByteTokenizer.mask_token_id` (a byte UTF-8 never
        holds), the unknown character for "ascii", else the tokenizer's mask token or, failing
        that, its unknown token; a tokenizer with neither only drops."""
        if strength == 0:
            return features
        shape, device = features.shape, features.device
        special = torch.tensor(self.tokenizer.special_ids, device=device)
        drop = ~torch.isin(features, special) & (torch.rand(shape, generator=generator, device=device)
                                                 < DROP_SHARE * strength)
        ids = _drop_tokens(features, drop, self.tokenizer.pad_token_id)
        if self.tokenizer.mask_token_id is None:
            return ids
        masked = ~torch.isin(ids, special) & (torch.rand(shape, generator=generator, device=device)
                                              < MASK_SHARE * strength)
        return ids.masked_fill(masked, self.tokenizer.mask_token_id)

    def encode_text(self, text: str) -> Tensor:
        return torch.tensor(self.tokenizer.encode(text, self.max_length), dtype=torch.long)

    def fit(self, cells: list[Any]) -> None:
        """Log what tokenising the training texts loses, fitting nothing (shards and exports
        rebuild this modality from its settings alone): the share of tokens that are the
        tokenizer's unknown token (none for bytes) and of texts cut at `max_length`. Measured on
        at most `SURVEY_TEXTS` texts spread over the split."""
        texts = [cell for cell in cells if isinstance(cell, str)]
        step = max(1, -(-len(texts) // SURVEY_TEXTS))
        sampled = f" (a sample spread over all {len(texts)})" if step > 1 else ""
        texts = texts[::step]
        if not texts:
            return
        lengths, unknown = self.tokenizer.survey(texts)
        cut = sum(length > self.max_length for length in lengths) / len(texts)
        level = logging.WARNING if cut > 0.05 else logging.INFO
        log.log(level, "text tokenizer %s: %.1f%% of %d training texts%s are longer than %d tokens and are "
                "cut (modality.text.max_length)", self.tokenizer_name, 100 * cut, len(texts), sampled,
                self.max_length)
        if self.tokenizer.unk_token_id is not None:
            rate = unknown / max(1, sum(lengths))
            level = logging.WARNING if rate > 0.01 else logging.INFO
            log.log(level, "text tokenizer %s: %.1f%% of the tokens of the training texts%s are unknown "
                    "(id %d): text it cannot represent%s", self.tokenizer_name, 100 * rate, sampled,
                    self.tokenizer.unk_token_id, "; modality.text.tokenizer=bytes represents any text"
                    if rate > 0.01 and isinstance(self.tokenizer, CharTokenizer) else "")

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
        assets = self.backbone.export_config()
        if isinstance(self.tokenizer, PretrainedTokenizer):  # built-in ones are rebuilt from their name
            target = Path("tokenizers") / name
            self.tokenizer.tokenizer.save_pretrained(folder / target)
            assets["tokenizer"] = target.as_posix()
        return assets

    def referenced_weights(self, encoder: nn.Module) -> tuple[str, dict] | None:
        return self.backbone.referenced_weights()

    @classmethod
    def from_export(cls, config: dict, root: Path | None) -> TextModality:
        """As `cls(**config)`, but a `tokenizer` of None without a `model` is "ascii": what mmae
        wrote before the byte tokenizer became the default, with weights sized to that vocabulary;
        a transformers tokenizer's path is relative to the export's `root`."""
        tokenizer = config.get("tokenizer")
        if tokenizer is None and not config.get("model"):
            config = {**config, "tokenizer": "ascii"}
        elif root is not None and tokenizer and tokenizer not in BUILTIN_TOKENIZERS:
            config = {**config, "tokenizer": str(root / tokenizer)}
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
        return {**self.backbone.config(), "tokenizer": self.tokenizer_name, "max_length": self.max_length,
                "decoder_width": self.decoder_width, "column": self.column}
