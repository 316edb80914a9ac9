"""Codes of a chosen shape: squashed by an activation, k-sparse (top-k) or binary (a ±1 hash
trained straight-through)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

LatentActivation = Literal["sigmoid", "tanh", "relu", "binary"]


def binary_code(x: Tensor) -> Tensor:
    """Codes of ±1 (a semantic hash), trained with a straight-through estimator: the forward
    pass is the sign of tanh(x), the backward pass tanh's gradient."""
    soft = torch.tanh(x)
    return soft + (torch.where(soft >= 0, 1.0, -1.0) - soft).detach()


def keep_top_k(code: Tensor, k: int) -> Tensor:
    """A k-sparse code (Makhzani & Frey, 2013): the k largest units of each sample kept, the
    others zeroed; gradients reach only the kept units."""
    values, indices = code.topk(k, dim=-1)
    return torch.zeros_like(code).scatter(-1, indices, values)


LATENT_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu, "binary": binary_code}
