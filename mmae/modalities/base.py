"""What every modality provides to the multimodal autoencoder."""

from __future__ import annotations

from abc import ABC, abstractmethod
from itertools import pairwise
from typing import ClassVar

import torch
from torch import Tensor, nn

from mmae.errors import ConfigError, InputError


class Modality(ABC):
    """Describes one modality and builds the networks that handle it.

    A modality is a specification, not a network: the model asks it for an encoder (sample ->
    embedding) and a decoder head (shared decoder features -> sample). Keeping the spec apart
    from the weights lets the encoder be exported and rebuilt from the spec alone.
    """

    kind: ClassVar[str]

    def __init__(self, shape: tuple[int, ...]):
        shape = tuple(int(s) for s in shape)
        if not shape or any(s <= 0 for s in shape):
            raise ConfigError(f"{type(self).__name__}: shape must be positive sizes, got {shape}")
        self.shape = shape

    @abstractmethod
    def build_encoder(self, embed_dim: int) -> nn.Module:
        """A module mapping a batch `[B, *shape]` to embeddings `[B, embed_dim]`."""

    @abstractmethod
    def build_decoder(self, hidden_dim: int) -> nn.Module:
        """A module mapping shared decoder features `[B, hidden_dim]` to `[B, *shape]`."""

    def reconstruction_loss(self, reconstruction: Tensor, target: Tensor) -> Tensor:
        """Per-sample loss `[B]`; the default is the mean squared error over all elements."""
        return (reconstruction - target).pow(2).flatten(1).mean(dim=1)

    def check_batch(self, name: str, x: Tensor) -> None:
        """Raise an `InputError` naming the modality if `x` is not a batch of this modality."""
        if not isinstance(x, Tensor):
            raise InputError(f"modality '{name}': expected a Tensor, got {type(x).__name__}")
        if tuple(x.shape[1:]) != self.shape or x.dim() != len(self.shape) + 1:
            raise InputError(
                f"modality '{name}': expected a batch of shape [B, {', '.join(map(str, self.shape))}]"
                f", got {list(x.shape)}"
            )
        if not torch.is_floating_point(x):
            raise InputError(f"modality '{name}': expected a floating-point tensor, got {x.dtype}")

    def spec(self) -> dict:
        """The constructor arguments, enough to rebuild this modality (used by export)."""
        return {"kind": self.kind, "shape": list(self.shape)}

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
