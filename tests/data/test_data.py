import pytest
import torch

from mmae.core.errors import ConfigError, InputError
from mmae.core.modality import Modality
from mmae.data import SyntheticMultimodal, split_batch
from mmae.data.batch import as_batch, collate, collate_counting_skipped
from mmae.modalities import AudioModality, ImageModality, TextModality, VectorModality
from mmae.modalities.text import CLASS_WORDS
from mmae.training.datamodule import MultimodalDataModule


def _dataset(split="train", **kwargs):
    modalities = {"image": ImageModality(size=16, hidden_channels=[8]), "vector": VectorModality(dim=12)}
    return SyntheticMultimodal(modalities, split=split, **{"num_samples": 2000, **kwargs})


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = _dataset(seed=1), _dataset(seed=1), _dataset(seed=2)
    assert torch.equal(a.views["image"], b.views["image"]) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.views["vector"], c.views["vector"])


def test_splits_partition_the_pool_and_share_no_sample():
    splits = {s: _dataset(split=s) for s in ("train", "val", "test")}
    assert [len(splits[s]) for s in ("train", "val", "test")] == [1600, 200, 200]
    indices = torch.cat([d.indices for d in splits.values()])
    assert torch.equal(indices.sort().values, torch.arange(2000))


def test_samples_have_labels_shapes_and_never_all_modalities_missing():
    data = _dataset(missing_rate=0.4)
    assert data.labels.unique().numel() == 10
    sample = data[0]
    assert sample["inputs"]["image"].shape == (1, 16, 16) and sample["inputs"]["vector"].shape == (12,)
    present = torch.stack([data.present["image"], data.present["vector"]], dim=1)
    assert present.any(dim=1).all()
    assert 0.3 < (~data.present["image"]).float().mean().item() < 0.45
    assert data.views["image"][~data.present["image"]].abs().sum() == 0  # zero-filled


def test_views_share_the_class_signal():
    # Class-mean images differ between classes far more than the noise level.
    data = _dataset(missing_rate=0.0, noise=0.05)
    means = torch.stack([data.views["image"][data.labels == k].mean(0) for k in range(10)])
    assert (means[0] - means[1]).pow(2).mean().sqrt() > 0.1


def test_unrenderable_kind_and_bad_arguments_are_rejected():
    class Graph(Modality):
        def build_encoder(self, embed_dim):
            raise NotImplementedError

        def build_decoder(self, hidden_dim):
            raise NotImplementedError

        def config(self):
            return {}

    with pytest.raises(ConfigError, match=r"cannot render modality 'molecule': Graph has no synthetic view "
                                          r"\(Modality.synthetic_view\): use it with data=manifest"):
        SyntheticMultimodal({"molecule": Graph((4,))})
    with pytest.raises(ConfigError, match="split must be one of"):
        _dataset(split="training")
    with pytest.raises(ConfigError, match="missing_rate must be in"):
        _dataset(missing_rate=1.0)


def test_datamodule_batches_carry_masks_and_split_batch_checks_them(small_modalities):
    dm = MultimodalDataModule(
        lambda split, modalities: SyntheticMultimodal(modalities, split=split, num_samples=100),
        small_modalities, batch_size=16)
    batch = next(iter(dm.train_dataloader()))
    inputs, present = split_batch(batch, ["image", "vector"])
    assert inputs["image"].shape == (16, 1, 8, 8)
    assert present["vector"].dtype == torch.bool and present["vector"].shape == (16,)
    assert batch.labels.shape == batch.index.shape == (16,) and len(batch) == 16
    with pytest.raises(InputError, match=r"batch lacks modalities \['audio'\]"):
        split_batch(batch, ["image", "audio"])
    with pytest.raises(ConfigError, match="batch_size must be > 0"):
        MultimodalDataModule(lambda **_: None, small_modalities, batch_size=0)


def test_a_batch_keeps_its_modalities_apart_from_what_the_samples_carry(small_modalities):
    """Modalities sit in `inputs`, never beside the labels: a modality may not take a name a
    sample uses for something else, and a flat mapping (a loader of your own) still reads."""
    data = SyntheticMultimodal(small_modalities, num_samples=40)
    batch = collate([data[i] for i in range(5)])
    assert set(batch.inputs) == set(batch.present) == {"image", "vector"}
    assert torch.equal(batch.index, data.indices[:5]) and torch.equal(batch.labels, data.labels[:5])
    assert set(batch.extras) == {"anomaly", "factors"} and batch.extras["factors"].shape[0] == 5
    for name in ("label", "present", "index", "inputs"):
        with pytest.raises(ConfigError, match=f"a modality cannot be named '{name}'"):
            MultimodalDataModule(lambda **_: None, {name: VectorModality(dim=3)})
    flat = {"image": batch.inputs["image"], "vector": batch.inputs["vector"], "present": batch.present,
            "label": batch.labels, "index": batch.index, "anomaly": batch.extras["anomaly"]}
    read = as_batch(flat)
    assert set(read.inputs) == {"image", "vector"} and torch.equal(read.labels, batch.labels)
    assert torch.equal(read.index, batch.index) and set(read.extras) == {"anomaly"}
    unindexed = {"vector": torch.zeros(2, 3), "present": {"vector": torch.ones(2, dtype=torch.bool)}}
    assert as_batch(unindexed).index is None and as_batch(unindexed).labels.tolist() == [-1, -1]
    assert collate([None, None]) is None
    flat_samples = [{"vector": torch.zeros(3), "present": {"vector": torch.tensor(True)},
                     "label": torch.tensor(2), "index": torch.tensor(i)} for i in (7, 9)]
    read = collate(flat_samples)  # a dataset of one's own, in the flat layout
    assert set(read.inputs) == {"vector"} and read.index.tolist() == [7, 9] and read.labels.tolist() == [2, 2]
    assert int(collate_counting_skipped([None, data[0], data[1]]).extras["skipped"]) == 1


def test_synthetic_audio_and_text_views_carry_the_class():
    modalities = {"audio": AudioModality(sample_rate=8000, duration=0.25, n_fft=256, hop_length=64,
                                         n_mels=32, hidden_channels=[8]),
                  "text": TextModality(model_config={"hidden_size": 32, "num_hidden_layers": 1,
                                                     "num_attention_heads": 2, "intermediate_size": 64})}
    data = SyntheticMultimodal(modalities, num_samples=200, missing_rate=0.0)
    assert data.views["audio"].shape == (160, 2000) and data.views["text"].dtype == torch.long
    # The tone's pitch rises with the class: the spectral peak above the private hum (< 100 Hz,
    # bins of 4 Hz) orders the classes.
    peaks = torch.fft.rfft(data.views["audio"]).abs()[:, 25:].argmax(dim=1).float()
    assert torch.corrcoef(torch.stack([peaks, data.labels.float()]))[0, 1] > 0.95
    phrases = modalities["text"].decode(data.views["text"][:20])
    assert all(p.split()[1] == CLASS_WORDS[int(y)] for p, y in zip(phrases, data.labels[:20], strict=True))
