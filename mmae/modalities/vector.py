"""Fixed-length vectors: tabular numbers or pre-computed features, with MLP encoder/decoder."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from mmae.modalities.base import Modality, mlp


class VectorModality(Modality):
    """Vectors `[dim]`, reconstructed with a mean squared error."""

    kind = "vector"

    def __init__(self, dim: int = 32, hidden: Sequence[int] = (128,)):
        super().__init__((dim,))
        self.hidden = [int(h) for h in hidden]

    def build_encoder(self, embed_dim: int) -> nn.Module:
        return mlp([self.shape[0], *self.hidden, embed_dim])

    def build_decoder(self, hidden_dim: int) -> nn.Module:
        return mlp([hidden_dim, *self.hidden[::-1], self.shape[0]])

    def spec(self) -> dict:
        return {"kind": self.kind, "dim": self.shape[0], "hidden": self.hidden}
