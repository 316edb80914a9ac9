"""Every Pillow mode is read by its own range (16-bit grey is not clipped to white), with alpha
over white; each file is a tiny image of known pixels checked against hand-computed values.

Tolerances: by-range scaling (/255, /65535) and float compositing are exact up to float32
rounding (rtol 1e-6); where Pillow converts to 8-bit RGB itself (CMYK, YCbCr, HSV, LAB) or
luma is rounded to 8 bits as Pillow's "L" conversion does, the values are within its rounding
step of the exact formula."""

import colorsys
import csv

import numpy as np
import pytest
from PIL import Image

from mmae.core.errors import DataError
from mmae.data.manifest import ManifestDataset
from mmae.modalities import ImageModality
from mmae.modalities.image_pixels import pixels_of

EXACT = {"rtol": 1e-6, "atol": 1e-7}
HALF_STEP = {"rtol": 0, "atol": 0.5 / 255 + 1e-6}  # Pillow rounds to the nearest 8-bit value
ONE_STEP = {"rtol": 0, "atol": 1 / 255 + 1e-6}  # Pillow's fixed-point colour-space conversions


def _save(tmp_path, image: Image.Image, name: str, mode: str | None = None, **options) -> str:
    """Write `image` as `name` and check the mode Pillow gives the file when reopened."""
    image.save(tmp_path / name, **options)
    with Image.open(tmp_path / name) as reopened:
        assert reopened.mode == (mode or image.mode)
    return name


def _load(tmp_path, name: str, channels: int, convert: bool = True, **options) -> np.ndarray:
    """The modality's tensor as `[H, W, C]`."""
    with Image.open(tmp_path / name) as image:
        size = options.pop("size", [image.size[1], image.size[0]])
    modality = ImageModality(channels=channels, size=size, convert=convert, **options)
    return modality.load(name, tmp_path).permute(1, 2, 0).numpy()


def _luma(rgb: np.ndarray) -> np.ndarray:
    return (np.asarray(rgb, dtype=np.float64) @ [0.299, 0.587, 0.114])[..., None]


def _over_white(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = np.asarray(alpha, dtype=np.float64)[..., None] / 255
    return colour * a + (1 - a)


U16 = np.array([[0, 257, 1000], [32768, 40000, 65535]], dtype=np.uint16)


def test_a_16_bit_grey_png_is_read_by_its_range_not_clipped_to_white(tmp_path):
    name = _save(tmp_path, Image.fromarray(U16), "grey16.png", "I;16")
    np.testing.assert_allclose(_load(tmp_path, name, 1), (U16 / 65535)[..., None], **EXACT)
    np.testing.assert_allclose(_load(tmp_path, name, 1, convert=False), (U16 / 65535)[..., None], **EXACT)
    np.testing.assert_allclose(_load(tmp_path, name, 3), np.repeat(U16[..., None] / 65535, 3, -1), **EXACT)


def test_the_users_16_bit_png_averages_a_half_not_white(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 65536, (32, 32), dtype=np.uint16)
    name = _save(tmp_path, Image.fromarray(pixels), "scan.png", "I;16")
    loaded = _load(tmp_path, name, 1)
    assert loaded.mean() == pytest.approx(pixels.mean() / 65535, abs=1e-6)
    assert 0.45 < loaded.mean() < 0.55


@pytest.mark.parametrize("mode, dtype, reopened", [("I;16B", ">u2", "I;16B"), ("I;16L", "<u2", "I;16")])
def test_16_bit_tiffs_of_either_byte_order(tmp_path, mode, dtype, reopened):
    image = Image.frombytes(mode, (3, 2), U16.astype(dtype).tobytes())
    name = _save(tmp_path, image, f"{mode}.tif", reopened)
    np.testing.assert_allclose(_load(tmp_path, name, 1), (U16 / 65535)[..., None], **EXACT)


@pytest.mark.parametrize("mode", ["I;16", "I;16L", "I;16B", "I;16N"])
def test_every_16_bit_mode_in_memory(mode):
    dtype = {"I;16B": ">u2", "I;16N": "=u2"}.get(mode, "<u2")
    image = Image.frombytes(mode, (3, 2), U16.astype(dtype).tobytes())
    assert image.mode == mode
    np.testing.assert_allclose(pixels_of(image), (U16 / 65535)[..., None], **EXACT)


def test_32_bit_integers_are_read_as_16_bit(tmp_path):
    # A 16-bit PGM opens as "I" (Pillow scales its maxval to 0..65535).
    pgm = _save(tmp_path, Image.fromarray(U16), "grey16.pgm", "I")
    np.testing.assert_allclose(_load(tmp_path, pgm, 1), (U16 / 65535)[..., None], **EXACT)
    tif = _save(tmp_path, Image.fromarray(U16.astype(np.int32)), "grey32.tif", "I")
    np.testing.assert_allclose(_load(tmp_path, tif, 1, convert=False), (U16 / 65535)[..., None], **EXACT)


def test_32_bit_integers_beyond_16_bits_are_refused(tmp_path):
    values = np.array([[0, 70000], [-5, 3]], dtype=np.int32)
    name = _save(tmp_path, Image.fromarray(values), "wide.tif", "I")
    with pytest.raises(DataError, match=r"image mode I holds values in \[-5, 70000\], outside 0..65535"):
        _load(tmp_path, name, 1)


def test_float_pixels_in_the_unit_range(tmp_path):
    values = np.array([[0.0, 0.25], [0.5, 1.0]], dtype=np.float32)
    name = _save(tmp_path, Image.fromarray(values), "float.tif", "F")
    np.testing.assert_array_equal(_load(tmp_path, name, 1, convert=False), values[..., None])


@pytest.mark.parametrize("values, message", [
    ([[0.0, 2.0], [-0.5, 1.0]], r"image mode F holds values in \[-0.5, 2\], outside \[0, 1\]"),
    ([[0.0, np.nan], [0.5, 1.0]], r"image mode F holds NaN pixels"),
])
def test_float_pixels_outside_the_unit_range_are_refused(tmp_path, values, message):
    name = _save(tmp_path, Image.fromarray(np.array(values, dtype=np.float32)), "float.tif", "F")
    with pytest.raises(DataError, match=message):
        _load(tmp_path, name, 1)


def test_one_bit_and_8_bit_grey(tmp_path):
    bits = np.array([[True, False], [False, True]])
    name = _save(tmp_path, Image.fromarray(bits), "bits.png", "1")
    np.testing.assert_array_equal(_load(tmp_path, name, 1, convert=False), bits[..., None].astype(np.float32))
    grey = np.array([[0, 1, 128], [200, 254, 255]], dtype=np.uint8)
    name = _save(tmp_path, Image.fromarray(grey), "grey.png", "L")
    np.testing.assert_array_equal(_load(tmp_path, name, 1, convert=False),
                                  np.asarray(grey, dtype=np.float32)[..., None] / 255.0)
    np.testing.assert_allclose(_load(tmp_path, name, 3), np.repeat(grey[..., None] / 255, 3, -1), **EXACT)


RGB = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]],
                [[255, 255, 255], [10, 20, 30], [200, 100, 50]]], dtype=np.uint8)
ALPHA = np.array([[255, 128, 0], [64, 255, 200]], dtype=np.uint8)


def test_rgb_and_its_luma(tmp_path):
    name = _save(tmp_path, Image.fromarray(RGB), "rgb.png", "RGB")
    np.testing.assert_array_equal(_load(tmp_path, name, 3, convert=False),
                                  np.asarray(RGB, dtype=np.float32) / 255.0)
    np.testing.assert_allclose(_load(tmp_path, name, 1), _luma(RGB) / 255, **HALF_STEP)


def test_rgbx_drops_its_padding():
    padded = np.concatenate([RGB, np.full((2, 3, 1), 7, dtype=np.uint8)], axis=-1)
    image = Image.frombytes("RGBX", (3, 2), padded.tobytes())
    np.testing.assert_allclose(pixels_of(image, 3), RGB / 255, **EXACT)


def test_a_palette_reads_as_its_colours(tmp_path):
    image = Image.frombytes("P", (3, 2), bytes([0, 1, 2, 3, 1, 0]))
    colours = RGB.reshape(-1, 3)[:4]
    image.putpalette(colours.tobytes())
    name = _save(tmp_path, image, "palette.png", "P")
    expected = colours[[[0, 1, 2], [3, 1, 0]]]
    np.testing.assert_allclose(_load(tmp_path, name, 3), expected / 255, **EXACT)
    np.testing.assert_allclose(_load(tmp_path, name, 1), _luma(expected) / 255, **HALF_STEP)


def test_a_palette_with_transparency_is_composited_over_white(tmp_path):
    indices = np.array([[0, 1, 2], [3, 1, 0]], dtype=np.uint8)
    image = Image.frombytes("P", (3, 2), indices.tobytes())
    colours = RGB.reshape(-1, 3)[:4]
    image.putpalette(colours.tobytes())
    alphas = np.array([255, 128, 0, 64], dtype=np.uint8)
    name = _save(tmp_path, image, "palette.png", "P", transparency=alphas.tobytes())
    expected = _over_white(colours[indices] / 255, alphas[indices])
    np.testing.assert_allclose(_load(tmp_path, name, 3), expected, **EXACT)


def test_palette_with_alpha_band(tmp_path):
    image = Image.frombytes("P", (3, 2), bytes([0, 1, 2, 3, 1, 0]))
    image.putpalette(RGB.reshape(-1, 3)[:4].tobytes())
    image = image.convert("PA")
    image.putalpha(Image.fromarray(ALPHA))
    name = _save(tmp_path, image, "palette_alpha.tif", "PA")
    colours = RGB.reshape(-1, 3)[:4][[[0, 1, 2], [3, 1, 0]]]
    np.testing.assert_allclose(_load(tmp_path, name, 3), _over_white(colours / 255, ALPHA), **EXACT)


def test_grey_with_alpha_over_white(tmp_path):
    grey = np.array([[0, 100, 255], [50, 128, 0]], dtype=np.uint8)
    image = Image.frombytes("LA", (3, 2), np.stack([grey, ALPHA], -1).tobytes())
    name = _save(tmp_path, image, "la.png", "LA")
    expected = _over_white(grey[..., None] / 255, ALPHA)
    np.testing.assert_allclose(_load(tmp_path, name, 1), expected, **EXACT)
    np.testing.assert_allclose(_load(tmp_path, name, 3), np.repeat(expected, 3, -1), **EXACT)
    # A pixel of any grey with alpha 0 reads white.
    assert _load(tmp_path, name, 1)[0, 2, 0] == 1.0


def test_premultiplied_grey_with_alpha():
    grey = np.array([[0, 50, 0], [10, 128, 0]], dtype=np.uint8)  # already multiplied by the alpha
    image = Image.frombytes("La", (3, 2), np.stack([grey, ALPHA], -1).tobytes())
    np.testing.assert_allclose(pixels_of(image), grey[..., None] / 255 + 1 - ALPHA[..., None] / 255, **EXACT)


def test_rgba_over_white(tmp_path):
    name = _save(tmp_path, Image.fromarray(np.concatenate([RGB, ALPHA[..., None]], -1)), "rgba.png", "RGBA")
    np.testing.assert_allclose(_load(tmp_path, name, 3), _over_white(RGB / 255, ALPHA), **EXACT)
    # Luma rounded to 8 bits (as Pillow's "L"), then composited: within half a step, times alpha.
    np.testing.assert_allclose(_load(tmp_path, name, 1), _over_white(_luma(RGB) / 255, ALPHA), **HALF_STEP)


def test_premultiplied_rgba():
    colour = (RGB.astype(np.float64) * ALPHA[..., None] / 255).round().astype(np.uint8)
    image = Image.frombytes("RGBa", (3, 2), np.concatenate([colour, ALPHA[..., None]], -1).tobytes())
    np.testing.assert_allclose(pixels_of(image, 3), colour / 255 + 1 - ALPHA[..., None] / 255, **EXACT)


def test_cmyk(tmp_path):
    cmyk = np.array([[[0, 0, 0, 0], [255, 0, 0, 0], [0, 0, 0, 255]],
                     [[100, 50, 25, 128], [10, 20, 30, 40], [0, 255, 128, 0]]], dtype=np.uint8)
    name = _save(tmp_path, Image.frombytes("CMYK", (3, 2), cmyk.tobytes()), "cmyk.tif", "CMYK")
    ink = cmyk.astype(np.float64) / 255
    expected = (1 - ink[..., :3]) * (1 - ink[..., 3:])
    np.testing.assert_allclose(_load(tmp_path, name, 3), expected, **HALF_STEP)


def test_ycbcr(tmp_path):
    ycc = np.array([[[128, 128, 128], [76, 85, 255], [200, 100, 50]],
                    [[0, 128, 128], [255, 128, 128], [150, 44, 21]]], dtype=np.uint8)
    name = _save(tmp_path, Image.frombytes("YCbCr", (3, 2), ycc.tobytes()), "ycc.tif", "YCbCr")
    y, cb, cr = (ycc[..., i].astype(np.float64) for i in range(3))
    rgb = np.stack([y + 1.402 * (cr - 128), y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128),
                    y + 1.772 * (cb - 128)], -1)  # JPEG's full-range ITU-R 601
    np.testing.assert_allclose(_load(tmp_path, name, 3), rgb.clip(0, 255) / 255, **ONE_STEP)


def test_lab_greys(tmp_path):
    lightness = np.array([[0, 64, 128], [200, 230, 255]], dtype=np.uint8)
    # a* and b* are signed bytes in Pillow's LAB (as in a CIELAB TIFF): 0 is neutral.
    lab = np.stack([lightness, np.zeros_like(lightness), np.zeros_like(lightness)], -1)
    name = _save(tmp_path, Image.frombytes("LAB", (3, 2), lab.tobytes()), "lab.tif", "LAB")
    # CIE L* (stored as L * 255 / 100) of a neutral grey -> relative luminance -> sRGB.
    star = lightness / 255 * 100
    luminance = np.where(star > 8, ((star + 16) / 116) ** 3, star / 903.3)
    srgb = np.where(luminance > 0.0031308, 1.055 * luminance ** (1 / 2.4) - 0.055, 12.92 * luminance)
    # Pillow's LAB -> RGB is a step off at the ends (black reads (1, 0, 1), white (254, 255, 254)).
    np.testing.assert_allclose(_load(tmp_path, name, 3), np.repeat(srgb[..., None], 3, -1), **ONE_STEP)


def test_hsv():
    hsv = np.array([[[0, 255, 255], [85, 255, 255], [43, 128, 200]],
                    [[170, 255, 128], [0, 0, 77], [213, 64, 255]]], dtype=np.uint8)
    image = Image.frombytes("HSV", (3, 2), hsv.tobytes())
    expected = np.array([[colorsys.hsv_to_rgb(*(pixel / 255)) for pixel in row] for row in hsv])
    np.testing.assert_allclose(pixels_of(image, 3), expected, **ONE_STEP)


def test_resize_keeps_16_bit_precision(tmp_path):
    name = _save(tmp_path, Image.fromarray(np.full((4, 6), 1000, dtype=np.uint16)), "flat16.png", "I;16")
    loaded = _load(tmp_path, name, 1, convert=False, resize=True, size=[8, 12])
    assert loaded.shape == (8, 12, 1)
    np.testing.assert_allclose(loaded, 1000 / 65535, **EXACT)  # 8-bit resizing would give 4/255


@pytest.mark.parametrize("array, mode, channels", [
    (np.concatenate([RGB, ALPHA[..., None]], -1), "RGBA", 3),
    (np.concatenate([RGB, ALPHA[..., None]], -1), "RGBA", 1),
    (np.stack([RGB[..., 0], ALPHA], -1), "LA", 1),
    (RGB, "RGB", 1),
    (U16, "I;16", 3),
])
def test_without_convert_another_channel_layout_is_refused(tmp_path, array, mode, channels):
    name = _save(tmp_path, Image.fromarray(array), "file.png", mode)
    expected = "L" if channels == 1 else "RGB"
    with pytest.raises(DataError, match=rf"image mode {mode}, expected {expected} \(set the modality's "
                                        r"convert: true to convert\)"):
        _load(tmp_path, name, channels, convert=False)


def _manifest(tmp_path, images: list[np.ndarray]):
    (tmp_path / "images").mkdir()
    with (tmp_path / "manifest.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image"])
        for i, pixels in enumerate(images):
            name = f"images/{i}.{'tif' if pixels.dtype.kind == 'f' else 'png'}"  # PNG has no float mode
            Image.fromarray(pixels).save(tmp_path / name)
            writer.writerow([name])
    modalities = {"image": ImageModality(size=16, hidden_channels=[8, 16], convert=True)}
    return ManifestDataset(tmp_path / "manifest.csv", modalities, "train", split_fractions=(1, 0, 0),
                           cache=False)


def test_a_16_bit_png_through_the_manifest(tmp_path):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 65536, (16, 16), dtype=np.uint16) for _ in range(2)]
    dataset = _manifest(tmp_path, images)
    for i, pixels in enumerate(images):
        image = dataset[i]["inputs"]["image"]
        assert image.shape == (1, 16, 16)
        assert image.mean().item() == pytest.approx(pixels.mean() / 65535, abs=1e-6)


def test_a_refusal_through_the_manifest_names_the_row(tmp_path):
    images = [np.full((16, 16), 100, dtype=np.uint16), np.full((16, 16), 3.0, dtype=np.float32)]
    dataset = _manifest(tmp_path, images)
    with pytest.raises(DataError, match=r"manifest.csv, row 2, column 'image': image mode F holds values "
                                        r"in \[3, 3\], outside \[0, 1\]"):
        dataset[1]
