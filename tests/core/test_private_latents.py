"""Shared + private latents (MMVAE+): shapes, the old model at private_dim=0, what each
reconstruction depends on, the private KL's closed form, modality dropout, export and features."""

import json
import math

import numpy as np
import pytest
import torch
from export_signing import as_unsigned_format

from mmae import MultimodalAutoencoder, load_encoder
from mmae.artifacts.export import build_model, describe, export_encoder, load_checkpoint_model
from mmae.cli.features import main as features_main
from mmae.core.corruption import ModalityDropout
from mmae.core.errors import ConfigError
from mmae.core.fusion import MeanFusion, MoEFusion, PoEFusion
from mmae.core.gaussian import Posterior
from mmae.core.model import AutoencoderOutput
from mmae.core.objectives import KLDivergence, Objective, ReconstructionLoss, Step
from mmae.data.batch import features_of
from mmae.evaluation.codes import encode_batches
from mmae.modalities import ImageModality, VectorModality

LATENT, PRIVATE, BATCH = 4, 3, 6
#: (variational, fusion): a deterministic model and a mixture-of-experts VAE (MMVAE+'s fusion).
KINDS = [(False, MeanFusion), (True, MoEFusion)]
IDS = ["ae-mean", "vae-moe"]


def _modalities():
    return {"image": ImageModality(channels=1, size=8, hidden_channels=[4]),
            "vector": VectorModality(dim=5, hidden=[8])}


def _model(variational=False, fusion=MeanFusion, private_dim=PRIVATE, modalities=None):
    return MultimodalAutoencoder(modalities or _modalities(), fusion, latent_dim=LATENT, embed_dim=12,
                                 decoder_hidden=16, variational=variational, private_dim=private_dim)


def _batch(n=BATCH):
    g = torch.Generator().manual_seed(1)
    return {"image": torch.rand(n, 1, 8, 8, generator=g), "vector": torch.randn(n, 5, generator=g)}


def _seeded(seed):
    return torch.Generator().manual_seed(seed)


# --- building ---------------------------------------------------------------------------------

@pytest.mark.parametrize("variational, fusion", KINDS, ids=IDS)
def test_shapes_of_the_private_parts(variational, fusion):
    model = _model(variational, fusion).eval()
    present = {"image": torch.tensor([True, False, True, True, True, True]),
               "vector": torch.ones(BATCH, dtype=torch.bool)}
    out = model(_batch(), present)
    assert out.code.shape == out.latent.shape == (BATCH, LATENT)
    assert {n: tuple(w.shape) for n, w in out.private_latent.items()} == {"image": (BATCH, PRIVATE),
                                                                         "vector": (BATCH, PRIVATE)}
    assert {n: tuple(w.shape) for n, w in out.private.items()} == {"image": (BATCH, PRIVATE),
                                                                  "vector": (BATCH, PRIVATE)}
    assert set(out.private_posteriors) == ({"image", "vector"} if variational else set())
    assert out.reconstructions["image"].shape == (BATCH, 1, 8, 8)
    assert out.reconstructions["vector"].shape == (BATCH, 5)
    heads = model.encoder.private_heads
    assert heads["image"].out_features == (2 if variational else 1) * PRIVATE
    assert model.decoder.trunk[0].in_features == LATENT + PRIVATE
    # Only the vector is given: the image's private latent is decoded anyway, from its prior.
    only_vector = model({"vector": _batch()["vector"]})
    assert set(only_vector.private) == {"vector"} and set(only_vector.private_latent) == {"image", "vector"}
    encoding = model.encoder({"vector": _batch()["vector"]})
    assert encoding.with_private(["image", "vector"]).shape == (BATCH, LATENT + 2 * PRIVATE)
    assert torch.equal(encoding.with_private(["image", "vector"])[:, LATENT:LATENT + PRIVATE],
                       torch.zeros(BATCH, PRIVATE))


@pytest.mark.parametrize("variational, fusion", [*KINDS, (True, PoEFusion)], ids=[*IDS, "vae-poe"])
def test_private_dim_zero_builds_exactly_the_old_model(variational, fusion):
    torch.manual_seed(0)
    old = MultimodalAutoencoder(_modalities(), fusion, latent_dim=LATENT, embed_dim=12, decoder_hidden=16,
                                variational=variational)
    torch.manual_seed(0)
    new = _model(variational, fusion, private_dim=0)
    old_state, new_state = old.state_dict(), new.state_dict()
    assert list(new_state) == list(old_state)
    assert all(torch.equal(old_state[k], new_state[k]) for k in old_state)  # same draws, same weights
    new.load_state_dict(old_state)  # strict: an older checkpoint loads
    out = new.eval()(_batch())
    assert out.private == out.private_latent == out.private_posteriors == {}
    torch.testing.assert_close(out.reconstructions["vector"], old.eval()(_batch()).reconstructions["vector"],
                               rtol=0, atol=0)
    # An older description (no private_dim key) rebuilds the model without private latents.
    description = describe(old)
    del description["encoder"]["private_dim"]
    assert build_model(description).private_dim == 0


@pytest.mark.parametrize("value", [-1, 2.5, True])
def test_a_bad_private_dim_is_refused_naming_the_setting(value):
    with pytest.raises(ConfigError, match=r"private_dim must be an integer >= 0"):
        _model(private_dim=value)


# --- what each reconstruction depends on --------------------------------------------------------

def test_a_present_modality_is_decoded_from_its_own_private_code_only():
    model = _model().eval()
    z = torch.randn(BATCH, LATENT)
    codes = {"image": torch.randn(BATCH, PRIVATE), "vector": torch.randn(BATCH, PRIVATE)}
    changed = {**codes, "image": codes["image"] + 1.0}
    with torch.no_grad():
        before, after = model.decoder(z, codes), model.decoder(z, changed)
        # Through the encoder: the image's private head moves the image's reconstruction alone.
        reference = model(_batch()).reconstructions
        model.encoder.private_heads["image"].bias += 1.0
        moved = model(_batch()).reconstructions
    assert (after["image"] - before["image"]).abs().max() > 1e-3
    torch.testing.assert_close(after["vector"], before["vector"], rtol=0, atol=0)
    assert (moved["image"] - reference["image"]).abs().max() > 1e-3
    torch.testing.assert_close(moved["vector"], reference["vector"], rtol=0, atol=0)


def test_a_missing_modality_of_a_vae_is_decoded_from_a_seeded_prior_draw():
    model = _model(True, MoEFusion).eval()
    vector = {"vector": _batch()["vector"]}
    with torch.no_grad():
        first, again = model(vector, generator=_seeded(0)), model(vector, generator=_seeded(0))
        other = model(vector, generator=_seeded(1))
        model.encoder.private_heads["image"].bias += 5.0  # unused: the image is missing
        unmoved = model(vector, generator=_seeded(0))
    torch.testing.assert_close(first.reconstructions["image"], again.reconstructions["image"], rtol=0, atol=0)
    torch.testing.assert_close(first.reconstructions["image"], unmoved.reconstructions["image"],
                               rtol=0, atol=0)
    assert (first.reconstructions["image"] - other.reconstructions["image"]).abs().max() > 1e-4
    # The present vector uses its own posterior mean (eval): the seed does not reach it.
    torch.testing.assert_close(first.reconstructions["vector"], other.reconstructions["vector"],
                               rtol=0, atol=0)
    torch.testing.assert_close(first.private_latent["vector"], first.private["vector"], rtol=0, atol=0)
    # The image's private latent is exactly the generator's draw (modalities in order: image first).
    draw = torch.randn(BATCH, PRIVATE, generator=_seeded(0))
    torch.testing.assert_close(first.private_latent["image"], draw, rtol=0, atol=0)


def test_a_present_vae_modality_decodes_a_posterior_sample_while_training_and_its_mean_in_eval():
    model = _model(True, MoEFusion)
    with torch.no_grad():
        trained = model.train()(_batch())
        evaluated = model.eval()(_batch())
    for name in ("image", "vector"):
        torch.testing.assert_close(evaluated.private_latent[name], evaluated.private[name], rtol=0, atol=0)
        assert (trained.private_latent[name] - trained.private[name]).abs().min() > 0  # noise everywhere


def test_partially_missing_samples_take_the_prior_row_by_row():
    present = {"image": torch.tensor([True, False, True, False, True, True]),
               "vector": torch.ones(BATCH, dtype=torch.bool)}
    missing = ~present["image"]
    ae = _model().eval()
    with torch.no_grad():
        out = ae(_batch(), present)
    assert torch.equal(out.private_latent["image"][missing], torch.zeros(2, PRIVATE))
    assert torch.equal(out.private_latent["image"][~missing], out.private["image"][~missing])
    assert out.private["image"][~missing].abs().min() > 0
    vae = _model(True, MoEFusion).eval()
    with torch.no_grad():
        out = vae(_batch(), present, generator=_seeded(3))
    draw = torch.randn(BATCH, PRIVATE, generator=_seeded(3))
    torch.testing.assert_close(out.private_latent["image"][missing], draw[missing], rtol=0, atol=0)
    torch.testing.assert_close(out.private_latent["image"][~missing], out.private["image"][~missing],
                               rtol=0, atol=0)
    posterior = out.private_posteriors["image"]
    assert torch.equal(posterior.mu[missing], torch.zeros(2, PRIVATE))  # the prior itself
    assert torch.equal(posterior.logvar[missing], torch.zeros(2, PRIVATE))


def test_decoding_the_shared_latent_alone_and_generating_draw_every_private_part_from_the_prior():
    z = torch.randn(2, LATENT)
    ae = _model().eval()
    with torch.no_grad():
        zeros = {n: torch.zeros(2, PRIVATE) for n in ae.modalities}
        torch.testing.assert_close(ae.decoder(z)["vector"], ae.decoder(z, zeros)["vector"], rtol=0, atol=0)
    vae = _model(True, MoEFusion).eval()
    with torch.no_grad():
        drawn = vae.decoder(z, generator=_seeded(0))
        g = _seeded(0)
        manual = vae.decoder(z, {n: torch.randn(2, PRIVATE, generator=g) for n in vae.modalities})
        generated = vae.generate(2, generator=_seeded(5))
        g = _seeded(5)
        shared = torch.randn(2, LATENT, generator=g)
        expected = vae.decoder(shared, {n: torch.randn(2, PRIVATE, generator=g) for n in vae.modalities})
    for name in ("image", "vector"):
        torch.testing.assert_close(drawn[name], manual[name], rtol=0, atol=0)
        torch.testing.assert_close(generated[name], expected[name], rtol=0, atol=0)


# --- modality dropout ---------------------------------------------------------------------------

def test_a_dropped_modality_is_reconstructed_from_the_shared_code_and_its_prior():
    """The clean image is the target, but with the image dropped its private head gets no
    gradient: only the shared code can carry what the vector says about the image."""
    model = _model()
    batch = _batch()
    clean = {n: torch.ones(BATCH, dtype=torch.bool) for n in batch}
    objective = Objective({"reconstruction": ReconstructionLoss()})
    for dropped in (True, False):
        seen = {"image": torch.zeros(BATCH, dtype=torch.bool) if dropped else clean["image"],
                "vector": clean["vector"]}
        model.zero_grad()
        out = model(batch, seen)
        step = Step(model.modalities, out, batch, clean, likelihoods=model.decoder.likelihoods)
        objective(step).logged["reconstruction/image"].backward()
        grad = model.encoder.private_heads["image"].weight.grad
        if dropped:
            assert grad is None or torch.equal(grad, torch.zeros_like(grad))
            assert torch.equal(out.private_latent["image"], torch.zeros(BATCH, PRIVATE))
        else:
            assert grad.abs().max() > 0


def test_modality_dropout_masks_reach_the_private_latents():
    dropout = ModalityDropout(p=1.0)  # every sample keeps exactly one modality
    batch = _batch()
    present = {n: torch.ones(BATCH, dtype=torch.bool) for n in batch}
    _, seen = dropout(batch, present, generator=_seeded(0))
    assert bool((seen["image"] ^ seen["vector"]).all())
    model = _model(True, MoEFusion).train()
    out = model(batch, seen)
    for name in batch:
        kl = out.private_posteriors[name].kl
        assert torch.equal(kl[~seen[name]], torch.zeros(int((~seen[name]).sum())))
        assert bool((kl[seen[name]] > 0).all())


# --- the KL term ----------------------------------------------------------------------------------

def test_the_kl_term_adds_the_private_posteriors_closed_form():
    # Shared: mu = [1, 0], var = [1, 2] -> 0.5 (1 + 1 - 1 - 0) + 0.5 (2 + 0 - 1 - ln 2) = 1 - ln(2) / 2
    # for sample 0; mu = 0, var = 1 (KL 0) for sample 1.
    shared = Posterior.gaussian(torch.tensor([[1.0, 0.0], [0.0, 0.0]]),
                                torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]]))
    # Private, image: mu = 0.5, var = e -> 0.5 (e + 0.25 - 1 - 1) = 0.5 e - 0.875 for sample 0,
    # missing (the prior) for sample 1; vector: mu = -1, var = 1 -> 0.5 for both.
    image = Posterior.gaussian(torch.tensor([[0.5], [0.0]]), torch.tensor([[1.0], [0.0]]))
    vector = Posterior.gaussian(torch.tensor([[-1.0], [-1.0]]), torch.zeros(2, 1))
    code = shared.mu
    output = AutoencoderOutput(code, {}, code, shared, private_posteriors={"image": image, "vector": vector})
    result = KLDivergence(beta=0.1)(Step({}, output, {}, {}))
    kl_shared = (1 - math.log(2) / 2 + 0.0) / 2
    kl_private = ((0.5 * math.e - 0.875 + 0.5) + (0.0 + 0.5)) / 2
    assert result.parts["kl_shared"].item() == pytest.approx(kl_shared, rel=1e-6)
    assert result.parts["kl_private"].item() == pytest.approx(kl_private, rel=1e-6)
    assert result.parts["kl"].item() == pytest.approx(kl_shared + kl_private, rel=1e-6)
    assert result.value.item() == pytest.approx(0.1 * (kl_shared + kl_private), rel=1e-6)


def test_the_models_private_kl_is_the_closed_form_of_its_heads():
    model = _model(True, MoEFusion).eval()
    batch = _batch()
    present = {"image": torch.tensor([True, False, True, True, True, True]),
               "vector": torch.ones(BATCH, dtype=torch.bool)}
    with torch.no_grad():
        out = model(batch, present)
        expected = torch.zeros(BATCH)
        for name in batch:
            x = model.encoder.encoder_input(name, batch[name], None)
            mu, logvar = model.encoder.private_heads[name](model.encoder.encoders[name](x)).chunk(2, dim=-1)
            per_sample = 0.5 * (logvar.exp() + mu.pow(2) - 1 - logvar).sum(dim=1)
            expected += torch.where(present[name], per_sample, 0.0)
        result = KLDivergence(beta=1.0)(Step(model.modalities, out, batch, present))
    assert result.parts["kl_private"].item() == pytest.approx(expected.mean().item(), rel=1e-5)
    assert result.parts["kl"].item() == pytest.approx((out.posterior.kl + expected).mean().item(), rel=1e-5)


# --- export and features ----------------------------------------------------------------------------

@pytest.mark.parametrize("variational, fusion", KINDS, ids=IDS)
def test_export_and_load_encoder_give_the_shared_code_and_optionally_the_private_parts(
        tmp_path, variational, fusion):
    model = _model(variational, fusion).eval()
    folder = export_encoder(model, tmp_path / "encoder")
    assert json.loads((folder / "config.json").read_text())["encoder"]["private_dim"] == PRIVATE
    shared, wide = load_encoder(folder), load_encoder(folder, private=True)
    assert (shared.feature_dim, wide.feature_dim) == (LATENT, LATENT + 2 * PRIVATE)
    assert wide.feature_names()[LATENT:LATENT + 2] == ["image.private.0", "image.private.1"]
    raw = _batch()
    present = {"image": torch.tensor([True, False, True, True, False, True]),
               "vector": torch.tensor([True, True, False, True, True, True])}
    with torch.no_grad():
        features = model.encoder.preprocess(raw)
        for inputs in (features, {"vector": features["vector"]}, {"image": features["image"]}):
            masks = {n: present[n] if len(inputs) == 2 else torch.ones(BATCH, dtype=torch.bool)
                     for n in inputs}
            encoding = model.encoder(inputs, masks)
            given = {n: raw[n] for n in inputs}
            torch.testing.assert_close(shared(given, masks), encoding.code, atol=1e-6, rtol=0)
            codes = wide(given, masks)
            torch.testing.assert_close(codes, encoding.with_private(["image", "vector"]), atol=1e-6, rtol=0)
            torch.testing.assert_close(codes[:, :LATENT], encoding.code, atol=1e-6, rtol=0)
            for i, name in enumerate(["image", "vector"]):
                block = codes[:, LATENT + i * PRIVATE:LATENT + (i + 1) * PRIVATE]
                missing = ~masks[name] if name in masks else torch.ones(BATCH, dtype=torch.bool)
                assert torch.equal(block[missing], torch.zeros(int(missing.sum()), PRIVATE))
                assert bool((block[~missing].abs().sum(dim=1) > 0).all())


def test_private_features_are_refused_for_an_encoder_without_them_and_old_exports_load(tmp_path):
    folder = export_encoder(_model(private_dim=0), tmp_path / "encoder")
    with pytest.raises(ConfigError, match=r"private=True .* model.private_dim=0"):
        load_encoder(folder, private=True)
    as_unsigned_format(folder, 3, lambda c: c["encoder"].pop("private_dim"))  # as mmae 0.3 wrote it
    assert load_encoder(folder).private_dim == 0


def test_a_vae_export_samples_the_private_parts_too_leaving_missing_ones_zero(tmp_path):
    folder = export_encoder(_model(True, MoEFusion).eval(), tmp_path / "encoder")
    raw = {"vector": _batch()["vector"]}
    mean = load_encoder(folder, private=True)(raw)
    sampled = load_encoder(folder, private=True, sample=True)(raw)
    assert torch.equal(sampled[:, LATENT:LATENT + PRIVATE], torch.zeros(BATCH, PRIVATE))  # image missing
    assert (sampled[:, LATENT + PRIVATE:] - mean[:, LATENT + PRIVATE:]).abs().min() > 0


@pytest.mark.slow
def test_onnx_export_of_the_private_features_matches_pytorch(tmp_path):
    pytest.importorskip("onnxscript")
    onnxruntime = pytest.importorskip("onnxruntime")
    from mmae.artifacts.onnx import export_onnx

    folder = export_encoder(_model(True, MoEFusion).eval(), tmp_path / "encoder")
    encoder = load_encoder(folder, private=True)
    assert export_onnx(encoder, tmp_path / "encoder.onnx") < 1e-4
    session = onnxruntime.InferenceSession(str(tmp_path / "encoder.onnx"))
    assert [o.name for o in session.get_outputs()] == ["features"]
    raw = _batch()
    masks = {"image": torch.tensor([True, False, True, True, True, True]),
             "vector": torch.tensor([True, True, False, True, True, True])}
    feeds = {**{n: x.numpy() for n, x in raw.items()},
             **{f"present_{n}": m.numpy() for n, m in masks.items()}}
    (onnx_features,) = session.run(None, feeds)
    assert onnx_features.shape == (BATCH, LATENT + 2 * PRIVATE)
    torch.testing.assert_close(torch.from_numpy(onnx_features), encoder(raw, masks), atol=1e-4, rtol=1e-4)


def test_features_cli_writes_the_shared_then_the_private_codes(tmp_path):
    folder = export_encoder(_model(True, MoEFusion).eval(), tmp_path / "encoder")
    args = [f"encoder={folder}", "split=val", "data.dataset.num_samples=200", "data.batch_size=64"]
    features_main([*args, f"output={tmp_path / 'shared.npz'}"])
    features_main([*args, f"output={tmp_path / 'wide.npz'}", "private=true"])
    shared, wide = np.load(tmp_path / "shared.npz"), np.load(tmp_path / "wide.npz")
    assert shared["features"].shape[1] == LATENT and wide["features"].shape[1] == LATENT + 2 * PRIVATE
    np.testing.assert_array_equal(wide["ids"], shared["ids"])
    np.testing.assert_allclose(wide["features"][:, :LATENT], shared["features"], atol=1e-6)
    # The same rows as load_encoder(private=True) gives, with zeros where the image is missing.
    from omegaconf import OmegaConf

    from mmae.config import build, compose_config

    cfg = compose_config("features", [*args, "output=x.npz"])
    encoder = load_encoder(folder, private=True)
    loader = build(cfg.data, _partial_=True)(modalities=encoder.modalities).val_dataloader()
    expected = encode_batches(encoder, loader)
    np.testing.assert_allclose(wide["features"], expected.codes.numpy(), atol=1e-6)
    image_missing = np.concatenate([b.present["image"].numpy() for b in loader]) == 0
    assert OmegaConf.select(cfg, "data.dataset.num_samples") == 200
    assert 0 < image_missing.sum() < len(image_missing)
    assert np.all(wide["features"][image_missing, LATENT:LATENT + PRIVATE] == 0)
    assert np.all(np.abs(wide["features"][~image_missing, LATENT:LATENT + PRIVATE]).sum(axis=1) > 0)


def test_features_cli_refuses_private_for_an_encoder_without_them(tmp_path):
    folder = export_encoder(_model(private_dim=0), tmp_path / "encoder")
    with pytest.raises(SystemExit, match=r"private=True asks for the private latents"):
        features_main([f"encoder={folder}", f"output={tmp_path / 'f.npz'}", "private=true"])


# --- training through mmae-train --------------------------------------------------------------------

TRAIN = ["experiment=tiny", "logger=none", "progress_bar=none", "trainer.max_epochs=6", "model.private_dim=4"]


def _trained(compose_cfg, *overrides):
    from mmae.cli.train import train

    cfg = compose_cfg(*TRAIN, *overrides)
    assert cfg.corruption.p > 0  # the default corruption drops modalities (and adds noise)
    _, objects = train(cfg)
    return objects


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [[], ["model=mmvae_plus", "fusion=moe"]], ids=["ae", "mmvae_plus-moe"])
def test_training_with_private_latents_keeps_the_shared_code_cross_modal(compose_cfg, tmp_path, overrides):
    objects = _trained(compose_cfg, *overrides)
    written = json.loads((tmp_path / "metrics.json").read_text())
    for name, row in written["imputation"].items():
        # Decoded from the shared code of the others and a prior private part, each modality
        # still beats predicting its training mean.
        assert row["gain_over_baseline"] > 0.02, (name, row)
        assert row["from_all"] < row["from_others"], (name, row)
    model = load_checkpoint_model(tmp_path / "checkpoints" / "best.ckpt")
    assert model.private_dim == 4 and model.variational == bool(overrides)
    # The private latents carry what the shared code does not: replacing them by the prior
    # makes the from-all reconstruction worse.
    batch = next(iter(objects["datamodule"].val_dataloader()))
    features, present, raw = features_of(model.encoder, batch)
    with torch.no_grad():
        own = model(features, present, raw=raw)
        prior = model.decoder(own.latent, generator=_seeded(0))
    for name, modality in model.modalities.items():
        mask = present[name]
        error_own = modality.reconstruction_loss(own.reconstructions[name], features[name])[mask].mean()
        error_prior = modality.reconstruction_loss(prior[name], features[name])[mask].mean()
        assert error_own < error_prior, (name, float(error_own), float(error_prior))
    # The run's encoder export: the shared code and the private option, to 1e-6.
    wide = load_encoder(tmp_path / "encoder", private=True)
    assert json.loads((tmp_path / "encoder" / "config.json").read_text())["encoder"]["private_dim"] == 4
    with torch.no_grad():
        encoding = model.encoder(features, present, raw=raw)
        shared = load_encoder(tmp_path / "encoder")(features, present, preprocessed=True, raw=raw)
        torch.testing.assert_close(shared, encoding.code, atol=1e-6, rtol=0)
        torch.testing.assert_close(wide(features, present, preprocessed=True, raw=raw),
                                   encoding.with_private(list(model.modalities)), atol=1e-6, rtol=0)
