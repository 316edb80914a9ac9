"""Image files into pixels: every Pillow mode read by its own range (16-bit grey scaled, not
clipped to white; float images checked; alpha composited over white in float), and resizing
that keeps that precision."""

from __future__ import annotations

from typing import Any

import numpy as np

from mmae.core.errors import DataError

#: Modes that hold one grey channel and no alpha (8-bit, 1-bit, 16/32-bit integers, float).
GREY_MODES = ("1", "L", "I", "F")
#: Modes that are colour without alpha: plain RGB (RGBX's fourth band is padding).
RGB_MODES = ("RGB", "RGBX")
#: Colour spaces Pillow converts to RGB (8 bits per band, its own rounding).
OTHER_COLOUR_MODES = ("CMYK", "YCbCr", "LAB", "HSV")


def _grey(mode: str) -> bool:
    return mode in GREY_MODES or mode.startswith("I;")


def lossless(mode: str, channels: int) -> bool:
    """Whether a file of Pillow `mode` reads into `channels` channels without losing anything:
    grey of any bit depth into 1 channel, RGB without alpha into 3. Other files need `convert`."""
    return _grey(mode) if channels == 1 else mode in RGB_MODES


def _luma(rgb: np.ndarray) -> np.ndarray:
    """8-bit RGB `[H, W, 3]` -> 8-bit grey `[H, W, 1]`: ITU-R 601-2 luma (0.299 R + 0.587 G +
    0.114 B) with the fixed-point weights and rounding of Pillow's "L" conversion, so colour
    files read as grey give exactly the values they always did."""
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)[..., None]


def _converted(image: Any, mode: str) -> Any:
    try:
        return image.convert(mode)
    except (ValueError, OSError) as error:
        raise DataError(f"cannot convert image mode {image.mode} to {mode}: {error}") from None


def _bands(image: Any) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """An image's colour `[H, W, 1 or 3]` (uint8, or float32 already in [0, 1]), its 8-bit
    alpha `[H, W]` or None, and whether the colour is premultiplied by the alpha."""
    mode = image.mode
    if mode == "L":
        return np.asarray(image)[..., None], None, False
    if mode == "1":
        return np.array(image, dtype=np.float32)[..., None], None, False
    if mode == "F":
        values = np.array(image, dtype=np.float32)
        if np.isnan(values).any():
            raise DataError("image mode F holds NaN pixels; pixels must be numbers in [0, 1]")
        if values.size and (values.min() < 0 or values.max() > 1):
            raise DataError(f"image mode F holds values in [{values.min():g}, {values.max():g}], outside "
                            "[0, 1]: rescale the pixels to [0, 1] first")
        return values[..., None], None, False
    if _grey(mode):  # "I" and "I;16..."
        values = np.asarray(image)
        unsigned16 = values.dtype.kind == "u" and values.dtype.itemsize == 2
        if not unsigned16 and values.size and (values.min() < 0 or values.max() > 65535):
            raise DataError(f"image mode {mode} holds values in [{values.min()}, {values.max()}], outside "
                            "0..65535: it is read as 16-bit; save the image as 16-bit or 8-bit")
        return np.asarray(values, dtype=np.float32)[..., None] / 65535.0, None, False
    if mode in ("LA", "La", "RGBA", "RGBa"):
        values = np.asarray(image)
        return values[..., :-1], values[..., -1], mode in ("La", "RGBa")
    if mode in RGB_MODES:
        return np.asarray(image)[..., :3], None, False
    if mode in ("P", "PA"):
        return _bands(_converted(image, "RGBA" if image.has_transparency_data else "RGB"))
    if mode in OTHER_COLOUR_MODES:
        return _bands(_converted(image, "RGB"))
    raise DataError(f"image mode {mode} is not one mmae reads; save the image as grey, RGB or RGBA")


def pixels_of(image: Any, channels: int | None = None) -> np.ndarray:
    """A Pillow image's pixels as float32 `[H, W, C]` in [0, 1], each mode read by its own range
    (Pillow's own conversions clip 16-bit grey to 8 bits instead of scaling it).

    - "1": 0 or 1. "L", "P", RGB-family and colour spaces: 8-bit, / 255; "P" through its
      palette's RGB (RGBA when the palette has transparency); "CMYK", "YCbCr", "LAB", "HSV"
      through Pillow's conversion to RGB (so its 8-bit rounding).
    - "I;16", "I;16L", "I;16B", "I;16N": / 65535.
    - "I" (32-bit integers): also / 65535. The mode carries no bit depth, but Pillow opens
      16-bit grey as "I" (16-bit PNGs in older Pillow, which cannot exceed 0..65535; PGM/PPM
      above 8 bits, scaled to 0..65535), so the 16-bit range is the one reading right for
      those; a value outside 0..65535 (a TIFF of wider integers) cannot be 16-bit and is a
      `DataError` rather than a guessed scale.
    - "F": taken as is when every value is in [0, 1]; other values or NaN are a `DataError`.
    - Alpha ("LA", "La", "PA", "RGBA", "RGBa", palettes with transparency): composited over
      white in float (a transparent pixel reads as white, as viewers show it), without
      rounding to 8 bits. A "transparency" colour of an L/RGB file is not applied.

    `channels` (None: the image's own, 1 for grey, 3 for colour): colour to 1 channel by ITU-R
    601-2 luma (Pillow's "L" conversion, before the alpha), grey to 3 by repeating it.
    """
    colour, alpha, premultiplied = _bands(image)
    if channels == 1 and colour.shape[-1] == 3:
        colour = _luma(colour)
    pixels = colour if colour.dtype == np.float32 else np.asarray(colour, dtype=np.float32) / 255.0
    if alpha is not None:
        a = np.asarray(alpha, dtype=np.float32)[..., None] / 255.0
        pixels = np.clip((pixels if premultiplied else pixels * a) + (1.0 - a), 0.0, 1.0)
    if channels == 3 and pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    return np.ascontiguousarray(pixels, dtype=np.float32)


def resized(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixels `[H, W, C]` resized to `height x width`, bilinear, each channel as a float ("F")
    image, so 16-bit and composited values keep their precision."""
    from PIL import Image

    planes = [np.asarray(Image.fromarray(np.ascontiguousarray(pixels[..., c])).resize(
        (width, height), Image.Resampling.BILINEAR)) for c in range(pixels.shape[-1])]
    return np.stack(planes, axis=-1).astype(np.float32, copy=False)
