"""A procedural multimodal dataset: shared factors rendered into every modality.

Each sample has a class label and a few continuous factors shared by all its views, plus
private factors and pixel/element noise of each view alone. What one view says about the
shared factors can therefore be recovered from another: cross-modal reconstruction is
learnable up to the private part, and measurable against a mean baseline.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from mmae.core.errors import ConfigError
from mmae.core.modality import Modality
from mmae.data.batch import SPLITS, make_sample
from mmae.data.labels import LabelMap


def _inject_anomalies(views: dict[str, Tensor], mask: Tensor, labels: Tensor,
                      modalities: Mapping[str, Modality], start: int, stop: int, rate: float,
                      seed: int) -> Tensor:
    """Make a `rate` fraction of pool samples `start:stop` anomalous, in place; return the flags.

    Half are mismatched pairs (one view replaced by that modality's view of a sample of
    another class of the same split: each view looks normal, together they disagree), half
    corrupted views
    (one view replaced by noise of the view's own scale, or shuffled tokens). A sample with a
    single modality present can only be corrupted. A generator of its own leaves every
    normal sample as it is without anomalies.
    """
    g = torch.Generator().manual_seed(seed * 7_919 + start)  # each split its own anomalies
    names = list(modalities)
    original = {n: v.clone() for n, v in views.items()}
    count = stop - start
    flags = torch.zeros(count, dtype=torch.bool)
    flags[torch.randperm(count, generator=g)[: round(rate * count)]] = True
    for offset in torch.nonzero(flags).flatten().tolist():
        i = start + offset
        present = [n for j, n in enumerate(names) if mask[i, j]]
        name = present[int(torch.randint(len(present), (1,), generator=g))]
        column = names.index(name)
        if len(present) > 1 and bool(torch.rand(1, generator=g) < 0.5):
            # Donors from the same split: no view the model was trained on appears in test.
            own = (labels[start:stop] != labels[i]) & mask[start:stop, column]
            donors = start + torch.nonzero(own).flatten()
            views[name][i] = original[name][donors[int(torch.randint(len(donors), (1,), generator=g))]]
        elif modalities[name].dtype_kind == "long":  # tokens: shuffled, not noised
            views[name][i] = original[name][i][torch.randperm(original[name].shape[1], generator=g)]
        else:
            scale = original[name].std()
            views[name][i] = original[name].mean() + scale * torch.randn(original[name][i].shape, generator=g)
    return flags


class SyntheticMultimodal(Dataset):
    """Deterministic by `seed`: the same arguments always give the same samples.

    All splits come from one generated pool of `num_samples` (split by `split_fractions`), so
    train, val and test share one "world" (class textures, mixing matrices) but no samples.
    `missing_rate` makes each modality missing at random, never all of a sample's.
    """

    def __init__(self, modalities: Mapping[str, Modality], split: str = "train",
                 num_samples: int = 4000, num_classes: int = 10, num_factors: int = 4,
                 private_factors: int = 2, noise: float = 0.05, missing_rate: float = 0.1,
                 split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0,
                 anomaly_rate: float = 0.0, anomaly_splits: Sequence[str] = ("val", "test")):
        if split not in SPLITS:
            raise ConfigError(f"SyntheticMultimodal: split must be one of {SPLITS}, got '{split}'")
        if not 0.0 <= anomaly_rate <= 1.0 or not set(anomaly_splits) <= set(SPLITS):
            raise ConfigError(f"SyntheticMultimodal: anomaly_rate must be in [0, 1] and anomaly_splits "
                              f"among {SPLITS}, got {anomaly_rate}, {list(anomaly_splits)}")
        if not 0.0 <= missing_rate < 1.0:
            raise ConfigError(f"SyntheticMultimodal: missing_rate must be in [0, 1), got {missing_rate}")
        if num_classes < 2 or num_factors < 1 or private_factors < 1:
            raise ConfigError("SyntheticMultimodal: need num_classes >= 2, num_factors >= 1 and "
                              f"private_factors >= 1, got {num_classes}, {num_factors}, {private_factors}")
        if len(split_fractions) != 3 or abs(sum(split_fractions) - 1.0) > 1e-6:
            raise ConfigError(f"SyntheticMultimodal: split_fractions must be 3 numbers summing to 1, "
                              f"got {split_fractions}")
        self.modalities = dict(modalities)
        self.num_classes = num_classes
        self.label_map = LabelMap.of_classes(num_classes)

        g = torch.Generator().manual_seed(seed)
        labels = torch.randint(num_classes, (num_samples,), generator=g)
        factors = torch.rand(num_samples, num_factors, generator=g) * 2 - 1
        views, present = {}, {}
        for name, modality in modalities.items():
            # A generator per modality name: adding a modality does not change the others.
            gm = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
            private = torch.rand(num_samples, private_factors, generator=gm) * 2 - 1
            try:
                view = modality.synthetic_view(labels, factors, private, num_classes, gm)
            except ConfigError as error:
                raise ConfigError(f"SyntheticMultimodal cannot render modality '{name}': {error}") from None
            if modality.dtype_kind != "long":  # token views get no additive noise
                view = view + noise * torch.randn(view.shape, generator=gm)
            views[name] = view
            present[name] = torch.rand(num_samples, generator=gm) >= missing_rate
        mask = torch.stack([present[n] for n in modalities], dim=1)
        emptied = ~mask.any(dim=1)
        rescue = torch.randint(len(modalities), (num_samples,), generator=g)
        mask[emptied, rescue[emptied]] = True

        start, stop = self._bounds(split, num_samples, split_fractions)
        anomaly = torch.zeros(num_samples, dtype=torch.bool)
        if anomaly_rate > 0 and split in anomaly_splits:
            anomaly[start:stop] = _inject_anomalies(views, mask, labels, modalities, start, stop,
                                                    anomaly_rate, seed)
        self.anomaly = anomaly[start:stop]
        self.labels = labels[start:stop]
        self.factors = factors[start:stop]
        self.present = {n: mask[start:stop, i].clone() for i, n in enumerate(modalities)}
        self.views = {}
        for n, view in views.items():
            view = view[start:stop].clone()
            view[~self.present[n]] = 0
            self.views[n] = view
        self.indices = torch.arange(start, stop)

    @staticmethod
    def _bounds(split: str, n: int, fractions: tuple[float, float, float]) -> tuple[int, int]:
        n_train = round(fractions[0] * n)
        n_val = round(fractions[1] * n)
        return {"train": (0, n_train), "val": (n_train, n_train + n_val),
                "test": (n_train + n_val, n)}[split]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return make_sample({n: v[i] for n, v in self.views.items()},
                           {n: p[i] for n, p in self.present.items()}, self.labels[i], self.indices[i],
                           factors=self.factors[i], anomaly=self.anomaly[i])
