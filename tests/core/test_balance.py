"""No modality wins by its units: two views of the same factors, one in units 1000x the
other's, are both reconstructed better than their training mean under the default objective
(standardised features, Gaussian likelihood in nats per element), where a plain MSE in the
features' own units learns only the large one."""

from __future__ import annotations

import pytest
import torch

from mmae.core.fusion import MeanFusion
from mmae.core.model import MultimodalAutoencoder
from mmae.core.objectives import ReconstructionLoss, Step
from mmae.data.statistics import fit_feature_statistics
from mmae.modalities import VectorModality


def _views(samples: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    factors = torch.randn(samples, 2, generator=generator)
    mixing = torch.randn(2, 2, 8, generator=torch.Generator().manual_seed(7))
    small = factors @ mixing[0] + 0.05 * torch.randn(samples, 8, generator=generator)
    large = 1000 * (factors @ mixing[1] + 0.05 * torch.randn(samples, 8, generator=generator)) + 5000
    return {"small": small, "large": large}


def _train(normalize: bool, use_likelihoods: bool) -> dict[str, float]:
    """Test error / mean-baseline error per view after a short training."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    train, test = _views(512, generator), _views(256, generator)
    modalities = {n: VectorModality(dim=8, hidden=[32], normalize=normalize) for n in train}
    present = {n: torch.ones(512, dtype=torch.bool) for n in train}
    fit_feature_statistics(modalities, [{**train, "present": present}])
    model = MultimodalAutoencoder(modalities, MeanFusion, latent_dim=2, embed_dim=32, decoder_hidden=32)
    loss = ReconstructionLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(400):
        output = model(train)
        step = Step(modalities, output, train, present,
                    likelihoods=model.decoder.likelihoods if use_likelihoods else None)
        optimizer.zero_grad()
        loss(step).value.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        reconstructions = model(test).reconstructions
    error = {n: (reconstructions[n] - test[n]).pow(2).mean() for n in test}
    baseline = {n: (test[n] - train[n].mean(0)).pow(2).mean() for n in test}
    return {n: float(error[n] / baseline[n]) for n in test}


@pytest.mark.slow
def test_both_views_beat_their_mean_baseline_under_the_default_objective():
    ratios = _train(normalize=True, use_likelihoods=True)
    assert ratios["small"] < 0.2 and ratios["large"] < 0.2, ratios


@pytest.mark.slow
def test_a_plain_mse_in_the_features_own_units_learns_only_the_large_view():
    ratios = _train(normalize=False, use_likelihoods=False)
    assert ratios["large"] < 0.5, ratios
    assert ratios["small"] > 0.9, ratios  # no better than predicting its mean
