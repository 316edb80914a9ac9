"""The LightningModule's training logic, driven through its public step methods."""

import warnings

import pytest
import torch

from mmae.core.corruption import Compose, GaussianNoise, ModalityDropout
from mmae.core.fusion import MeanFusion
from mmae.core.model import MultimodalAutoencoder
from mmae.core.objectives import ContractivePenalty, LossTerm, Objective, ReconstructionLoss, TermValue
from mmae.training.module import AutoencoderModule

# The steps run without a Trainer, so Lightning notes that self.log() has nowhere to go.
pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`:UserWarning")


class Recorder(LossTerm):
    """A zero loss term that keeps what it was shown."""

    def __init__(self):
        self.steps = []

    def __call__(self, step):
        self.steps.append(step)
        return TermValue(step.output.code.sum() * 0.0)


def _batch(n: int = 8):
    return {"image": torch.rand(n, 1, 8, 8), "vector": torch.rand(n, 5),
            "present": {"image": torch.ones(n, dtype=torch.bool),
                        "vector": torch.arange(n) % 2 == 0}}


def _module(small_modalities, corruption, *terms: LossTerm):
    model = MultimodalAutoencoder(small_modalities, MeanFusion, latent_dim=3, embed_dim=6)
    named = {"reconstruction": ReconstructionLoss(), **{f"t{i}": t for i, t in enumerate(terms)}}
    return AutoencoderModule(model, Objective(named), optimizer=torch.optim.SGD, corruption=corruption)


def test_training_sees_corrupted_inputs_but_the_loss_targets_the_clean_batch(small_modalities):
    recorder = Recorder()
    corruption = Compose(dropout=ModalityDropout(p=1.0), noise=GaussianNoise(sigma=1.0))
    module = _module(small_modalities, corruption, recorder)
    batch = _batch()
    loss = module.training_step(batch, 0)
    step = recorder.steps[-1]
    assert torch.equal(step.targets["image"], batch["image"])
    assert torch.equal(step.present["vector"], batch["present"]["vector"])  # clean masks
    assert not torch.equal(step.inputs["image"], batch["image"])  # the encoder saw noise
    assert step.global_step == 0 and loss.requires_grad


def test_validation_uses_clean_inputs_and_no_corruption(small_modalities):
    recorder = Recorder()
    module = _module(small_modalities, GaussianNoise(sigma=1.0), recorder)
    module.baselines = None
    batch = _batch()
    with torch.no_grad():
        module.validation_step(batch, 0)
    step = recorder.steps[-1]
    assert torch.equal(step.inputs["image"], batch["image"]) and step.global_step is None


def test_contractive_training_step_differentiates_through_the_inputs(small_modalities):
    module = _module(small_modalities, None, ContractivePenalty(lam=1.0, method="exact"))
    loss = module.training_step(_batch(), 0)
    loss.backward()
    grads = [p.grad for p in module.model.encoder.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_an_unregularized_overcomplete_code_is_warned_about(small_modalities):
    model = MultimodalAutoencoder(small_modalities, MeanFusion, latent_dim=5)
    with pytest.warns(UserWarning, match=r"overcomplete code \(latent_dim=5 >= 5 input elements\)"):
        AutoencoderModule(model, Objective({"r": ReconstructionLoss()}), optimizer=torch.optim.SGD)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        AutoencoderModule(model, Objective({"r": ReconstructionLoss()}), optimizer=torch.optim.SGD,
                          corruption=ModalityDropout(0.3))


def test_a_fully_skipped_batch_gives_a_zero_loss_every_rank_can_backpropagate(small_modalities):
    module = _module(small_modalities, None)
    loss = module.training_step(None, 0)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
