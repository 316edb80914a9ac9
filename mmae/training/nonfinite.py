"""Finding a loss or gradient that went NaN or infinite before it reaches the weights.

`training.on_nonfinite` chooses what happens then: `raise` stops training with a message
naming the step, the batch and the loss term or parameter (the checkpoints on disk are
those of the last good epoch), `skip` drops that optimizer step and counts it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from mmae.core.errors import ConfigError

POLICIES = ("raise", "skip")


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ConfigError(f"training.on_nonfinite must be one of {', '.join(POLICIES)}, got '{policy}'")
    return policy


def is_finite(value: Tensor) -> bool:
    """One host sync for the whole tensor."""
    return bool(torch.isfinite(value).all())


def nonfinite_terms(logged: Mapping[str, Tensor]) -> list[str]:
    """`name=value` of every non-finite logged loss, per-modality parts before whole terms
    (the most specific culprit first) and the total last."""
    bad = [(name, value) for name, value in logged.items() if not is_finite(value)]
    bad.sort(key=lambda item: (item[0] == "loss", item[0].startswith("loss/")))
    return [f"{name}={value.item() if value.numel() == 1 else 'non-finite'}" for name, value in bad]


def nonfinite_gradients(parameters: Iterable[tuple[str, nn.Parameter]]) -> list[str]:
    """Names of the parameters whose gradient holds a NaN or an infinity.

    The common case (all finite) costs one fused norm and one host sync; a norm that is not
    finite is confirmed element-wise (huge but finite gradients can overflow a norm)."""
    named = [(name, p.grad) for name, p in parameters if p.grad is not None]
    if not named:
        return []
    norms = torch._foreach_norm([grad for _, grad in named])
    if is_finite(torch.stack(norms)):
        return []
    return [name for (name, grad), norm in zip(named, norms, strict=True)
            if not is_finite(norm) and not is_finite(grad)]


def first_few(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
