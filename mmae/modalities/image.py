"""Images: PNG/JPEG through Pillow; a small strided CNN encoder (the default) or a pretrained
`transformers` vision backbone (ViT, DINOv2, ConvNeXt, CLIP's vision tower) with its
processor's resizing and normalisation in torch; a transposed-CNN decoder of the pixels."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmae.core.backbone import Backbone, Pooling, plain, processor_settings
from mmae.core.errors import ConfigError, DataError
from mmae.core.modality import Modality, file_cell, signed_uniform
from mmae.core.nn import ConvNet
from mmae.core.registry import MODALITIES
from mmae.modalities.image_pixels import lossless, pixels_of, resized

MODES = {1: "L", 3: "RGB"}
#: Pillow's resampling filters (as image processors save them) -> `F.interpolate` modes.
#: The settings `ImageInputs` applies (what `image_processor` derives from a saved processor).
PROCESSOR_KEYS = ("resize", "crop", "mean", "std", "interpolation")
INTERPOLATIONS = {0: "nearest", 1: "bicubic", 2: "bilinear", 3: "bicubic", 4: "bilinear", 5: "bicubic"}


def image_processor(saved: dict) -> dict:
    """The settings of a saved `transformers` image processor that `ImageInputs` applies:
    resize (to `height` x `width`, or the shorter side to `shortest_edge`), centre crop, and
    per-channel normalisation. Pixels arrive in [0, 1], so the processor's 1/255 rescale is
    already done."""
    resize, crop = None, None
    if saved.get("do_resize", True) and saved.get("size"):
        size = dict(saved["size"])
        if "shortest_edge" in size and saved.get("crop_pct"):
            # ConvNeXt: below 384, resize to shortest_edge / crop_pct and crop back to it; from
            # 384 on, warp to a square of that side.
            edge = int(size["shortest_edge"])
            resize, crop = (({"shortest_edge": int(edge / saved["crop_pct"])}, [edge, edge]) if edge < 384
                            else ({"height": edge, "width": edge}, None))
        elif "shortest_edge" in size:
            resize = {"shortest_edge": int(size["shortest_edge"])}
        elif "height" in size and "width" in size:
            resize = {"height": int(size["height"]), "width": int(size["width"])}
    if saved.get("do_center_crop") and saved.get("crop_size"):
        crop = [int(saved["crop_size"]["height"]), int(saved["crop_size"]["width"])]
    normalize = saved.get("do_normalize", True) and saved.get("image_mean") and saved.get("image_std")
    return {"resize": resize, "crop": crop,
            "mean": [float(m) for m in saved["image_mean"]] if normalize else None,
            "std": [float(s) for s in saved["image_std"]] if normalize else None,
            "interpolation": INTERPOLATIONS.get(int(saved.get("resample", 2)), "bilinear")}


class ImageInputs(nn.Module):
    """Pixels `[B, C, H, W]` in [0, 1] -> a vision backbone's `pixel_values`: the image
    processor's resize, centre crop and normalisation, in torch (on the model's device, and
    part of the export)."""

    def __init__(self, settings: dict, channels: int):
        super().__init__()
        self.resize, self.crop = settings.get("resize"), settings.get("crop")
        self.interpolation = settings.get("interpolation", "bilinear")
        mean, std = settings.get("mean"), settings.get("std")
        self.normalize = mean is not None
        shape = (1, -1, 1, 1)
        self.register_buffer("mean", torch.tensor(mean or [0.0] * channels).view(shape), persistent=False)
        self.register_buffer("std", torch.tensor(std or [1.0] * channels).view(shape), persistent=False)

    def resized(self, height: int, width: int) -> tuple[int, int]:
        """The size a `height x width` image is resized to (before the crop)."""
        if self.resize is None:
            return height, width
        if "shortest_edge" in self.resize:  # the long side floored, as transformers does
            edge = self.resize["shortest_edge"]
            if height <= width:
                return edge, int(edge * width / height)
            return int(edge * height / width), edge
        return self.resize["height"], self.resize["width"]

    def forward(self, pixels: Tensor) -> tuple[dict[str, Tensor], None]:
        x = pixels.float()
        if self.resize is not None:
            height, width = x.shape[-2:]
            size = self.resized(height, width)
            if size != (height, width):
                smooth = self.interpolation != "nearest"
                x = F.interpolate(x, size=size, mode=self.interpolation, antialias=smooth,
                                  **({"align_corners": False} if smooth else {}))
        if self.crop is not None:
            (height, width), (h, w) = x.shape[-2:], self.crop
            top, left = max((height - h) // 2, 0), max((width - w) // 2, 0)
            x = x[..., top:top + h, left:left + w]
        if self.normalize:
            x = (x - self.mean) / self.std
        return {"pixel_values": x}, None



def _translate(images: Tensor, dx: Tensor, dy: Tensor) -> Tensor:
    """Shift each image by (dx, dy) (fractions of its width/height), wrapping around."""
    n = images.shape[0]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2], theta[:, 1, 2] = 2 * dx, 2 * dy
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


#: ITU-R 601-2 luma weights: what "grey" means to the colour jitter and the random greyscale.
LUMA = (0.299, 0.587, 0.114)
#: Augmentation magnitudes at strength 1 (each scales with the strength): brightness, contrast
#: and saturation factors in [1 - JITTER, 1 + JITTER]; colours rotated about the grey axis by up
#: to HUE radians; colour dropped with probability GREYSCALE; a crop of [1 - CROP, 1] of the
#: area with a log aspect ratio within +-ASPECT; a rotation of up to +-ROTATION radians.
JITTER = 0.4
HUE = math.pi / 5
GREYSCALE = 0.2
CROP = 0.5
ASPECT = 0.2
ROTATION = math.radians(15.0)


def _grey_axis_rotation(angle: Tensor) -> Tensor:
    """Angles `[B]` -> RGB matrices `[B, 3, 3]` rotating colours about the grey axis (1, 1, 1):
    a hue shift that keeps every pixel's channel mean (Rodrigues' formula)."""
    a = 3.0 ** -0.5
    cross = angle.new_tensor([[0.0, -a, a], [a, 0.0, -a], [-a, a, 0.0]])
    along = angle.new_full((3, 3), 1.0 / 3.0)
    cos, sin = angle.cos().view(-1, 1, 1), angle.sin().view(-1, 1, 1)
    return cos * torch.eye(3, device=angle.device) + sin * cross + (1.0 - cos) * along


def _colour_matrices(n: int, channels: int, strength: float, generator: torch.Generator | None,
                     device: torch.device) -> tuple[Tensor, Tensor]:
    """Per-sample linear colour maps `[B, C, C]` (brightness, then for RGB saturation, hue and
    random greyscale) and contrast factors `[B]`: jitter as one matrix product per image."""
    luma = torch.tensor(LUMA if channels == 3 else (1.0,), device=device)
    matrix = (1.0 + signed_uniform(n, JITTER * strength, generator, device)).view(-1, 1, 1) \
        * torch.eye(channels, device=device)
    contrast = 1.0 + signed_uniform(n, JITTER * strength, generator, device)
    if channels != 3:
        return matrix, contrast
    to_grey = torch.ones(3, 1, device=device) * luma  # every channel <- the pixel's luma
    saturation = (1.0 + signed_uniform(n, JITTER * strength, generator, device)).view(-1, 1, 1)
    desaturate = saturation * torch.eye(3, device=device) + (1.0 - saturation) * to_grey
    hue = _grey_axis_rotation(signed_uniform(n, HUE * strength, generator, device))
    grey = (torch.rand(n, generator=generator, device=device) < GREYSCALE * strength).view(-1, 1, 1)
    drop = torch.where(grey, to_grey, torch.eye(3, device=device))
    return drop @ hue @ desaturate @ matrix, contrast


def _jitter_colours(images: Tensor, matrix: Tensor, contrast: Tensor) -> Tensor:
    """`contrast * (matrix @ pixel) + (1 - contrast) * mean grey`, one batched matrix product:
    the contrast scales each image about the mean luma of its colour-mapped self."""
    n, channels = images.shape[:2]
    luma = images.new_tensor(LUMA if channels == 3 else (1.0,)).view(1, 1, -1)
    matrix, contrast = matrix.to(images.dtype), contrast.to(images.dtype).view(-1, 1, 1)
    mean_grey = luma @ matrix @ images.mean(dim=(2, 3)).unsqueeze(-1)  # [B, 1, 1]
    offset = ((1.0 - contrast) * mean_grey).expand(n, channels, 1)
    return torch.baddbmm(offset, contrast * matrix, images.flatten(2)).view_as(images)


def _crop_and_rotation(n: int, height: int, width: int, strength: float,
                       generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Per-sample `affine_grid` matrices `[B, 2, 3]`: a random resized crop (area, aspect and
    place) turned by a small angle, the angle taken in pixels so non-square images turn rigidly."""
    area = 1.0 - CROP * strength * torch.rand(n, generator=generator, device=device)
    aspect = signed_uniform(n, ASPECT * strength, generator, device).exp()
    sx, sy = (area * aspect).sqrt().clamp(max=1.0), (area / aspect).sqrt().clamp(max=1.0)
    tx = signed_uniform(n, 1.0, generator, device) * (1.0 - sx)
    ty = signed_uniform(n, 1.0, generator, device) * (1.0 - sy)
    angle = signed_uniform(n, ROTATION * strength, generator, device)
    cos, sin = angle.cos(), angle.sin()
    return torch.stack([torch.stack([cos * sx, -sin * sy * height / width, tx], dim=1),
                        torch.stack([sin * sx * width / height, cos * sy, ty], dim=1)], dim=1)


def _clamp_to_range(images: Tensor, original: Tensor) -> Tensor:
    """Clamp each image to [0, 1], widened to its original range where that is wider (the
    synthetic views are not bounded): augmenting never leaves the values an image had."""
    low = original.amin(dim=(1, 2, 3), keepdim=True).clamp(max=0.0)
    high = original.amax(dim=(1, 2, 3), keepdim=True).clamp(min=1.0)
    return torch.clamp(images, low, high)


@MODALITIES.register("image")
class ImageModality(Modality):
    """Images `[C, H, W]` with values in [0, 1]: each Pillow mode read by its own range (8-bit
    / 255, 16-bit / 65535), alpha composited over white (see `pixels_of`).

    Each hidden layer halves the resolution; `hidden_channels: null` (the default) adds layers
    until the map is small (see `mmae.core.nn`). The encoder standardises each channel
    with `mean`/`std`, fitted on the training split unless given (`normalize: false`: raw
    pixels); features and reconstructions stay pixels. A file of another size, or another
    channel layout (grey vs colour, alpha, palette, CMYK...), is an error unless `resize` /
    `convert` allow fixing it; grey of another bit depth for 1 channel, or RGBX for 3, is read
    as is since nothing is lost.

    `model` (a directory saved with `save_pretrained`, or a hub name) puts a pretrained vision
    backbone under the encoder instead of the CNN; its image processor's settings are read
    from the same place (or given as `processor`), and its input is the pixels, not the
    standardised ones. `model_config` builds an untrained backbone from a transformers config.
    `freeze` (default: frozen when pretrained), `pooling` (mean, cls, attention),
    `trainable_blocks` and `gradient_checkpointing`: see `mmae.core.backbone.Backbone`.
    """

    statistics_axis = 0  # per channel
    decoding_keys = ("channels", "size", "resize", "convert")
    preview_media = "image"

    def __init__(self, channels: int = 1, size: int | Sequence[int] = 28,
                 hidden_channels: Sequence[int] | None = None, normalize: bool = True,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 likelihood: str = "gaussian", resize: bool = False, convert: bool = False,
                 column: str | None = None, model: str | None = None, model_config: dict | None = None,
                 processor: dict | None = None, freeze: bool | None = None, pooling: Pooling = "mean",
                 trainable_blocks: int | None = None, gradient_checkpointing: bool = False):
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        super().__init__((channels, height, width), column=column)
        if channels not in MODES:
            raise ConfigError(f"ImageModality: channels must be 1 (grey) or 3 (RGB), got {channels}")
        self.net = ConvNet("ImageModality", channels, height, width, hidden_channels)
        self._continuous(normalize, mean, std, likelihood)
        self.resize, self.convert = resize, convert
        self.backbone, self.processor = None, None
        if model is not None or model_config is not None:
            self.backbone = Backbone("ImageModality", model, model_config, freeze, pooling, trainable_blocks,
                                     gradient_checkpointing, tower="vision_model")
            self.processor = plain(processor) if processor is not None else self._default_processor()
            unknown = sorted(set(self.processor) - set(PROCESSOR_KEYS))
            if unknown:
                raise ConfigError(f"ImageModality: processor settings {unknown} are not ones mmae applies; "
                                  f"expected some of {list(PROCESSOR_KEYS)} (e.g. resize: {{height: 224, "
                                  "width: 224}, mean: [...], std: [...])")
            self._check_backbone_channels()

    def _default_processor(self) -> dict:
        if self.backbone.model is not None:
            saved = processor_settings("ImageModality", self.backbone.model, "image processor")
            return image_processor(saved)
        size = getattr(self.backbone.tower_config(), "image_size", None)  # a model built from a config
        resize = {"height": size, "width": size} if isinstance(size, int) else None
        return {"resize": resize, "crop": None, "mean": None, "std": None, "interpolation": "bilinear"}

    def _check_backbone_channels(self) -> None:
        channels, source = self.shape[0], self.backbone.source()
        expected = getattr(self.backbone.tower_config(), "num_channels", None)
        if expected is not None and expected != channels:
            fix = ("set modality.image.channels=3 and modality.image.convert=true to read the images as RGB"
                   if expected == 3 else f"set modality.image.channels={expected}")
            raise ConfigError(f"ImageModality: backbone {source} takes {expected}-channel images, but this "
                              f"modality has {channels} channel(s): {fix}")
        for key in ("mean", "std"):
            values = self.processor.get(key)
            if values is not None and len(values) != channels:
                raise ConfigError(f"ImageModality: the image processor of {source} normalises {len(values)} "
                                  f"channels, but this modality has {channels} (processor {key}={values})")

    @property
    def hidden_channels(self) -> list[int]:
        return self.net.hidden_channels

    def build_encoder(self, embed_dim: int) -> nn.Module:
        if self.backbone is None:
            return self.net.encoder(embed_dim)
        return self.backbone.encoder(ImageInputs(self.processor, self.shape[0]), embed_dim,
                                     example=torch.rand(1, *self.shape))

    def build_standardizer(self) -> nn.Module | None:
        # A backbone takes pixels and normalises them as it was trained to (ImageInputs).
        return None if self.backbone is not None else super().build_standardizer()

    def build_decoder(self, hidden_dim: int) -> nn.Module:
        return self.net.decoder(hidden_dim)

    def augment(self, features: Tensor, strength: float, generator: torch.Generator | None) -> Tensor:
        """Colour jitter (brightness, contrast; for RGB also saturation, a hue rotation and
        random greyscale), then a random resized crop turned by a small angle, sampled once
        with border padding; clamped to the pixel range. What an image shows survives; its
        colours, framing and tilt change."""
        if strength == 0:
            return features
        n, channels, height, width = features.shape
        device = features.device
        matrix, contrast = _colour_matrices(n, channels, strength, generator, device)
        theta = _crop_and_rotation(n, height, width, strength, generator, device).to(features.dtype)
        jittered = _jitter_colours(features, matrix, contrast)
        grid = F.affine_grid(theta, list(features.shape), align_corners=False)
        moved = F.grid_sample(jittered, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return _clamp_to_range(moved, features)

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
                if image.mode != mode and not self.convert and not lossless(image.mode, channels):
                    raise DataError(f"image mode {image.mode}, expected {mode} "
                                    "(set the modality's convert: true to convert)")
                if image.size != (width, height) and not self.resize:
                    raise DataError(f"image size {image.size[0]}x{image.size[1]}, expected "
                                    f"{width}x{height} (set the modality's resize: true to resize)")
                pixels = pixels_of(image, channels)
        except FileNotFoundError:
            raise DataError(f"file not found: {path}") from None
        except (UnidentifiedImageError, OSError, SyntaxError) as error:
            raise DataError(f"cannot decode image {path}: {error}") from None
        if pixels.shape[:2] != (height, width):
            pixels = resized(pixels, height, width)
        return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()

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
                "resize": self.resize, "convert": self.convert, "column": self.column,
                **self._backbone_config()}

    def _backbone_config(self) -> dict:
        if self.backbone is None:
            return {}
        return {**self.backbone.config(), "processor": self.processor}

    def export_assets(self, encoder: nn.Module, folder: Path, name: str) -> dict:
        """A backbone's architecture in place of its path (the weights are in the export)."""
        return {} if self.backbone is None else self.backbone.export_config()

    def referenced_weights(self, encoder: nn.Module) -> tuple[str, dict] | None:
        return None if self.backbone is None else self.backbone.referenced_weights()
