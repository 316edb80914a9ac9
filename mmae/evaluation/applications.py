"""What a trained multimodal autoencoder is used for, one call each: denoise the inputs, impute
missing modalities from the present ones, generate new samples (from a VAE's prior, or from a
mixture that `fit_sampler` fits on the training codes of any model).

Inputs are raw, as a dataset yields them (or features with `preprocessed=True`); outputs are
features, the form the model reconstructs: pixels for images (normalised if the modality
normalises), log-mel for audio (`AudioModality.to_waveform` turns it into sound), token ids
for text, standardised numbers and category indices for tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

from mmae.core.errors import InputError
from mmae.core.model import MultimodalAutoencoder, evaluating
from mmae.evaluation.codes import encode_batches
from mmae.evaluation.sampler import Covariance, GaussianMixture


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


def fit_sampler(model: MultimodalAutoencoder, batches_or_codes: Iterable | Tensor, components: int = 10,
                seed: int = 0, covariance: Covariance = "full") -> GaussianMixture:
    """A Gaussian mixture of `components` fitted on the codes of `batches_or_codes` (the
    training batches, e.g. a DataLoader, or codes `[N, latent_dim]` already computed), for
    `generate(model, n, sampler=...)`: it samples where the training codes are, which the prior
    of a VAE does not, and gives a deterministic autoencoder a sampler at all."""
    if isinstance(batches_or_codes, Tensor):
        codes = batches_or_codes
    else:
        codes = encode_batches(model, batches_or_codes).codes
    if codes.dim() != 2 or codes.shape[1] != model.latent_dim:
        raise InputError(f"fit_sampler: expected codes of shape [N, {model.latent_dim}] (the model's "
                         f"latent_dim), got {list(codes.shape)}")
    return GaussianMixture.fit(codes, components, covariance, seed=seed)


@torch.no_grad()
def generate(model: MultimodalAutoencoder, num_samples: int, sampler: str | GaussianMixture = "prior",
             generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """New multimodal samples, every modality as features, decoded from draws of `sampler`:
    "prior" (a VAE's N(0, I)) or a `GaussianMixture` from `fit_sampler` (any model; pass a
    CPU `generator` to seed it)."""
    with evaluating(model):
        if isinstance(sampler, GaussianMixture):
            if sampler.dim != model.latent_dim:
                raise InputError(f"generate: the sampler draws codes of {sampler.dim} units, the model's "
                                 f"latent_dim is {model.latent_dim}: fit it with "
                                 "mmae.fit_sampler(model, train_loader)")
            parameter = next(model.parameters())
            z = sampler.sample(num_samples, generator).to(parameter.device, parameter.dtype)
            # The generator seeds the private latents' prior too, where it can draw on z's device.
            same = generator is not None and generator.device == z.device
            decoded = model.decoder(z, generator=generator if same else None)
        elif sampler == "prior":
            decoded = model.generate(num_samples, generator=generator)
        elif sampler == "gmm":
            raise InputError("generate(sampler='gmm') needs a fitted mixture: call "
                             "sampler = mmae.fit_sampler(model, train_loader) first and pass "
                             "generate(model, n, sampler=sampler)")
        else:
            raise InputError(f"generate: sampler must be 'prior' or a GaussianMixture from "
                             f"mmae.fit_sampler, got {sampler!r}")
    return {name: model.modalities[name].as_features(x) for name, x in decoded.items()}
