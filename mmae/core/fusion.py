"""Fusions: per-modality embeddings plus presence masks -> one shared latent code.

Every fusion accepts any non-empty subset of its modalities, per sample. A modality can be
missing for some samples (its mask is False there) or for the whole batch (its key is absent
from `embeddings`); either way its values must not influence the result.

Deterministic fusions (`mean`, `concat`, `attention`) return a code `[B, latent_dim]`.
Expert fusions (`poe`, `moe`, `mopoe`) give each modality a Gaussian expert and return a
`Posterior`; they need a variational model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from mmae.core.errors import ConfigError
from mmae.core.gaussian import LOGVAR_BOUNDS, Posterior, kl_to_standard_normal, product_of_experts
from mmae.core.nn import mlp
from mmae.core.registry import FUSIONS


class Fusion(nn.Module):
    """Base class: holds the modality order and the embedding/latent sizes."""

    variational = False

    def __init__(self, modalities: Sequence[str], embed_dim: int, latent_dim: int):
        super().__init__()
        if not modalities:
            raise ConfigError(f"{type(self).__name__}: needs at least one modality")
        if embed_dim <= 0 or latent_dim <= 0:
            raise ConfigError(
                f"{type(self).__name__}: embed_dim and latent_dim must be positive, "
                f"got embed_dim={embed_dim}, latent_dim={latent_dim}"
            )
        self.modalities = list(modalities)
        self.embed_dim = embed_dim
        self.latent_dim = latent_dim

    def config(self) -> dict:
        """Keyword arguments beyond (modalities, embed_dim, latent_dim), for export."""
        return {}

    def forward(self, embeddings: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> Tensor:
        raise NotImplementedError


@FUSIONS.register("mean")
class MeanFusion(Fusion):
    """Masked mean of per-modality linear projections into the latent space."""

    def __init__(self, modalities: Sequence[str], embed_dim: int, latent_dim: int):
        super().__init__(modalities, embed_dim, latent_dim)
        self.projections = nn.ModuleDict({m: nn.Linear(embed_dim, latent_dim) for m in modalities})

    def forward(self, embeddings: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> Tensor:
        total, count = None, None
        for name, embedding in embeddings.items():
            mask = present[name].unsqueeze(1)
            projected = torch.where(mask, self.projections[name](embedding), 0.0)
            total = projected if total is None else total + projected
            count = mask.float() if count is None else count + mask.float()
        return total / count.clamp_min(1.0)


@FUSIONS.register("concat")
class ConcatFusion(Fusion):
    """Concatenate embeddings, a learned placeholder standing in for each missing one, then MLP."""

    def __init__(self, modalities: Sequence[str], embed_dim: int, latent_dim: int,
                 hidden_dim: int = 256):
        super().__init__(modalities, embed_dim, latent_dim)
        self.placeholders = nn.ParameterDict(
            {m: nn.Parameter(torch.zeros(embed_dim)) for m in modalities}
        )
        self.mlp = mlp([embed_dim * len(modalities), hidden_dim, latent_dim])
        self.hidden_dim = hidden_dim

    def config(self) -> dict:
        return {"hidden_dim": self.hidden_dim}

    def forward(self, embeddings: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> Tensor:
        batch = next(iter(embeddings.values()))
        parts = []
        for name in self.modalities:
            placeholder = self.placeholders[name].to(batch.dtype).expand(batch.shape[0], -1)
            if name in embeddings:
                parts.append(torch.where(present[name].unsqueeze(1), embeddings[name], placeholder))
            else:
                parts.append(placeholder)
        return self.mlp(torch.cat(parts, dim=1))


@FUSIONS.register("attention")
class AttentionFusion(Fusion):
    """A small transformer over one token per modality plus a summary token.

    Each token is the modality's embedding plus a learned modality-type embedding; missing
    modalities are excluded as keys by the padding mask, so only present ones are attended
    to. The summary token's output is projected to the latent code.
    """

    def __init__(self, modalities: Sequence[str], embed_dim: int, latent_dim: int,
                 num_heads: int = 4, num_layers: int = 2, dropout: float = 0.0):
        super().__init__(modalities, embed_dim, latent_dim)
        if embed_dim % num_heads:
            raise ConfigError(f"AttentionFusion: embed_dim ({embed_dim}) must be divisible by "
                              f"num_heads ({num_heads})")
        self.type_embeddings = nn.Parameter(torch.randn(len(modalities), embed_dim) * 0.02)
        self.summary_token = nn.Parameter(torch.randn(embed_dim) * 0.02)
        layer = nn.TransformerEncoderLayer(embed_dim, num_heads, dim_feedforward=2 * embed_dim,
                                           dropout=dropout, batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(embed_dim)
        self.out = nn.Linear(embed_dim, latent_dim)
        self.options = {"num_heads": num_heads, "num_layers": num_layers, "dropout": dropout}

    def config(self) -> dict:
        return dict(self.options)

    def forward(self, embeddings: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> Tensor:
        first = next(iter(embeddings.values()))
        batch = first.shape[0]
        tokens = [self.summary_token.expand(batch, -1)]
        padding = [torch.zeros(batch, dtype=torch.bool, device=first.device)]  # summary: never padded
        for i, name in enumerate(self.modalities):
            mask = present[name] if name in embeddings else padding[0]
            embedding = embeddings.get(name, first)  # masked out below when absent
            tokens.append(torch.where(mask.unsqueeze(1), embedding, 0.0) + self.type_embeddings[i])
            padding.append(~mask)
        hidden = self.transformer(torch.stack(tokens, dim=1),
                                  src_key_padding_mask=torch.stack(padding, dim=1))
        return self.out(self.norm(hidden[:, 0]))


class ExpertFusion(Fusion):
    """Base of the variational fusions: one Gaussian expert `q_m(z | x_m)` per modality."""

    variational = True

    def __init__(self, modalities: Sequence[str], embed_dim: int, latent_dim: int):
        super().__init__(modalities, embed_dim, latent_dim)
        self.experts = nn.ModuleDict({m: nn.Linear(embed_dim, 2 * latent_dim) for m in modalities})

    def experts_of(self, embeddings: Mapping[str, Tensor],
                   present: Mapping[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Stacked expert means and log-variances `[B, M, D]` and their mask `[B, M]`."""
        first = next(iter(embeddings.values()))
        zeros = first.new_zeros(first.shape[0], 2 * self.latent_dim)
        params, masks = [], []
        for name in self.modalities:
            if name in embeddings:
                params.append(self.experts[name](embeddings[name]))
                masks.append(present[name])
            else:
                params.append(zeros)
                masks.append(torch.zeros(first.shape[0], dtype=torch.bool, device=first.device))
        mus, logvars = torch.stack(params, dim=1).chunk(2, dim=-1)
        return mus, logvars.clamp(*LOGVAR_BOUNDS), torch.stack(masks, dim=1)

    def forward(self, embeddings: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> Posterior:
        raise NotImplementedError


@FUSIONS.register("poe")
class PoEFusion(ExpertFusion):
    """Product of the present experts and a N(0, I) prior expert (precision-weighted means)."""

    def forward(self, embeddings: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> Posterior:
        mus, logvars, mask = self.experts_of(embeddings, present)
        return Posterior.gaussian(*product_of_experts(mus, logvars, mask))


@FUSIONS.register("moe")
class MoEFusion(ExpertFusion):
    """Mixture of the present experts with equal weights `1 / |present|`.

    Training draws each sample's code from one expert chosen by those weights (an unbiased
    sample of the mixture) and uses `sum_m w_m KL(q_m || p)`, an upper bound of the
    mixture's KL by convexity. At evaluation the code is the mixture mean, with the
    moment-matched variance.
    """

    @staticmethod
    def mixture_weights(mask: Tensor) -> Tensor:
        weights = mask.float()
        return weights / weights.sum(dim=1, keepdim=True).clamp_min(1.0)

    def forward(self, embeddings: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> Posterior:
        mus, logvars, mask = self.experts_of(embeddings, present)
        weights = self.mixture_weights(mask)
        kl = (weights * kl_to_standard_normal(mus, logvars)).sum(dim=1)
        if self.training:
            chosen = torch.multinomial(weights, 1).view(-1, 1, 1).expand(-1, 1, mus.shape[-1])
            return Posterior(mus.gather(1, chosen).squeeze(1), logvars.gather(1, chosen).squeeze(1), kl)
        w = weights.unsqueeze(-1)
        mu = (w * mus).sum(dim=1)
        second_moment = (w * (logvars.exp() + mus.pow(2))).sum(dim=1)
        return Posterior(mu, torch.log((second_moment - mu.pow(2)).clamp_min(1e-8)), kl)


@FUSIONS.register("mopoe")
class MoPoEFusion(ExpertFusion):
    """Mixture, with equal weights, of the products of experts of every non-empty subset of
    the present modalities.

    The 2^M subsets are never enumerated: training draws one subset per sample, uniformly
    among the non-empty subsets of its present modalities, and uses that subset's product
    (a sample of the mixture) and KL (an unbiased estimate of the weighted KL). At
    evaluation the code is the product of all present experts.
    """

    @staticmethod
    def sample_subsets(mask: Tensor) -> Tensor:
        """A uniformly drawn non-empty subset of each row's present modalities."""
        subsets = mask & (torch.rand(mask.shape, device=mask.device) < 0.5)
        redraw = mask.any(dim=1) & ~subsets.any(dim=1)
        while bool(redraw.any()):  # rejection: uniform over subsets, conditioned on non-empty
            fresh = mask & (torch.rand(mask.shape, device=mask.device) < 0.5)
            subsets = torch.where(redraw.unsqueeze(1), fresh, subsets)
            redraw = mask.any(dim=1) & ~subsets.any(dim=1)
        return subsets

    def forward(self, embeddings: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> Posterior:
        mus, logvars, mask = self.experts_of(embeddings, present)
        chosen = self.sample_subsets(mask) if self.training else mask
        return Posterior.gaussian(*product_of_experts(mus, logvars, chosen))
