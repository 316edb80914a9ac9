"""What a trained multimodal autoencoder is used for, one call each: denoise the inputs, impute
missing modalities from the present ones, generate new samples (VAEs).

Inputs are raw, as a dataset yields them (or features with `preprocessed=True`); outputs are
features, the form the model reconstructs: pixels for images (normalised if the modality
normalises), log-mel for audio (`AudioModality.to_waveform` turns it into sound), token ids
for text, standardised numbers and category indices for tables.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from mmae.core.errors import InputError
from mmae.core.model import MultimodalAutoencoder, evaluating


def _prepare(model: MultimodalAutoencoder, inputs: Mapping[str, Tensor],
             present: Mapping[str, Tensor] | None,
             preprocessed: bool, raw: Mapping[str, Tensor] | None = None,
             ) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor] | None]:
    unknown = sorted(set(inputs) - set(model.modalities))
    if unknown:
        raise InputError(f"unknown modalities {unknown}; the model has {sorted(model.modalities)}")
    if not inputs:
        raise InputError(f"no input: give at least one of {sorted(model.modalities)}")
    features = dict(inputs) if preprocessed else model.encoder.preprocess(inputs)
    raw = raw if preprocessed else dict(inputs)  # what encoders of raw inputs (speech backbones) read
    batch = len(next(iter(features.values())))
    device = next(iter(features.values())).device
    masks = {name: (present[name] if present is not None and name in present
                    else torch.ones(batch, dtype=torch.bool, device=device)) for name in features}
    return features, masks, raw


@torch.no_grad()
def denoise(model: MultimodalAutoencoder, inputs: Mapping[str, Tensor],
            present: Mapping[str, Tensor] | None = None, preprocessed: bool = False,
            raw: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
    """The given modalities cleaned: each one's reconstruction from every present input (the
    deterministic code; a VAE's posterior mean). Samples where a modality is missing get its
    reconstruction from the others. With `preprocessed=True`, `raw` gives the raw inputs of
    modalities encoded from them (speech backbones)."""
    features, masks, raw = _prepare(model, inputs, present, preprocessed, raw)
    with evaluating(model):
        reconstructions = model(features, masks, raw=raw).reconstructions
    return {name: model.modalities[name].as_features(reconstructions[name]) for name in features}


@torch.no_grad()
def impute(model: MultimodalAutoencoder, inputs: Mapping[str, Tensor],
           present: Mapping[str, Tensor] | None = None, preprocessed: bool = False,
           raw: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
    """Every modality of the model for every sample: present values as given (as features),
    missing ones (not in `inputs`, or masked out by `present`) reconstructed from the present
    ones. `raw`: as for `denoise`."""
    features, masks, raw = _prepare(model, inputs, present, preprocessed, raw)
    with evaluating(model):
        reconstructions = model(features, masks, raw=raw).reconstructions
    completed = {}
    for name, modality in model.modalities.items():
        filled = modality.as_features(reconstructions[name])
        if name in features:
            keep = masks[name].view(-1, *[1] * (filled.dim() - 1))
            filled = torch.where(keep, features[name].to(filled.dtype), filled)
        completed[name] = filled
    return completed


@torch.no_grad()
def generate(model: MultimodalAutoencoder, num_samples: int,
             generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """New multimodal samples from a VAE's prior, every modality as features."""
    with evaluating(model):
        decoded = model.generate(num_samples, generator=generator)
    return {name: model.modalities[name].as_features(x) for name, x in decoded.items()}
