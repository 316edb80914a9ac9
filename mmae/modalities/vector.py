"""Fixed-length vectors: pre-computed features or embeddings, with MLP encoder/decoder."""

from __future__ import annotations

import os
import re
import reprlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmae.core.errors import DataError
from mmae.core.modality import Modality
from mmae.core.nn import mlp
from mmae.core.registry import MODALITIES

FLOAT32_MAX = float(np.finfo(np.float32).max)
#: Augmentation at strength 1: Gaussian jitter of this standard deviation in standardised units.
JITTER = 0.1


@MODALITIES.register("vector")
class VectorModality(Modality):
    """Vectors `[dim]`. The encoder standardises each element with `mean`/`std`, fitted on the
    training split unless given (`normalize: false`: as they are).

    In a manifest a cell is a `.npy` file (relative path) or the numbers inline, separated by
    spaces, commas or semicolons (brackets allowed). Values must be finite real numbers within
    float32's range.
    """

    statistics_axis = 0  # per element
    decoding_keys = ("dim",)

    def __init__(self, dim: int = 32, hidden: Sequence[int] = (128,), normalize: bool = True,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 likelihood: str = "gaussian", column: str | None = None):
        super().__init__((dim,), column=column)
        self.hidden = [int(h) for h in hidden]
        self._continuous(normalize, mean, std, likelihood)

    def file_path(self, value: Any, root: Path) -> Path | None:
        return root / value.strip() if isinstance(value, str) and value.strip().endswith(".npy") else None

    def check_cell(self, value: Any) -> None:
        self.load(value, Path("."))  # an inline value (files are checked when read)

    def load(self, value: Any, root: Path) -> Tensor:
        if isinstance(value, str) and value.strip().endswith(".npy"):
            path = root / value.strip()
            if not os.path.isfile(path):
                raise DataError(f"file not found: {path}")
            try:
                array = np.load(path, allow_pickle=False)
            except (ValueError, OSError, EOFError) as error:  # not .npy, pickled, empty, truncated
                raise DataError(f"cannot read {path}: {error or type(error).__name__}") from None
            if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
                kind = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
                raise DataError(f"{path}: expected an array of real numbers, got {kind}")
        elif isinstance(value, (list, tuple)):
            try:
                array = np.asarray(value, dtype=np.float64)
            except (ValueError, TypeError, OverflowError):  # nested, strings, ints beyond float
                raise DataError(f"expected a list of numbers, got {reprlib.repr(value)}") from None
        else:
            fields = [f for f in re.split(r"[\s,;\[\]]+", str(value)) if f]
            try:
                array = np.asarray([float(f) for f in fields])
            except ValueError:
                raise DataError(f"expected numbers, got {str(value)[:80]!r}") from None
        array = np.asarray(array, dtype=np.float64).reshape(-1)
        if array.shape != self.shape:
            raise DataError(f"expected {self.shape[0]} numbers, got {array.shape[0]}")
        if not np.isfinite(array).all():
            raise DataError("contains NaN or infinite values")
        if np.abs(array).max() > FLOAT32_MAX:  # would become inf as float32
            raise DataError(f"contains values beyond float32's range (|x| > {FLOAT32_MAX:.3g})")
        return torch.from_numpy(array.astype(np.float32))

    def augment(self, features: Tensor, strength: float, generator: torch.Generator | None) -> Tensor:
        """Gaussian jitter of `JITTER * strength` training standard deviations per element (in
        the vector's own units without statistics): nearby vectors mean the same."""
        if strength == 0:
            return features
        statistics = self.feature_statistics()
        scale = 1.0 if statistics is None else statistics[1].to(features.device, features.dtype)
        noise = torch.randn(features.shape, generator=generator, device=features.device, dtype=features.dtype)
        return features + JITTER * strength * scale * noise

    def build_encoder(self, embed_dim: int) -> nn.Module:
        return mlp([self.shape[0], *self.hidden, embed_dim])

    def build_decoder(self, hidden_dim: int) -> nn.Module:
        return mlp([hidden_dim, *self.hidden[::-1], self.shape[0]])

    def synthetic_view(self, labels: Tensor, factors: Tensor, private: Tensor,
                       num_classes: int, g: torch.Generator) -> Tensor:
        """A random two-layer network of the class, the shared and the private factors: the
        class interacts with the factors nonlinearly."""
        (dim,) = self.shape
        hidden = 4 * dim
        inputs = torch.cat([0.5 * F.one_hot(labels, num_classes).float(), factors, 0.5 * private], dim=1)
        first = torch.randn(inputs.shape[1], hidden, generator=g)
        second = torch.randn(hidden, dim, generator=g) / hidden**0.5
        return torch.tanh(torch.relu(inputs @ first) @ second)

    def config(self) -> dict:
        return {"dim": self.shape[0], "hidden": self.hidden, "normalize": self.normalize,
                "mean": self.mean, "std": self.std, "likelihood": self.likelihood, "column": self.column}
