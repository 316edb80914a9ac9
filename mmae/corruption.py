"""Training-time corruptions for denoising. The loss is always taken against the clean input.

A corruption maps `(inputs, present)` to a corrupted `(inputs, present)`; the clean batch is
kept by the caller as the reconstruction target.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from mmae.errors import ConfigError

Batch = tuple[dict[str, Tensor], dict[str, Tensor]]


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
                 generator: torch.Generator | None = None) -> Batch:
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
                 generator: torch.Generator | None = None) -> Batch:
        return dict(inputs), dict(present)
