"""The decoded-sample cache: every file is decoded once, later epochs and runs read none, and a
changed file is noticed."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from manifest_factory import PAIRED_RATE as RATE
from manifest_factory import PAIRED_SECONDS as SECONDS
from manifest_factory import write_paired_manifest as _write
from PIL import Image

from mmae.core.errors import DataError
from mmae.modalities import AudioModality, ImageModality
from mmae.training.datamodule import ManifestDataModule


@pytest.fixture
def reads(monkeypatch):
    """How often each modality decoded a cell (DataLoader workers off, so counts are seen)."""
    counts = {"image": 0, "audio": 0}
    for cls, name in ((ImageModality, "image"), (AudioModality, "audio")):
        original = cls.load

        def counting(self, value, root, _original=original, _name=name):
            counts[_name] += 1
            return _original(self, value, root)

        monkeypatch.setattr(cls, "load", counting)
    return counts


def _modalities():
    return {"image": ImageModality(size=8),
            "audio": AudioModality(sample_rate=RATE, duration=SECONDS, n_fft=128, hop_length=32, n_mels=16)}


def _epochs(data: ManifestDataModule, epochs: int) -> list[torch.Tensor]:
    seen = []
    for epoch in range(epochs):
        loader = data.train_dataloader()
        loader.sampler.set_epoch(epoch)
        seen += [batch.index for batch in loader]
        seen += [batch.index for batch in data.val_dataloader()]
    return seen


def test_each_file_is_decoded_once_across_epochs(tmp_path, reads):
    path = _write(tmp_path, rows=40)
    data = ManifestDataModule(str(path), _modalities(), num_workers=0, batch_size=8)
    train, val = data.dataset("train"), data.ready("val")
    assert reads == {"image": len(train) + len(val), "audio": len(train) + len(val)}
    seen = _epochs(data, epochs=3)
    assert sum(len(i) for i in seen) == 3 * (len(train) + len(val))  # every sample, every epoch
    assert reads == {"image": len(train) + len(val), "audio": len(train) + len(val)}  # no more reads
    # In memory, the loaders run in the main process: workers would only copy the cache.
    assert data.train_dataloader().num_workers == 0 and train.cache.in_memory


def test_the_disk_cache_is_reused_by_a_later_run_and_notices_a_changed_file(tmp_path, reads):
    path = _write(tmp_path / "data", rows=24)
    cache = tmp_path / "cache"
    first = ManifestDataModule(str(path), _modalities(), num_workers=0, cache_dir=str(cache))
    rows = len(first.dataset("train"))
    assert reads["image"] == rows and not first.dataset("train").cache.in_memory
    assert any(cache.glob("manifest-train-*/image.npy"))

    ManifestDataModule(str(path), _modalities(), num_workers=0, cache_dir=str(cache))
    assert reads["image"] == rows  # a later run decodes nothing

    _, row = first.dataset("train").rows[0]
    changed = tmp_path / "data" / row["image"]
    Image.fromarray(np.full((8, 8), 255, dtype=np.uint8), mode="L").save(changed)
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    third = ManifestDataModule(str(path), _modalities(), num_workers=0, cache_dir=str(cache))
    assert reads["image"] == rows + 1  # only the changed file is decoded again
    assert torch.equal(third.dataset("train")[0]["inputs"]["image"], torch.ones(1, 8, 8))


def test_warming_with_workers_fills_the_main_process_cache(tmp_path):
    path = _write(tmp_path, rows=24)
    data = ManifestDataModule(str(path), _modalities(), num_workers=2)
    train = data.dataset("train")
    assert not train.cache.missing_rows()
    assert all(train.cache.complete(i) for i in range(len(train)))


def test_a_split_too_large_for_memory_goes_to_memory_mapped_files(tmp_path, monkeypatch):
    path = _write(tmp_path / "data", rows=12)
    monkeypatch.setattr("mmae.data.cache.available_memory", lambda: 1024)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    data = ManifestDataModule(str(path), _modalities(), num_workers=0)
    train = data.dataset("train")
    assert train.cache.directory.parent == tmp_path / "xdg" / "mmae" / "decoded"
    assert not train.cache.in_memory and not train.cache.missing_rows()
    # data.cache_dir puts them where the user says, whatever the size.
    data = ManifestDataModule(str(path), _modalities(), num_workers=0, cache_dir=str(tmp_path / "c"))
    assert data.dataset("train").cache.directory.parent == tmp_path / "c"


def test_an_undecodable_file_is_skipped_once_and_not_read_again(tmp_path, reads):
    path = _write(tmp_path, rows=12)
    (tmp_path / "img" / "0.png").write_bytes(b"not a png")  # row 1, a training row
    data = ManifestDataModule(str(path), _modalities(), num_workers=0, on_error="skip", val_fraction=0)
    train = data.dataset("train")
    assert train[0] is None and reads["image"] == len(train)
    _ = [train[i] for i in range(len(train))]
    assert reads["image"] == len(train)


def test_an_undecodable_file_names_its_row_and_column(tmp_path):
    path = _write(tmp_path, rows=12)
    (tmp_path / "wav" / "2.wav").write_bytes(b"RIFF garbage")
    with pytest.raises(DataError, match=r"manifest.csv, row 3, column 'audio': cannot decode audio"):
        ManifestDataModule(str(path), _modalities(), num_workers=0)


def test_cache_false_reads_lazily(tmp_path, reads):
    path = _write(tmp_path, rows=12)
    data = ManifestDataModule(str(path), {"image": ImageModality(size=8, normalize=False)}, num_workers=0,
                              cache=False)
    assert reads["image"] == 0
    train = data.dataset("train")
    train[0], train[0]
    assert reads["image"] == 2 and train.cache is None


@pytest.mark.slow
def test_the_log_mel_is_computed_once_per_sample_and_training_is_unchanged(compose_cfg, tmp_path):
    """Epoch 1 computes every sample's log-mel and later epochs none; the same run recomputing
    it every step (`training.cache_features=false`) ends with the same validation loss, as
    corruption and augmentation draw the same random numbers either way."""
    from mmae.cli.train import train

    common = ["experiment=tiny", "logger=none", "progress_bar=none", "modality=[image,audio]",
              "trainer.max_epochs=3"]
    cached_report, cached = train(compose_cfg(*common))
    features = cached["module"].features
    assert features.names == ["audio"]  # image pixels have no preprocessor
    data = cached["datamodule"]
    assert features.computed["audio"] == len(data.dataset("train")) + len(data.dataset("val"))

    plain_report, plain = train(compose_cfg(*common, "training.cache_features=false",
                                            f"paths.output_dir={tmp_path / 'uncached'}"))
    assert plain["module"].features is None
    loss = plain_report["metrics"]["val/loss"]
    assert cached_report["metrics"]["val/loss"] == pytest.approx(loss, rel=1e-5)


def test_a_cached_modality_leaves_the_others_preprocessing_with_its_gradients():
    """Only the cached log-mel is computed without gradients: a preprocessor that learns (here
    a scale on the image) still trains beside it."""
    from torch import nn

    from mmae.core.model import MultimodalAutoencoder
    from mmae.data.batch import collate, features_of
    from mmae.data.feature_cache import FeatureCache, cacheable_preprocessors
    from mmae.data.synthetic import SyntheticMultimodal
    from mmae.fusion import MeanFusion

    class LearnedScale(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(()))

        def forward(self, x):
            return x * self.scale

    audio = AudioModality(sample_rate=RATE, duration=SECONDS, n_fft=128, hop_length=32, n_mels=16)
    modalities = {"image": ImageModality(size=8, hidden_channels=[4]), "audio": audio}
    data = SyntheticMultimodal(modalities, num_samples=20)
    model = MultimodalAutoencoder(modalities, MeanFusion, latent_dim=4)
    model.encoder.preprocessors["image"] = LearnedScale()
    assert cacheable_preprocessors(model.encoder) == ["audio"]
    cache = FeatureCache(["audio"], {"train": len(data)})
    batch = collate([data[i] for i in range(4)])
    features, _, _ = features_of(model.encoder, batch,
                                  precomputed=cache.lookup(model.encoder, batch, "train"))
    assert features["image"].requires_grad and not features["audio"].requires_grad
    features["image"].sum().backward()
    assert model.encoder.preprocessors["image"].scale.grad is not None
    again, _, _ = features_of(model.encoder, batch,
                               precomputed=cache.lookup(model.encoder, batch, "train"))
    assert torch.equal(again["audio"], features["audio"]) and cache.computed["audio"] == 4
