"""Loss terms. Each term is a named object with its own coefficient; the objective sums them.

Reconstruction losses are masked per sample and per modality: a modality contributes the mean
of its per-sample loss over the samples where it is present in the clean batch, and nothing
where it is missing (so zero-filled values never reach the loss).

Every term can check, once the model is built, that it fits that model (`check`), so that an
incompatible choice fails before training starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from mmae.core.errors import ConfigError
from mmae.core.likelihoods import Likelihood
from mmae.core.modality import Modality
from mmae.core.model import AutoencoderOutput, MultimodalAutoencoder
from mmae.core.presence import zero_missing
from mmae.core.registry import LOSS_TERMS


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of `values[mask]`, or 0 when nothing is masked in (no NaN, gradient still defined)."""
    total = torch.where(mask, values, 0.0).sum()
    return total / mask.sum().clamp_min(1)


@dataclass
class Step:
    """Everything a loss term may need about one training or validation step.

    `inputs` are what the encoder saw (after corruption; they require grad when a term needs
    input gradients); `targets` and `present` describe the clean batch. `global_step` is None
    at validation, where schedules (KL warm-up) are at their final value. `likelihoods` are
    the decoder's distributions (`JointDecoder.likelihoods`); without them reconstruction is
    scored by each modality's plain `reconstruction_loss`. `raw` and `cached` are what the
    encoder read besides `inputs` (see `MultimodalEncoder.forward`).
    """

    modalities: Mapping[str, Modality]
    output: AutoencoderOutput
    targets: Mapping[str, Tensor]
    present: Mapping[str, Tensor]
    inputs: Mapping[str, Tensor] | None = None
    global_step: int | None = None
    likelihoods: Mapping[str, Likelihood] | None = None
    raw: Mapping[str, Tensor] | None = None
    cached: Mapping[str, Tensor] | None = None


@dataclass
class TermValue:
    """A term's contribution to the loss (coefficient included) and named parts to log."""

    value: Tensor
    parts: dict[str, Tensor] = field(default_factory=dict)


class LossTerm:
    """Base class of loss terms. `needs_input_grad` terms differentiate through the inputs;
    `needs_unimodal_codes` terms read each modality's own code (`AutoencoderOutput.unimodal`)."""

    needs_input_grad = False
    needs_unimodal_codes = False

    def check(self, model: MultimodalAutoencoder) -> None:
        """Raise `ConfigError` if this term cannot apply to `model`."""

    def __call__(self, step: Step) -> TermValue:
        raise NotImplementedError


def _non_negative(owner: str, **values: float) -> None:
    for name, value in values.items():
        if value < 0:
            raise ConfigError(f"{owner}: {name} must be >= 0, got {value}")


@LOSS_TERMS.register("reconstruction")
class ReconstructionLoss(LossTerm):
    """`sum_m weight_m * masked_mean_b(-log p_m(x_b | h_b))` over the clean batch, in nats per
    element of each modality (its likelihood, `mmae.core.likelihoods`): in standardised units, so
    no modality outweighs another by its units or its size; `weights` (1.0 where not named)
    change that on purpose.

    Every modality present in the clean sample is reconstructed, including those the
    corruption dropped from the encoder's input.
    """

    def __init__(self, weights: Mapping[str, float] | None = None):
        self.weights = dict(weights or {})
        _non_negative("ReconstructionLoss", **{f"weights.{k}": v for k, v in self.weights.items()})

    def check(self, model: MultimodalAutoencoder) -> None:
        unknown = set(self.weights) - set(model.modalities)
        if unknown:
            raise ConfigError(
                f"ReconstructionLoss: weights name unknown modalities {sorted(unknown)}; "
                f"expected some of {list(model.modalities)}"
            )

    def __call__(self, step: Step) -> TermValue:
        parts = {}
        total = None
        for name, modality in step.modalities.items():
            if name not in step.targets:
                continue
            mask = step.present[name]
            # Zero the missing targets too: a NaN there would poison the gradient through 0 * NaN.
            target = zero_missing(step.targets[name], mask)
            reconstruction = step.output.reconstructions[name]
            per_sample = (step.likelihoods[name].nll(reconstruction, target) if step.likelihoods
                          else modality.reconstruction_loss(reconstruction, target))
            parts[name] = masked_mean(per_sample, mask)
            weighted = self.weights.get(name, 1.0) * parts[name]
            total = weighted if total is None else total + weighted
        return TermValue(total, parts)


@LOSS_TERMS.register("kl")
class KLDivergence(LossTerm):
    """`beta * mean_b KL(q(z|x_b) || N(0, I))`, with `beta` ramped linearly from 0 over
    `warmup_steps` training steps (KL warm-up against posterior collapse).

    With private latents (`model.private_dim > 0`) each sample's KL also holds
    `sum_m KL(q(w_m|x_m) || N(0, I))` over the modalities the encoder saw for it (the private
    posterior of a missing one is the prior: no KL), with the same `beta`; `kl_shared` and
    `kl_private` are logged beside the total `kl`.

    The reconstruction is a per-element mean, so `beta` also absorbs the decoder's variance
    and the input size: a Gaussian decoder of variance s^2 on D elements gives beta = 2 s^2 / D.
    """

    def __init__(self, beta: float = 1.0, warmup_steps: int = 0):
        _non_negative("KLDivergence", beta=beta, warmup_steps=warmup_steps)
        self.beta = beta
        self.warmup_steps = warmup_steps

    def check(self, model: MultimodalAutoencoder) -> None:
        if not model.variational:
            raise ConfigError("the KL term needs a variational model (model=vae); "
                              "model=ae has no posterior")

    def coefficient(self, global_step: int | None) -> float:
        if global_step is None or self.warmup_steps == 0:
            return self.beta
        return self.beta * min(1.0, global_step / self.warmup_steps)

    def __call__(self, step: Step) -> TermValue:
        shared = step.output.posterior.kl
        private = private_kl(step.output)
        if private is None:
            kl = shared.mean()
            return TermValue(self.coefficient(step.global_step) * kl, {"kl": kl})
        kl = (shared + private).mean()
        return TermValue(self.coefficient(step.global_step) * kl,
                         {"kl": kl, "kl_shared": shared.mean(), "kl_private": private.mean()})


def private_kl(output: AutoencoderOutput) -> Tensor | None:
    """Per-sample `sum_m KL(q(w_m|x_m) || N(0, I))` `[B]` of the private posteriors, or None
    without them (missing modalities' posteriors are the prior, so they add 0)."""
    posteriors = list(output.private_posteriors.values())
    if not posteriors:
        return None
    return torch.stack([posterior.kl for posterior in posteriors]).sum(dim=0)


@LOSS_TERMS.register("sparse_l1")
class L1Sparsity(LossTerm):
    """`lam * mean_b |h_b|_1`: an L1 penalty on the code."""

    def __init__(self, lam: float = 1e-3):
        _non_negative("L1Sparsity", lam=lam)
        self.lam = lam

    def __call__(self, step: Step) -> TermValue:
        l1 = step.output.code.abs().sum(dim=1).mean()
        return TermValue(self.lam * l1, {"l1": l1})


def bernoulli_kl(rho: float, rho_hat: Tensor) -> Tensor:
    """`KL(Bernoulli(rho) || Bernoulli(rho_hat))` element-wise."""
    return rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))


@LOSS_TERMS.register("sparse_kl")
class KLSparsity(LossTerm):
    """`beta * sum_j KL(rho || rho_hat_j)`, `rho_hat_j` the batch-mean activation of code unit j.

    Needs a code in (0, 1): `model.latent_activation=sigmoid`.
    """

    def __init__(self, beta: float = 1e-2, rho: float = 0.05, eps: float = 1e-6):
        if not 0.0 < rho < 1.0:
            raise ConfigError(f"KLSparsity: the target activation rho must be in (0, 1), got {rho}")
        _non_negative("KLSparsity", beta=beta)
        self.beta, self.rho, self.eps = beta, rho, eps

    def check(self, model: MultimodalAutoencoder) -> None:
        activation = getattr(model.encoder, "latent_activation", None)
        if activation != "sigmoid":
            raise ConfigError("KLSparsity needs a sigmoid code in (0, 1): set "
                              f"model.latent_activation=sigmoid (it is {activation})")

    def __call__(self, step: Step) -> TermValue:
        rho_hat = step.output.code.mean(dim=0).clamp(self.eps, 1 - self.eps)
        kl = bernoulli_kl(self.rho, rho_hat).sum()
        return TermValue(self.beta * kl, {"kl": kl, "mean_activation": rho_hat.mean()})


def jacobian_frobenius_sq(code: Tensor, inputs: list[Tensor], method: str = "exact",
                          num_projections: int = 1) -> Tensor:
    """Per-sample `||d code / d inputs||_F^2` `[B]`, differentiable (for use as a penalty).

    `exact`: one vector-Jacobian product per code unit (D backward passes).
    `projection`: `mean_k ||J^T v_k||^2` with `v_k ~ N(0, I)`, an unbiased estimator since
    `E[v^T J J^T v] = tr(J J^T) = ||J||_F^2`; its cost is `num_projections` backward passes
    whatever the input size. Samples must not interact in the encoder (true for mmae's
    encoders: no batch normalisation), so one backward pass serves the whole batch.
    """
    def squared_norm_of_vjp(vector: Tensor) -> Tensor:
        grads = torch.autograd.grad(code, inputs, grad_outputs=vector, create_graph=True,
                                    allow_unused=True)
        return sum(g.pow(2).flatten(1).sum(dim=1) for g in grads if g is not None)

    if method == "exact":
        eye = torch.eye(code.shape[1], dtype=code.dtype, device=code.device)
        return sum(squared_norm_of_vjp(eye[j].expand_as(code)) for j in range(code.shape[1]))
    draws = [squared_norm_of_vjp(torch.randn_like(code)) for _ in range(num_projections)]
    return sum(draws) / num_projections


ContractiveMethod = Literal["auto", "exact", "projection"]


@LOSS_TERMS.register("contractive")
class ContractivePenalty(LossTerm):
    """`lam * mean_b ||J_f(x_b)||_F^2`, the Jacobian of the code w.r.t. the encoder's inputs.

    `method`: `exact`, `projection` (unbiased random-projection estimate, for images), or
    `auto` (exact when the code has at most `num_projections` units, where it is no dearer).
    Evaluated at training steps only: validation runs without gradients.
    """

    needs_input_grad = True
    METHODS = get_args(ContractiveMethod)

    def __init__(self, lam: float = 1e-2, method: ContractiveMethod = "auto", num_projections: int = 4):
        if method not in self.METHODS:
            raise ConfigError(f"ContractivePenalty: method must be one of {self.METHODS}, got '{method}'")
        if num_projections < 1:
            raise ConfigError(f"ContractivePenalty: num_projections must be >= 1, got {num_projections}")
        _non_negative("ContractivePenalty", lam=lam)
        self.lam, self.method, self.num_projections = lam, method, num_projections

    def check(self, model: MultimodalAutoencoder) -> None:
        if all(m.dtype_kind != "float" for m in model.modalities.values()):
            raise ConfigError("ContractivePenalty differentiates the code w.r.t. continuous inputs; "
                              f"the modalities {list(model.modalities)} have none")
        # A frozen backbone runs without gradients, and one that reads the raw input never sees
        # the features: the code's Jacobian w.r.t. them would be silently missing.
        unreached = [name for name, modality in model.modalities.items()
                     if modality.encodes_raw or getattr(model.encoder.encoders[name], "frozen", False)]
        if unreached:
            raise ConfigError(f"ContractivePenalty differentiates the code w.r.t. the encoder's inputs, "
                              f"which do not reach the frozen or raw-input backbones of {unreached}: use "
                              "another regularizer (objective=sparse_l1, a corruption) with pretrained "
                              "backbones")

    def __call__(self, step: Step) -> TermValue:
        code = step.output.code
        method = self.method
        if method == "auto":
            method = "exact" if code.shape[1] <= self.num_projections else "projection"
        inputs = [x for x in step.inputs.values() if x.requires_grad]
        frobenius = jacobian_frobenius_sq(code, inputs, method, self.num_projections).mean()
        return TermValue(self.lam * frobenius, {"jacobian_frobenius_sq": frobenius})


def info_nce(a: Tensor, b: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """Symmetric InfoNCE (CLIP) of paired rows: `a[i]` should be nearer (in cosine) to `b[i]`
    than to any other `b[j]`, and `b[i]` to `a[i]`. Returns the loss, the mean of both
    directions' cross-entropy in nats, and the share of rows whose partner is their nearest."""
    logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / temperature
    partners = torch.arange(a.shape[0], device=a.device)
    loss = (F.cross_entropy(logits, partners) + F.cross_entropy(logits.T, partners)) / 2
    matched = ((logits.argmax(dim=1) == partners).float().mean()
               + (logits.argmax(dim=0) == partners).float().mean()) / 2
    return loss, matched.detach()


@LOSS_TERMS.register("alignment")
class Alignment(LossTerm):
    """`weight * mean_{m<n} InfoNCE(u_m, u_n)`: each modality's own code `u_m` (the shared code
    of m alone) is pulled towards the code of the same sample's other modalities and away from
    the other samples' (CLIP-style, cosine similarity over `temperature`).

    Reconstruction spends the code on whatever dominates each modality's variance (colours,
    voices); only what the modalities share can match a sample's codes across modalities, so
    this term puts the shared content into the shared code. A pair (m, n) counts the samples
    that hold both (modality dropout hides a modality from the fusion, not from this term)
    and is left out below `min_samples` of them; `matched` logs the share of samples whose
    partner in the batch is their nearest code.
    """

    needs_unimodal_codes = True

    def __init__(self, weight: float = 1.0, temperature: float = 0.1, min_samples: int = 4):
        _non_negative("Alignment", weight=weight)
        if temperature <= 0:
            raise ConfigError(f"Alignment: temperature must be > 0, got {temperature}")
        if min_samples < 2:
            raise ConfigError(f"Alignment: min_samples must be >= 2 (a negative per sample), "
                              f"got {min_samples}")
        self.weight, self.temperature, self.min_samples = weight, temperature, min_samples

    def check(self, model: MultimodalAutoencoder) -> None:
        if len(model.modalities) < 2:
            raise ConfigError(f"Alignment aligns the codes of different modalities; the model has only "
                              f"{list(model.modalities)}: remove objective.terms.alignment")

    def __call__(self, step: Step) -> TermValue:
        codes, present = step.output.unimodal, step.output.unimodal_present
        losses, matched = [], []
        names = list(codes)
        for i, first in enumerate(names):
            for second in names[i + 1:]:
                both = present[first] & present[second]
                if int(both.sum()) < self.min_samples:
                    continue
                loss, share = info_nce(codes[first][both], codes[second][both], self.temperature)
                losses.append(loss)
                matched.append(share)
        if not losses:  # zero on the graph, so every DDP rank still runs backward alike
            zero = step.output.code.sum() * 0.0
            return TermValue(zero, {"infonce": zero.detach()})
        infonce = torch.stack(losses).mean()
        return TermValue(self.weight * infonce, {"infonce": infonce, "matched": torch.stack(matched).mean()})


@dataclass
class LossOutput:
    """The objective's total and every term and part by name, ready for logging."""

    total: Tensor
    logged: dict[str, Tensor]


class Objective:
    """The sum of named loss terms (each carries its own coefficient)."""

    def __init__(self, terms: Mapping[str, LossTerm]):
        if not terms:
            raise ConfigError("Objective: needs at least one loss term")
        self.terms = dict(terms)
        for name, term in self.terms.items():
            if not isinstance(term, LossTerm):
                raise ConfigError(f"Objective: term '{name}' is {type(term).__name__}, not a mmae LossTerm")

    @property
    def needs_input_grad(self) -> bool:
        return any(term.needs_input_grad for term in self.terms.values())

    @property
    def needs_unimodal_codes(self) -> bool:
        return any(term.needs_unimodal_codes for term in self.terms.values())

    def check(self, model: MultimodalAutoencoder) -> None:
        for term in self.terms.values():
            term.check(model)
        if model.variational and not any(isinstance(t, KLDivergence) for t in self.terms.values()):
            raise ConfigError("a variational model needs the KL term: use model=vae (it adds "
                              "objective.terms.kl), or add a mmae.core.objectives.KLDivergence term")

    def __call__(self, step: Step, with_input_grad: bool = True) -> LossOutput:
        """Sum every term; `with_input_grad=False` (validation) skips terms that need input grads."""
        total = None
        logged: dict[str, Tensor] = {}
        for name, term in self.terms.items():
            if term.needs_input_grad and not with_input_grad:
                continue
            result = term(step)
            logged[f"loss/{name}"] = result.value
            logged.update({f"{name}/{part}": v for part, v in result.parts.items()})
            total = result.value if total is None else total + result.value
        logged["loss"] = total
        return LossOutput(total, logged)


