"""Diagonal Gaussian posteriors and the closed forms the variational models rest on."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

#: Log-variances are clamped to this range so exp() stays finite early in training.
LOGVAR_BOUNDS = (-10.0, 10.0)


def kl_to_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """Per-sample `KL(N(mu, diag(exp(logvar))) || N(0, I))`, summed over latent dimensions:
    `0.5 * sum(exp(logvar) + mu^2 - 1 - logvar)`."""
    return 0.5 * (logvar.exp() + mu.pow(2) - 1.0 - logvar).sum(dim=-1)


def product_of_experts(mus: Tensor, logvars: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Product of the Gaussian experts selected by `mask`, times a N(0, I) prior expert.

    `mus`, `logvars`: `[B, M, D]`; `mask`: `[B, M]`. The product of Gaussians is Gaussian with
    precision `T = 1 + sum_m T_m` and mean `sum_m T_m mu_m / T` (the prior contributes
    precision 1 and mean 0), so a sample with no expert falls back to the prior.
    """
    precision = torch.where(mask.unsqueeze(-1), torch.exp(-logvars), 0.0)
    total = 1.0 + precision.sum(dim=1)
    mu = (precision * torch.where(mask.unsqueeze(-1), mus, 0.0)).sum(dim=1) / total
    return mu, -torch.log(total)


@dataclass
class Posterior:
    """A diagonal Gaussian `q(z|x)` and its (possibly estimated) per-sample KL to the prior.

    For mixtures the fusion sets `kl` to the value its objective uses (see each fusion);
    `mu` is the representation used as features and as the code at evaluation time.
    """

    mu: Tensor
    logvar: Tensor
    kl: Tensor

    @classmethod
    def gaussian(cls, mu: Tensor, logvar: Tensor) -> Posterior:
        return cls(mu, logvar, kl_to_standard_normal(mu, logvar))

    def sample(self) -> Tensor:
        """Reparameterised draw `mu + sigma * eps`, differentiable in `mu` and `logvar`."""
        return self.mu + torch.exp(0.5 * self.logvar) * torch.randn_like(self.mu)
