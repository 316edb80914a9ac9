"""Fusions: per-modality embeddings plus presence masks -> one shared latent code.

Every fusion accepts any non-empty subset of its modalities, per sample. A modality can be
missing for some samples (its mask is False there) or for the whole batch (its key is absent
from `embeddings`); either way its values must not influence the result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from mmae.errors import ConfigError
from mmae.modalities.base import mlp


class Fusion(nn.Module):
    """Base class: holds the modality order and the embedding/latent sizes."""

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

    def forward(self, embeddings: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> Tensor:
        raise NotImplementedError


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


class ConcatFusion(Fusion):
    """Concatenate embeddings, a learned placeholder standing in for each missing one, then MLP."""

    def __init__(self, modalities: Sequence[str], embed_dim: int, latent_dim: int,
                 hidden_dim: int = 256):
        super().__init__(modalities, embed_dim, latent_dim)
        self.placeholders = nn.ParameterDict(
            {m: nn.Parameter(torch.zeros(embed_dim)) for m in modalities}
        )
        self.mlp = mlp([embed_dim * len(modalities), hidden_dim, latent_dim])

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
