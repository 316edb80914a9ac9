"""Feature statistics fitted on the training split, so that every continuous modality reaches
the encoder (and the loss) in standardised units whatever its own units are."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch

from mmae.core.errors import DataError
from mmae.core.modality import MIN_STD, Modality
from mmae.data.batch import Batch, nonempty


class Moments:
    """Running sums of a feature and its square along one axis (float64, so that a million
    log-mel frames lose no precision)."""

    def __init__(self, axis: int):
        self.axis = axis  # of the per-sample features; the batch axis comes first
        self.total = self.squares = None
        self.count = 0

    def add(self, features: torch.Tensor) -> None:
        # Summed by numpy (pairwise, one thread): torch's multi-threaded sums may order the
        # additions differently from one process to the next, and a last-bit difference in a
        # fitted mean breaks the bit-for-bit equality of a resumed run with an uninterrupted one.
        x = features.double().movedim(1 + self.axis, 0).flatten(1).contiguous().numpy()
        total, squares = torch.from_numpy(x.sum(1)), torch.from_numpy(np.square(x).sum(1))
        self.total = total if self.total is None else self.total + total
        self.squares = squares if self.squares is None else self.squares + squares
        self.count += x.shape[1]

    def mean_std(self) -> tuple[list[float], list[float]]:
        mean = self.total / self.count
        variance = (self.squares / self.count - mean.square()).clamp_min(0.0)
        return mean.tolist(), variance.sqrt().clamp_min(MIN_STD).tolist()


class FeatureStatistics:
    """The training split's feature statistics, accumulated batch by batch: in one pass over a
    loader (`fit_feature_statistics`) or while the samples are written to shards."""

    def __init__(self, modalities: Mapping[str, Modality]):
        self.needing = {n: m for n, m in modalities.items() if m.needs_statistics}
        self.preprocessors = {n: m.build_preprocessor() for n, m in self.needing.items()}
        self.moments = {n: Moments(m.statistics_axis) for n, m in self.needing.items()}

    @torch.no_grad()
    def add(self, batch: Batch) -> None:
        """Add a collated batch: the features of the samples where each modality is present."""
        for name, preprocessor in self.preprocessors.items():
            mask = batch.present[name]
            if bool(mask.any()):
                raw = batch.inputs[name][mask]
                self.moments[name].add(raw if preprocessor is None else preprocessor(raw))

    def apply(self, where: str = "the training split") -> None:
        """Set `mean`/`std` of every modality that needed them."""
        for name, modality in self.needing.items():
            if self.moments[name].count == 0:
                raise DataError(f"{where}: no sample has modality '{name}', so its statistics cannot be "
                                f"fitted; give modality.{name}.mean and .std, or set "
                                f"modality.{name}.normalize=false")
            modality.set_statistics(*self.moments[name].mean_std())


def fit_feature_statistics(modalities: Mapping[str, Modality], batches: Iterable[dict | None],
                           where: str = "the training split") -> None:
    """Set `mean`/`std` of every modality that needs them (`Modality.needs_statistics`), over
    the features (after the modality's preprocessing: the log-mel of a waveform) of the
    samples where it is present."""
    statistics = FeatureStatistics(modalities)
    for batch in nonempty(batches):
        statistics.add(batch)
    statistics.apply(where)
