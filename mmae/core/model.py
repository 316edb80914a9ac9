"""The multimodal autoencoder: per-modality encoders -> fusion -> shared latent -> joint decoder.

Plain `nn.Module`s only: nothing here knows about Lightning, Hydra or logging, so the encoder
can be exported and used on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from mmae.core.errors import ConfigError, InputError
from mmae.core.fusion import Fusion
from mmae.core.gaussian import LOGVAR_BOUNDS, Posterior
from mmae.core.modality import Modality
from mmae.core.nn import mlp
from mmae.core.registry import FUSIONS

FusionFactory = Callable[[Sequence[str], int, int], Fusion]
LatentActivation = Literal["sigmoid", "tanh", "relu"]
LATENT_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}


def check_encoder_choices(fusion: type[Fusion], variational: bool, latent_activation: str | None) -> None:
    """Raise `ConfigError` for the fusion / code choices an encoder cannot combine, saying what
    to choose instead. `MultimodalEncoder` checks them when it is built, and `mmae.config.schema` as
    soon as the config is composed."""
    if fusion.variational and not variational:
        *others, last = [name for name in FUSIONS if not FUSIONS[name].variational]
        raise ConfigError(f"fusion {fusion.__name__} is variational: it needs model=vae; a deterministic "
                          f"model (model=ae) takes fusion={', '.join(others)} or {last}")
    if latent_activation is not None and latent_activation not in LATENT_ACTIVATIONS:
        raise ConfigError(f"latent_activation must be null or one of {sorted(LATENT_ACTIVATIONS)}, "
                          f"got '{latent_activation}'")
    if latent_activation is not None and variational:
        raise ConfigError("latent_activation shapes a deterministic code; model=vae has a Gaussian "
                          "code: set model.latent_activation=null")


@dataclass
class Encoding:
    """The encoder's result: the deterministic code (the posterior mean for a VAE) and, for a
    variational encoder, the posterior it came from."""

    code: Tensor
    posterior: Posterior | None = None


@dataclass
class AutoencoderOutput:
    """What a forward pass returns.

    `latent` is what the decoder consumed: a reparameterised posterior sample while training
    a VAE, else the code. `code` is the deterministic representation (used by sparsity and
    contractive penalties, and as features).
    """

    latent: Tensor
    reconstructions: dict[str, Tensor]
    code: Tensor
    posterior: Posterior | None = None


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
        elif mask.dtype != torch.bool or tuple(mask.shape) != (batch_size,) or mask.device != x.device:
            raise InputError(
                f"present['{name}']: expected a bool tensor of shape [{batch_size}] on {x.device}, "
                f"got {mask.dtype} of shape {list(mask.shape)} on {mask.device}"
            )
        masks[name] = mask
    for name, mask in present.items():  # masks for modalities without a tensor
        if name not in modalities:
            raise InputError(f"present names unknown modality '{name}'; expected {list(modalities)}")
        if not torch.compiler.is_compiling() and bool(mask.any()):
            raise InputError(f"present['{name}'] marks samples present but no '{name}' tensor was given")
    if torch.compiler.is_compiling():
        return masks  # value checks need the data; traced graphs (compile, ONNX) skip them

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
    """Per-modality encoders plus a fusion: any non-empty subset of modalities -> latent code.

    Variational encoders produce a Gaussian posterior: directly from an expert fusion (poe,
    moe, mopoe), or through a Gaussian head on the code of a deterministic fusion.
    """

    def __init__(self, modalities: Mapping[str, Modality], fusion: FusionFactory,
                 embed_dim: int, latent_dim: int, variational: bool = False,
                 latent_activation: LatentActivation | None = None):
        super().__init__()
        if not modalities:
            raise ConfigError("MultimodalEncoder: at least one modality is required")
        self.modalities = dict(modalities)
        self.embed_dim = embed_dim
        self.latent_dim = latent_dim
        self.variational = variational
        self.preprocessors = nn.ModuleDict(
            {n: p for n, m in modalities.items() if (p := m.build_preprocessor()) is not None})
        self.standardizers = nn.ModuleDict(
            {n: s for n, m in modalities.items() if (s := m.build_standardizer()) is not None})
        self.encoders = nn.ModuleDict({n: m.build_encoder(embed_dim) for n, m in modalities.items()})
        self.fusion = fusion(list(modalities), embed_dim, latent_dim)
        check_encoder_choices(type(self.fusion), variational, latent_activation)
        self.posterior_head = (nn.Linear(latent_dim, 2 * latent_dim)
                               if variational and not self.fusion.variational else None)
        self.latent_activation = latent_activation

    def preprocess(self, raw: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Raw inputs (waveforms, pixels, ...) -> the features the encoders take and the decoder
        reconstructs (log-mel, pixels, ...), in the features' own units."""
        features = {}
        for name, x in raw.items():
            if name not in self.modalities:
                raise InputError(
                    f"unknown modality '{name}'; this model was built for {list(self.modalities)}")
            self.modalities[name].check_raw(name, x)
            features[name] = self.preprocessors[name](x) if name in self.preprocessors else x
        return features

    def _standardize(self, name: str, x: Tensor) -> Tensor:
        # Missing samples are zeroed after this: they sit at the training mean.
        return self.standardizers[name](x) if name in self.standardizers else x

    def encoder_input(self, name: str, features: Tensor, raw: Mapping[str, Tensor] | None) -> Tensor:
        """What modality `name`'s encoder reads: its standardised features, or its raw input
        for a modality that `encodes_raw` (a speech backbone reads the waveform)."""
        modality = self.modalities[name]
        if not modality.encodes_raw:
            return self._standardize(name, features)
        if raw is None or name not in raw:
            raise InputError(f"modality '{name}' is encoded from its raw input (its backbone reads "
                             f"{list(modality.raw_shape)}-shaped raw samples), which was not given: pass "
                             "raw={'" + name + "': ...} (or raw inputs, not preprocessed ones)")
        modality.check_raw(name, raw[name])
        return raw[name]

    def forward(self, inputs: Mapping[str, Tensor], present: Mapping[str, Tensor] | None = None,
                raw: Mapping[str, Tensor] | None = None,
                cached: Mapping[str, Tensor] | None = None) -> Encoding:
        """Encode features (see `preprocess`) of any non-empty subset of the modalities.

        `raw` holds the raw inputs of modalities that `encodes_raw`; `cached` the output of a
        frozen backbone's stem (`BackboneEncoder.stem`) per modality, computed earlier for
        these samples (`mmae.data.stem_cache`), which then runs only the encoder's head.
        """
        masks = _presence(inputs, present, self.modalities)
        cached = cached or {}
        embeddings = {}
        for name, x in inputs.items():
            if name in cached:
                embeddings[name] = self.encoders[name].head(zero_missing(cached[name], masks[name]))
            else:
                x = self.encoder_input(name, x, raw)
                embeddings[name] = self.encoders[name](zero_missing(x, masks[name]))
        fused = self.fusion(embeddings, masks)
        if isinstance(fused, Posterior):
            return Encoding(fused.mu, fused)
        if self.posterior_head is not None:
            mu, logvar = self.posterior_head(fused).chunk(2, dim=-1)
            posterior = Posterior.gaussian(mu, logvar.clamp(*LOGVAR_BOUNDS))
            return Encoding(mu, posterior)
        if self.latent_activation is not None:
            fused = LATENT_ACTIVATIONS[self.latent_activation](fused)
        return Encoding(fused)


class JointDecoder(nn.Module):
    """A shared trunk from the latent code, then one head per modality, whose output each
    modality's likelihood turns into a reconstruction in the features' units (`link`); the
    likelihoods also score reconstructions (`nll`) for the training objective."""

    def __init__(self, modalities: Mapping[str, Modality], latent_dim: int, hidden_dim: int):
        super().__init__()
        self.trunk = mlp([latent_dim, hidden_dim, hidden_dim], activate_last=True)
        self.heads = nn.ModuleDict({n: m.build_decoder(hidden_dim) for n, m in modalities.items()})
        self.likelihoods = nn.ModuleDict({n: m.build_likelihood() for n, m in modalities.items()})

    def forward(self, latent: Tensor) -> dict[str, Tensor]:
        hidden = self.trunk(latent)
        return {name: self.likelihoods[name].link(head(hidden)) for name, head in self.heads.items()}


class MultimodalAutoencoder(nn.Module):
    """Encoder (per-modality encoders + fusion) and joint decoder reconstructing every modality.

    Undercomplete by default (`latent_dim` smaller than the inputs). `variational=True` makes
    it a multimodal VAE: the encoder yields a Gaussian posterior, training decodes a
    reparameterised sample, evaluation decodes the posterior mean.
    """

    def __init__(self, modalities: Mapping[str, Modality], fusion: FusionFactory,
                 latent_dim: int = 16, embed_dim: int = 128, decoder_hidden: int = 256,
                 variational: bool = False, latent_activation: LatentActivation | None = None):
        super().__init__()
        if latent_dim <= 0 or embed_dim <= 0 or decoder_hidden <= 0:
            raise ConfigError(
                "MultimodalAutoencoder: latent_dim, embed_dim and decoder_hidden must be positive, "
                f"got {latent_dim}, {embed_dim}, {decoder_hidden}"
            )
        self.modalities = dict(modalities)
        self.latent_dim = latent_dim
        self.encoder = MultimodalEncoder(modalities, fusion, embed_dim, latent_dim, variational,
                                         latent_activation)
        self.decoder = JointDecoder(modalities, latent_dim, decoder_hidden)
        self.decoder_hidden = decoder_hidden

    @property
    def variational(self) -> bool:
        return self.encoder.variational

    def forward(self, inputs: Mapping[str, Tensor], present: Mapping[str, Tensor] | None = None,
                sample: bool | None = None, raw: Mapping[str, Tensor] | None = None,
                cached: Mapping[str, Tensor] | None = None) -> AutoencoderOutput:
        """Encode any non-empty subset of modalities and decode all of them.

        `sample` (VAE only) decodes a posterior sample rather than the mean; it defaults to
        sampling in training mode only. Decoding a subset's posterior is cross-modal generation.
        `raw` and `cached`: see `MultimodalEncoder.forward`.
        """
        encoding = self.encoder(inputs, present, raw=raw, cached=cached)
        posterior = encoding.posterior
        draw = self.training if sample is None else sample
        latent = posterior.sample() if posterior is not None and draw else encoding.code
        return AutoencoderOutput(latent, self.decoder(latent), encoding.code, posterior)

    @torch.no_grad()
    def generate(self, num_samples: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """New multimodal samples decoded from the prior N(0, I) (variational models only)."""
        if not self.variational:
            raise ConfigError("generate() samples the prior of a VAE; this model is deterministic "
                              "(use model=vae)")
        device = next(self.parameters()).device
        z = torch.randn(num_samples, self.latent_dim, generator=generator, device=device)
        return self.decoder(z)


def parameter_counts(model: MultimodalAutoencoder) -> dict[str, tuple[int, int]]:
    """Parameters `(encoder side, decoder side)` per modality, for the fusion (with the
    posterior head) and the decoder trunk, and in total."""
    def count(*modules: nn.Module | None) -> int:
        return sum(p.numel() for m in modules if m is not None for p in m.parameters())

    encoder, decoder = model.encoder, model.decoder
    rows = {name: (count(encoder.preprocessors[name] if name in encoder.preprocessors else None,  # noqa: SIM401
                         encoder.encoders[name]),
                   count(decoder.heads[name], decoder.likelihoods[name]))
            for name in model.modalities}
    rows["fusion / trunk"] = (count(encoder.fusion, encoder.posterior_head), count(decoder.trunk))
    rows["total"] = (count(encoder), count(decoder))
    return rows


@contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode and no gradients for the block; the module's own mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)
