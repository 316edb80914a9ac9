"""Images: PNG/JPEG through Pillow, a small strided CNN encoder and a transposed-CNN decoder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmae.core.errors import ConfigError, DataError
from mmae.core.modality import Modality, file_cell
from mmae.core.nn import ConvNet
from mmae.core.registry import MODALITIES

MODES = {1: "L", 3: "RGB"}



def _translate(images: Tensor, dx: Tensor, dy: Tensor) -> Tensor:
    """Shift each image by (dx, dy) (fractions of its width/height), wrapping around."""
    n = images.shape[0]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2], theta[:, 1, 2] = 2 * dx, 2 * dy
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


@MODALITIES.register("image")
class ImageModality(Modality):
    """Images `[C, H, W]` with values in [0, 1] (8-bit pixels / 255).

    Each hidden layer halves the resolution; `hidden_channels: null` (the default) adds layers
    until the map is small (see `mmae.core.nn`). The encoder standardises each channel
    with `mean`/`std`, fitted on the training split unless given (`normalize: false`: raw
    pixels); features and reconstructions stay pixels. A file of another size or mode is an
    error unless `resize` / `convert` allow fixing it.
    """

    statistics_axis = 0  # per channel
    preview_media = "image"

    def __init__(self, channels: int = 1, size: int | Sequence[int] = 28,
                 hidden_channels: Sequence[int] | None = None, normalize: bool = True,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 likelihood: str = "gaussian", resize: bool = False, convert: bool = False,
                 column: str | None = None):
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        super().__init__((channels, height, width), column=column)
        if channels not in MODES:
            raise ConfigError(f"ImageModality: channels must be 1 (grey) or 3 (RGB), got {channels}")
        self.net = ConvNet("ImageModality", channels, height, width, hidden_channels)
        self._continuous(normalize, mean, std, likelihood)
        self.resize, self.convert = resize, convert

    @property
    def hidden_channels(self) -> list[int]:
        return self.net.hidden_channels

    def build_encoder(self, embed_dim: int) -> nn.Module:
        return self.net.encoder(embed_dim)

    def build_decoder(self, hidden_dim: int) -> nn.Module:
        return self.net.decoder(hidden_dim)

    def file_path(self, value: Any, root: Path) -> Path:
        return file_cell(value, root)

    def load(self, value: Any, root: Path) -> Tensor:
        from PIL import Image, UnidentifiedImageError

        path = file_cell(value, root)
        channels, height, width = self.shape
        mode = MODES[channels]
        try:
            with Image.open(path) as image:
                image.load()
                if image.mode != mode:
                    if not self.convert:
                        raise DataError(f"image mode {image.mode}, expected {mode} "
                                        "(set the modality's convert: true to convert)")
                    image = image.convert(mode)
                if image.size != (width, height):
                    if not self.resize:
                        raise DataError(f"image size {image.size[0]}x{image.size[1]}, expected "
                                        f"{width}x{height} (set the modality's resize: true to resize)")
                    image = image.resize((width, height), Image.Resampling.BILINEAR)
                pixels = np.asarray(image, dtype=np.float32) / 255.0
        except FileNotFoundError:
            raise DataError(f"file not found: {path}") from None
        except (UnidentifiedImageError, OSError, SyntaxError) as error:
            raise DataError(f"cannot decode image {path}: {error}") from None
        tensor = torch.from_numpy(pixels)
        return tensor.unsqueeze(0) if channels == 1 else tensor.permute(2, 0, 1).contiguous()

    def preview(self, features: Tensor) -> list[np.ndarray]:
        """uint8 `[H, W, C]` pixels, clamped to [0, 1]."""
        x = features.detach().float().cpu()
        pixels = (x.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1)
        return list(pixels.numpy())

    def synthetic_view(self, labels: Tensor, factors: Tensor, private: Tensor,
                       num_classes: int, g: torch.Generator) -> Tensor:
        """The class texture, translated by two shared factors (so the class hides from the main
        directions of pixel variance: PCA of the inputs reads it poorly) and scaled by a third,
        plus a Gaussian blob placed by a fourth and a private brightness gradient."""
        channels, height, width = self.shape
        coarse = torch.randn(num_classes, channels, 7, 7, generator=g)
        textures = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
        textures = textures / textures.abs().amax(dim=(1, 2, 3), keepdim=True)
        f = lambda i: factors[:, i % factors.shape[1]]  # noqa: E731
        ys = torch.linspace(0, 1, height).view(1, 1, -1, 1)
        xs = torch.linspace(0, 1, width).view(1, 1, 1, -1)
        texture = _translate(textures[labels], 0.25 * f(0), 0.25 * f(1))
        scale = (1.0 + 0.5 * f(2)).view(-1, 1, 1, 1)
        center = (0.5 + 0.3 * f(3)).view(-1, 1, 1, 1)
        blob = torch.exp(-((xs - center) ** 2 + (ys - 0.5) ** 2) / (2 * 0.12**2))
        tint = torch.rand(channels, generator=g).view(1, -1, 1, 1) * 0.5 + 0.5
        gradient = 0.3 * private[:, :1].view(-1, 1, 1, 1) * (xs - 0.5)
        return 0.5 * texture * scale + tint * blob + gradient

    def config(self) -> dict:
        return {"channels": self.shape[0], "size": list(self.shape[1:]),
                "hidden_channels": self.hidden_channels, "normalize": self.normalize,
                "mean": self.mean, "std": self.std, "likelihood": self.likelihood,
                "resize": self.resize, "convert": self.convert, "column": self.column}
