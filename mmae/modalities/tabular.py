"""Tables: numeric columns (standardised with training-split statistics) and categorical
columns (embedded; reconstructed with cross-entropy), spread over several manifest columns."""

from __future__ import annotations

import math
import reprlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmae.core.errors import ConfigError, DataError
from mmae.core.modality import Modality
from mmae.core.nn import mlp
from mmae.core.registry import MODALITIES

FLOAT32_MAX = 3.4028234663852886e38
#: Augmentation at strength 1 (scaled by the strength): Gaussian jitter of this standard
#: deviation on the numeric columns (standardised units), and this share of the category cells
#: switched to another of the column's categories.
JITTER = 0.1
SWITCH_SHARE = 0.1


def _switch_categories(codes: Tensor, sizes: Tensor, share: float,
                       generator: torch.Generator | None) -> Tensor:
    """Category indices `[B, K]` (floats) with about `share` of the cells moved to another of
    the `sizes [K]` known categories, uniformly (an unseen category's cell to a known one);
    columns of fewer than two categories stay as they are."""
    shape, device = codes.shape, codes.device
    hit = (torch.rand(shape, generator=generator, device=device) < share) & (sizes >= 2)
    step = 1 + (torch.rand(shape, generator=generator, device=device) * (sizes - 1).clamp_min(0)).floor()
    switched = torch.remainder(codes + step.to(codes.dtype), sizes.clamp_min(1).to(codes.dtype))
    return torch.where(hit, switched, codes)


class Standardize(nn.Module):
    """Standardise the numeric columns (the first `n`), leave category indices alone."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        n = self.mean.shape[0]
        return torch.cat([(x[:, :n] - self.mean) / self.std, x[:, n:]], dim=1)


class TabularEncoder(nn.Module):
    def __init__(self, num_numeric: int, cardinalities: list[int], embedding_dim: int,
                 hidden: list[int], embed_dim: int):
        super().__init__()
        self.num_numeric = num_numeric
        self.embeddings = nn.ModuleList(nn.Embedding(c, embedding_dim) for c in cardinalities)
        self.mlp = mlp([num_numeric + embedding_dim * len(cardinalities), *hidden, embed_dim])

    def forward(self, x: Tensor) -> Tensor:
        codes = x[:, self.num_numeric:].long()
        parts = [x[:, : self.num_numeric]] + [emb(codes[:, i]) for i, emb in enumerate(self.embeddings)]
        return self.mlp(torch.cat(parts, dim=1))


@MODALITIES.register("tabular")
class TabularModality(Modality):
    """Per sample: the numeric values, then one category index per categorical column.

    Statistics (numeric mean/std, category lists) are fitted on the training split by the
    datamodule unless given. A category unseen in training maps to an extra "unknown" index.
    The decoder predicts numeric values and one set of logits per categorical column.
    """

    multi_column = True
    decoding_keys = ("numeric", "categorical", "categories")  # (categories: a cell's index)

    def __init__(self, numeric: Sequence[str] = (), categorical: Sequence[str] = (),
                 categories: Mapping[str, Sequence[str]] | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 hidden: Sequence[int] = (128,), embedding_dim: int = 8):
        self.numeric, self.categorical = list(numeric), list(categorical)
        if not self.numeric and not self.categorical:
            raise ConfigError("TabularModality: name at least one numeric or categorical column")
        super().__init__((len(self.numeric) + len(self.categorical),))
        self.categories = {c: [str(v) for v in vs] for c, vs in (categories or {}).items()}
        self.mean = None if mean is None else [float(m) for m in mean]
        self.std = None if std is None else [float(s) for s in std]
        self.hidden, self.embedding_dim = [int(h) for h in hidden], embedding_dim

    def manifest_columns(self, name: str) -> list[str]:
        return self.numeric + self.categorical

    @property
    def fitted(self) -> bool:
        numeric_ready = self.mean is not None or not self.numeric
        return numeric_ready and all(c in self.categories for c in self.categorical)

    def _require_fitted(self) -> None:
        if not self.fitted:
            raise ConfigError("TabularModality: statistics are not fitted; the datamodule fits them on "
                              "the training split, or give mean, std and categories")

    def check_cell(self, value: Mapping[str, Any]) -> None:
        for column in self.numeric:
            self._number(column, value[column])

    def fit(self, cells: list[Mapping[str, Any]]) -> None:
        """Fit numeric mean/std and category lists on the training split's cells."""
        if self.numeric and self.mean is None:
            rows = torch.tensor([[self._number(c, cell[c]) for c in self.numeric] for cell in cells],
                                dtype=torch.float64)
            if rows.shape[0] == 0:
                raise ConfigError("TabularModality: no training rows to fit statistics on")
            self.mean = rows.mean(0).tolist()
            self.std = rows.std(0, unbiased=False).clamp_min(1e-6).tolist()
        for column in self.categorical:
            if column not in self.categories:
                self.categories[column] = sorted({str(cell[column]) for cell in cells})

    def restore_fitted(self, config: dict) -> None:
        """Numeric statistics and the category lists of columns that have none given."""
        if self.numeric and self.mean is None and config.get("mean") is not None:
            self.mean, self.std = [float(m) for m in config["mean"]], [float(s) for s in config["std"]]
        for column, values in (config.get("categories") or {}).items():
            if column in self.categorical and column not in self.categories:
                self.categories[column] = [str(v) for v in values]

    @property
    def cardinalities(self) -> list[int]:
        return [len(self.categories[c]) + 1 for c in self.categorical]  # + "unknown"

    @staticmethod
    def _number(column: str, value: Any) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond float
            raise DataError(f"column '{column}': expected a number, got {reprlib.repr(value)}") from None
        if not math.isfinite(number):
            raise DataError(f"column '{column}': {reprlib.repr(value)} is not a finite number")
        if abs(number) > FLOAT32_MAX:  # would become inf in the float32 batch
            raise DataError(f"column '{column}': {reprlib.repr(value)} is beyond float32's range "
                            f"(|x| > {FLOAT32_MAX:.3g})")
        return number

    def example_input(self, batch: int, generator: torch.Generator) -> Tensor:
        """Numbers 0 with category index 0: valid whatever categories were fitted."""
        return torch.zeros(batch, *self.raw_shape)

    def load(self, value: Mapping[str, Any], root: Path) -> Tensor:
        self._require_fitted()
        numbers = [self._number(c, value[c]) for c in self.numeric]
        for c in self.categorical:
            known = self.categories[c]
            text = str(value[c])
            numbers.append(float(known.index(text)) if text in known else float(len(known)))
        return torch.tensor(numbers, dtype=torch.float32)

    def build_preprocessor(self) -> nn.Module | None:
        self._require_fitted()
        return Standardize(self.mean, self.std) if self.numeric else None

    def build_encoder(self, embed_dim: int) -> nn.Module:
        self._require_fitted()
        return TabularEncoder(len(self.numeric), self.cardinalities, self.embedding_dim, self.hidden,
                              embed_dim)

    def build_decoder(self, hidden_dim: int) -> nn.Module:
        self._require_fitted()
        return mlp([hidden_dim, *self.hidden[::-1], len(self.numeric) + sum(self.cardinalities)])

    def noise_mask(self, features: Tensor) -> Tensor:
        """Only the numeric columns: noise on a category index would make it another category."""
        mask = torch.zeros(features.shape[-1], dtype=torch.bool, device=features.device)
        mask[: len(self.numeric)] = True
        return mask

    def augment(self, features: Tensor, strength: float, generator: torch.Generator | None) -> Tensor:
        """Gaussian jitter of the numeric columns (the features are standardised already) and a
        few category cells switched to another category: a row's measurements move a little,
        and an odd categorical value does not change what the row is."""
        if strength == 0:
            return features
        noise = torch.randn(features.shape, generator=generator, device=features.device, dtype=features.dtype)
        jittered = torch.where(self.noise_mask(features), features + JITTER * strength * noise, features)
        if not self.categorical:
            return jittered
        n = len(self.numeric)
        sizes = torch.tensor([len(self.categories[c]) for c in self.categorical], device=features.device)
        codes = _switch_categories(jittered[:, n:], sizes, SWITCH_SHARE * strength, generator)
        return torch.cat([jittered[:, :n], codes], dim=1)

    def _split(self, reconstruction: Tensor) -> tuple[Tensor, list[Tensor]]:
        n = len(self.numeric)
        return reconstruction[:, :n], list(reconstruction[:, n:].split(self.cardinalities, dim=1))

    def as_features(self, reconstruction: Tensor) -> Tensor:
        numeric, logits = self._split(reconstruction)
        return torch.cat([numeric, *(lg.argmax(1, keepdim=True).to(numeric.dtype) for lg in logits)], dim=1)

    def reconstruction_loss(self, reconstruction: Tensor, target: Tensor) -> Tensor:
        numeric, logits = self._split(reconstruction)
        n = len(self.numeric)
        total = (numeric - target[:, :n]).pow(2).sum(1)
        for i, column_logits in enumerate(logits):
            total = total + F.cross_entropy(column_logits, target[:, n + i].long(), reduction="none")
        return total / self.shape[0]

    def metrics(self, reconstruction: Tensor, target: Tensor) -> dict[str, Tensor]:
        if not self.categorical:
            return {}
        _, logits = self._split(reconstruction)
        n = len(self.numeric)
        hits = [(lg.argmax(1) == target[:, n + i].long()).float() for i, lg in enumerate(logits)]
        return {"category_accuracy": torch.stack(hits, 1).mean(1)}

    def baseline_sum(self, targets: Tensor) -> Tensor:
        n = len(self.numeric)
        parts = [targets[:, :n].double().sum(0)]
        for i, cardinality in enumerate(self.cardinalities):
            parts.append(F.one_hot(targets[:, n + i].long(), cardinality).double().sum(0))
        return torch.cat(parts)

    def baseline_prediction(self, mean: Tensor) -> Tensor:
        n = len(self.numeric)
        return torch.cat([mean[:n], torch.log(mean[n:] + 1e-8)]).float()

    def config(self) -> dict:
        return {"numeric": self.numeric, "categorical": self.categorical,
                "categories": self.categories, "mean": self.mean, "std": self.std,
                "hidden": self.hidden, "embedding_dim": self.embedding_dim}
