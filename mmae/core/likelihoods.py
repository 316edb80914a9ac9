"""Decoder likelihoods `p(x | h)` of one modality's features.

The reconstruction loss of a modality is `-log p(x | h)` in nats per element, so that
modalities measured in different units (pixels, log-mel dB, standardised vectors, tokens) are
on one scale and a modality's weight does not grow with its number of elements. The decoder
head works in standardised units; each likelihood's `link` maps the head's raw output to the
reconstruction (the distribution's mean, location or parameter) in the features' own units.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mmae.core.errors import ConfigError, InputError

#: Learned log-scales (relative to the features' std) are clamped to this range in the forward
#: computation, so sigma cannot collapse to 0 (nll -> -inf) or blow up. Beyond the bounds the
#: clamp passes no gradient, as for the posterior's log-variance (`mmae.core.gaussian.LOGVAR_BOUNDS`).
LOG_SCALE_BOUNDS = (-7.0, 5.0)

#: Probabilities are clamped to `[eps, 1 - eps]` (eps at least this, and at least the dtype's
#: machine epsilon so `1 - eps` stays below 1) before taking logs.
PROBABILITY_EPS = 1e-6

#: Within this distance of 1/2 the continuous Bernoulli's normaliser and mean, whose closed
#: forms are 0/0 at lam = 1/2, are computed from their Taylor series instead.
CB_TAYLOR_RADIUS = 1e-2

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_LOG_2 = math.log(2.0)
_SCALES = ("fixed", "modality", "feature")


def _per_sample(elementwise: Tensor) -> Tensor:
    """Mean over each sample's elements: `[B, ...] -> [B]` (nats per element)."""
    return elementwise.reshape(elementwise.shape[0], -1).mean(dim=1)


def _same_shape(reconstruction: Tensor, target: Tensor) -> Tensor:
    """The target as the reconstruction's dtype, after checking the shapes agree (broadcasting
    `[B, 1]` against `[B]` would silently compute the wrong loss)."""
    if reconstruction.shape != target.shape:
        raise InputError(f"reconstruction {tuple(reconstruction.shape)} and target {tuple(target.shape)} "
                         "must have the same shape")
    if reconstruction.dim() == 0:
        raise InputError("reconstruction and target need a batch dimension")
    return target.to(reconstruction.dtype)


def _clamp_probability(p: Tensor) -> Tensor:
    eps = max(PROBABILITY_EPS, torch.finfo(p.dtype).eps)
    return p.clamp(eps, 1.0 - eps)


class Likelihood(nn.Module):
    """p(x | h) of one modality's features."""

    def link(self, output: Tensor) -> Tensor:
        """The decoder head's raw output -> the reconstruction: the distribution's mean (or
        location) in the features' own units."""
        raise NotImplementedError

    def nll(self, reconstruction: Tensor, target: Tensor) -> Tensor:
        """Per-sample negative log-likelihood [B]: nats per element, i.e. the mean over the
        sample's elements of -log p(target | reconstruction), so a modality's weight does
        not grow with its size."""
        raise NotImplementedError

    def forward(self, reconstruction: Tensor, target: Tensor) -> Tensor:
        """Same as `nll`."""
        return self.nll(reconstruction, target)


class _LocationScale(Likelihood):
    """Shared part of the Gaussian and the Laplace: the head predicts standardised values,
    `link(y) = mean + std * y`, and the scale is `std * exp(log_scale)`.

    `scale`: "fixed" (log_scale = 0, no parameter: the scale is the features' std),
    "modality" (one learned scalar) or "feature" (one learned value per element of the
    per-sample feature `shape`). Learned log-scales start at 0 and are clamped to
    `LOG_SCALE_BOUNDS` when used. `shape`, when given, is also checked against the statistics.
    """

    def __init__(self, mean: Tensor | float | None = None, std: Tensor | float | None = None,
                 scale: str = "fixed", shape: tuple[int, ...] | None = None):
        super().__init__()
        name = type(self).__name__
        mean = torch.as_tensor(0.0 if mean is None else mean)
        std = torch.as_tensor(1.0 if std is None else std)
        mean = mean if mean.is_floating_point() else mean.float()
        std = std if std.is_floating_point() else std.float()
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
            raise ConfigError(f"{name}: mean and std must be finite with std > 0")
        if scale not in _SCALES:
            raise ConfigError(f"{name}: scale must be one of {list(_SCALES)}, got '{scale}'")
        if scale == "feature" and shape is None:
            raise ConfigError(f"{name}: scale='feature' needs the per-sample feature shape")
        if shape is not None:
            shape = tuple(int(s) for s in shape)
            try:
                fits = torch.broadcast_shapes(mean.shape, std.shape, shape) == shape
            except RuntimeError:
                fits = False
            if not fits:
                raise ConfigError(f"{name}: mean {tuple(mean.shape)} and std {tuple(std.shape)} do not "
                                  f"broadcast to the feature shape {shape}")
        self.scale = scale
        self.register_buffer("mean", mean.detach().clone())
        self.register_buffer("std", std.detach().clone())
        if scale == "fixed":
            self.log_scale = None
        else:
            self.log_scale = nn.Parameter(torch.zeros(() if scale == "modality" else shape))

    def link(self, output: Tensor) -> Tensor:
        """`mean + std * output`: the location in the features' own units."""
        return self.mean.to(output.dtype) + self.std.to(output.dtype) * output

    def log_scale_total(self, like: Tensor) -> Tensor:
        """`log(std) + clamp(log_scale)`: the log of the distribution's scale, in `like`'s dtype."""
        log_std = torch.log(self.std.to(like.dtype))
        if self.log_scale is None:
            return log_std
        return log_std + self.log_scale.to(like.dtype).clamp(*LOG_SCALE_BOUNDS)

    def scale_value(self) -> Tensor:
        """The scale (sigma or b) in the features' units, for logging."""
        return torch.exp(self.log_scale_total(self.std)).detach()

    def extra_repr(self) -> str:
        return f"scale={self.scale!r}"


class Gaussian(_LocationScale):
    """Normal `N(x; mu, sigma^2)` with `mu = mean + std * y` and `sigma = std * exp(log_scale)`.

    Per element `-log p = 0.5 * ((x - mu) / sigma)^2 + log(sigma) + 0.5 * log(2 pi)`, exactly
    the Normal log-density. With `scale="fixed"` (log_scale = 0) this is
    `0.5 * z^2 + log(std) + 0.5 * log(2 pi)`, `z = (x - mu) / std`: half the squared error in
    standardised units plus a constant. A learned scale lets the model weigh a modality by how
    well it can reconstruct it (the optimum is sigma^2 = mean squared residual).
    """

    def nll(self, reconstruction: Tensor, target: Tensor) -> Tensor:
        target = _same_shape(reconstruction, target)
        log_sigma = self.log_scale_total(reconstruction)
        z = (target - reconstruction) * torch.exp(-log_sigma)
        return _per_sample(0.5 * z.square() + log_sigma + _HALF_LOG_2PI)


class Laplace(_LocationScale):
    """Laplace `(1 / 2b) exp(-|x - mu| / b)` with `mu = mean + std * y`, `b = std * exp(log_scale)`.

    Per element `-log p = |x - mu| / b + log(2 b)`: the absolute error in standardised units
    plus a constant with `scale="fixed"`; more robust to outliers than the Gaussian.
    """

    def nll(self, reconstruction: Tensor, target: Tensor) -> Tensor:
        target = _same_shape(reconstruction, target)
        log_b = self.log_scale_total(reconstruction)
        return _per_sample((target - reconstruction).abs() * torch.exp(-log_b) + log_b + _LOG_2)


class Bernoulli(Likelihood):
    """Bernoulli for features in [0, 1] (pixels): `link = sigmoid` gives the probability p and
    per element `-log p = -(x log p + (1 - x) log(1 - p))`, the binary cross-entropy; targets
    may be any value in [0, 1] ("BCE on grey pixels", not a normalised density on [0, 1]).

    p is clamped to `[eps, 1 - eps]` (`PROBABILITY_EPS`) so the loss and its gradient stay finite
    when the head saturates. Feature statistics do not apply.
    """

    def link(self, output: Tensor) -> Tensor:
        return torch.sigmoid(output)

    def nll(self, reconstruction: Tensor, target: Tensor) -> Tensor:
        target = _same_shape(reconstruction, target)
        p = _clamp_probability(reconstruction)
        return _per_sample(-(target * torch.log(p) + (1.0 - target) * torch.log1p(-p)))


def _cb_atanh(lam: Tensor) -> Tensor:
    """`atanh(1 - 2 lam)`, accurate over (0, 1): `1 - 2 lam` is exact for lam in [1/4, 3/4],
    elsewhere `0.5 * (log(1 - lam) - log(lam))` avoids the rounding of `1 - 2 lam` near +-1."""
    u = 1.0 - 2.0 * lam
    return torch.where(u.abs() < 0.5, torch.atanh(u), 0.5 * (torch.log1p(-lam) - torch.log(lam)))


def cb_log_normalizer(lam: Tensor) -> Tensor:
    """`log C(lam)` of the continuous Bernoulli, `C(lam) = 2 atanh(1 - 2 lam) / (1 - 2 lam)`
    (`C(1/2) = 2`). Within `CB_TAYLOR_RADIUS` of 1/2, with `d = lam - 1/2`:
    `log C = log 2 + (4/3) d^2 + (104/45) d^4 + (16064/2835) d^6 + O(d^8)`
    (from `atanh(u)/u = 1 + u^2/3 + u^4/5 + u^6/7 + ...`, `u = -2d`; so
    `C = 2 + (8/3) d^2 + (32/5) d^4 + ...`). lam must lie in (0, 1)."""
    d = lam - 0.5
    taylor = d.abs() < CB_TAYLOR_RADIUS
    # The unused branch must stay finite, or its NaN gradient leaks through torch.where.
    safe = torch.where(taylor, torch.full_like(lam, 0.25), lam)
    exact = torch.log(2.0 * _cb_atanh(safe) / (1.0 - 2.0 * safe))
    d2 = d.square()
    series = _LOG_2 + d2 * (4.0 / 3.0 + d2 * (104.0 / 45.0 + d2 * (16064.0 / 2835.0)))
    return torch.where(taylor, series, exact)


class ContinuousBernoulli(Likelihood):
    """Continuous Bernoulli (Loaiza-Ganem & Cunningham, 2019): the normalised density on [0, 1]
    `p(x; lam) = C(lam) lam^x (1 - lam)^(1 - x)`, with
    `log C(lam) = log(2 atanh(1 - 2 lam) / (1 - 2 lam))` and `log C(1/2) = log 2`
    (`cb_log_normalizer`, a Taylor series near 1/2). Per element
    `-log p = -(log C(lam) + x log lam + (1 - x) log(1 - lam))`: the BCE minus the normaliser,
    which makes it a proper likelihood for grey values.

    `link = sigmoid` returns lam, the distribution's *parameter*, which is not its mean: the
    reconstruction is lam (kept simple); `mean_of(lam)` gives E[x]. lam is clamped to
    `[eps, 1 - eps]` as in `Bernoulli`. Feature statistics do not apply.
    """

    def link(self, output: Tensor) -> Tensor:
        return torch.sigmoid(output)

    def nll(self, reconstruction: Tensor, target: Tensor) -> Tensor:
        target = _same_shape(reconstruction, target)
        lam = _clamp_probability(reconstruction)
        log_p = cb_log_normalizer(lam) + target * torch.log(lam) + (1.0 - target) * torch.log1p(-lam)
        return _per_sample(-log_p)

    @staticmethod
    def mean_of(lam: Tensor) -> Tensor:
        """`E[x] = lam / (2 lam - 1) + 1 / (2 atanh(1 - 2 lam))`, 1/2 at lam = 1/2. Within
        `CB_TAYLOR_RADIUS` of 1/2, with `d = lam - 1/2`:
        `E[x] = 1/2 + d/3 + (16/45) d^3 + (704/945) d^5 + O(d^7)`."""
        lam = _clamp_probability(lam)
        d = lam - 0.5
        taylor = d.abs() < CB_TAYLOR_RADIUS
        safe = torch.where(taylor, torch.full_like(lam, 0.25), lam)
        exact = safe / (2.0 * safe - 1.0) + 1.0 / (2.0 * _cb_atanh(safe))
        d2 = d.square()
        series = 0.5 + d * (1.0 / 3.0 + d2 * (16.0 / 45.0 + d2 * (704.0 / 945.0)))
        return torch.where(taylor, series, exact)


class Categorical(Likelihood):
    """Categorical over the last axis of logits `[B, L, V]` (tokens) or `[B, V]`, with integer
    targets `[B, L]` / `[B]`: per position `-log softmax(logits)[target]`, the cross-entropy,
    averaged over positions. `link` is the identity (the reconstruction holds logits).

    Positions whose target is `ignore_index` (e.g. padding; None: none) are left out of the
    mean; a sample with every position ignored gets nll 0.
    """

    def __init__(self, ignore_index: int | None = None):
        super().__init__()
        self.ignore_index = ignore_index

    def link(self, output: Tensor) -> Tensor:
        return output

    def nll(self, reconstruction: Tensor, target: Tensor) -> Tensor:
        if reconstruction.dim() < 2 or reconstruction.shape[:-1] != target.shape:
            raise InputError(f"logits {tuple(reconstruction.shape)} must be targets {tuple(target.shape)} "
                             "plus a class axis")
        target = target.long()
        keep = torch.ones_like(target, dtype=torch.bool)
        if self.ignore_index is not None:
            keep = target != self.ignore_index
            target = torch.where(keep, target, 0)
        log_p = reconstruction.log_softmax(dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
        batch = target.shape[0]
        keep = keep.reshape(batch, -1)
        loss = torch.where(keep, -log_p.reshape(batch, -1), 0.0).sum(dim=1)
        return loss / keep.sum(dim=1).clamp_min(1).to(loss.dtype)

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}"


#: The likelihoods a continuous modality can choose by name (discrete modalities use
#: `Categorical`).
LIKELIHOODS: dict[str, str] = {
    "gaussian": "Normal, sigma = the features' std (fixed): half the standardised squared error",
    "gaussian_modality": "Normal with one learned sigma for the modality",
    "gaussian_feature": "Normal with a learned sigma per feature element",
    "laplace": "Laplace, b = the features' std (fixed): the standardised absolute error",
    "bernoulli": "Bernoulli on features in [0, 1] (pixels): binary cross-entropy",
    "continuous_bernoulli": "continuous Bernoulli on [0, 1]: BCE plus its normaliser, a proper density",
}


def build_likelihood(name: str, mean: Tensor | None, std: Tensor | None, shape: tuple[int, ...],
                     owner: str) -> Likelihood:
    """The likelihood `name` (a key of `LIKELIHOODS`) for features of per-sample `shape` with
    statistics `mean`/`std` (None: 0 and 1; ignored by the Bernoullis). `owner` names the
    modality in errors."""
    shape = tuple(int(s) for s in shape)
    try:
        if name == "gaussian":
            return Gaussian(mean, std, scale="fixed", shape=shape)
        if name == "gaussian_modality":
            return Gaussian(mean, std, scale="modality", shape=shape)
        if name == "gaussian_feature":
            return Gaussian(mean, std, scale="feature", shape=shape)
        if name == "laplace":
            return Laplace(mean, std, scale="fixed", shape=shape)
    except ConfigError as error:
        raise ConfigError(f"{owner}: {error}") from error
    if name == "bernoulli":
        return Bernoulli()
    if name == "continuous_bernoulli":
        return ContinuousBernoulli()
    raise ConfigError(f"{owner}: unknown likelihood '{name}'; choose one of {sorted(LIKELIHOODS)}")
