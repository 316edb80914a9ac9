"""The baselines `task=compress` sets against the latent: PCA of one modality's standardised
features (quantised and rated as the latent is) and JPEG (Pillow) of image features (rated by
the size of each file). Each curve spends all its bits on its one modality."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from mmae.core.errors import DataError
from mmae.evaluation.tasks.compression.rd_curves import rate_distortion

#: Above this many features a PCA is fitted in float32 (half the memory of float64).
PCA_FLOAT64_FEATURES = 8192


def mean_error(modality, reconstruction: Tensor, target: Tensor) -> float:
    """The mean validation error (`reconstruction_loss`) of a reconstruction of every row of `target`."""
    errors = modality.reconstruction_loss(reconstruction, target.to(reconstruction.device))
    return float(errors.double().mean())


# -- PCA -----------------------------------------------------------------------------------


@dataclass
class PCABasis:
    """Principal axes of standardised, flattened features: `project` to components,
    `reconstruct` features of `shape` from the first components."""

    mean: Tensor
    std: Tensor
    axes: Tensor  # [features, rank]
    shape: tuple[int, ...]

    def project(self, x: Tensor) -> Tensor:
        x = x.flatten(1).to(self.axes.dtype)
        return ((x - self.mean) / self.std) @ self.axes

    def reconstruct(self, components: Tensor) -> Tensor:
        axes = self.axes[:, : components.shape[1]]
        flat = (components.to(axes.dtype) @ axes.T) * self.std + self.mean
        return flat.float().view(-1, *self.shape)


def fit_pca(train: Tensor) -> PCABasis:
    """Every axis of nonzero variance of the training features `[N, *shape]`, each element
    standardised (a constant one keeps unit scale). Exact SVD with the mean and scale kept,
    unlike `mmae.evaluation.probes.pca` (randomised, projections only): a codec must
    reconstruct, and is swept over every rank."""
    if train.shape[0] < 2:
        raise DataError(f"compress: PCA needs at least 2 training samples, got {train.shape[0]}")
    x = train.flatten(1)
    x = x.double() if x.shape[1] <= PCA_FLOAT64_FEATURES else x.float()
    mean, std = x.mean(0), x.std(0, unbiased=False)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    _, values, vh = torch.linalg.svd((x - mean) / std, full_matrices=False)
    rank = int((values > values[0] * 1e-6).sum()) if values.numel() and values[0] > 0 else 0
    return PCABasis(mean, std, vh[: max(rank, 1)].T.contiguous(), tuple(train.shape[1:]))


def component_counts(latent_dim: int, rank: int) -> list[int]:
    """The PCA sizes swept: powers of two up to the rank, and the latent's own size."""
    counts = {2**i for i in range(int(math.log2(max(rank, 1))) + 1)}
    return sorted(counts | ({latent_dim} if latent_dim <= rank else set()))


def pca_points(name: str, modality, train: Tensor, test: Tensor, levels: Sequence[int],
               latent_dim: int) -> list[dict]:
    """The rate-distortion points of PCA of modality `name` (its present training and test
    rows), per number of components and of levels (`rd_curves.rate_distortion`)."""
    basis = fit_pca(train)
    train_z, test_z = basis.project(train), basis.project(test)

    def measure(components: Tensor) -> dict:
        return {"distortion": {name: mean_error(modality, basis.reconstruct(components), test)}}

    return [{"components": count, **point}
            for count in component_counts(latent_dim, basis.axes.shape[1])
            for point in rate_distortion(train_z[:, :count], test_z[:, :count], levels, measure)]


# -- JPEG ----------------------------------------------------------------------------------


def pixel_range(train: Tensor) -> tuple[float, float]:
    """The feature values of 8-bit pixels 0 and 255: [0, 1], widened to the training range
    where features leave it (synthetic views do), so JPEG is not charged for clipping."""
    return min(0.0, float(train.min())), max(1.0, float(train.max()))


def to_pixels(images: Tensor, low: float, high: float) -> np.ndarray:
    """Features `[N, C, H, W]` -> uint8 pixels `[N, H, W]` (grey) or `[N, H, W, 3]` (RGB)."""
    scaled = ((images.double() - low) / (high - low) * 255.0).round().clamp(0, 255).to(torch.uint8)
    pixels = scaled.permute(0, 2, 3, 1).numpy()
    return pixels[..., 0] if pixels.shape[-1] == 1 else pixels


def from_pixels(pixels: np.ndarray, low: float, high: float) -> Tensor:
    """The inverse of `to_pixels`: uint8 pixels -> features `[N, C, H, W]`."""
    x = torch.from_numpy(np.ascontiguousarray(pixels)).double()
    x = x.unsqueeze(-1) if x.dim() == 3 else x
    return (x.permute(0, 3, 1, 2) / 255.0 * (high - low) + low).float()


def encode_jpeg(pixels: np.ndarray, quality: int) -> bytes:
    """One image (uint8 `[H, W]` or `[H, W, 3]`) as a baseline JPEG with Pillow's standard
    Huffman tables: not optimised per file, so the tables are fixed side information."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=int(quality))
    return buffer.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image)


def jpeg_scan_bytes(data: bytes) -> int:
    """The bytes of a baseline JPEG's entropy-coded scan (end of the SOS header to the EOI
    marker): the file without the headers and tables a decoder could know in advance."""
    if data[:2] != b"\xff\xd8":
        raise DataError("not a JPEG file (no SOI marker)")
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            raise DataError(f"malformed JPEG: no marker at byte {position}")
        marker = data[position + 1]
        length = int.from_bytes(data[position + 2: position + 4], "big")
        if marker == 0xDA:  # start of scan
            end = len(data) - 2 if data[-2:] == b"\xff\xd9" else len(data)
            return end - (position + 2 + length)
        position += 2 + length
    raise DataError("malformed JPEG: no scan")


def jpeg_points(name: str, modality, test: Tensor, qualities: Sequence[int], low: float,
                high: float) -> list[dict]:
    """Per JPEG quality, over the test images `[N, C, H, W]`: the mean file size
    (`bits_per_sample`), the mean scan size (`scan_bits_per_sample`) and the decoded images'
    error in the features' units (pixels `low`..`high`: `pixel_range`)."""
    pixels = to_pixels(test, low, high)
    points = []
    for quality in qualities:
        files = [encode_jpeg(image, quality) for image in pixels]
        decoded = from_pixels(np.stack([decode_jpeg(data) for data in files]), low, high)
        points.append({"quality": int(quality),
                       "bits_per_sample": 8.0 * sum(map(len, files)) / len(files),
                       "scan_bits_per_sample": 8.0 * sum(map(jpeg_scan_bytes, files)) / len(files),
                       "distortion": {name: mean_error(modality, decoded, test)}})
    return points
