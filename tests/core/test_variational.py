"""Variational pieces: Gaussian closed forms, PoE / MoE / MoPoE fusions, VAE sampling."""

import math
from itertools import combinations

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from mmae import MultimodalAutoencoder
from mmae.core.errors import ConfigError
from mmae.core.fusion import AttentionFusion, MeanFusion, MoEFusion, MoPoEFusion, PoEFusion
from mmae.core.gaussian import Posterior, kl_to_standard_normal, product_of_experts
from mmae.core.registry import FUSIONS

NAMES = ["a", "b", "c"]


def test_kl_to_standard_normal_matches_the_closed_form():
    # KL(N(1, 1) || N(0, 1)) = 0.5 * (1 + 1 - 1 - 0) = 0.5 ; KL(N(0, e^2) || N(0,1)) = 0.5*(e^2 - 1 - 2)
    mu = torch.tensor([[1.0, 0.0]])
    logvar = torch.tensor([[0.0, 2.0]])
    expected = 0.5 + 0.5 * (math.exp(2.0) - 1.0 - 2.0)
    assert kl_to_standard_normal(mu, logvar).item() == pytest.approx(expected)
    mu, logvar = torch.randn(5, 3), torch.randn(5, 3)
    reference = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(kl_to_standard_normal(mu, logvar), reference)


def test_product_of_experts_is_the_precision_weighted_combination():
    # Experts N(1, 1) and N(3, 0.5), prior N(0, 1): precision 1 + 1 + 2 = 4,
    # mean (1*1 + 2*3 + 1*0) / 4 = 7/4, variance 1/4. The third expert is masked out.
    mus = torch.tensor([[[1.0], [3.0], [100.0]]])
    logvars = torch.log(torch.tensor([[[1.0], [0.5], [1e-3]]]))
    mu, logvar = product_of_experts(mus, logvars, torch.tensor([[True, True, False]]))
    assert mu.item() == pytest.approx(7 / 4)
    assert logvar.exp().item() == pytest.approx(1 / 4)
    # No expert at all: the prior.
    mu, logvar = product_of_experts(mus, logvars, torch.tensor([[False, False, False]]))
    assert mu.item() == 0.0 and logvar.item() == 0.0


def _pinned_experts(fusion, means):
    """Make expert m output mean `means[m]` and a tiny variance whatever its input."""
    with torch.no_grad():
        for m, name in enumerate(fusion.modalities):
            fusion.experts[name].weight.zero_()
            fusion.experts[name].bias.copy_(torch.tensor([means[m], -10.0]))
    return fusion


def test_moe_weights_are_uniform_over_present_experts_and_sampling_follows_them():
    mask = torch.tensor([[True, True, True], [True, False, True], [False, True, False]])
    expected = torch.tensor([[1 / 3, 1 / 3, 1 / 3], [0.5, 0.0, 0.5], [0.0, 1.0, 0.0]])
    torch.testing.assert_close(MoEFusion.mixture_weights(mask), expected)

    fusion = _pinned_experts(MoEFusion(NAMES, embed_dim=2, latent_dim=1), [0.0, 10.0, 20.0]).train()
    n = 30_000
    present = {"a": torch.ones(n, dtype=torch.bool), "b": torch.arange(n) % 2 == 0,
               "c": torch.ones(n, dtype=torch.bool)}
    chosen = (fusion({k: torch.zeros(n, 2) for k in NAMES}, present).mu.squeeze(1) / 10).round().long()
    with_b = present["b"]
    freq_all = torch.bincount(chosen[with_b], minlength=3).float() / with_b.sum()
    freq_ac = torch.bincount(chosen[~with_b], minlength=3).float() / (~with_b).sum()
    torch.testing.assert_close(freq_all, torch.full((3,), 1 / 3), atol=0.015, rtol=0)
    torch.testing.assert_close(freq_ac, torch.tensor([0.5, 0.0, 0.5]), atol=0.015, rtol=0)


def test_moe_evaluation_uses_the_mixture_mean_and_moment_matched_variance():
    fusion = _pinned_experts(MoEFusion(NAMES, embed_dim=2, latent_dim=1), [0.0, 10.0, 20.0]).eval()
    present = {"a": torch.tensor([True]), "b": torch.tensor([False]), "c": torch.tensor([True])}
    posterior = fusion({k: torch.zeros(1, 2) for k in NAMES}, present)
    var = math.exp(-10.0)
    assert posterior.mu.item() == pytest.approx(10.0)
    assert posterior.logvar.exp().item() == pytest.approx(var + 0.5 * (0 + 400) - 100, rel=1e-4)
    expected_kl = 0.5 * sum(0.5 * (var + m * m - 1 + 10.0) for m in (0.0, 20.0))
    assert posterior.kl.item() == pytest.approx(expected_kl, rel=1e-5)


def test_mopoe_draws_non_empty_subsets_uniformly_without_enumerating_them():
    n = 70_000
    mask = torch.ones(n, 3, dtype=torch.bool)
    mask[: n // 2, 1] = False  # half the rows have only a and c present
    subsets = MoPoEFusion.sample_subsets(mask)
    assert subsets.any(dim=1).all() and not (subsets & ~mask).any()
    codes = subsets.long() @ torch.tensor([1, 2, 4])
    full = torch.bincount(codes[n // 2:], minlength=8)[1:].float() / (n // 2)
    torch.testing.assert_close(full, torch.full((7,), 1 / 7), atol=0.01, rtol=0)
    partial = torch.bincount(codes[: n // 2], minlength=8).float() / (n // 2)
    torch.testing.assert_close(partial[[1, 4, 5]], torch.full((3,), 1 / 3), atol=0.01, rtol=0)


def test_mopoe_evaluation_is_the_product_of_all_present_experts():
    fusion = MoPoEFusion(NAMES, embed_dim=4, latent_dim=2).eval()
    embeddings = {k: torch.randn(3, 4) for k in NAMES}
    present = {"a": torch.tensor([True, True, False]), "b": torch.tensor([True, False, True]),
               "c": torch.tensor([False, True, True])}
    mus, logvars, mask = fusion.experts_of(embeddings, present)
    expected = product_of_experts(mus, logvars, mask)
    posterior = fusion(embeddings, present)
    torch.testing.assert_close(posterior.mu, expected[0])
    torch.testing.assert_close(posterior.kl, kl_to_standard_normal(*expected))
    torch.testing.assert_close(PoEFusion.forward(fusion, embeddings, present).mu, expected[0])


@pytest.mark.parametrize("fusion_cls", [FUSIONS[n] for n in FUSIONS], ids=list(FUSIONS))
@pytest.mark.parametrize("subset", [set(s) for r in (1, 2, 3) for s in combinations(NAMES, r)],
                         ids=lambda s: "+".join(sorted(s)))
def test_missing_modalities_do_not_influence_any_fusion(fusion_cls, subset):
    fusion = fusion_cls(NAMES, embed_dim=8, latent_dim=3).eval()
    embeddings = {n: torch.randn(4, 8) for n in NAMES}
    only = fusion({n: embeddings[n] for n in subset}, {n: torch.ones(4, dtype=torch.bool) for n in subset})
    garbage = {n: (e if n in subset else torch.full_like(e, 1e4)) for n, e in embeddings.items()}
    masked = fusion(garbage, {n: torch.full((4,), n in subset) for n in NAMES})
    get = (lambda p: p.mu) if isinstance(only, Posterior) else (lambda t: t)
    assert torch.isfinite(get(only)).all()
    torch.testing.assert_close(get(only), get(masked), atol=1e-5, rtol=1e-5)


def test_vae_samples_in_training_decodes_the_mean_in_evaluation(small_modalities):
    model = MultimodalAutoencoder(small_modalities, PoEFusion, latent_dim=4, variational=True)
    inputs = {"image": torch.randn(5, 1, 8, 8), "vector": torch.randn(5, 5)}
    out = model.train()(inputs)
    assert out.posterior is not None and not torch.equal(out.latent, out.code)
    out = model.eval()(inputs)
    assert torch.equal(out.latent, out.posterior.mu)
    assert not torch.equal(model(inputs, sample=True).latent, out.latent)
    # Cross-modal generation: decode the posterior of a subset.
    from_vector = model({"vector": inputs["vector"]}, sample=True).reconstructions["image"]
    assert from_vector.shape == (5, 1, 8, 8)
    generated = model.generate(7, generator=torch.Generator().manual_seed(0))
    assert generated["image"].shape == (7, 1, 8, 8) and generated["vector"].shape == (7, 5)


def test_vae_with_a_deterministic_fusion_gets_a_gaussian_head(small_modalities):
    model = MultimodalAutoencoder(small_modalities, MeanFusion, latent_dim=4, variational=True).eval()
    out = model({"vector": torch.randn(3, 5)})
    assert out.posterior.mu.shape == (3, 4) and out.posterior.kl.shape == (3,)


def test_incompatible_choices_fail_at_build_time_with_the_allowed_values(small_modalities):
    with pytest.raises(ConfigError, match=r"fusion PoEFusion is variational: it needs model=vae; "
                                          r"a deterministic model .* takes fusion=mean, concat or attention"):
        MultimodalAutoencoder(small_modalities, PoEFusion, latent_dim=4)
    with pytest.raises(ConfigError, match=r"latent_activation must be null or one of "
                                          r"\['binary', 'relu', 'sigmoid', 'tanh'\]"):
        MultimodalAutoencoder(small_modalities, MeanFusion, latent_activation="softmax")
    with pytest.raises(ConfigError, match="model=vae has a Gaussian code"):
        MultimodalAutoencoder(small_modalities, MeanFusion, variational=True, latent_activation="sigmoid")
    with pytest.raises(ConfigError, match="generate\\(\\) samples the prior of a VAE"):
        MultimodalAutoencoder(small_modalities, MeanFusion).generate(2)
    with pytest.raises(ConfigError, match=r"embed_dim \(10\) must be divisible by num_heads \(4\)"):
        AttentionFusion(NAMES, embed_dim=10, latent_dim=2)
