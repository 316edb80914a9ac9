"""Training-time corruptions for denoising. The loss is always taken against the clean input.

A corruption maps `(inputs, present)` to a corrupted `(inputs, present)`; the clean batch is
kept by the caller as the reconstruction target.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from mmae.core.errors import ConfigError
from mmae.core.modality import Modality

Batch = tuple[dict[str, Tensor], dict[str, Tensor]]
Corruption = Callable[..., Batch]


class ModalityDropout:
    """Drop each present modality of each sample with probability `p`, never all of them.

    Where every present modality of a sample was drawn for dropping, one of them (chosen
    uniformly) is kept, so the encoder always sees something. With `p=1` each sample keeps
    exactly one modality: training then asks for pure cross-modal reconstruction.
    """

    def __init__(self, p: float = 0.3):
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"ModalityDropout: p must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, inputs: Mapping[str, Tensor], present: Mapping[str, Tensor],
                 generator: torch.Generator | None = None,
                 modalities: Mapping[str, Modality] | None = None) -> Batch:
        names = [n for n in inputs if n in present]
        if self.p == 0.0 or not names:
            return dict(inputs), dict(present)
        mask = torch.stack([present[n] for n in names], dim=1)
        draw = torch.rand(mask.shape, generator=generator, device=mask.device)
        keep = mask & (draw >= self.p)
        emptied = mask.any(dim=1) & ~keep.any(dim=1)
        # Random scores restricted to present modalities: the arg-max is a uniform pick.
        scores = torch.rand(mask.shape, generator=generator, device=mask.device).masked_fill(~mask, -1.0)
        rescued = torch.zeros_like(mask).scatter_(1, scores.argmax(dim=1, keepdim=True), True)
        keep = keep | (rescued & emptied.unsqueeze(1))
        kept = dict(present)
        kept.update({n: keep[:, i] for i, n in enumerate(names)})
        return dict(inputs), kept

    def __repr__(self) -> str:
        return f"ModalityDropout(p={self.p})"


class NoCorruption:
    """The identity: train a plain (non-denoising) autoencoder."""

    def __call__(self, inputs: Mapping[str, Tensor], present: Mapping[str, Tensor],
                 generator: torch.Generator | None = None,
                 modalities: Mapping[str, Modality] | None = None) -> Batch:
        return dict(inputs), dict(present)


class _ElementNoise:
    """Base of the element-wise corruptions: applied to the named modalities (all if None),
    to floating-point tensors only, leaving the inputs' presence unchanged. A modality with
    training-split statistics is corrupted in its standardised units, so `sigma` means the
    same for pixels and log-mels and masking sets an element to its training mean
    (`standardised=False`: in the features' own units)."""

    def __init__(self, modalities: Sequence[str] | None = None, standardised: bool = True):
        self.modalities = None if modalities is None else list(modalities)
        self.standardised = standardised

    def _applies(self, name: str, x: Tensor) -> bool:
        return torch.is_floating_point(x) and (self.modalities is None or name in self.modalities)

    def corrupt(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        raise NotImplementedError

    def __call__(self, inputs: Mapping[str, Tensor], present: Mapping[str, Tensor],
                 generator: torch.Generator | None = None,
                 modalities: Mapping[str, Modality] | None = None) -> Batch:
        noisy = {}
        for name, x in inputs.items():
            if not self._applies(name, x):
                noisy[name] = x
                continue
            modality = modalities.get(name) if modalities else None
            statistics = modality.feature_statistics() if modality is not None and self.standardised else None
            if statistics is None:
                corrupted = self.corrupt(x, generator)
            else:
                mean, std = (t.to(x.device, x.dtype) for t in statistics)
                corrupted = self.corrupt((x - mean) / std, generator) * std + mean
            # A modality may protect some elements, e.g. the category indices of a table.
            allowed = modality.noise_mask(x) if modality is not None else None
            noisy[name] = corrupted if allowed is None else torch.where(allowed, corrupted, x)
        return noisy, dict(present)


def _uniform(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)


class GaussianNoise(_ElementNoise):
    """Additive isotropic Gaussian noise `x + sigma * eps`."""

    def __init__(self, sigma: float = 0.1, modalities: Sequence[str] | None = None,
                 standardised: bool = True):
        super().__init__(modalities, standardised)
        if sigma < 0:
            raise ConfigError(f"GaussianNoise: sigma must be >= 0, got {sigma}")
        self.sigma = sigma

    def corrupt(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x + self.sigma * noise


class MaskingNoise(_ElementNoise):
    """Masking noise: each element is set to zero with probability `fraction`."""

    def __init__(self, fraction: float = 0.25, modalities: Sequence[str] | None = None):
        super().__init__(modalities)
        if not 0.0 <= fraction <= 1.0:
            raise ConfigError(f"MaskingNoise: fraction must be in [0, 1], got {fraction}")
        self.fraction = fraction

    def corrupt(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        return x.masked_fill(_uniform(x, generator) < self.fraction, 0.0)


class SaltAndPepper(_ElementNoise):
    """Each element is, with probability `fraction`, replaced by the low or the high value
    (equally likely). `low`/`high` default to each sample's own minimum and maximum."""

    def __init__(self, fraction: float = 0.1, low: float | None = None, high: float | None = None,
                 modalities: Sequence[str] | None = None):
        super().__init__(modalities)
        if not 0.0 <= fraction <= 1.0:
            raise ConfigError(f"SaltAndPepper: fraction must be in [0, 1], got {fraction}")
        if low is not None and high is not None and low > high:
            raise ConfigError(f"SaltAndPepper: low ({low}) must not exceed high ({high})")
        self.fraction, self.low, self.high = fraction, low, high

    def corrupt(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        flat = x.flatten(1)
        shape = (-1, *([1] * (x.dim() - 1)))
        low = flat.amin(dim=1).view(shape) if self.low is None else torch.tensor(self.low, dtype=x.dtype)
        high = flat.amax(dim=1).view(shape) if self.high is None else torch.tensor(self.high, dtype=x.dtype)
        hit = _uniform(x, generator) < self.fraction
        salt = _uniform(x, generator) < 0.5
        return torch.where(hit, torch.where(salt, high.to(x.device), low.to(x.device)), x)


def _check_unit(owner: str, key: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{owner}: {key} must be in [0, 1], got {value}")


def _keep_missing(augmented: Tensor, clean: Tensor, present: Tensor | None) -> Tensor:
    """The augmented values of present samples; missing ones keep their zero fill."""
    if present is None or augmented is clean:
        return augmented
    return torch.where(present.view(-1, *[1] * (clean.dim() - 1)), augmented, clean)


class Augment:
    """Semantic-preserving augmentations: each named modality's (all if None) own
    `Modality.augment` at `strength` in [0, 1] (an image's colours and framing, a clip's
    loudness and timing, a few tokens of a text), so the codes learn to ignore the nuisance
    they change; presence is left as it is. Strength 0 changes nothing and draws nothing.
    A frozen backbone whose outputs are cached sees the clean inputs, as with element noise."""

    def __init__(self, strength: float = 0.5, modalities: Sequence[str] | None = None):
        _check_unit("Augment", "strength", strength)
        self.strength = strength
        self.modalities = None if modalities is None else list(modalities)

    def __call__(self, inputs: Mapping[str, Tensor], present: Mapping[str, Tensor],
                 generator: torch.Generator | None = None,
                 modalities: Mapping[str, Modality] | None = None) -> Batch:
        augmented = dict(inputs)
        if self.strength == 0.0 or not modalities:
            return augmented, dict(present)
        for name, x in inputs.items():
            modality = modalities.get(name)
            if modality is None or (self.modalities is not None and name not in self.modalities):
                continue
            changed = modality.augment(x, self.strength, generator)
            augmented[name] = _keep_missing(changed, x, present.get(name))
        return augmented, dict(present)

    def __repr__(self) -> str:
        return f"Augment(strength={self.strength})"


class Compose:
    """Apply named corruptions in order, e.g. modality dropout then Gaussian noise.

    Built from keyword arguments so each step is addressable from the command line
    (`corruption.noise.sigma=0.2`).
    """

    def __init__(self, **steps: Corruption):
        if not steps:
            raise ConfigError("Compose: give at least one corruption")
        self.steps = steps

    def __call__(self, inputs: Mapping[str, Tensor], present: Mapping[str, Tensor],
                 generator: torch.Generator | None = None,
                 modalities: Mapping[str, Modality] | None = None) -> Batch:
        batch = dict(inputs), dict(present)
        for corruption in self.steps.values():
            batch = corruption(*batch, generator=generator, modalities=modalities)
        return batch

    def __repr__(self) -> str:
        return f"Compose({', '.join(f'{k}={v!r}' for k, v in self.steps.items())})"


class DenoisingDropout(Compose):
    """The default corruption: modality dropout (`p`), then each modality's augmentations at
    strength `augment` (`Augment`; 0, the default, skips them without a random draw), then
    Gaussian noise of `sigma`, in each modality's standardised units, on the modalities named
    (all continuous ones if None). Dropout teaches cross-modal reconstruction; the noise makes
    the codes of each modality robust (measured on the real-data benchmark,
    docs/benchmarks.md)."""

    def __init__(self, p: float = 0.3, sigma: float = 0.5, modalities: Sequence[str] | None = None,
                 augment: float = 0.0):
        _check_unit("DenoisingDropout", "augment", augment)
        super().__init__(dropout=ModalityDropout(p), augment=Augment(augment),
                         noise=GaussianNoise(sigma, modalities))
        self.p, self.sigma, self.augment = p, sigma, augment

    def __repr__(self) -> str:
        return f"DenoisingDropout(p={self.p}, sigma={self.sigma}, augment={self.augment})"

