"""A user's own files out of the box: validation carved from train, empty splits refused up
front, feature statistics fitted on the training split only and carried through the export,
and the final report unable to lose the run's work."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from manifest_factory import PAIRED_RATE as RATE
from manifest_factory import PAIRED_SECONDS as SECONDS
from manifest_factory import write_paired_manifest as _write

import mmae
from mmae import MultimodalAutoencoder
from mmae.artifacts.export import export_encoder
from mmae.cli.train import train
from mmae.config import build
from mmae.core.errors import DataError, TrainingError
from mmae.core.fusion import MeanFusion
from mmae.data.batch import collate
from mmae.data.manifest import ManifestDataset
from mmae.modalities import AudioModality, ImageModality, VectorModality
from mmae.training.datamodule import ManifestDataModule


def _modalities():
    return {"image": ImageModality(size=8),
            "audio": AudioModality(sample_rate=RATE, duration=SECONDS, n_fft=128, hop_length=32, n_mels=16),
            "vector": VectorModality(dim=3, hidden=[16])}


def test_a_split_column_without_val_gets_a_seeded_validation_split_from_train(tmp_path, caplog):
    path = _write(tmp_path)
    with caplog.at_level(logging.INFO, logger="mmae.data.manifest"):
        train_rows = ManifestDataset(path, _modalities(), "train", val_fraction=0.2, seed=3, cache=False)
    val_rows = ManifestDataset(path, _modalities(), "val", val_fraction=0.2, seed=3, cache=False)
    test_rows = ManifestDataset(path, _modalities(), "test", val_fraction=0.2, seed=3, cache=False)
    numbers = {name: {n for n, _ in data.rows}
               for name, data in (("train", train_rows), ("val", val_rows), ("test", test_rows))}
    assert (len(numbers["train"]), len(numbers["val"]), len(numbers["test"])) == (24, 6, 30)
    assert not numbers["val"] & numbers["train"] and not numbers["val"] & numbers["test"]
    assert all(n % 2 == 1 for n in numbers["val"])  # carved from the training rows (odd row numbers)
    assert "24 train, 6 val, 30 test (val carved from train: data.val_fraction=0.2)" in caplog.text
    again = ManifestDataset(path, _modalities(), "val", val_fraction=0.2, seed=3, cache=False)
    other = ManifestDataset(path, _modalities(), "val", val_fraction=0.2, seed=4, cache=False)
    assert {n for n, _ in again.rows} == numbers["val"]  # seeded
    assert {n for n, _ in other.rows} != numbers["val"]


def test_an_empty_split_that_a_stage_needs_is_refused_at_setup(tmp_path):
    path = _write(tmp_path)
    data = ManifestDataModule(str(path), _modalities(), num_workers=0, val_fraction=0.0)
    with pytest.raises(DataError, match=r"manifest.csv \(val\): the val split is empty, and the fit stage "
                                         r"needs it .*data.val_fraction > 0"):
        data.setup("fit")
    data.setup("test")  # the test split has rows


def test_statistics_are_fitted_on_the_training_split_only(tmp_path):
    path = _write(tmp_path)
    modalities = _modalities()
    data = ManifestDataModule(str(path), modalities, num_workers=0)
    train = data.dataset("train")
    batch = collate([train[i] for i in range(len(train))])
    pixels = batch.inputs["image"]
    assert modalities["image"].mean == pytest.approx([pixels.double().mean().item()], rel=1e-6)
    assert modalities["image"].std == pytest.approx([pixels.double().std(unbiased=False).item()], rel=1e-5)
    log_mel = modalities["audio"].build_preprocessor()(batch.inputs["audio"]).double()  # [N, 1, mels, frames]
    assert modalities["audio"].mean == pytest.approx(log_mel.mean(dim=(0, 1, 3)).tolist(), rel=1e-6)
    assert modalities["audio"].std == pytest.approx(log_mel.std(dim=(0, 1, 3), unbiased=False).tolist(),
                                                    rel=1e-5)
    vectors = batch.inputs["vector"].double()
    assert modalities["vector"].mean == pytest.approx(vectors.mean(0).tolist(), rel=1e-6)
    # The test rows (three times as large) took no part.
    everything = ManifestDataset(path, _modalities(), "test", cache=False)
    test_pixels = torch.stack([everything[i]["inputs"]["image"] for i in range(len(everything))])
    assert test_pixels.mean() > 1.5 * modalities["image"].mean[0]


def test_given_statistics_and_normalize_false_are_respected(tmp_path):
    path = _write(tmp_path)
    given = ImageModality(size=8, mean=[0.5], std=[0.25])
    raw = VectorModality(dim=3, normalize=False)
    ManifestDataModule(str(path), {"image": given, "vector": raw}, num_workers=0)
    assert (given.mean, given.std) == ([0.5], [0.25])
    assert raw.mean is None and raw.build_standardizer() is None


def test_raw_inputs_give_the_same_codes_after_export_and_load(tmp_path):
    path = _write(tmp_path)
    modalities = _modalities()
    data = ManifestDataModule(str(path), modalities, num_workers=0)
    model = mmae.MultimodalAutoencoder(modalities, MeanFusion, latent_dim=4).eval()
    assert set(model.encoder.standardizers) == {"image", "audio", "vector"}
    test = data.dataset("test")
    batch = collate([test[i] for i in range(8)])
    raw = {name: batch.inputs[name] for name in modalities}
    with torch.no_grad():
        codes = model.encoder(model.encoder.preprocess(raw)).code
    export_encoder(model, tmp_path / "encoder")
    config = json.loads((tmp_path / "encoder" / "config.json").read_text())
    assert config["modalities"]["audio"]["config"]["mean"] == modalities["audio"].mean
    loaded = mmae.load_encoder(tmp_path / "encoder")
    torch.testing.assert_close(loaded(raw), codes, atol=1e-6, rtol=0)
    # Standardising changes the codes: the statistics are really used.
    plain = {**raw, "vector": raw["vector"] / 1000}
    assert not torch.allclose(loaded(plain), codes, atol=1e-3)


def _tiny(path: Path, *extra: str) -> list[str]:
    """The README's manifest command with small sizes (modality.image.size=8, as a user would)."""
    return ["data=manifest", f"data.path={path}", "modality=[image,audio]",
            "modality.image.size=8", f"modality.audio.sample_rate={RATE}",
            f"modality.audio.duration={SECONDS}",
            "modality.audio.n_fft=128", "modality.audio.hop_length=32", "modality.audio.n_mels=16",
            "data.num_workers=0", "logger=none", "trainer.max_epochs=2", "model.latent_dim=8",
            "callbacks.media=null", "progress_bar=none", *extra]


def test_the_readme_command_on_a_train_test_manifest_writes_metrics_and_encoder(tmp_path, compose_cfg):
    path = _write(tmp_path / "data")
    report, objects = train(compose_cfg(*_tiny(path)))
    output = objects["output_dir"]
    assert (output / "encoder" / "model.safetensors").is_file()
    saved = json.loads((output / "metrics.json").read_text())
    assert saved["metrics"]["val/image/recon_all"] == pytest.approx(report["metrics"]["val/image/recon_all"])
    # Validation reports plain MSE in each modality's units and its ratio to the mean baseline.
    metrics = saved["metrics"]
    assert metrics["val/audio/ratio_all"] == pytest.approx(
        metrics["val/audio/recon_all"] / metrics["val/audio/baseline_mean"], rel=1e-5)
    assert len(objects["datamodule"].dataset("val")) == 3  # 10% of 30 training rows


def test_a_failing_report_keeps_the_checkpoints_and_encoder(tmp_path, compose_cfg, monkeypatch):
    path = _write(tmp_path / "data")

    def broken(*args, **kwargs):
        raise IndexError("list index out of range")

    monkeypatch.setattr("mmae.cli.train._report", broken)
    with pytest.raises(TrainingError, match=r"training finished and its work is saved \(.*checkpoints and "
                                            r".*encoder\), but the final report failed: IndexError"):
        train(compose_cfg(*_tiny(path)))
    assert (tmp_path / "encoder" / "model.safetensors").is_file()
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file()


def test_reconstruction_weights_override_as_the_config_comment_says(compose_cfg):
    cfg = compose_cfg("objective.terms.reconstruction.weights={vector:0.5}")
    assert dict(cfg.objective.terms.reconstruction.weights) == {"vector": 0.5}
    objective = build(cfg.objective)
    assert objective.terms["reconstruction"].weights == {"vector": 0.5}


def test_each_modality_chooses_its_decoder_likelihood():
    from mmae.core.likelihoods import Bernoulli, Gaussian

    modalities = {"image": ImageModality(size=8, likelihood="bernoulli"),
                  "vector": VectorModality(dim=3, mean=[0.0, 1.0, 2.0], std=[1.0, 2.0, 4.0],
                                           likelihood="gaussian_feature")}
    model = MultimodalAutoencoder(modalities, MeanFusion, latent_dim=4)
    likelihoods = model.decoder.likelihoods
    assert isinstance(likelihoods["image"], Bernoulli) and isinstance(likelihoods["vector"], Gaussian)
    assert likelihoods["vector"].log_scale.shape == (3,)  # one learned scale per element
    out = model({"image": torch.rand(5, 1, 8, 8), "vector": torch.randn(5, 3)})
    assert out.reconstructions["image"].min() > 0 and out.reconstructions["image"].max() < 1
    with pytest.raises(mmae.ConfigError, match=r"likelihood must be one of .*'laplace'"):
        VectorModality(dim=3, likelihood="poisson")


def test_the_parameter_table_counts_every_part():
    from mmae.cli.train import format_parameters

    model = MultimodalAutoencoder(_modalities(), MeanFusion, latent_dim=4)
    table = format_parameters(model).splitlines()
    assert table[0].split() == ["part", "encoder", "decoder"]
    rows = {line.split()[0]: [int(v.replace(",", "")) for v in line.split()[-2:]] for line in table[1:-1]}
    total = sum(p.numel() for p in model.parameters())
    assert table[-1].startswith(f"trainable {total:,} of {total:,} (")
    assert set(rows) == {"image", "audio", "vector", "fusion", "total"}
    assert rows["total"] == [sum(p.numel() for p in model.encoder.parameters()),
                             sum(p.numel() for p in model.decoder.parameters())]
    assert sum(r[0] for n, r in rows.items() if n != "total") == rows["total"][0]
