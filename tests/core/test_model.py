import pytest
import torch

from mmae import InputError, MultimodalAutoencoder
from mmae.core.errors import ConfigError
from mmae.core.fusion import ConcatFusion, MeanFusion
from mmae.core.objectives import Objective, ReconstructionLoss, Step
from mmae.modalities import ImageModality


def _batch(n: int = 6):
    return {"image": torch.randn(n, 1, 8, 8), "vector": torch.randn(n, 5)}


@pytest.fixture(params=[MeanFusion, ConcatFusion], ids=["mean", "concat"])
def model(request, small_modalities):
    return MultimodalAutoencoder(small_modalities, request.param, latent_dim=4, embed_dim=12,
                                 decoder_hidden=16)


def test_forward_reconstructs_every_modality_from_any_subset(model):
    for inputs in (_batch(), {"image": _batch()["image"]}, {"vector": _batch()["vector"]}):
        out = model(inputs)
        assert out.latent.shape == (6, 4)
        assert out.reconstructions["image"].shape == (6, 1, 8, 8)
        assert out.reconstructions["vector"].shape == (6, 5)


def _loss(model, inputs, present):
    objective = Objective({"reconstruction": ReconstructionLoss()})
    out = model(inputs, present)
    return objective(Step(model.modalities, out, inputs, present)).total


def test_masked_values_do_not_affect_the_loss_or_gradients(model):
    inputs = _batch()
    present = {"image": torch.tensor([True, False, True, False, True, True]),
               "vector": torch.tensor([True, True, False, True, True, False])}
    reference = _loss(model, inputs, present)
    changed = {n: x.clone() for n, x in inputs.items()}
    changed["image"][~present["image"]] = 123.0
    changed["vector"][~present["vector"]] = float("nan")
    model.zero_grad()
    loss = _loss(model, changed, present)
    loss.backward()
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_wrong_shape_names_the_modality_and_both_shapes(model):
    inputs = _batch()
    inputs["image"] = torch.randn(6, 3, 8, 8)
    with pytest.raises(InputError, match=r"modality 'image': expected a batch of shape "
                                         r"\[B, 1, 8, 8\], got \[6, 3, 8, 8\]"):
        model(inputs)


def test_a_sample_with_every_modality_missing_is_named(model):
    present = {"image": torch.tensor([True, False, True, True, True, True]),
               "vector": torch.tensor([True, False, False, True, True, True])}
    with pytest.raises(InputError, match=r"sample\(s\) \[1\] of the batch have every modality missing"):
        model(_batch(), present)


def test_unknown_modality_and_bad_masks_are_reported(model):
    with pytest.raises(InputError,
                       match=r"unknown modality 'audio'; this model was built for \['image', 'vector'\]"):
        model({"audio": torch.randn(2, 4)})
    with pytest.raises(InputError, match="no modality given"):
        model({})
    with pytest.raises(InputError, match=r"present\['vector'\]: expected a bool tensor of shape \[6\]"):
        model(_batch(), {"vector": torch.ones(6)})
    with pytest.raises(InputError, match="disagree on the batch size"):
        model({"image": torch.randn(2, 1, 8, 8), "vector": torch.randn(3, 5)})
    with pytest.raises(InputError, match=r"present\['vector'\] marks samples present but no 'vector' tensor"):
        model({"image": torch.randn(2, 1, 8, 8)}, {"vector": torch.tensor([True, False])})


@pytest.mark.parametrize("size", [(10, 10), (7, 13), (28, 28), (64, 126)])
def test_conv_stacks_reconstruct_any_map_size_exactly(size):
    image = ImageModality(size=list(size))
    model = MultimodalAutoencoder({"image": image}, MeanFusion, latent_dim=4)
    out = model({"image": torch.rand(2, 1, *size)})
    assert out.reconstructions["image"].shape == (2, 1, *size)
    # The automatic depth halves the map until it has at most 32 positions.
    height, width = image.net.sizes[-1]
    assert height * width <= 32 and len(image.net.sizes) == len(image.hidden_channels) + 1


def test_automatic_depth_keeps_parameters_sensible_for_large_inputs():
    small, large = ImageModality(size=32), ImageModality(size=256)
    def parameters(modality):
        return sum(p.numel() for p in modality.build_encoder(128).parameters())
    # 64x more pixels: more layers, but the bottleneck Linear stays the same size.
    assert parameters(large) < 2 * parameters(small)


def test_too_deep_a_conv_stack_is_refused():
    with pytest.raises(ConfigError, match=r"a 4x4 map .* cannot be halved 3 times"):
        ImageModality(size=4, hidden_channels=[8, 16, 32])


def test_bad_model_sizes_are_rejected(small_modalities):
    with pytest.raises(ConfigError, match="must be positive"):
        MultimodalAutoencoder(small_modalities, MeanFusion, latent_dim=0)
