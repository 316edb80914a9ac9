"""Loss terms. Each term is a named object; the objective sums them with their weights.

Reconstruction losses are masked per sample and per modality: a modality contributes the mean
of its per-sample loss over the samples where it is present in the clean batch, and nothing
where it is missing (so zero-filled values never reach the loss).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from mmae.errors import ConfigError
from mmae.modalities.base import Modality
from mmae.model import AutoencoderOutput, zero_missing


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of `values[mask]`, or 0 when nothing is masked in (no NaN, gradient still defined)."""
    total = torch.where(mask, values, 0.0).sum()
    return total / mask.sum().clamp_min(1)


@dataclass
class Step:
    """Everything a loss term may need about one training or validation step."""

    modalities: Mapping[str, Modality]
    output: AutoencoderOutput
    targets: Mapping[str, Tensor]
    present: Mapping[str, Tensor]


@dataclass
class TermValue:
    """A loss term's value, and named parts worth logging (e.g. one per modality)."""

    value: Tensor
    parts: dict[str, Tensor] = field(default_factory=dict)


class ReconstructionLoss:
    """Sum over modalities of `weight_m * masked_mean_b(loss_m(x_hat_b, x_b))`.

    Every modality present in the clean sample is reconstructed, including those the
    corruption dropped from the encoder's input.
    """

    def __init__(self, weights: Mapping[str, float] | None = None):
        self.weights = dict(weights or {})
        if any(w < 0 for w in self.weights.values()):
            raise ConfigError(f"ReconstructionLoss: weights must be >= 0, got {self.weights}")

    def __call__(self, step: Step) -> TermValue:
        unknown = set(self.weights) - set(step.modalities)
        if unknown:
            raise ConfigError(
                f"ReconstructionLoss: weights name unknown modalities {sorted(unknown)}; "
                f"expected some of {list(step.modalities)}"
            )
        parts = {}
        total = None
        for name, modality in step.modalities.items():
            if name not in step.targets:
                continue
            mask = step.present[name]
            # Zero the missing targets too: a NaN there would poison the gradient through 0 * NaN.
            target = zero_missing(step.targets[name], mask)
            per_sample = modality.reconstruction_loss(step.output.reconstructions[name], target)
            parts[name] = masked_mean(per_sample, mask)
            weighted = self.weights.get(name, 1.0) * parts[name]
            total = weighted if total is None else total + weighted
        return TermValue(total, parts)


@dataclass
class LossOutput:
    """The objective's total and every term and part by name, ready for logging."""

    total: Tensor
    logged: dict[str, Tensor]


class Objective:
    """A weighted sum of named loss terms."""

    def __init__(self, terms: Mapping[str, object], weights: Mapping[str, float] | None = None):
        if not terms:
            raise ConfigError("Objective: needs at least one loss term")
        self.terms = dict(terms)
        self.weights = dict(weights or {})
        unknown = set(self.weights) - set(self.terms)
        if unknown:
            raise ConfigError(
                f"Objective: weights name unknown terms {sorted(unknown)}; terms are {list(self.terms)}"
            )

    def __call__(self, step: Step) -> LossOutput:
        total = None
        logged: dict[str, Tensor] = {}
        for name, term in self.terms.items():
            result = term(step)
            logged[f"loss/{name}"] = result.value
            logged.update({f"{name}/{part}": v for part, v in result.parts.items()})
            weighted = self.weights.get(name, 1.0) * result.value
            total = weighted if total is None else total + weighted
        logged["loss"] = total
        return LossOutput(total, logged)
