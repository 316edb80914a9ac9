"""Network blocks shared by modalities and fusions: a plain MLP, and the strided 2-D CNN
encoder / transposed-CNN decoder of image-like modalities.

Each layer halves the feature map (kernel 4, stride 2, padding 1: `floor(n / 2)`), and the
decoder retraces the same sizes exactly (`output_padding` restores the odd ones), so any map
size works. By default the depth follows the input: layers are added until the map has at
most `MAX_BOTTLENECK_POSITIONS` positions, so the Linear layers around the bottleneck, which
hold most of the weights, stay small whatever the input size.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from torch import nn

from mmae.core.errors import ConfigError

#: Positions (height x width) of the smallest map the automatic depth stops at.
MAX_BOTTLENECK_POSITIONS = 32
BASE_CHANNELS, MAX_CHANNELS = 32, 64


def auto_channels(height: int, width: int, base: int = BASE_CHANNELS,
                  widest: int = MAX_CHANNELS) -> list[int]:
    """Channel counts of the layers that halve a `height x width` map until it has at most
    `MAX_BOTTLENECK_POSITIONS` positions (and each side stays >= 1): `base`, doubling, up to
    `widest`."""
    channels: list[int] = []
    while height * width > MAX_BOTTLENECK_POSITIONS and min(height, width) >= 2:
        channels.append(min(base * 2 ** len(channels), widest))
        height, width = height // 2, width // 2
    return channels or [base]


def map_sizes(owner: str, height: int, width: int, depth: int) -> list[tuple[int, int]]:
    """The map size before each layer and after the last: `[(H, W), ..., bottleneck]`."""
    sizes = [(height, width)]
    for _ in range(depth):
        h, w = sizes[-1]
        if min(h, w) < 2:
            raise ConfigError(f"{owner}: a {height}x{width} map (image size; for audio n_mels x frames) "
                              f"cannot be halved {depth} times (depth = len(hidden_channels)); "
                              "use fewer hidden_channels, or null to size them from the input")
        sizes.append((h // 2, w // 2))
    return sizes


class ConvNet:
    """The layer plan of one modality's CNN: channels per layer and the map sizes they see."""

    def __init__(self, owner: str, channels: int, height: int, width: int,
                 hidden_channels: Sequence[int] | None):
        self.channels = channels
        self.hidden_channels = ([int(c) for c in hidden_channels] if hidden_channels
                                else auto_channels(height, width))
        if any(c <= 0 for c in self.hidden_channels):
            raise ConfigError(f"{owner}: hidden_channels must be positive, got {self.hidden_channels}")
        self.sizes = map_sizes(owner, height, width, len(self.hidden_channels))

    @property
    def bottleneck(self) -> tuple[int, int, int]:
        return (self.hidden_channels[-1], *self.sizes[-1])

    def encoder(self, embed_dim: int) -> nn.Sequential:
        layers: list[nn.Module] = []
        for c_in, c_out in pairwise([self.channels, *self.hidden_channels]):
            layers += [nn.Conv2d(c_in, c_out, kernel_size=4, stride=2, padding=1), nn.GELU()]
        c, h, w = self.bottleneck
        return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * h * w, embed_dim))

    def decoder(self, hidden_dim: int) -> nn.Sequential:
        c, h, w = self.bottleneck
        layers: list[nn.Module] = [nn.Linear(hidden_dim, c * h * w), nn.Unflatten(1, (c, h, w))]
        channels = [*self.hidden_channels[::-1], self.channels]
        # Layer i goes from sizes[-1 - i] back to sizes[-2 - i]; output_padding adds the odd row.
        for i, (c_in, c_out) in enumerate(pairwise(channels)):
            (h_out, w_out), (h_in, w_in) = self.sizes[-2 - i], self.sizes[-1 - i]
            layers += [nn.GELU(), nn.ConvTranspose2d(c_in, c_out, kernel_size=4, stride=2, padding=1,
                                                     output_padding=(h_out - 2 * h_in, w_out - 2 * w_in))]
        return nn.Sequential(*layers)


def mlp(sizes: list[int], activate_last: bool = False,
        activation: type[nn.Module] = nn.GELU) -> nn.Sequential:
    """A plain MLP with `activation` between layers (and after the last one if asked)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2 or activate_last:
            layers.append(activation())
    return nn.Sequential(*layers)
