"""Pretrained `transformers` backbones under a modality: loading, freezing, partial tuning,
LoRA, pooling to one vector, and the split into a cacheable stem and a trainable head.

A modality that takes a backbone keeps a `Backbone` (a specification, like the modality
itself) and builds a `BackboneEncoder` from it. The modality supplies an input adapter (an
`nn.Module` turning its encoder input into the backbone's keyword arguments, e.g. the image
processor's resizing and normalisation in torch), so preprocessing runs on the model's device
and travels with the export.

`BackboneEncoder.stem` (adapter -> backbone -> fixed pooling) is deterministic when the
backbone is frozen, which lets training compute it once per sample (`mmae.data.stem_cache`);
`BackboneEncoder.head` (attention pooling, projection) is what trains.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from mmae.core.errors import ConfigError

Pooling = Literal["mean", "cls", "attention"]
POOLINGS = get_args(Pooling)


def plain(value: Any) -> Any:
    """Nested settings as plain dicts and lists (a config's mappings and sequences arrive as
    config objects, which neither transformers nor a checkpoint should receive)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [plain(v) for v in value]
    return value


def _loading_error(owner: str, what: str, name: str, error: Exception) -> ConfigError:
    """A load failure that names the modality, the path or hub name, and what is missing."""
    if os.path.isdir(name):
        return ConfigError(f"{owner}: cannot load the {what} from {name}: {type(error).__name__}: "
                           f"{error}".rstrip())
    reason = str(error).split(". ")[0]
    return ConfigError(
        f"{owner}: '{name}' is not a local directory and the {what} could not be fetched from the "
        f"Hugging Face hub ({type(error).__name__}: {reason}). "
        "Where there is network, save it once (`AutoModel.from_pretrained(name).save_pretrained(DIR)`, "
        "and the processor or tokenizer likewise) and pass that DIR")


def load_pretrained(owner: str, what: str, loader: Any, name: str, **options: Any) -> Any:
    """`loader.from_pretrained(name, **options)` with errors that say what could not be found."""
    try:
        return loader.from_pretrained(name, **options)
    except (OSError, ValueError, KeyError) as error:
        raise _loading_error(owner, what, name, error) from None


def hidden_width(config: Any, owner: str) -> int:
    """The width of the backbone's last hidden state, read from its config."""
    for key in ("hidden_size", "d_model"):
        if isinstance(getattr(config, key, None), int):
            return getattr(config, key)
    sizes = getattr(config, "hidden_sizes", None)
    if sizes:
        return int(sizes[-1])
    raise ConfigError(f"{owner}: cannot tell the width of backbone {type(config).__name__} "
                      "(no hidden_size, d_model or hidden_sizes in its config)")


def _tower(model: nn.Module, tower: str | None) -> nn.Module:
    """The part of a pretrained model that encodes this modality: the encoder of an
    encoder-decoder (Whisper, T5), or the named tower of a dual model (CLIP's vision_model)."""
    if tower is not None and hasattr(model, tower):
        return getattr(model, tower)
    if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
        return model.get_encoder()
    return model


def block_list(backbone: nn.Module) -> nn.ModuleList:
    """The backbone's stack of repeated blocks: its `ModuleList` holding the most parameters
    (transformer layers, ConvNeXt stages; not wav2vec 2.0's few convolutions)."""
    lists = [m for m in backbone.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if not lists:
        raise ConfigError(f"backbone {type(backbone).__name__} has no list of blocks to tune the last of")
    return max(lists, key=lambda m: sum(p.numel() for p in m.parameters()))


def tune_last_blocks(backbone: nn.Module, count: int) -> None:
    """Freeze the backbone except its last `count` blocks and what is registered after them
    (final norms, poolers)."""
    blocks = block_list(backbone)
    if count > len(blocks):
        raise ConfigError(f"trainable_blocks={count}, but backbone {type(backbone).__name__} has "
                          f"{len(blocks)} blocks")
    backbone.requires_grad_(False)
    if count == 0:
        return
    inside = {id(p) for p in blocks.parameters()}
    tuned = {id(p) for block in list(blocks)[-count:] for p in block.parameters()}
    after_blocks = False
    for parameter in backbone.parameters():  # registration order: embeddings, blocks, norms
        after_blocks = after_blocks or id(parameter) in inside
        if id(parameter) in tuned or (after_blocks and id(parameter) not in inside):
            parameter.requires_grad_(True)


class AttentionPool(nn.Module):
    """A learned query scores every token; the pooled vector is their softmax-weighted mean."""

    def __init__(self, width: int):
        super().__init__()
        self.score = nn.Linear(width, 1)

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        scores = self.score(tokens).squeeze(-1)
        if mask is not None:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = scores.softmax(dim=-1).unsqueeze(-1)
        return (weights * tokens).sum(dim=1)


def as_tokens(hidden: Tensor) -> Tensor:
    """A backbone's last hidden state as tokens `[B, T, D]` (a convolutional map `[B, C, H, W]`
    becomes its `H * W` positions)."""
    return hidden.flatten(2).transpose(1, 2) if hidden.dim() == 4 else hidden


def mean_pool(tokens: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return tokens.mean(dim=1)
    weights = mask.unsqueeze(-1).to(tokens.dtype)
    return (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


class BackboneEncoder(nn.Module):
    """Adapter -> backbone -> pooling -> linear embedding.

    The adapter returns `(keyword arguments of the backbone, token mask or None)`. With
    `pooling="attention"` the stem yields the tokens and the head pools them; otherwise the
    stem pools. A frozen backbone stays in eval mode (no dropout) and runs without gradients.
    """

    def __init__(self, adapter: nn.Module, backbone: nn.Module, pooling: str, embed_dim: int,
                 frozen: bool, width: int):
        super().__init__()
        self.adapter = adapter
        self.backbone = backbone
        self.pooling = pooling
        self.frozen = frozen
        self.attention = AttentionPool(width) if pooling == "attention" else None
        self.project = nn.Linear(width, embed_dim)
        self.train()  # from_pretrained returns eval mode; a trainable backbone needs its dropout

    @property
    def cacheable(self) -> bool:
        """Whether `stem` is a fixed function of the input (frozen, deterministic), so its
        output can be computed once per sample. Attention pooling keeps every token, whose
        cache would be large: then only mean / CLS pooling is cached."""
        return self.frozen and self.attention is None

    def train(self, mode: bool = True) -> BackboneEncoder:
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def stem(self, x: Tensor) -> Tensor:
        """The backbone's pooled output `[B, width]` (tokens `[B, T, width]` for attention)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            kwargs, mask = self.adapter(x)
            hidden = self.backbone(**kwargs).last_hidden_state
            if self.pooling == "cls" and hidden.dim() == 4:
                raise ConfigError(f"pooling=cls: backbone {type(self.backbone).__name__} yields a feature "
                                  "map, which has no CLS token; use pooling=mean or attention")
            tokens = as_tokens(hidden)
            if self.attention is not None:
                return tokens if mask is None else tokens * mask.unsqueeze(-1)
            if self.pooling == "cls":
                return tokens[:, 0]
            return mean_pool(tokens, mask)

    def head(self, stem: Tensor) -> Tensor:
        """Stem output -> embedding `[B, embed_dim]` (the trainable part)."""
        if self.attention is not None:
            mask = stem.abs().sum(-1) > 0  # tokens the stem zeroed (padding) are left out
            stem = self.attention(stem, mask)
        return self.project(stem.float())

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.stem(x))


class Backbone:
    """Which pretrained model a modality encodes with, and how it is tuned.

    `model`: a local directory saved with `save_pretrained` or a hub name; `model_config`: a
    transformers config (with `model_type`) to build an untrained one instead (tests, or an
    export, whose weights are in its own file). `freeze`: keep every backbone weight fixed
    (None: frozen for a pretrained model, trained for one built from a config).
    `trainable_blocks` (with `freeze=false`): tune only the last N blocks, and the norms after
    them. `gradient_checkpointing` trades compute for memory on large models.
    `tower` names the sub-module of a dual model to use (CLIP's `vision_model`).
    """

    def __init__(self, owner: str, model: str | None, model_config: dict | None, freeze: bool | None,
                 pooling: str, trainable_blocks: int | None = None, gradient_checkpointing: bool = False,
                 tower: str | None = None):
        if (model is None) == (model_config is None):
            raise ConfigError(f"{owner}: give exactly one of model (a directory or hub name) and "
                              "model_config (a transformers config to build from scratch); with a "
                              "pretrained model, set model_config=null")
        if pooling not in POOLINGS:
            raise ConfigError(f"{owner}: pooling must be one of {POOLINGS}, got '{pooling}'")
        self.owner = owner
        self.model = model
        self.model_config = None if model_config is None else plain(model_config)
        self.freeze = (model is not None) if freeze is None else bool(freeze)
        self.pooling = pooling
        self.trainable_blocks = None if trainable_blocks is None else int(trainable_blocks)
        self.gradient_checkpointing = bool(gradient_checkpointing)
        self.tower = tower
        if self.freeze and self.trainable_blocks is not None:
            raise ConfigError(f"{owner}: trainable_blocks tunes part of the backbone; set freeze=false "
                              "with it (freeze=true keeps every backbone weight fixed)")
        if self.trainable_blocks is not None and self.trainable_blocks < 0:
            raise ConfigError(f"{owner}: trainable_blocks must be >= 0, got {self.trainable_blocks}")
        self._config: Any = None

    def source(self) -> str:
        """Where the backbone comes from, for messages."""
        return self.model or f"a {self.model_config.get('model_type')} built from model_config"

    def transformers_config(self) -> Any:
        """The backbone's `transformers` config (read from `model`, or built from
        `model_config`), kept once read."""
        if self._config is None:
            from transformers import AutoConfig

            if self.model is not None:
                self._config = load_pretrained(self.owner, "model config", AutoConfig, self.model)
            else:
                options = dict(self.model_config)
                if "model_type" not in options:
                    raise ConfigError(f"{self.owner}: model_config needs a model_type (e.g. vit, wav2vec2, "
                                      "bert)")
                self._config = AutoConfig.for_model(options.pop("model_type"), **options)
        return self._config

    def tower_config(self) -> Any:
        """The config of the part that encodes (CLIP's vision_config, Whisper's own)."""
        config = self.transformers_config()
        if self.tower == "vision_model" and hasattr(config, "vision_config"):
            return config.vision_config
        return config

    def build(self) -> nn.Module:
        """The backbone module in float32 (transformers 5 would otherwise pick the checkpoint's
        dtype), tuned as asked."""
        from transformers import AutoModel

        if self.model is not None:
            model = load_pretrained(self.owner, "model", AutoModel, self.model, dtype=torch.float32)
        else:
            model = AutoModel.from_config(self.transformers_config(), dtype=torch.float32)
        model = _tower(model, self.tower)
        if self.gradient_checkpointing:
            if not getattr(model, "supports_gradient_checkpointing", False):
                raise ConfigError(f"{self.owner}: backbone {type(model).__name__} does not support "
                                  "gradient checkpointing")
            # transformers 5 renamed it (the old name warns that it goes in v6).
            enable = getattr(model, "activation_checkpointing_enable", None)
            (enable or model.gradient_checkpointing_enable)()
        if self.freeze:
            model.requires_grad_(False)
        elif self.trainable_blocks is not None:
            tune_last_blocks(model, self.trainable_blocks)
        pooler = getattr(model, "pooler", None)
        if isinstance(pooler, nn.Module):
            # mmae pools the last hidden state itself: a trainable pooler would get no gradient,
            # which DDP refuses ("parameters that were not used in producing the loss").
            pooler.requires_grad_(False)
        return model

    def encoder(self, adapter: nn.Module, embed_dim: int, example: Tensor) -> BackboneEncoder:
        """The encoder over this backbone, tried once on `example` (one valid encoder input) so
        that a backbone that does not fit the modality (input size, channels, length) fails
        here, naming both, rather than at the first batch."""
        backbone = self.build()
        width = hidden_width(self.tower_config(), self.owner)
        encoder = BackboneEncoder(adapter, backbone, self.pooling, embed_dim, self.freeze, width)
        try:
            with torch.no_grad():
                encoder.eval()
                encoder(example)
        except (RuntimeError, ValueError, IndexError, TypeError) as error:
            raise ConfigError(f"{self.owner}: backbone {self.source()} does not fit this modality's input "
                              f"{list(example.shape[1:])} (or its processor settings): "
                              f"{type(error).__name__}: {error}") from None
        finally:
            encoder.train()
        return encoder

    def config(self) -> dict:
        return {"model": self.model, "model_config": self.model_config, "freeze": self.freeze,
                "pooling": self.pooling, "trainable_blocks": self.trainable_blocks,
                "gradient_checkpointing": self.gradient_checkpointing}

    def referenced_weights(self) -> tuple[str, dict] | None:
        """`Modality.referenced_weights` of a modality with this backbone: a frozen backbone
        loaded by name can be referred to instead of stored (a local directory by its
        absolute path, so the export loads from anywhere on this machine)."""
        if self.model is None or not self.freeze:
            return None
        name = os.path.abspath(self.model) if os.path.isdir(self.model) else self.model
        return "backbone.", {"model": name, "model_config": None}

    def export_config(self) -> dict:
        """The entries that rebuild this backbone from an export alone: its architecture (the
        whole model's config, so that the same tower is picked) in place of the path."""
        return {"model": None, "model_config": self.transformers_config().to_dict()}


def processor_settings(owner: str, name: str, what: str) -> dict:
    """The saved settings (`preprocessor_config.json`) of the image processor or feature
    extractor beside a pretrained model, read without building it (no torchvision needed)."""
    from transformers.feature_extraction_utils import FeatureExtractionMixin

    try:
        settings, _ = FeatureExtractionMixin.get_feature_extractor_dict(name)
    except (OSError, ValueError) as error:
        if os.path.isdir(name):
            raise ConfigError(
                f"{owner}: {name} holds no {what} (preprocessor_config.json is missing): save it beside "
                f"the model (`processor.save_pretrained('{name}')`), or give the modality's processor "
                "settings explicitly") from None
        raise _loading_error(owner, what, name, error) from None
    return settings
