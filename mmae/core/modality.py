"""What every modality provides to the multimodal autoencoder."""

from __future__ import annotations

import json
import math
import reprlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from mmae.core.errors import ConfigError, DataError, InputError
from mmae.core.likelihoods import LIKELIHOODS, Likelihood, build_likelihood

#: Smallest standard deviation a fitted statistic may have: a constant feature would
#: otherwise be divided by zero.
MIN_STD = 1e-6


class Standardize(nn.Module):
    """`(x - mean) / std` with statistics broadcast over the features; part of the encoder,
    so an export carries it and takes inputs in their own units."""

    def __init__(self, mean: Tensor, std: Tensor):
        super().__init__()
        self.register_buffer("mean", mean.float().clone())  # (never aliasing the modality's own)
        self.register_buffer("std", std.float().clone())

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class Modality(ABC):
    """Describes one modality and builds the networks that handle it.

    A modality is a specification, not a network: the model asks it for a preprocessor (raw
    input -> features, e.g. waveform -> log-mel), an encoder (features -> embedding) and a
    decoder head (shared decoder features -> reconstruction of the features). Keeping the spec
    apart from the weights lets the encoder be exported and rebuilt from the spec alone.

    `shape` is the per-sample shape of the features (what is encoded and reconstructed);
    `raw_shape` that of the raw input a dataset yields (the same when there is no
    preprocessing). `column` names the manifest column (default: the modality's name).

    A subclass implements `build_encoder`, `build_decoder` and `config`; everything else has
    a default, in sections below: the networks built from it, continuous statistics, reading
    data, training, outputs and export. It stays one class (not a codec, a network and a
    likelihood wired together) because a user's modality is one subclass, and an export
    rebuilds it from one registered name and its `config()`.
    """

    #: The axis of the per-sample features `shape` along which continuous statistics are kept
    #: apart (an image's channel, a log-mel's band, a vector's element); None for modalities
    #: that standardise themselves or have nothing continuous to standardise.
    statistics_axis: ClassVar[int | None] = None
    #: Continuous modalities: standardise the encoder's input (and decode in standardised
    #: units) with `mean`/`std`, fitted on the training split unless given; the decoder's
    #: distribution `likelihood` (see `mmae.core.likelihoods.LIKELIHOODS`).
    normalize: bool = False
    mean: list[float] | None = None
    std: list[float] | None = None
    likelihood: str = "gaussian"
    #: True when the modality spans manifest columns (`manifest_columns`): its cells are then
    #: `{column: value}` dicts, even where it names a single column.
    multi_column: ClassVar[bool] = False
    #: "float" for continuous inputs; "long" for token / category indices.
    dtype_kind: ClassVar[str] = "float"
    #: True when the encoder reads the raw input rather than the features (a speech backbone
    #: reads the waveform while the decoder reconstructs the log-mel): `MultimodalEncoder`
    #: then takes it as `raw=`.
    encodes_raw: bool = False
    #: The `config()` entries that decide what a manifest cell decodes to (not how it is then
    #: encoded): shards decoded with other values hold other tensors (`decoding_settings`).
    decoding_keys: ClassVar[tuple[str, ...]] = ()
    #: The `config()` entries that decide how the raw input becomes features (an audio clip's
    #: log-mel settings): statistics fitted with other values do not fit these features.
    feature_keys: ClassVar[tuple[str, ...]] = ()

    # --- What every modality gives ---------------------------------------------------------

    def __init__(self, shape: tuple[int, ...], raw_shape: tuple[int, ...] | None = None,
                 column: str | None = None):
        shape = tuple(int(s) for s in shape)
        if not shape or any(s <= 0 for s in shape):
            raise ConfigError(f"{type(self).__name__}: shape must be positive sizes, got {shape}")
        self.shape = shape
        self.raw_shape = shape if raw_shape is None else tuple(int(s) for s in raw_shape)
        self.column = column

    @abstractmethod
    def config(self) -> dict:
        """The constructor's keyword arguments, JSON-serialisable: with the class (its
        registered name, see `mmae.core.registry`) they rebuild this modality, fitted
        statistics included (used by export)."""

    @abstractmethod
    def build_encoder(self, embed_dim: int) -> nn.Module:
        """A module mapping features `[B, *shape]` to embeddings `[B, embed_dim]`."""

    @abstractmethod
    def build_decoder(self, hidden_dim: int) -> nn.Module:
        """A module mapping shared decoder features `[B, hidden_dim]` to a reconstruction."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape})"

    # --- The networks the model builds from it ---------------------------------------------

    def build_preprocessor(self) -> nn.Module | None:
        """A module mapping raw inputs `[B, *raw_shape]` to features, or None (identity)."""
        return None

    def build_standardizer(self) -> nn.Module | None:
        """The encoder's input standardisation (features -> standardised), or None."""
        statistics = self.feature_statistics()
        return None if statistics is None else Standardize(*statistics)

    def build_likelihood(self) -> Likelihood:
        """The decoder's distribution of this modality's features; its `link` maps the decoder
        head's output (standardised units) to a reconstruction in the features' own units.
        Modalities without continuous statistics (tokens, tables) use their own loss."""
        if self.statistics_axis is None:
            return OwnLoss(self)
        mean, std = self.feature_statistics() or (None, None)
        return build_likelihood(self.likelihood, mean, std, self.shape, owner=type(self).__name__)

    def example_input(self, batch: int, generator: torch.Generator) -> Tensor:
        """Random valid raw inputs `[batch, *raw_shape]` (for tracing exports, e.g. ONNX)."""
        if self.dtype_kind == "long":
            return torch.randint(1, max(2, getattr(self, "vocab_size", 2)), (batch, *self.raw_shape),
                                 generator=generator)
        return torch.rand(batch, *self.raw_shape, generator=generator)

    # --- Continuous statistics: fitted on the training split unless given ------------------

    def _continuous(self, normalize: bool, mean: Sequence[float] | None, std: Sequence[float] | None,
                    likelihood: str) -> None:
        """Set and check the statistics and likelihood settings of a continuous modality."""
        owner = type(self).__name__
        if likelihood not in LIKELIHOODS:
            raise ConfigError(f"{owner}: likelihood must be one of {sorted(LIKELIHOODS)}, got '{likelihood}'")
        if (mean is None) != (std is None):
            raise ConfigError(f"{owner}: give both mean and std, or neither")
        self.normalize, self.likelihood = bool(normalize), likelihood
        self.mean = self.std = None
        if mean is not None:
            self.set_statistics(mean, std)

    @property
    def statistics_size(self) -> int:
        """How many values `mean` and `std` hold (one per index of `statistics_axis`)."""
        return self.shape[self.statistics_axis]

    @property
    def needs_statistics(self) -> bool:
        """Whether the datamodule should fit `mean`/`std` on the training split."""
        return self.statistics_axis is not None and self.normalize and self.mean is None

    def set_statistics(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Set the feature statistics (`statistics_size` values each, std > 0)."""
        owner = type(self).__name__
        mean, std = [float(m) for m in mean], [float(s) for s in std]
        size = self.statistics_size
        if len(mean) != size or len(std) != size:
            raise ConfigError(f"{owner}: mean and std need {size} values (one per index of feature "
                              f"axis {self.statistics_axis}), got {len(mean)} and {len(std)}")
        if not all(math.isfinite(v) for v in mean + std) or min(std) <= 0:
            raise ConfigError(f"{owner}: mean and std must be finite with std > 0, got mean={mean[:8]}, "
                              f"std={std[:8]}")
        self.mean, self.std = mean, std
        self._statistics = None  # tensors of feature_statistics(), built on first use
        self.normalize = True

    def feature_statistics(self) -> tuple[Tensor, Tensor] | None:
        """`(mean, std)` shaped to broadcast over a sample's features, or None; built once,
        since element noise asks for them at every training step."""
        if self.statistics_axis is None or self.mean is None:
            return None
        if getattr(self, "_statistics", None) is None:
            shape = [1] * len(self.shape)
            shape[self.statistics_axis] = -1
            self._statistics = (torch.tensor(self.mean).view(shape), torch.tensor(self.std).view(shape))
        return self._statistics

    def fit(self, cells: list[Any]) -> None:  # noqa: B027 - optional hook, most modalities need none
        """Fit preprocessing statistics on the training split's cells (default: nothing)."""

    def restore_fitted(self, config: dict) -> None:
        """Take what fitting set in another instance's `config()` (the statistics stored with
        shards) wherever this modality has nothing of its own: settings given explicitly win."""
        own = self.config()
        same_features = all(json.dumps(config.get(k)) == json.dumps(own.get(k)) for k in self.feature_keys)
        if self.needs_statistics and same_features and config.get("mean") is not None:
            self.set_statistics(config["mean"], config["std"])

    # --- Reading data: manifest cells, files, synthetic views, batches ---------------------

    def manifest_columns(self, name: str) -> list[str]:
        """The manifest columns this modality reads (one, unless it spans several)."""
        return [self.column or name]

    def decoding_settings(self) -> dict:
        """The `config()` entries of `decoding_keys`: what shards must have been decoded with."""
        return {key: value for key, value in self.config().items() if key in self.decoding_keys}

    def file_path(self, value: Any, root: Path) -> Path | None:
        """The file a manifest cell names (relative to `root`), or None for an inline value;
        raise `DataError` for a cell that should name a file and does not."""
        return None

    def check_cell(self, value: Any) -> None:  # noqa: B027 - optional hook
        """Validate an inline manifest cell cheaply, up front (raise `DataError`); file cells
        are checked when loaded."""

    def load(self, value: Any, root: Path) -> Tensor:
        """Read one manifest cell (a path relative to `root`, or an inline value) as a raw
        tensor of `raw_shape`; raise `DataError` (or any error: the dataset adds the row and
        column) when it cannot."""
        raise ConfigError(f"{type(self).__name__} cannot be read from a manifest")

    def synthetic_view(self, labels: Tensor, factors: Tensor, private: Tensor, num_classes: int,
                       generator: torch.Generator) -> Tensor:
        """This modality's view of `SyntheticMultimodal` samples: raw inputs `[N, *raw_shape]`
        rendered from each sample's class `labels [N]`, shared `factors [N, F]` and the view's
        own `private [N, P]` factors (all in [-1, 1]), so that other views can predict it up
        to its private part. Continuous views get the dataset's additive noise on top."""
        raise ConfigError(f"{type(self).__name__} has no synthetic view (Modality.synthetic_view): "
                          "use it with data=manifest")

    def _check(self, name: str, x: Tensor, shape: tuple[int, ...], what: str) -> None:
        if not isinstance(x, Tensor):
            raise InputError(f"modality '{name}': expected a Tensor, got {type(x).__name__}")
        if x.dim() != len(shape) + 1 or tuple(x.shape[1:]) != shape:
            raise InputError(
                f"modality '{name}': expected {what} of shape [B, {', '.join(map(str, shape))}]"
                f", got {list(x.shape)}"
            )
        floating = torch.is_floating_point(x)
        if self.dtype_kind == "float" and not floating:
            raise InputError(f"modality '{name}': expected a floating-point tensor, got {x.dtype}")
        if self.dtype_kind == "long" and (floating or x.dtype == torch.bool):
            raise InputError(f"modality '{name}': expected an integer (index) tensor, got {x.dtype}")

    def check_batch(self, name: str, x: Tensor) -> None:
        """Raise an `InputError` naming the modality if `x` is not a batch of its features."""
        self._check(name, x, self.shape, "a batch")

    def check_raw(self, name: str, x: Tensor) -> None:
        """Raise an `InputError` naming the modality if `x` is not a batch of raw inputs."""
        self._check(name, x, self.raw_shape, "a raw batch")

    # --- Training: corruption, augmentation, losses, baselines -----------------------------

    def noise_mask(self, features: Tensor) -> Tensor | None:
        """Which feature elements denoising corruptions may change (None: all of them)."""
        return None

    def augment(self, features: Tensor, strength: float, generator: torch.Generator | None) -> Tensor:
        """A batch of features `[B, *shape]` under per-sample random transforms that keep what
        a sample means and change a nuisance (an image's colours, a clip's loudness), so that
        codes trained on them become invariant to it (`mmae.core.corruption.Augment`).

        `strength` in [0, 1] scales every magnitude; 0 must return `features` itself. One
        batched draw from `generator` (the global generator when None): the same generator
        state gives the same output. Same shape and dtype, values in the features' valid
        range. Training only: an export never augments. Default: no augmentation."""
        return features

    def reconstruction_loss(self, reconstruction: Tensor, target: Tensor) -> Tensor:
        """Per-sample loss `[B]`; the default is the mean squared error over all elements."""
        return (reconstruction - target).pow(2).flatten(1).mean(dim=1)

    def metrics(self, reconstruction: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Extra per-sample metrics `[B]` reported at validation (e.g. token accuracy)."""
        return {}

    def baseline_sum(self, targets: Tensor) -> Tensor:
        """Sum over a batch of what the "predict the training mean" baseline averages."""
        return targets.double().sum(dim=0)

    def baseline_prediction(self, mean: Tensor) -> Tensor:
        """The baseline's reconstruction of one sample, from the mean of `baseline_sum`."""
        return mean.float()

    # --- Outputs: reconstructions as inputs, and as media ----------------------------------

    def as_features(self, reconstruction: Tensor) -> Tensor:
        """A reconstruction in the form of the features it reconstructs (what `preprocess`
        yields), so it can stand in for a missing input: the identity for continuous
        modalities; discrete ones turn logits into indices."""
        return reconstruction

    #: How `preview` items are shown in W&B: "image" (a grid of `[H, W, C]` uint8 arrays),
    #: "audio" (waveforms at the modality's `sample_rate`), "text" (a table of strings), or
    #: None when the modality has nothing better than numbers to show.
    preview_media: ClassVar[str | None] = None

    def preview(self, features: Tensor) -> list | None:
        """Per sample of a batch of features (inputs or reconstructions), something a person
        can look at or listen to (of `preview_media`); None when there is nothing to show."""
        return None

    # --- Export ----------------------------------------------------------------------------

    def export_assets(self, encoder: nn.Module, folder: Path, name: str) -> dict:
        """Write what an export needs beyond the weights and `config()` into `folder` (e.g. a
        tokenizer) and return the `config()` entries that change so the export rebuilds
        this modality on its own (paths relative to `folder`); default: nothing."""
        return {}

    def referenced_weights(self, encoder: nn.Module) -> tuple[str, dict] | None:
        """Weights that an export may leave out because they load by name from a pretrained
        model (`export_encoder(..., reference_pretrained=True)`: a frozen backbone's): their
        prefix within this modality's `encoder`, and the `config()` entries that name the
        model (applied over `export_assets`'). Default: None (none)."""
        return None

    @classmethod
    def from_export(cls, config: dict, root: Path | None) -> Modality:
        """Rebuild from an export's `config()` entries; `root` is the export directory that
        `export_assets` wrote into (None for a training checkpoint's description)."""
        return cls(**config)


class OwnLoss(Likelihood):
    """A modality's own per-sample loss as its likelihood: the cross-entropy of tokens and
    categories (a categorical likelihood) and whatever else `reconstruction_loss` defines."""

    def __init__(self, modality: Modality):
        super().__init__()
        self._loss = modality.reconstruction_loss

    def link(self, output: Tensor) -> Tensor:
        return output

    def nll(self, reconstruction: Tensor, target: Tensor) -> Tensor:
        return self._loss(reconstruction, target)


def signed_uniform(size: int, scale: float, generator: torch.Generator | None,
                   device: torch.device) -> Tensor:
    """`size` draws in [-scale, scale): the per-sample magnitudes of an augmentation."""
    return (2.0 * torch.rand(size, generator=generator, device=device) - 1.0) * scale


def file_cell(value: Any, root: Path) -> Path:
    """The path of a cell that must name a file (images, audio)."""
    if not isinstance(value, str):
        raise DataError(f"expected a file path, got {type(value).__name__} {reprlib.repr(value)}")
    return root / value.strip()
