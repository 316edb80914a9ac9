"""The post-hoc Gaussian mixture sampler (`mmae.evaluation.sampler`), `mmae.fit_sampler` and
`mmae.generate` with it: EM against known mixtures, densities against the closed form."""

import math

import pytest
import torch

import mmae
from mmae.core.errors import ConfigError, DataError, InputError
from mmae.core.fusion import MeanFusion
from mmae.evaluation.sampler import GaussianMixture
from mmae.modalities import TextModality, VectorModality

MEANS = torch.tensor([[4.0, 0.0], [-2.0, 3.0], [0.0, -4.0]])
WEIGHTS = torch.tensor([0.5, 0.3, 0.2])
SCALES = torch.tensor([[[0.5, 0.0], [0.2, 0.3]], [[0.4, 0.0], [0.0, 0.4]], [[0.3, 0.0], [-0.1, 0.6]]])


def _draw(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    which = torch.multinomial(WEIGHTS, n, replacement=True, generator=g)
    noise = torch.randn(n, 2, generator=g)
    return MEANS[which] + (SCALES[which] @ noise.unsqueeze(2)).squeeze(2), which


def _by_mean(mixture: GaussianMixture) -> list[int]:
    """The fitted component nearest each true component (the order EM finds them in is arbitrary)."""
    return torch.cdist(MEANS.double(), mixture.means).argmin(1).tolist()


@pytest.mark.parametrize("covariance", ["full", "diagonal"])
def test_em_recovers_the_means_and_weights_of_a_separated_mixture(covariance):
    x, _ = _draw(6000)
    mixture = GaussianMixture.fit(x, components=3, covariance=covariance, seed=0)
    order = _by_mean(mixture)
    assert sorted(order) == [0, 1, 2]  # one fitted component per true one
    assert torch.allclose(mixture.means[order], MEANS.double(), atol=0.05)
    assert torch.allclose(mixture.weights[order], WEIGHTS.double(), atol=0.02)
    if covariance == "full":
        truth = (SCALES @ SCALES.transpose(1, 2)).double()
        assert torch.allclose(mixture.covariances[order], truth, atol=0.03)
        assert mixture.covariances.shape == (3, 2, 2)
    else:
        assert mixture.covariances.shape == (3, 2)


def test_fitting_is_deterministic_for_a_seed():
    x, _ = _draw(500)
    a, b = GaussianMixture.fit(x, 4, seed=3), GaussianMixture.fit(x, 4, seed=3)
    assert torch.equal(a.means, b.means) and torch.equal(a.covariances, b.covariances)
    assert torch.equal(a.weights, b.weights)


def test_log_prob_of_one_component_is_the_normal_density():
    mean, cov = torch.tensor([[1.0, -2.0]]), torch.tensor([[[2.0, 0.6], [0.6, 1.0]]])
    mixture = GaussianMixture(torch.ones(1), mean, cov)
    x = torch.tensor([[0.0, 0.0], [1.0, -2.0], [3.0, 1.5]])
    det = 2.0 * 1.0 - 0.6 * 0.6
    inverse = torch.tensor([[1.0, -0.6], [-0.6, 2.0]]) / det  # the 2x2 inverse by hand
    d = x - mean
    expected = -math.log(2 * math.pi) - 0.5 * math.log(det) - 0.5 * ((d @ inverse) * d).sum(1)
    assert torch.allclose(mixture.log_prob(x), expected.double(), atol=1e-12)
    # The diagonal form of a diagonal covariance gives the same density as the full form.
    diagonal = GaussianMixture(torch.ones(1), mean, torch.tensor([[2.0, 1.0]]))
    full = GaussianMixture(torch.ones(1), mean, torch.diag_embed(torch.tensor([[2.0, 1.0]])))
    assert torch.allclose(diagonal.log_prob(x), full.log_prob(x), atol=1e-12)


def test_log_prob_of_a_mixture_is_the_weighted_sum_of_densities():
    means, covariances = torch.tensor([[0.0], [3.0]]), torch.tensor([[[1.0]], [[0.25]]])
    mixture = GaussianMixture(torch.tensor([0.25, 0.75]), means, covariances)
    x = torch.tensor([[0.5], [2.5]])

    def normal(value, mean, variance):
        return math.exp(-((value - mean) ** 2) / (2 * variance)) / math.sqrt(2 * math.pi * variance)

    expected = [math.log(0.25 * normal(v, 0.0, 1.0) + 0.75 * normal(v, 3.0, 0.25)) for v in (0.5, 2.5)]
    assert torch.allclose(mixture.log_prob(x), torch.tensor(expected, dtype=torch.float64), atol=1e-12)
    with pytest.raises(InputError, match=r"shape \[N, 1\]"):
        mixture.log_prob(torch.zeros(2, 3))


def test_samples_follow_the_mixture_and_repeat_under_a_seed():
    mixture = GaussianMixture(WEIGHTS, MEANS, SCALES @ SCALES.transpose(1, 2))
    draws = mixture.sample(40_000, torch.Generator().manual_seed(1))
    again = mixture.sample(40_000, torch.Generator().manual_seed(1))
    assert draws.shape == (40_000, 2) and torch.equal(draws, again)
    truth, _ = _draw(40_000, seed=2)
    assert torch.allclose(draws.mean(0), truth.double().mean(0), atol=0.05)
    assert torch.allclose(draws.T.cov(), truth.double().T.cov(), atol=0.15)


def test_too_few_samples_and_an_unknown_covariance_are_refused():
    with pytest.raises(DataError, match="10 components need at least as many samples, got 4"):
        GaussianMixture.fit(torch.randn(4, 2), components=10)
    with pytest.raises(InputError, match="'full' or 'diagonal'"):
        GaussianMixture.fit(torch.randn(40, 2), components=2, covariance="spherical")


def test_degenerate_codes_get_a_ridge():
    """Binary codes (every point on a corner, repeated) make a bare covariance singular."""
    corners = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(50, 1)
    mixture = GaussianMixture.fit(corners, components=2)
    assert torch.isfinite(mixture.log_prob(corners)).all()


@pytest.fixture
def autoencoder():
    modalities = {"vector": VectorModality(dim=5, hidden=[8]),
                  "text": TextModality(model_config={"model_type": "bert", "hidden_size": 16,
                                                     "num_hidden_layers": 1, "num_attention_heads": 2,
                                                     "intermediate_size": 32}, max_length=6)}
    return mmae.MultimodalAutoencoder(modalities, fusion=MeanFusion, latent_dim=3)


def _batches(model, count=3, size=20):
    text = model.modalities["text"]
    g, everywhere = torch.Generator().manual_seed(0), torch.ones(size, dtype=torch.bool)
    return [{"vector": torch.randn(size, 5, generator=g),
             "text": torch.stack([text.encode_text("ab c") for _ in range(size)]),
             "present": {"vector": everywhere, "text": everywhere},
             "label": torch.zeros(size, dtype=torch.long), "index": torch.arange(size) + i * size}
            for i in range(count)]


def test_a_mixture_on_the_codes_generates_every_modality_of_an_autoencoder(autoencoder):
    batches = _batches(autoencoder)
    mixture = mmae.fit_sampler(autoencoder, batches, components=2, seed=0)
    from mmae.evaluation.codes import encode_batches

    same = mmae.fit_sampler(autoencoder, encode_batches(autoencoder, batches).codes, components=2, seed=0)
    assert torch.equal(mixture.means, same.means)  # from batches = from their codes
    samples = mmae.generate(autoencoder, 7, mixture, generator=torch.Generator().manual_seed(0))
    assert set(samples) == {"vector", "text"}
    assert samples["vector"].shape == (7, 5) and samples["vector"].dtype == torch.float32
    assert samples["text"].shape == (7, 6) and samples["text"].dtype == torch.long
    again = mmae.generate(autoencoder, 7, sampler=mixture, generator=torch.Generator().manual_seed(0))
    assert torch.equal(samples["vector"], again["vector"]) and torch.equal(samples["text"], again["text"])
    other = mmae.generate(autoencoder, 7, sampler=mixture, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(samples["vector"], other["vector"])


def test_generate_names_what_is_missing(autoencoder):
    with pytest.raises(ConfigError, match="use model=vae"):  # an autoencoder has no prior
        mmae.generate(autoencoder, 2)
    with pytest.raises(InputError, match=r"call sampler = mmae.fit_sampler\(model, train_loader\) first"):
        mmae.generate(autoencoder, 2, sampler="gmm")
    with pytest.raises(InputError, match="'prior' or a GaussianMixture"):
        mmae.generate(autoencoder, 2, sampler="uniform")
    wrong = GaussianMixture(torch.ones(1), torch.zeros(1, 5), torch.eye(5).unsqueeze(0))
    with pytest.raises(InputError, match="codes of 5 units, the model's latent_dim is 3"):
        mmae.generate(autoencoder, 2, sampler=wrong)
    with pytest.raises(InputError, match=r"expected codes of shape \[N, 3\]"):
        mmae.fit_sampler(autoencoder, torch.zeros(10, 4))
