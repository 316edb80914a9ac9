import math

import pytest
import torch

from mmae.core.errors import ConfigError
from mmae.core.fusion import MeanFusion
from mmae.core.gaussian import Posterior
from mmae.core.model import AutoencoderOutput, MultimodalAutoencoder
from mmae.core.objectives import (
    ContractivePenalty,
    KLDivergence,
    KLSparsity,
    L1Sparsity,
    Objective,
    ReconstructionLoss,
    Step,
    jacobian_frobenius_sq,
    masked_mean,
)
from mmae.modalities import VectorModality


def test_masked_mean_closed_form():
    values = torch.tensor([1.0, 2.0, 4.0, 8.0])
    assert masked_mean(values, torch.tensor([True, False, True, False])).item() == 2.5
    # Nothing present: zero, not NaN, and a defined (zero) gradient.
    values.requires_grad_(True)
    empty = masked_mean(values, torch.zeros(4, dtype=torch.bool))
    empty.backward()
    assert empty.item() == 0.0 and torch.equal(values.grad, torch.zeros(4))


def _step():
    """Two vector modalities, three samples, hand-computable squared errors."""
    modalities = {"a": VectorModality(dim=2), "b": VectorModality(dim=1)}
    targets = {"a": torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0]]),
               "b": torch.tensor([[1.0], [2.0], [3.0]])}
    recon = {"a": torch.tensor([[1.0, 1.0], [1.0, 3.0], [9.0, 9.0]]),
             "b": torch.tensor([[1.0], [0.0], [0.0]])}
    present = {"a": torch.tensor([True, True, False]), "b": torch.tensor([False, True, True])}
    return Step(modalities, AutoencoderOutput(torch.zeros(3, 1), recon, torch.zeros(3, 1)), targets, present)


def test_reconstruction_loss_is_the_masked_per_modality_mse():
    # a: samples 0 and 1 -> mean((1+1)/2, (0+4)/2) = 1.5 ; b: samples 1 and 2 -> mean(4, 9) = 6.5
    result = ReconstructionLoss(weights={"b": 2.0})(_step())
    assert result.parts["a"].item() == pytest.approx(1.5)
    assert result.parts["b"].item() == pytest.approx(6.5)
    assert result.value.item() == pytest.approx(1.5 + 2.0 * 6.5)


def test_objective_sums_terms_and_names_every_part():
    out = Objective({"reconstruction": ReconstructionLoss(), "l1": L1Sparsity(lam=0.5)})(_step())
    assert out.total.item() == pytest.approx(1.5 + 6.5 + 0.5 * 0.0)
    assert set(out.logged) == {"loss", "loss/reconstruction", "reconstruction/a", "reconstruction/b",
                               "loss/l1", "l1/l1"}


def test_unknown_names_in_weights_are_reported(small_modalities):
    model = MultimodalAutoencoder(small_modalities, MeanFusion, latent_dim=2)
    with pytest.raises(ConfigError, match=r"weights name unknown modalities \['c'\]; "
                                          r"expected some of \['image', 'vector'\]"):
        Objective({"reconstruction": ReconstructionLoss(weights={"c": 1.0})}).check(model)
    with pytest.raises(ConfigError, match="term 'sparsity' is dict, not a mmae LossTerm"):
        Objective({"reconstruction": ReconstructionLoss(), "sparsity": {}})


def _code_step(code: torch.Tensor, posterior=None) -> Step:
    output = AutoencoderOutput(code, {}, code, posterior)
    return Step({}, output, {}, {})


def test_l1_sparsity_closed_form():
    code = torch.tensor([[1.0, -2.0], [0.5, 0.0]])
    result = L1Sparsity(lam=0.1)(_code_step(code))
    assert result.parts["l1"].item() == pytest.approx((3.0 + 0.5) / 2)
    assert result.value.item() == pytest.approx(0.1 * 1.75)


def test_kl_sparsity_closed_form_and_its_requirements(small_modalities):
    code = torch.tensor([[0.1, 0.6], [0.3, 0.4]])  # rho_hat = [0.2, 0.5]
    rho = 0.1

    def kl(r, q):
        return r * math.log(r / q) + (1 - r) * math.log((1 - r) / (1 - q))

    result = KLSparsity(beta=2.0, rho=rho)(_code_step(code))
    assert result.parts["kl"].item() == pytest.approx(kl(rho, 0.2) + kl(rho, 0.5), rel=1e-5)
    assert result.value.item() == pytest.approx(2.0 * (kl(rho, 0.2) + kl(rho, 0.5)), rel=1e-5)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ConfigError, match=rf"rho must be in \(0, 1\), got {bad}"):
            KLSparsity(rho=bad)
    with pytest.raises(ConfigError, match=r"set model\.latent_activation=sigmoid"):
        KLSparsity().check(MultimodalAutoencoder(small_modalities, MeanFusion, latent_activation="tanh"))
    KLSparsity().check(MultimodalAutoencoder(small_modalities, MeanFusion, latent_activation="sigmoid"))


def test_kl_divergence_term_with_warm_up(small_modalities):
    posterior = Posterior.gaussian(torch.tensor([[1.0], [0.0]]), torch.tensor([[0.0], [0.0]]))
    term = KLDivergence(beta=4.0, warmup_steps=100)
    step = _code_step(torch.zeros(2, 1), posterior)
    assert term(step).parts["kl"].item() == pytest.approx(0.25)  # mean(0.5, 0)
    step.global_step = 50
    assert term(step).value.item() == pytest.approx(4.0 * 0.5 * 0.25)
    step.global_step = None  # validation: the full coefficient
    assert term(step).value.item() == pytest.approx(1.0)
    with pytest.raises(ConfigError, match=r"the KL term needs a variational model \(model=vae\)"):
        term.check(MultimodalAutoencoder(small_modalities, MeanFusion))


def _contractive_setup(small_modalities):
    model = MultimodalAutoencoder(small_modalities, MeanFusion, latent_dim=3, embed_dim=6)
    inputs = {"image": torch.randn(4, 1, 8, 8, requires_grad=True),
              "vector": torch.randn(4, 5, requires_grad=True)}
    return model, inputs


def _exact_by_autograd(model, inputs) -> torch.Tensor:
    """Per-sample ||J||_F^2 from torch.autograd.functional.jacobian, sample by sample."""
    values = []
    for b in range(4):
        def f(image, vector):
            return model.encoder({"image": image, "vector": vector}).code[0]

        jac = torch.autograd.functional.jacobian(
            f, (inputs["image"][b:b + 1].detach(), inputs["vector"][b:b + 1].detach()))
        values.append(sum(j.pow(2).sum() for j in jac))
    return torch.stack(values)


def test_contractive_penalty_exact_matches_autograd_jacobian(small_modalities):
    model, inputs = _contractive_setup(small_modalities)
    code = model.encoder(inputs).code
    exact = jacobian_frobenius_sq(code, list(inputs.values()), "exact")
    torch.testing.assert_close(exact, _exact_by_autograd(model, inputs), rtol=1e-5, atol=1e-6)
    term = ContractivePenalty(lam=0.5, method="exact")
    step = Step(model.modalities, model(inputs), {}, {}, inputs=inputs)
    assert term(step).value.item() == pytest.approx(0.5 * exact.mean().item(), rel=1e-5)
    term(step).value.backward()  # differentiable: it is a training penalty
    assert model.encoder.encoders["vector"][0].weight.grad.abs().sum() > 0


@pytest.mark.slow
def test_contractive_projection_estimator_is_unbiased(small_modalities):
    model, inputs = _contractive_setup(small_modalities)
    code = model.encoder(inputs).code
    exact = jacobian_frobenius_sq(code, list(inputs.values()), "exact").mean().item()
    torch.manual_seed(1)
    draws = [jacobian_frobenius_sq(code, list(inputs.values()), "projection", 8).mean().item()
             for _ in range(300)]
    assert sum(draws) / len(draws) == pytest.approx(exact, rel=0.05)


def test_contractive_options_are_validated_and_skipped_without_input_grads():
    with pytest.raises(ConfigError, match=r"method must be one of \('auto', 'exact', 'projection'\)"):
        ContractivePenalty(method="hutchinson")
    objective = Objective({"reconstruction": ReconstructionLoss(), "contractive": ContractivePenalty()})
    assert objective.needs_input_grad
    logged = objective(_step(), with_input_grad=False).logged
    assert "loss/contractive" not in logged and "loss/reconstruction" in logged


def test_a_variational_model_without_the_kl_term_is_rejected(small_modalities):
    model = MultimodalAutoencoder(small_modalities, MeanFusion, latent_dim=2, variational=True)
    with pytest.raises(ConfigError, match="a variational model needs the KL term"):
        Objective({"reconstruction": ReconstructionLoss()}).check(model)
    Objective({"reconstruction": ReconstructionLoss(), "kl": KLDivergence()}).check(model)


def test_contractive_needs_a_continuous_modality():
    from mmae.modalities import TextModality

    text = TextModality(model_config={"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                      "intermediate_size": 32}, max_length=4)
    model = MultimodalAutoencoder({"text": text}, MeanFusion, latent_dim=2, embed_dim=8)
    with pytest.raises(ConfigError, match="ContractivePenalty differentiates the code"):
        ContractivePenalty().check(model)
