"""A procedural multimodal dataset: shared factors rendered into every modality.

Each sample has a class label and a few continuous factors shared by all its views, plus
private factors and pixel/element noise of each view alone. What one view says about the
shared factors can therefore be recovered from another: cross-modal reconstruction is
learnable up to the private part, and measurable against a mean baseline.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from mmae.errors import ConfigError
from mmae.modalities.base import Modality

SPLITS = ("train", "val", "test")


def _render_image(shape: tuple[int, ...], labels: Tensor, factors: Tensor, private: Tensor,
                  num_classes: int, g: torch.Generator) -> Tensor:
    """Class texture scaled by one factor, a Gaussian blob placed and sized by three more,
    and a private brightness gradient."""
    channels, height, width = shape
    coarse = torch.randn(num_classes, channels, 4, 4, generator=g)
    textures = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    textures = textures / textures.abs().amax(dim=(1, 2, 3), keepdim=True)
    f = lambda i: factors[:, i % factors.shape[1]].view(-1, 1, 1, 1)  # noqa: E731
    ys = torch.linspace(0, 1, height).view(1, 1, -1, 1)
    xs = torch.linspace(0, 1, width).view(1, 1, 1, -1)
    sigma = 0.12 + 0.05 * f(2)
    blob = torch.exp(-((xs - 0.5 - 0.3 * f(0)) ** 2 + (ys - 0.5 - 0.3 * f(1)) ** 2) / (2 * sigma**2))
    tint = torch.rand(channels, generator=g).view(1, -1, 1, 1) * 0.5 + 0.5
    gradient = 0.3 * private[:, :1].view(-1, 1, 1, 1) * (xs - 0.5)
    return 0.5 * textures[labels] * (1.0 + 0.5 * f(3)) + tint * blob + gradient


def _render_vector(shape: tuple[int, ...], labels: Tensor, factors: Tensor, private: Tensor,
                   num_classes: int, g: torch.Generator) -> Tensor:
    """A random nonlinear mixing of a class embedding, the shared and the private factors."""
    (dim,) = shape
    class_embedding = torch.randn(num_classes, dim, generator=g)
    mixing = torch.randn(factors.shape[1], dim, generator=g)
    private_mixing = torch.randn(private.shape[1], dim, generator=g) * 0.5
    return torch.tanh(0.8 * class_embedding[labels] + factors @ mixing + private @ private_mixing)


RENDERERS: dict[str, Callable[..., Tensor]] = {"image": _render_image, "vector": _render_vector}


class SyntheticMultimodal(Dataset):
    """Deterministic by `seed`: the same arguments always give the same samples.

    All splits come from one generated pool of `num_samples` (split by `split_fractions`), so
    train, val and test share one "world" (class textures, mixing matrices) but no samples.
    `missing_rate` makes each modality missing at random, never all of a sample's.
    """

    def __init__(self, modalities: Mapping[str, Modality], split: str = "train",
                 num_samples: int = 4000, num_classes: int = 10, num_factors: int = 4,
                 private_factors: int = 2, noise: float = 0.05, missing_rate: float = 0.1,
                 split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0):
        if split not in SPLITS:
            raise ConfigError(f"SyntheticMultimodal: split must be one of {SPLITS}, got '{split}'")
        for name, modality in modalities.items():
            if modality.kind not in RENDERERS:
                raise ConfigError(
                    f"SyntheticMultimodal cannot render modality '{name}' of kind "
                    f"'{modality.kind}'; it renders kinds {sorted(RENDERERS)}"
                )
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

        g = torch.Generator().manual_seed(seed)
        labels = torch.randint(num_classes, (num_samples,), generator=g)
        factors = torch.rand(num_samples, num_factors, generator=g) * 2 - 1
        views, present = {}, {}
        for name, modality in modalities.items():
            # A generator per modality name: adding a modality does not change the others.
            gm = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
            private = torch.rand(num_samples, private_factors, generator=gm) * 2 - 1
            view = RENDERERS[modality.kind](modality.shape, labels, factors, private, num_classes, gm)
            views[name] = view + noise * torch.randn(view.shape, generator=gm)
            present[name] = torch.rand(num_samples, generator=gm) >= missing_rate
        mask = torch.stack([present[n] for n in modalities], dim=1)
        emptied = ~mask.any(dim=1)
        rescue = torch.randint(len(modalities), (num_samples,), generator=g)
        mask[emptied, rescue[emptied]] = True

        start, stop = self._bounds(split, num_samples, split_fractions)
        self.labels = labels[start:stop]
        self.factors = factors[start:stop]
        self.present = {n: mask[start:stop, i].clone() for i, n in enumerate(modalities)}
        self.views = {}
        for n, view in views.items():
            view = view[start:stop].clone()
            view[~self.present[n]] = 0.0
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
        sample: dict = {n: v[i] for n, v in self.views.items()}
        sample["present"] = {n: p[i] for n, p in self.present.items()}
        sample["label"] = self.labels[i]
        sample["factors"] = self.factors[i]
        sample["index"] = self.indices[i]
        return sample
