"""Strided 2-D CNN encoder / transposed-CNN decoder shared by image-like modalities."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from torch import nn

from mmae.errors import ConfigError


def bottleneck_shape(owner: str, height: int, width: int,
                     hidden_channels: Sequence[int]) -> tuple[int, int, int]:
    """The feature-map shape after one stride-2 layer per hidden channel count."""
    if not hidden_channels:
        raise ConfigError(f"{owner}: hidden_channels must name at least one layer")
    factor = 2 ** len(hidden_channels)
    if height % factor or width % factor:
        raise ConfigError(
            f"{owner}: feature map {height}x{width} (image size; for audio n_mels x frames) must be "
            f"divisible by 2**depth = {factor} "
            f"(depth = len(hidden_channels) = {len(hidden_channels)})"
        )
    return hidden_channels[-1], height // factor, width // factor


def conv_encoder(channels: int, hidden_channels: Sequence[int], bottleneck: tuple[int, int, int],
                 embed_dim: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for c_in, c_out in pairwise([channels, *hidden_channels]):
        layers += [nn.Conv2d(c_in, c_out, kernel_size=4, stride=2, padding=1), nn.GELU()]
    c, h, w = bottleneck
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * h * w, embed_dim))


def conv_decoder(channels: int, hidden_channels: Sequence[int], bottleneck: tuple[int, int, int],
                 hidden_dim: int) -> nn.Sequential:
    c, h, w = bottleneck
    layers: list[nn.Module] = [nn.Linear(hidden_dim, c * h * w), nn.Unflatten(1, (c, h, w))]
    for c_in, c_out in pairwise([*hidden_channels[::-1], channels]):
        layers += [nn.GELU(), nn.ConvTranspose2d(c_in, c_out, kernel_size=4, stride=2, padding=1)]
    return nn.Sequential(*layers)
