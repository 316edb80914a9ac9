import pytest
import torch

from mmae.errors import ConfigError
from mmae.modalities import VectorModality
from mmae.model import AutoencoderOutput
from mmae.objectives import Objective, ReconstructionLoss, Step, masked_mean


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
    return Step(modalities, AutoencoderOutput(torch.zeros(3, 1), recon), targets, present)


def test_reconstruction_loss_is_the_masked_per_modality_mse():
    # a: samples 0 and 1 -> mean((1+1)/2, (0+4)/2) = 1.5 ; b: samples 1 and 2 -> mean(4, 9) = 6.5
    result = ReconstructionLoss(weights={"b": 2.0})(_step())
    assert result.parts["a"].item() == pytest.approx(1.5)
    assert result.parts["b"].item() == pytest.approx(6.5)
    assert result.value.item() == pytest.approx(1.5 + 2.0 * 6.5)


def test_objective_weights_terms_and_names_every_part():
    out = Objective({"reconstruction": ReconstructionLoss()}, weights={"reconstruction": 0.5})(_step())
    assert out.total.item() == pytest.approx(0.5 * (1.5 + 6.5))
    assert set(out.logged) == {"loss", "loss/reconstruction", "reconstruction/a", "reconstruction/b"}


def test_unknown_names_in_weights_are_reported():
    with pytest.raises(ConfigError,
                       match=r"weights name unknown modalities \['c'\]; expected some of \['a', 'b'\]"):
        ReconstructionLoss(weights={"c": 1.0})(_step())
    with pytest.raises(ConfigError, match=r"weights name unknown terms \['sparsity'\]"):
        Objective({"reconstruction": ReconstructionLoss()}, weights={"sparsity": 1.0})
