"""What every modality provides to the multimodal autoencoder."""

from __future__ import annotations

from abc import ABC, abstractmethod
from itertools import pairwise
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from mmae.errors import ConfigError, InputError


class Modality(ABC):
    """Describes one modality and builds the networks that handle it.

    A modality is a specification, not a network: the model asks it for a preprocessor (raw
    input -> features, e.g. waveform -> log-mel), an encoder (features -> embedding) and a
    decoder head (shared decoder features -> reconstruction of the features). Keeping the spec
    apart from the weights lets the encoder be exported and rebuilt from the spec alone.

    `shape` is the per-sample shape of the features (what is encoded and reconstructed);
    `raw_shape` that of the raw input a dataset yields (the same when there is no
    preprocessing). `column` names the manifest column (default: the modality's name).
    """

    kind: ClassVar[str]
    #: True when the modality spans manifest columns (`manifest_columns`): its cells are then
    #: `{column: value}` dicts, even where it names a single column.
    multi_column: ClassVar[bool] = False
    #: "float" for continuous inputs; "long" for token / category indices.
    dtype_kind: ClassVar[str] = "float"

    def __init__(self, shape: tuple[int, ...], raw_shape: tuple[int, ...] | None = None,
                 column: str | None = None):
        shape = tuple(int(s) for s in shape)
        if not shape or any(s <= 0 for s in shape):
            raise ConfigError(f"{type(self).__name__}: shape must be positive sizes, got {shape}")
        self.shape = shape
        self.raw_shape = shape if raw_shape is None else tuple(int(s) for s in raw_shape)
        self.column = column

    @abstractmethod
    def build_encoder(self, embed_dim: int) -> nn.Module:
        """A module mapping features `[B, *shape]` to embeddings `[B, embed_dim]`."""

    @abstractmethod
    def build_decoder(self, hidden_dim: int) -> nn.Module:
        """A module mapping shared decoder features `[B, hidden_dim]` to a reconstruction."""

    def build_preprocessor(self) -> nn.Module | None:
        """A module mapping raw inputs `[B, *raw_shape]` to features, or None (identity)."""
        return None

    def manifest_columns(self, name: str) -> list[str]:
        """The manifest columns this modality reads (one, unless it spans several)."""
        return [self.column or name]

    def fit(self, cells: list[Any]) -> None:  # noqa: B027 - optional hook, most modalities need none
        """Fit preprocessing statistics on the training split's cells (default: nothing)."""

    def check_cell(self, value: Any) -> None:  # noqa: B027 - optional hook
        """Validate an inline manifest cell cheaply, up front (raise `DataError`); file cells
        are checked when loaded."""

    def load(self, value: Any, root: Path) -> Tensor:
        """Read one manifest cell (a path relative to `root`, or an inline value) as a raw
        tensor of `raw_shape`; raise `DataError` (or any error: the dataset adds the row and
        column) when it cannot."""
        raise ConfigError(f"{type(self).__name__} cannot be read from a manifest")

    def noise_mask(self, features: Tensor) -> Tensor | None:
        """Which feature elements denoising corruptions may change (None: all of them)."""
        return None

    def reconstruction_loss(self, reconstruction: Tensor, target: Tensor) -> Tensor:
        """Per-sample loss `[B]`; the default is the mean squared error over all elements."""
        return (reconstruction - target).pow(2).flatten(1).mean(dim=1)

    def metrics(self, reconstruction: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Extra per-sample metrics `[B]` reported at validation (e.g. token accuracy)."""
        return {}

    def as_features(self, reconstruction: Tensor) -> Tensor:
        """A reconstruction in the form of the features it reconstructs (what `preprocess`
        yields), so it can stand in for a missing input: the identity for continuous
        modalities; discrete ones turn logits into indices."""
        return reconstruction

    def preview(self, features: Tensor) -> list | None:
        """Per sample of a batch of features (inputs or reconstructions), something a person
        can look at or listen to; None when the modality has nothing better than numbers."""
        return None

    def baseline_sum(self, targets: Tensor) -> Tensor:
        """Sum over a batch of what the "predict the training mean" baseline averages."""
        return targets.double().sum(dim=0)

    def baseline_prediction(self, mean: Tensor) -> Tensor:
        """The baseline's reconstruction of one sample, from the mean of `baseline_sum`."""
        return mean.float()

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

    @abstractmethod
    def config(self) -> dict:
        """The constructor's keyword arguments, JSON-serialisable: with the class (found by
        `kind`) they rebuild this modality, fitted statistics included (used by export)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape})"


def mlp(sizes: list[int], activate_last: bool = False) -> nn.Sequential:
    """A plain MLP with GELU between layers (and after the last one if asked)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2 or activate_last:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)
