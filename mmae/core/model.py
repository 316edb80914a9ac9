"""The multimodal autoencoder: per-modality encoders -> fusion -> shared latent -> joint decoder.

With `private_dim > 0` each modality also gets a private latent beside the shared one (MMVAE+,
Palumbo, Daunhawer & Vogt, ICLR 2023): modality m is decoded from `[z, w_m]`, the shared code
`z` the fusion gives and `w_m`, read from m's own embedding alone. Where m is missing from the
input (or dropped by modality dropout) `w_m` comes from its prior, so only `z` can carry what
the other modalities say about m: training with modality dropout teaches the shared latent to
hold what the modalities share, and the private latents what only one of them holds.

Plain `nn.Module`s only: nothing here knows about Lightning, Hydra or logging, so the encoder
can be exported and used on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from mmae.core.code_shapes import LATENT_ACTIVATIONS, LatentActivation, keep_top_k
from mmae.core.errors import ConfigError, InputError
from mmae.core.fusion import Fusion
from mmae.core.gaussian import LOGVAR_BOUNDS, Posterior
from mmae.core.modality import Modality
from mmae.core.nn import mlp
from mmae.core.presence import presence_masks, readable_masks, zero_missing
from mmae.core.registry import FUSIONS

FusionFactory = Callable[[Sequence[str], int, int], Fusion]
#: What stands in for a missing modality's private latent: a draw from its N(0, I) prior (VAEs)
#: or zeros (deterministic models).
PrivatePrior = Literal["sample", "zero"]


def check_encoder_choices(fusion: type[Fusion], variational: bool, latent_activation: str | None,
                          top_k: int | None = None, latent_dim: int | None = None,
                          private_dim: int = 0) -> None:
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
    if top_k is not None:
        if variational:
            raise ConfigError("top_k keeps the k largest units of a deterministic code; model=vae has a "
                              "Gaussian code: set model.top_k=null")
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise ConfigError(f"top_k must be a positive integer or null, got {top_k!r}")
        if latent_dim is not None and top_k > latent_dim:
            raise ConfigError(f"top_k={top_k} keeps more units than the code has "
                              f"(latent_dim={latent_dim}): choose top_k <= {latent_dim}")
    if not isinstance(private_dim, int) or isinstance(private_dim, bool) or private_dim < 0:
        raise ConfigError(f"private_dim must be an integer >= 0 (0: no private latents), got {private_dim!r}")


@dataclass
class Encoding:
    """The encoder's result: the deterministic shared code (the posterior mean for a VAE) and,
    for a variational encoder, the posterior it came from.

    With private latents, `private` holds each given modality's private code `[B, private_dim]`
    (a VAE's private posterior mean) and `private_posteriors` (VAEs) its posterior; where the
    modality is missing, the code is 0 and the posterior the prior N(0, I) itself, so it adds
    no KL. `present` holds the masks the encoder used, one per given modality.

    When asked for (`unimodal_present`), `unimodal` holds the shared code each modality gives
    on its own `[B, latent_dim]`, valid where `unimodal_present` is True (what an alignment
    term compares across modalities).
    """

    code: Tensor
    posterior: Posterior | None = None
    private: dict[str, Tensor] = field(default_factory=dict)
    private_posteriors: dict[str, Posterior] = field(default_factory=dict)
    present: dict[str, Tensor] = field(default_factory=dict)
    unimodal: dict[str, Tensor] = field(default_factory=dict)
    unimodal_present: dict[str, Tensor] = field(default_factory=dict)

    def with_private(self, modalities: Sequence[str]) -> Tensor:
        """`[B, latent_dim + len(modalities) * private_dim]`: the shared code, then each of
        `modalities`' private code in that order, zeros for a missing modality."""
        if not self.private:
            return self.code
        zeros = torch.zeros_like(next(iter(self.private.values())))
        return torch.cat([self.code, *(self.private.get(name, zeros) for name in modalities)], dim=1)


@dataclass
class AutoencoderOutput:
    """What a forward pass returns.

    `latent` is what the decoder consumed: a reparameterised posterior sample while training
    a VAE, else the code. `code` is the deterministic shared representation (used by sparsity
    and contractive penalties, and as features).

    With private latents: `private_latent` is the `w_m` each modality was decoded from (all
    of the model's modalities; a prior draw or zeros where m was missing), `private` and
    `private_posteriors` the encoder's (see `Encoding`). `unimodal` and `unimodal_present`:
    each modality's code on its own, where asked for (see `Encoding`).
    """

    latent: Tensor
    reconstructions: dict[str, Tensor]
    code: Tensor
    posterior: Posterior | None = None
    private_latent: dict[str, Tensor] = field(default_factory=dict)
    private: dict[str, Tensor] = field(default_factory=dict)
    private_posteriors: dict[str, Posterior] = field(default_factory=dict)
    unimodal: dict[str, Tensor] = field(default_factory=dict)
    unimodal_present: dict[str, Tensor] = field(default_factory=dict)


class MultimodalEncoder(nn.Module):
    """Per-modality encoders plus a fusion: any non-empty subset of modalities -> latent code.

    Variational encoders produce a Gaussian posterior: directly from an expert fusion (poe,
    moe, mopoe), or through a Gaussian head on the code of a deterministic fusion.

    `private_dim > 0` adds a private head (a Linear) on each modality's embedding, before the
    fusion: a private code of `private_dim` units (VAEs: the mean and log-variance of a
    Gaussian private posterior). `latent_activation` and `top_k` shape the shared code only.
    """

    def __init__(self, modalities: Mapping[str, Modality], fusion: FusionFactory,
                 embed_dim: int, latent_dim: int, variational: bool = False,
                 latent_activation: LatentActivation | None = None, top_k: int | None = None,
                 private_dim: int = 0):
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
        check_encoder_choices(type(self.fusion), variational, latent_activation, top_k, latent_dim,
                              private_dim)
        self.posterior_head = (nn.Linear(latent_dim, 2 * latent_dim)
                               if variational and not self.fusion.variational else None)
        self.latent_activation = latent_activation
        self.top_k = top_k
        self.private_dim = private_dim
        # None without private latents: the state dict is then exactly that of older models.
        self.private_heads = (nn.ModuleDict({n: nn.Linear(embed_dim, (1 + variational) * private_dim)
                                             for n in modalities}) if private_dim else None)

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
                cached: Mapping[str, Tensor] | None = None,
                unimodal_present: Mapping[str, Tensor] | None = None) -> Encoding:
        """Encode features (see `preprocess`) of any non-empty subset of the modalities.

        `raw` holds the raw inputs of modalities that `encodes_raw`; `cached` the output of a
        frozen backbone's stem (`BackboneEncoder.stem`) per modality, computed earlier for
        these samples (`mmae.data.stem_cache`), which then runs only the encoder's head.

        `unimodal_present` asks for each modality's own code (`Encoding.unimodal`) where it is
        True, which may include samples that `present` leaves out of the fusion: modality
        dropout hides a modality from the fused code, yet its input is still there to align.
        """
        masks = presence_masks(inputs, present, self.modalities)
        readable = readable_masks(masks, unimodal_present)
        cached = cached or {}
        embeddings = {}
        for name, x in inputs.items():
            if name in cached:
                embeddings[name] = self.encoders[name].head(zero_missing(cached[name], readable[name]))
            else:
                x = self.encoder_input(name, x, raw)
                embeddings[name] = self.encoders[name](zero_missing(x, readable[name]))
        code, posterior = self._shared(self.fusion(embeddings, masks))
        private, private_posteriors = self._private(embeddings, masks)
        unimodal = self.unimodal_codes(embeddings, readable) if unimodal_present is not None else {}
        return Encoding(code, posterior, private, private_posteriors, masks, unimodal,
                        readable if unimodal_present is not None else {})

    def unimodal_codes(self, embeddings: Mapping[str, Tensor],
                       masks: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The shared code each modality gives alone: the fusion of its embedding by itself
        (zeros where `masks` says it is missing)."""
        codes = {}
        for name, embedding in embeddings.items():
            code, _ = self._shared(self.fusion({name: embedding}, {name: masks[name]}))
            codes[name] = torch.where(masks[name].unsqueeze(1), code, 0.0)
        return codes

    def _shared(self, fused: Tensor | Posterior) -> tuple[Tensor, Posterior | None]:
        """The fusion's output -> the shared code and, for a VAE, its posterior."""
        if isinstance(fused, Posterior):
            return fused.mu, fused
        if self.posterior_head is not None:
            mu, logvar = self.posterior_head(fused).chunk(2, dim=-1)
            return mu, Posterior.gaussian(mu, logvar.clamp(*LOGVAR_BOUNDS))
        if self.latent_activation is not None:
            fused = LATENT_ACTIVATIONS[self.latent_activation](fused)
        if self.top_k is not None:
            fused = keep_top_k(fused, self.top_k)
        return fused, None

    def _private(self, embeddings: Mapping[str, Tensor],
                 masks: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Posterior]]:
        """Each given modality's private code (and VAE posterior), from its embedding alone.
        A missing sample's head output is replaced by zeros: code 0, and for a VAE mean 0 and
        log-variance 0, the prior N(0, I), whose KL is exactly 0."""
        if self.private_heads is None:
            return {}, {}
        codes, posteriors = {}, {}
        for name, embedding in embeddings.items():
            out = torch.where(masks[name].unsqueeze(1), self.private_heads[name](embedding), 0.0)
            if not self.variational:
                codes[name] = out
                continue
            mu, logvar = out.chunk(2, dim=-1)
            codes[name] = mu
            posteriors[name] = Posterior.gaussian(mu, logvar.clamp(*LOGVAR_BOUNDS))
        return codes, posteriors


class JointDecoder(nn.Module):
    """A shared trunk from the latent code, then one head per modality, whose output each
    modality's likelihood turns into a reconstruction in the features' units (`link`); the
    likelihoods also score reconstructions (`nll`) for the training objective.

    With `private_dim > 0` the trunk's first layer takes `latent_dim + private_dim` inputs and
    the trunk runs once per modality m, on `[z, w_m]` (one batched call over all modalities).
    Concatenating rather than adding a projection of `w_m` to the trunk's output lets the shared
    and private codes interact through the whole trunk, as MMVAE+'s decoders read `[z, w_m]`;
    the trunk is a small MLP, so running it M times costs little beside the heads.
    `private_prior` is what a private latent not given is drawn as: `sample` (VAEs: N(0, I)) or
    `zero` (deterministic models: a fixed stand-in the decoder learns to read as "unknown"
    under modality dropout; a training mean would need running statistics in the weights).
    """

    def __init__(self, modalities: Mapping[str, Modality], latent_dim: int, hidden_dim: int,
                 private_dim: int = 0, private_prior: PrivatePrior = "zero"):
        super().__init__()
        if private_prior not in ("sample", "zero"):
            raise ConfigError(f"JointDecoder: private_prior must be 'sample' or 'zero', "
                              f"got {private_prior!r}")
        # hidden_dim=0: no trunk, the heads read the latent itself (with linear encoders and
        # heads, a linear autoencoder: the PCA subspace's test case).
        self.trunk = (mlp([latent_dim + private_dim, hidden_dim, hidden_dim], activate_last=True)
                      if hidden_dim else nn.Identity())
        head_input = hidden_dim or latent_dim + private_dim
        self.heads = nn.ModuleDict({n: m.build_decoder(head_input) for n, m in modalities.items()})
        self.likelihoods = nn.ModuleDict({n: m.build_likelihood() for n, m in modalities.items()})
        self.private_dim = private_dim
        self.private_prior = private_prior

    def private_latents(self, latent: Tensor, private: Mapping[str, Tensor] | None = None,
                        present: Mapping[str, Tensor] | None = None,
                        generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """`w_m` for every modality: `private[m]` where given (and `present[m]`, if given, is
        True), a draw from the prior (`private_prior`) elsewhere; `{}` without private latents."""
        if not self.private_dim:
            return {}
        private, present = private or {}, present or {}
        codes = {}
        for name in self.heads:
            if self.private_prior == "sample":
                prior = torch.randn(latent.shape[0], self.private_dim, generator=generator,
                                    device=latent.device, dtype=latent.dtype)
            else:
                prior = latent.new_zeros(latent.shape[0], self.private_dim)
            if name not in private:
                codes[name] = prior
            elif name in present:
                codes[name] = torch.where(present[name].unsqueeze(1), private[name], prior)
            else:
                codes[name] = private[name]
        return codes

    def forward(self, latent: Tensor, private: Mapping[str, Tensor] | None = None,
                present: Mapping[str, Tensor] | None = None,
                generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Decode every modality from the shared `latent` `[B, latent_dim]` and, with private
        latents, each modality's `w_m` (see `private_latents`: `decoder(z)` alone draws them
        all from the prior, seeded by `generator`)."""
        if not self.private_dim:
            hidden = self.trunk(latent)
            return {name: self.likelihoods[name].link(head(hidden)) for name, head in self.heads.items()}
        codes = self.private_latents(latent, private, present, generator)
        names = list(self.heads)
        stacked = torch.cat([torch.cat([latent, codes[name].to(latent.dtype)], dim=1) for name in names])
        hidden = self.trunk(stacked).split(latent.shape[0])
        return {name: self.likelihoods[name].link(self.heads[name](h))
                for name, h in zip(names, hidden, strict=True)}


class MultimodalAutoencoder(nn.Module):
    """Encoder (per-modality encoders + fusion) and joint decoder reconstructing every modality.

    Undercomplete by default (`latent_dim` smaller than the inputs); `top_k` makes the code
    k-sparse, `latent_activation="binary"` a ±1 hash. `variational=True` makes it a
    multimodal VAE: the encoder yields a Gaussian posterior, training decodes a
    reparameterised sample, evaluation decodes the posterior mean. `private_dim > 0` adds a
    private latent per modality beside the shared one (see the module docstring; a VAE's
    private posteriors get a KL to N(0, I) in the KL term).
    """

    def __init__(self, modalities: Mapping[str, Modality], fusion: FusionFactory,
                 latent_dim: int = 16, embed_dim: int = 128, decoder_hidden: int = 256,
                 variational: bool = False, latent_activation: LatentActivation | None = None,
                 top_k: int | None = None, private_dim: int = 0):
        super().__init__()
        if latent_dim <= 0 or embed_dim <= 0 or decoder_hidden < 0:
            raise ConfigError(
                "MultimodalAutoencoder: latent_dim and embed_dim must be positive and decoder_hidden "
                f"positive or 0 (no trunk), got {latent_dim}, {embed_dim}, {decoder_hidden}"
            )
        self.modalities = dict(modalities)
        self.latent_dim = latent_dim
        self.encoder = MultimodalEncoder(modalities, fusion, embed_dim, latent_dim, variational,
                                         latent_activation, top_k, private_dim)
        self.decoder = JointDecoder(modalities, latent_dim, decoder_hidden, private_dim,
                                    "sample" if variational else "zero")
        self.decoder_hidden = decoder_hidden

    @property
    def variational(self) -> bool:
        return self.encoder.variational

    @property
    def private_dim(self) -> int:
        return self.encoder.private_dim

    def forward(self, inputs: Mapping[str, Tensor], present: Mapping[str, Tensor] | None = None,
                sample: bool | None = None, raw: Mapping[str, Tensor] | None = None,
                cached: Mapping[str, Tensor] | None = None,
                generator: torch.Generator | None = None,
                unimodal_present: Mapping[str, Tensor] | None = None) -> AutoencoderOutput:
        """Encode any non-empty subset of modalities and decode all of them.

        `sample` (VAE only) decodes a posterior sample rather than the mean (of the shared and
        the private posteriors); it defaults to sampling in training mode only. Decoding a
        subset's posterior is cross-modal generation: a missing modality's private latent is
        drawn from its prior (`generator` seeds those draws) for a VAE, zeros otherwise.
        `raw`, `cached` and `unimodal_present`: see `MultimodalEncoder.forward`.
        """
        encoding = self.encoder(inputs, present, raw=raw, cached=cached, unimodal_present=unimodal_present)
        posterior = encoding.posterior
        draw = self.training if sample is None else sample
        latent = posterior.sample() if posterior is not None and draw else encoding.code
        own = {name: encoding.private_posteriors[name].sample()
               if draw and name in encoding.private_posteriors else code
               for name, code in encoding.private.items()}
        private = self.decoder.private_latents(latent, own, encoding.present, generator)
        return AutoencoderOutput(latent, self.decoder(latent, private), encoding.code, posterior,
                                 private, encoding.private, encoding.private_posteriors,
                                 encoding.unimodal, encoding.unimodal_present)

    @torch.no_grad()
    def generate(self, num_samples: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """New multimodal samples decoded from the prior N(0, I) of the shared latent and of
        every private one (variational models only)."""
        if not self.variational:
            raise ConfigError("generate() samples the prior of a VAE; this model is deterministic "
                              "(use model=vae)")
        device = next(self.parameters()).device
        z = torch.randn(num_samples, self.latent_dim, generator=generator, device=device)
        return self.decoder(z, generator=generator)


def parameter_counts(model: MultimodalAutoencoder) -> dict[str, tuple[int, int]]:
    """Parameters `(encoder side, decoder side)` per modality (its private head included), for
    the fusion (with the posterior head) and the decoder trunk, and in total."""
    def count(*modules: nn.Module | None) -> int:
        return sum(p.numel() for m in modules if m is not None for p in m.parameters())

    encoder, decoder = model.encoder, model.decoder
    heads = encoder.private_heads or {}
    rows = {name: (count(encoder.preprocessors[name] if name in encoder.preprocessors else None,  # noqa: SIM401
                         encoder.encoders[name], heads[name] if name in heads else None),  # noqa: SIM401
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
