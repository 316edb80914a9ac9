"""Codes of a chosen shape: k-sparse (top-k) and binary (a ±1 hash, straight-through)."""

import json

import pytest
import torch

from mmae import MultimodalAutoencoder, load_encoder
from mmae.artifacts.export import export_encoder
from mmae.cli.train import train
from mmae.core.code_shapes import binary_code, keep_top_k
from mmae.core.errors import ConfigError
from mmae.core.fusion import MeanFusion
from mmae.core.objectives import Objective, ReconstructionLoss, Step


def _inputs(n: int = 7):
    g = torch.Generator().manual_seed(1)
    return {"image": torch.randn(n, 1, 8, 8, generator=g), "vector": torch.randn(n, 5, generator=g)}


def test_top_k_keeps_exactly_the_k_largest_units_and_their_values():
    code = torch.tensor([[0.5, -2.0, 3.0, 1.0, 0.1], [-1.0, -0.5, -3.0, -0.2, -4.0]])
    kept = keep_top_k(code, 2)
    assert torch.equal(kept, torch.tensor([[0.0, 0.0, 3.0, 1.0, 0.0], [0.0, -0.5, 0.0, -0.2, 0.0]]))


@pytest.mark.parametrize("k", [1, 3, 10])
def test_a_k_sparse_model_has_exactly_k_nonzero_units_and_gradients_only_through_them(small_modalities, k):
    model = MultimodalAutoencoder(small_modalities, MeanFusion, latent_dim=10, embed_dim=12,
                                  decoder_hidden=16, top_k=k)
    assert ((model.encoder(_inputs()).code != 0).sum(dim=1) == k).all()
    fused = {}
    model.encoder.fusion.register_forward_hook(lambda m, i, out: fused.setdefault("out", out))
    out = model(_inputs())
    fused["out"].retain_grad()
    out.reconstructions["vector"].pow(2).sum().backward()
    kept = out.code != 0
    assert (fused["out"].grad[~kept] == 0).all() and (fused["out"].grad[kept] != 0).any()


def test_binary_codes_are_plus_or_minus_one_with_the_tanh_gradient():
    x = torch.tensor([-2.0, -0.1, 0.0, 0.3, 5.0], requires_grad=True)
    code = binary_code(x)
    assert torch.equal(code, torch.tensor([-1.0, -1.0, 1.0, 1.0, 1.0]))
    code.sum().backward()
    assert torch.allclose(x.grad, 1 - torch.tanh(x.detach()) ** 2)


def test_a_binary_model_learns_through_the_straight_through_estimator(small_modalities):
    torch.manual_seed(0)
    model = MultimodalAutoencoder(small_modalities, MeanFusion, latent_dim=8, embed_dim=12,
                                  decoder_hidden=16, latent_activation="binary")
    objective = Objective({"reconstruction": ReconstructionLoss()})
    inputs = _inputs(64)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss() -> torch.Tensor:
        present = {n: torch.ones(64, dtype=torch.bool) for n in inputs}
        output = model(inputs, present)
        return objective(Step(model.modalities, output, inputs, present)).total

    first = loss().item()
    for _ in range(60):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    assert loss().item() < 0.8 * first
    assert set(model.encoder(inputs).code.unique().tolist()) <= {-1.0, 1.0}


def test_code_choices_that_cannot_work_are_refused(small_modalities):
    with pytest.raises(ConfigError, match=r"top_k=9 keeps more units than the code has \(latent_dim=8\)"):
        MultimodalAutoencoder(small_modalities, MeanFusion, latent_dim=8, top_k=9)
    with pytest.raises(ConfigError, match=r"model=vae has a Gaussian code: set model\.top_k=null"):
        MultimodalAutoencoder(small_modalities, MeanFusion, latent_dim=8, top_k=2, variational=True)
    with pytest.raises(ConfigError, match="top_k must be a positive integer"):
        MultimodalAutoencoder(small_modalities, MeanFusion, latent_dim=8, top_k=0)


def test_k_sparse_and_binary_codes_survive_export(tmp_path, small_modalities):
    for name, options in {"sparse": {"top_k": 3}, "binary": {"latent_activation": "binary"}}.items():
        model = MultimodalAutoencoder(small_modalities, MeanFusion, latent_dim=8, embed_dim=12,
                                      decoder_hidden=16, **options).eval()
        export_encoder(model, tmp_path / name)
        loaded = load_encoder(tmp_path / name)
        expected = model.encoder(model.encoder.preprocess(_inputs())).code
        assert torch.allclose(loaded(_inputs()), expected, atol=1e-6)
    described = json.loads((tmp_path / "sparse" / "config.json").read_text())["encoder"]
    assert described["top_k"] == 3


def test_model_ksparse_trains_through_mmae_train(compose_cfg, tmp_path):
    cfg = compose_cfg("experiment=tiny", "model=ksparse", "model.latent_dim=32", "model.top_k=5",
                      "logger=none", "progress_bar=none")
    train(cfg)
    vector = json.loads((tmp_path / "metrics.json").read_text())["imputation"]["vector"]
    assert vector["from_all"] < 0.97 * vector["baseline_mean"]  # 0.949 measured
    encoder = load_encoder(tmp_path / "encoder")
    codes = encoder({name: torch.rand(7, *m.raw_shape) for name, m in encoder.modalities.items()})
    assert codes.shape == (7, 32) and ((codes != 0).sum(dim=1) == 5).all()
