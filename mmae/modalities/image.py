"""Images: a small strided CNN encoder and a transposed-CNN decoder head."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from torch import nn

from mmae.errors import ConfigError
from mmae.modalities.base import Modality


class ImageModality(Modality):
    """Images `[C, H, W]`; each hidden layer halves the resolution (H and W must allow it)."""

    kind = "image"

    def __init__(self, channels: int = 1, size: int | Sequence[int] = 28,
                 hidden_channels: Sequence[int] = (32, 64)):
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        super().__init__((channels, height, width))
        self.hidden_channels = [int(c) for c in hidden_channels]
        if not self.hidden_channels:
            raise ConfigError("ImageModality: hidden_channels must name at least one layer")
        factor = 2 ** len(self.hidden_channels)
        if height % factor or width % factor:
            raise ConfigError(
                f"ImageModality: size {height}x{width} must be divisible by 2**depth = {factor} "
                f"(depth = len(hidden_channels) = {len(self.hidden_channels)})"
            )
        self.bottleneck = (self.hidden_channels[-1], height // factor, width // factor)

    def build_encoder(self, embed_dim: int) -> nn.Module:
        layers: list[nn.Module] = []
        c_in = self.shape[0]
        for c_out in self.hidden_channels:
            layers += [nn.Conv2d(c_in, c_out, kernel_size=4, stride=2, padding=1), nn.GELU()]
            c_in = c_out
        c, h, w = self.bottleneck
        return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * h * w, embed_dim))

    def build_decoder(self, hidden_dim: int) -> nn.Module:
        c, h, w = self.bottleneck
        layers: list[nn.Module] = [nn.Linear(hidden_dim, c * h * w), nn.Unflatten(1, (c, h, w))]
        for c_in, c_out in pairwise([*self.hidden_channels[::-1], self.shape[0]]):
            layers += [nn.GELU(), nn.ConvTranspose2d(c_in, c_out, kernel_size=4, stride=2, padding=1)]
        return nn.Sequential(*layers)

    def spec(self) -> dict:
        return {"kind": self.kind, "channels": self.shape[0], "size": list(self.shape[1:]),
                "hidden_channels": self.hidden_channels}
