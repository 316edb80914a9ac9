"""The multimodal autoencoder: per-modality encoders -> fusion -> shared latent -> joint decoder.

Plain `nn.Module`s only: nothing here knows about Lightning, Hydra or logging, so the encoder
can be exported and used on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mmae.errors import ConfigError, InputError
from mmae.fusion import Fusion
from mmae.modalities.base import Modality, mlp

FusionFactory = Callable[[Sequence[str], int, int], Fusion]


@dataclass
class AutoencoderOutput:
    """What a forward pass returns: the shared code and a reconstruction of every modality."""

    latent: Tensor
    reconstructions: dict[str, Tensor]


def _presence(inputs: Mapping[str, Tensor], present: Mapping[str, Tensor] | None,
              modalities: Mapping[str, Modality]) -> dict[str, Tensor]:
    """Validate a batch and return one boolean mask `[B]` per given modality.

    A modality absent from `inputs` is missing for the whole batch; `present=None` means every
    given modality is present for every sample.
    """
    if not inputs:
        raise InputError(f"no modality given; expected a non-empty subset of {list(modalities)}")
    for name, x in inputs.items():
        if name not in modalities:
            raise InputError(
                f"unknown modality '{name}'; this model was built for {list(modalities)}"
            )
        modalities[name].check_batch(name, x)
    sizes = {name: x.shape[0] for name, x in inputs.items()}
    batch_size = next(iter(sizes.values()))
    if any(n != batch_size for n in sizes.values()):
        raise InputError(f"modalities disagree on the batch size: {sizes}")

    present = dict(present or {})
    masks = {}
    for name, x in inputs.items():
        mask = present.pop(name, None)
        if mask is None:
            mask = torch.ones(batch_size, dtype=torch.bool, device=x.device)
        elif mask.dtype != torch.bool or tuple(mask.shape) != (batch_size,):
            raise InputError(
                f"present['{name}']: expected a bool tensor of shape [{batch_size}], "
                f"got {mask.dtype} of shape {list(mask.shape)}"
            )
        masks[name] = mask
    for name, mask in present.items():  # masks for modalities without a tensor
        if name not in modalities:
            raise InputError(f"present names unknown modality '{name}'; expected {list(modalities)}")
        if bool(mask.any()):
            raise InputError(f"present['{name}'] marks samples present but no '{name}' tensor was given")

    any_present = torch.stack(list(masks.values()), dim=1).any(dim=1)
    if not bool(any_present.all()):
        empty = torch.nonzero(~any_present).flatten().tolist()
        raise InputError(
            f"sample(s) {empty[:10]}{' ...' if len(empty) > 10 else ''} of the batch have every "
            f"modality missing; each sample needs at least one of {list(inputs)}"
        )
    return masks


def zero_missing(x: Tensor, mask: Tensor) -> Tensor:
    """Zero the samples whose modality is missing, so their values (even NaN) cannot leak."""
    return x.masked_fill(~mask.view(-1, *([1] * (x.dim() - 1))), 0.0)


class MultimodalEncoder(nn.Module):
    """Per-modality encoders plus a fusion: any non-empty subset of modalities -> latent code."""

    def __init__(self, modalities: Mapping[str, Modality], fusion: FusionFactory,
                 embed_dim: int, latent_dim: int):
        super().__init__()
        if not modalities:
            raise ConfigError("MultimodalEncoder: at least one modality is required")
        self.modalities = dict(modalities)
        self.latent_dim = latent_dim
        self.encoders = nn.ModuleDict({n: m.build_encoder(embed_dim) for n, m in modalities.items()})
        self.fusion = fusion(list(modalities), embed_dim, latent_dim)

    def forward(self, inputs: Mapping[str, Tensor],
                present: Mapping[str, Tensor] | None = None) -> Tensor:
        masks = _presence(inputs, present, self.modalities)
        embeddings = {
            name: self.encoders[name](zero_missing(x, masks[name])) for name, x in inputs.items()
        }
        return self.fusion(embeddings, masks)


class JointDecoder(nn.Module):
    """A shared trunk from the latent code, then one head per modality."""

    def __init__(self, modalities: Mapping[str, Modality], latent_dim: int, hidden_dim: int):
        super().__init__()
        self.trunk = mlp([latent_dim, hidden_dim, hidden_dim], activate_last=True)
        self.heads = nn.ModuleDict({n: m.build_decoder(hidden_dim) for n, m in modalities.items()})

    def forward(self, latent: Tensor) -> dict[str, Tensor]:
        hidden = self.trunk(latent)
        return {name: head(hidden) for name, head in self.heads.items()}


class MultimodalAutoencoder(nn.Module):
    """Encoder (per-modality encoders + fusion) and joint decoder reconstructing every modality.

    Undercomplete by default: `latent_dim` is meant to be smaller than the inputs.
    """

    def __init__(self, modalities: Mapping[str, Modality], fusion: FusionFactory,
                 latent_dim: int = 16, embed_dim: int = 128, decoder_hidden: int = 256):
        super().__init__()
        if latent_dim <= 0 or embed_dim <= 0 or decoder_hidden <= 0:
            raise ConfigError(
                "MultimodalAutoencoder: latent_dim, embed_dim and decoder_hidden must be positive, "
                f"got {latent_dim}, {embed_dim}, {decoder_hidden}"
            )
        self.modalities = dict(modalities)
        self.encoder = MultimodalEncoder(modalities, fusion, embed_dim, latent_dim)
        self.decoder = JointDecoder(modalities, latent_dim, decoder_hidden)

    def forward(self, inputs: Mapping[str, Tensor],
                present: Mapping[str, Tensor] | None = None) -> AutoencoderOutput:
        latent = self.encoder(inputs, present)
        return AutoencoderOutput(latent=latent, reconstructions=self.decoder(latent))
