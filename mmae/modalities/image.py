"""Images: PNG/JPEG through Pillow, a small strided CNN encoder and a transposed-CNN decoder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mmae.errors import ConfigError, DataError
from mmae.modalities.base import Modality
from mmae.modalities.conv import bottleneck_shape, conv_decoder, conv_encoder

MODES = {1: "L", 3: "RGB"}


class Normalize(nn.Module):
    """`(x - mean) / std` per channel; part of the model so that an export carries it."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(-1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class ImageModality(Modality):
    """Images `[C, H, W]` with values in [0, 1] (8-bit pixels / 255).

    Each hidden layer halves the resolution, so H and W must be divisible by 2**depth.
    `mean`/`std` (per channel) normalise inside the model. A file of another size or mode is
    an error unless `resize` / `convert` allow fixing it.
    """

    kind = "image"

    def __init__(self, channels: int = 1, size: int | Sequence[int] = 28,
                 hidden_channels: Sequence[int] = (32, 64), mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, resize: bool = False, convert: bool = False,
                 column: str | None = None):
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        super().__init__((channels, height, width), column=column)
        if channels not in MODES:
            raise ConfigError(f"ImageModality: channels must be 1 (grey) or 3 (RGB), got {channels}")
        self.hidden_channels = [int(c) for c in hidden_channels]
        self.bottleneck = bottleneck_shape("ImageModality", height, width, self.hidden_channels)
        if (mean is None) != (std is None):
            raise ConfigError("ImageModality: give both mean and std, or neither")
        if mean is not None and (len(mean) != channels or len(std) != channels or min(std) <= 0):
            raise ConfigError(f"ImageModality: mean and std need {channels} values (std > 0), "
                              f"got mean={list(mean)}, std={list(std)}")
        self.mean = None if mean is None else [float(m) for m in mean]
        self.std = None if std is None else [float(s) for s in std]
        self.resize, self.convert = resize, convert

    def build_encoder(self, embed_dim: int) -> nn.Module:
        return conv_encoder(self.shape[0], self.hidden_channels, self.bottleneck, embed_dim)

    def build_decoder(self, hidden_dim: int) -> nn.Module:
        return conv_decoder(self.shape[0], self.hidden_channels, self.bottleneck, hidden_dim)

    def build_preprocessor(self) -> nn.Module | None:
        return None if self.mean is None else Normalize(self.mean, self.std)

    def load(self, value: Any, root: Path) -> Tensor:
        from PIL import Image, UnidentifiedImageError

        path = root / str(value)
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
        """uint8 `[H, W, C]` pixels: features un-normalised (mean/std) and clamped to [0, 1]."""
        x = features.detach().float().cpu()
        if self.mean is not None:
            x = x * torch.tensor(self.std).view(-1, 1, 1) + torch.tensor(self.mean).view(-1, 1, 1)
        pixels = (x.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1)
        return list(pixels.numpy())

    def config(self) -> dict:
        return {"channels": self.shape[0], "size": list(self.shape[1:]),
                "hidden_channels": self.hidden_channels, "mean": self.mean, "std": self.std,
                "resize": self.resize, "convert": self.convert, "column": self.column}
