"""`mmae.denoise`, `mmae.impute`, `mmae.generate` through the public namespace (the learned
improvements are measured on the default job in tests/evaluation/test_evaluate.py)."""

import pytest
import torch

import mmae
from mmae.core.errors import ConfigError, InputError
from mmae.core.fusion import MeanFusion, PoEFusion
from mmae.modalities import TabularModality, TextModality, VectorModality

TEXT = {"model_config": {"model_type": "bert", "hidden_size": 16, "num_hidden_layers": 1,
                         "num_attention_heads": 2, "intermediate_size": 32}, "max_length": 6}


@pytest.fixture
def model():
    modalities = {"vector": VectorModality(dim=5, hidden=[8]), "text": TextModality(**TEXT),
                  "table": TabularModality(numeric=["a"], categorical=["c"], mean=[0.0], std=[1.0],
                                           categories={"c": ["x", "y"]}, hidden=[8])}
    return mmae.MultimodalAutoencoder(modalities, fusion=MeanFusion, latent_dim=4)


def _batch(model, n=4):
    text = model.modalities["text"]
    return {"vector": torch.randn(n, 5),
            "text": torch.stack([text.encode_text("a b") for _ in range(n)]),
            "table": torch.tensor([[0.5, 1.0]] * n)}


def test_impute_keeps_present_values_and_fills_the_rest(model):
    batch = _batch(model)
    present = {"vector": torch.tensor([True, True, False, False]), "text": torch.ones(4, dtype=torch.bool)}
    completed = mmae.impute(model, {"vector": batch["vector"], "text": batch["text"]}, present)
    assert set(completed) == {"vector", "text", "table"}
    assert torch.equal(completed["vector"][:2], batch["vector"][:2])
    assert torch.equal(completed["text"], batch["text"])  # token ids, as given
    model.eval()
    with torch.no_grad():
        reconstructions = model({"vector": batch["vector"], "text": batch["text"]}, present).reconstructions
    assert torch.equal(completed["vector"][2:], reconstructions["vector"][2:])
    table = completed["table"]  # never given: numeric value and a category index from the others
    assert table.shape == (4, 2) and set(table[:, 1].tolist()) <= {0.0, 1.0, 2.0}
    assert torch.equal(table[:, 1], reconstructions["table"][:, 1:].argmax(1).float())


def test_denoise_returns_the_reconstruction_of_each_given_modality(model):
    batch = _batch(model)
    model.train()
    cleaned = mmae.denoise(model, {"vector": batch["vector"], "table": batch["table"]})
    assert model.training  # mode restored
    assert set(cleaned) == {"vector", "table"}
    model.eval()
    with torch.no_grad():
        expected = model({"vector": batch["vector"], "table": batch["table"]}).reconstructions
    assert torch.equal(cleaned["vector"], expected["vector"])
    assert cleaned["vector"].shape == batch["vector"].shape


def test_bad_inputs_name_the_problem(model):
    with pytest.raises(InputError, match=r"unknown modalities \['audio'\]"):
        mmae.impute(model, {"audio": torch.zeros(2, 3)})
    with pytest.raises(InputError, match="no input"):
        mmae.denoise(model, {})


def test_generate_samples_features_from_a_vae_only():
    modalities = {"vector": VectorModality(dim=5, hidden=[8]), "text": TextModality(**TEXT)}
    vae = mmae.MultimodalAutoencoder(modalities, fusion=PoEFusion, latent_dim=4, variational=True)
    samples = mmae.generate(vae, 3, generator=torch.Generator().manual_seed(0))
    assert samples["vector"].shape == (3, 5)
    assert samples["text"].shape == (3, 6) and samples["text"].dtype == torch.long
    again = mmae.generate(vae, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(samples["vector"], again["vector"])
    with pytest.raises(ConfigError, match="use model=vae"):
        mmae.generate(mmae.MultimodalAutoencoder(modalities, fusion=MeanFusion), 2)


def test_denoising_errors_measure_the_noise_on_the_elements_it_changes(model, tmp_path):
    """With sigma 0.2 the noisy inputs are 0.04 from the clean ones (the noise variance): on
    every element of the vector, and on the numeric column only of the table (its category
    indices are never noised, and must not dilute the figure)."""
    import numpy as np

    from mmae.evaluation.probes import denoising_errors, save_denoised

    torch.manual_seed(0)
    batches = []
    for start in range(0, 2000, 500):
        batch = _batch(model, 500)
        batch["present"] = {n: torch.ones(500, dtype=torch.bool) for n in ("vector", "text", "table")}
        batch["index"] = torch.arange(start, start + 500)
        batches.append(batch)
    errors = denoising_errors(model, batches, sigma=0.2, seed=1)
    assert set(errors) == {"vector", "table"}  # text is discrete: nothing to add noise to
    assert errors["vector"]["noisy"] == pytest.approx(0.04, rel=0.05)
    assert errors["table"]["noisy"] == pytest.approx(0.04, rel=0.1)
    vector = errors["vector"]
    assert vector["reduction"] == pytest.approx(1 - vector["denoised"] / vector["noisy"])

    path = save_denoised(model, batches[:1], 0.2, tmp_path / "clean.npz")
    with np.load(path) as saved:
        assert saved["vector"].shape == (500, 5) and saved["text"].dtype == np.int64
        assert saved["ids"].tolist() == list(range(500)) and saved["present_table"].all()
