"""A Gaussian mixture fitted post hoc on training codes: a sampler for models without a prior.

Decoding draws from the prior N(0, I) of a VAE lands in the "holes" between the aggregate
posterior's clusters, and a deterministic autoencoder has no prior at all. A mixture fitted
on the codes of the training set (Ghosh et al., 2020, "From variational to deterministic
autoencoders") samples where the codes are, for either kind of model.

EM in float64 on the CPU, from k-means++ seeds drawn with a seeded generator, so the same codes
and seed always give the same mixture. Full covariances get a ridge of `ridge` times the codes'
mean variance (a code of 8-32 units has too few samples per component for a bare estimate, and
binary or k-sparse codes are degenerate without one).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from mmae.core.errors import DataError, InputError

Covariance = Literal["full", "diagonal"]


class GaussianMixture:
    """`weights` `[K]`, `means` `[K, D]`, `covariances` `[K, D, D]` (full) or `[K, D]` (diagonal)."""

    def __init__(self, weights: Tensor, means: Tensor, covariances: Tensor):
        self.weights, self.means, self.covariances = (t.double().cpu() for t in (weights, means, covariances))
        self.full = self.covariances.dim() == 3
        # Full: the Cholesky factors; diagonal: the standard deviations.
        self._scale = torch.linalg.cholesky(self.covariances) if self.full else self.covariances.sqrt()

    @property
    def components(self) -> int:
        return self.weights.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @classmethod
    def fit(cls, x: Tensor, components: int = 10, covariance: Covariance = "full", seed: int = 0,
            iterations: int = 300, tolerance: float = 1e-7, ridge: float = 1e-3) -> GaussianMixture:
        """EM from k-means++ seeds, until the mean log-likelihood gains less than `tolerance`."""
        if covariance not in ("full", "diagonal"):
            raise InputError(f"GaussianMixture: covariance must be 'full' or 'diagonal', got {covariance!r}")
        x = x.detach().double().cpu().flatten(1)
        if components < 1 or x.shape[0] < components:
            raise DataError(f"GaussianMixture: {components} components need at least as many samples, "
                            f"got {x.shape[0]}")
        floor = ridge * float(x.var(0, unbiased=False).mean()) + 1e-12
        generator = torch.Generator().manual_seed(seed)
        responsibilities = _one_hot(_kmeans(x, _kmeans_pp(x, components, generator)), components)
        mixture, previous = _m_step(x, responsibilities, covariance == "full", floor), -math.inf
        for _ in range(iterations):
            log_joint = mixture._log_joint(x)
            likelihood = float(torch.logsumexp(log_joint, 1).mean())
            if likelihood - previous < tolerance:
                break
            previous = likelihood
            mixture = _m_step(x, torch.softmax(log_joint, 1), covariance == "full", floor)
        return mixture

    def _log_joint(self, x: Tensor) -> Tensor:
        """`[N, K]`: log weight_k + log N(x | mean_k, covariance_k)."""
        centred = x.unsqueeze(1) - self.means  # [N, K, D]
        if self.full:
            solved = torch.linalg.solve_triangular(self._scale, centred.transpose(0, 1).transpose(1, 2),
                                                   upper=False)  # [K, D, N]
            mahalanobis = solved.pow(2).sum(1).T
            log_det = 2 * self._scale.diagonal(dim1=1, dim2=2).log().sum(1)
        else:
            mahalanobis = (centred / self._scale).pow(2).sum(2)
            log_det = 2 * self._scale.log().sum(1)
        return self.weights.log() - 0.5 * (self.dim * math.log(2 * math.pi) + log_det + mahalanobis)

    def log_prob(self, x: Tensor) -> Tensor:
        """The log density of each row of `x` `[N, D]` under the mixture, `[N]` (float64)."""
        return torch.logsumexp(self._log_joint(self._check(x)), dim=1)

    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """`[num_samples, D]` float64 draws; a seeded (CPU) `generator` makes them reproducible."""
        which = torch.multinomial(self.weights, num_samples, replacement=True, generator=generator)
        noise = torch.randn(num_samples, self.dim, generator=generator, dtype=torch.float64)
        if self.full:
            return self.means[which] + (self._scale[which] @ noise.unsqueeze(2)).squeeze(2)
        return self.means[which] + self._scale[which] * noise

    def _check(self, x: Tensor) -> Tensor:
        x = x.detach().double().cpu()
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise InputError(f"GaussianMixture: expected points of shape [N, {self.dim}], "
                             f"got {list(x.shape)}")
        return x

    def __repr__(self) -> str:
        kind = "full" if self.full else "diagonal"
        return f"GaussianMixture(components={self.components}, dim={self.dim}, covariance={kind})"


def _kmeans_pp(x: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """k-means++ seeds: each next centre drawn with probability proportional to the squared
    distance to the nearest centre so far (uniformly where every point is a centre already)."""
    centres = [x[int(torch.randint(len(x), (1,), generator=generator))]]
    nearest = (x - centres[0]).pow(2).sum(1)
    for _ in range(k - 1):
        weights = nearest if float(nearest.sum()) > 0 else torch.ones_like(nearest)
        centres.append(x[int(torch.multinomial(weights, 1, generator=generator))])
        nearest = torch.minimum(nearest, (x - centres[-1]).pow(2).sum(1))
    return torch.stack(centres)


def _kmeans(x: Tensor, centres: Tensor, iterations: int = 50) -> Tensor:
    """Lloyd's iterations from `centres`; each point's cluster. An emptied cluster keeps its centre."""
    assignment = torch.cdist(x, centres).argmin(1)
    for _ in range(iterations):
        counts = torch.bincount(assignment, minlength=len(centres)).unsqueeze(1)
        sums = torch.zeros_like(centres).index_add_(0, assignment, x)
        centres = torch.where(counts > 0, sums / counts.clamp_min(1), centres)
        updated = torch.cdist(x, centres).argmin(1)
        if torch.equal(updated, assignment):
            break
        assignment = updated
    return assignment


def _one_hot(assignment: Tensor, k: int) -> Tensor:
    return torch.nn.functional.one_hot(assignment, k).double()


def _m_step(x: Tensor, responsibilities: Tensor, full: bool, floor: float) -> GaussianMixture:
    """The mixture that maximises the expected log-likelihood under `responsibilities` `[N, K]`."""
    mass = responsibilities.sum(0) + 1e-12  # [K]; an empty component keeps a tiny weight
    means = (responsibilities.T @ x) / mass.unsqueeze(1)
    centred = x.unsqueeze(1) - means  # [N, K, D]
    weighted = centred * responsibilities.unsqueeze(2)
    eye = torch.eye(x.shape[1], dtype=x.dtype)
    if full:
        covariances = torch.einsum("nkd,nke->kde", weighted, centred) / mass.view(-1, 1, 1) + floor * eye
    else:
        covariances = (weighted * centred).sum(0) / mass.unsqueeze(1) + floor
    return GaussianMixture(mass / mass.sum(), means, covariances)
