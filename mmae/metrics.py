"""Reconstruction metrics that measure the missing-modality ability.

For every target modality: the error from all inputs, from every leave-one-out subset (one
modality removed; removing the target itself is cross-modal imputation), and the error of
predicting the training mean (the baseline a useful model must beat).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

from mmae.model import MultimodalAutoencoder

Sums = dict[str, tuple[Tensor, Tensor]]


def _add(sums: Sums, key: str, per_sample: Tensor, mask: Tensor) -> None:
    sums[key] = (torch.where(mask, per_sample, 0.0).sum(), mask.sum())


@torch.no_grad()
def reconstruction_sums(model: MultimodalAutoencoder, inputs: Mapping[str, Tensor],
                        present: Mapping[str, Tensor],
                        means: Mapping[str, Tensor] | None = None) -> Sums:
    """Per metric name, the (sum of per-sample errors, number of samples) over one batch.

    Returning sums rather than means lets the caller weight batches correctly.
    """
    modalities = model.modalities
    sums: Sums = {}
    output = model(inputs, present)
    for name, modality in modalities.items():
        per_sample = modality.reconstruction_loss(output.reconstructions[name], inputs[name])
        _add(sums, f"{name}/recon_all", per_sample, present[name])
        if means is not None:
            baseline = means[name].expand_as(inputs[name])
            _add(sums, f"{name}/baseline_mean", modality.reconstruction_loss(baseline, inputs[name]),
                 present[name])
    if len(modalities) < 2:
        return sums
    for removed in modalities:
        reduced = {n: p if n != removed else torch.zeros_like(p) for n, p in present.items()}
        rows = torch.stack(list(reduced.values()), dim=1).any(dim=1)
        if not bool(rows.any()):
            continue
        sub_inputs = {n: x[rows] for n, x in inputs.items() if n != removed}
        sub_present = {n: reduced[n][rows] for n in sub_inputs}
        recon = model(sub_inputs, sub_present).reconstructions
        for name, modality in modalities.items():
            per_sample = modality.reconstruction_loss(recon[name], inputs[name][rows])
            _add(sums, f"{name}/recon_without_{removed}", per_sample, present[name][rows])
    return sums


@torch.no_grad()
def estimate_means(batches: Iterable[Mapping], modalities: Iterable[str],
                   max_batches: int | None = None) -> dict[str, Tensor]:
    """Element-wise mean of each modality over the samples where it is present."""
    names = list(modalities)
    totals: dict[str, Tensor] = {}
    counts = dict.fromkeys(names, 0)
    for i, batch in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        for name in names:
            mask = batch["present"][name]
            x = batch[name][mask].double().sum(dim=0)
            totals[name] = x if name not in totals else totals[name] + x
            counts[name] += int(mask.sum())
    return {n: (totals[n] / max(counts[n], 1)).float() for n in names if n in totals}


def imputation_summary(metrics: Mapping[str, float], modalities: Iterable[str]) -> dict[str, dict]:
    """Per modality: error from all inputs, from the others alone, the mean baseline, and the
    relative gain of the cross-modal reconstruction over that baseline (1 - ratio)."""
    summary = {}
    for name in modalities:
        row = {
            "recon_all": metrics.get(f"val/{name}/recon_all"),
            "from_others": metrics.get(f"val/{name}/recon_without_{name}"),
            "baseline_mean": metrics.get(f"val/{name}/baseline_mean"),
        }
        if row["from_others"] is not None and row["baseline_mean"]:
            row["gain_over_baseline"] = 1.0 - row["from_others"] / row["baseline_mean"]
        summary[name] = row
    return summary
