"""The user's own data: a manifest of PNG, WAV, text and table columns, and every way it can
be wrong."""

import csv
import json

import numpy as np
import pytest
import soundfile
import torch
from manifest_factory import AUDIO, TEXT_CONFIG, build_manifest, manifest_overrides
from PIL import Image

from mmae.cli.train import train
from mmae.core.errors import DataError
from mmae.data.manifest import ManifestDataset
from mmae.modalities import AudioModality, ImageModality, TabularModality, TextModality
from mmae.training.datamodule import ManifestDataModule


def _modalities(**image_options):
    tabular = TabularModality(numeric=["size", "weight"], categorical=["group"])
    return {"image": ImageModality(size=16, hidden_channels=[8, 16], **image_options),
            "audio": AudioModality(**AUDIO), "text": TextModality(model_config=TEXT_CONFIG),
            "tabular": tabular}


@pytest.fixture
def manifest(tmp_path):
    return build_manifest(tmp_path, rows=12, empty_every=0)


def _dataset(path, on_error="raise", **image_options):
    modalities = _modalities(**image_options)
    dataset = ManifestDataset(path, modalities, "train", on_error=on_error, split_fractions=(1, 0, 0))
    for name, modality in modalities.items():
        modality.fit(dataset.cells(name))
    return dataset


def _edit(path, row: int, column: str, value: str) -> None:
    rows = list(csv.DictReader(path.open()))
    rows[row - 1][column] = value
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_a_clean_manifest_loads_every_modality(manifest):
    dataset = _dataset(manifest)
    sample = dataset[0]
    inputs = sample["inputs"]
    assert inputs["image"].shape == (1, 16, 16) and inputs["audio"].shape == (4000,)
    assert inputs["text"].dtype == torch.long and inputs["tabular"].shape == (3,)
    assert all(bool(p) for p in sample["present"].values()) and sample["index"] == 1


def test_audio_at_another_rate_and_in_stereo_is_resampled_and_down_mixed(manifest):
    # Row 1 was written at 16 kHz stereo, row 2 at the expected 8 kHz mono.
    dataset = _dataset(manifest)
    resampled = dataset[0]["inputs"]["audio"]
    original, rate = soundfile.read(manifest.parent / "audio" / "0.wav", always_2d=True)
    assert rate == 16000 and original.shape[1] == 2
    expected = torch.from_numpy(original[::2, 0].astype(np.float32))[:4000]
    assert torch.corrcoef(torch.stack([resampled, expected]))[0, 1] > 0.99
    assert dataset[1]["inputs"]["audio"].shape == (4000,)


def test_empty_cells_mark_the_modality_missing_and_zero_filled(manifest):
    _edit(manifest, 2, "text", "")
    sample = _dataset(manifest)[1]
    assert not sample["present"]["text"] and sample["inputs"]["text"].abs().sum() == 0
    assert sample["present"]["image"]


@pytest.mark.parametrize("edit, message", [
    (lambda m: (m.parent / "images" / "3.png").unlink(),
     r"manifest.csv, row 4, column 'image': file not found"),
    (lambda m: _edit(m, 5, "weight", "nan"),
     r"row 5, columns \['size', 'weight', 'group'\] \(tabular\): column 'weight': 'nan' is not a finite"),
    (lambda m: _edit(m, 6, "size", "tall"), r"row 6, .*column 'size': expected a number, got 'tall'"),
    (lambda m: [_edit(m, 2, c, "") for c in ("image", "audio", "text", "size", "weight", "group")],
     r"manifest.csv, row 2: every modality is missing"),
    (lambda m: _edit(m, 3, "weight", ""), r"row 3, .*empty cell\(s\) \['weight'\] while others are set"),
])
def test_bad_cells_found_up_front_name_the_row_and_column(manifest, edit, message):
    edit(manifest)
    with pytest.raises(DataError, match=message):
        _dataset(manifest)


def _write_bytes(path, data: bytes) -> None:
    path.write_bytes(data)


@pytest.mark.parametrize("edit, row, message", [
    (lambda m: _write_bytes(m.parent / "audio" / "2.wav", b"RIFF not really a wave"), 3,
     r"manifest.csv, row 3, column 'audio': cannot decode audio"),
    (lambda m: _write_bytes(m.parent / "images" / "4.png", b"\x89PNG broken"), 5,
     r"manifest.csv, row 5, column 'image': cannot decode image"),
    (lambda m: Image.new("L", (20, 20)).save(m.parent / "images" / "6.png"), 7,
     r"row 7, column 'image': image size 20x20, expected 16x16 \(set the modality's resize: true"),
    (lambda m: Image.new("RGB", (16, 16)).save(m.parent / "images" / "7.png"), 8,
     r"row 8, column 'image': image mode RGB, expected L \(set the modality's convert: true"),
])
def test_bad_files_name_the_row_and_column_when_read(manifest, edit, row, message):
    edit(manifest)
    dataset = _dataset(manifest)
    with pytest.raises(DataError, match=message):
        dataset[row - 1]


def test_resize_and_convert_fix_what_they_are_allowed_to(manifest):
    Image.new("RGBA", (20, 24), color=(255, 0, 0, 255)).save(manifest.parent / "images" / "0.png")
    image = _dataset(manifest, resize=True, convert=True)[0]["inputs"]["image"]
    assert image.shape == (1, 16, 16)
    assert torch.allclose(image, torch.full_like(image, 76 / 255))  # luma of pure red


def test_a_column_named_in_the_config_but_absent_is_reported(manifest):
    modalities = _modalities()
    modalities["tabular"] = TabularModality(numeric=["size", "heigth"])
    with pytest.raises(DataError, match=r"column 'heigth' \(modality 'tabular'\) is not in the manifest; "
                                        r"its columns are \['audio', 'group', 'image', 'label'"):
        ManifestDataset(manifest, modalities)


def test_skip_mode_skips_bad_samples_and_counts_them(manifest):
    (manifest.parent / "images" / "3.png").unlink()  # found up front
    _edit(manifest, 5, "weight", "nan")  # found up front
    _write_bytes(manifest.parent / "audio" / "8.wav", b"garbage")  # found when read
    with (pytest.warns(UserWarning, match=r"skipped 2 row\(s\): manifest.csv, row 4"),
          pytest.warns(UserWarning, match=r"skipped 1 row\(s\) whose files failed to decode .*row 9")):
        data = ManifestDataModule(str(manifest), _modalities(), batch_size=4, num_workers=0,
                                  on_error="skip", split_fractions=(1, 0, 0))
    dataset = data.dataset("train")
    assert len(dataset) == 10 and len(dataset.skipped) == 3  # the undecodable file is counted too
    assert "row 9, column 'audio'" in dataset.skipped[2]
    batches = list(data.train_dataloader())
    assert sum(int(b.extras["skipped"]) for b in batches) == 1
    assert sum(len(b) for b in batches) == 9


def test_jsonl_and_parquet_manifests_read_like_csv(manifest):
    rows = list(csv.DictReader(manifest.open()))
    jsonl = manifest.with_suffix(".jsonl")
    jsonl.write_text("\n".join(json.dumps(r) for r in rows))
    assert len(_dataset(jsonl)) == 12
    import pyarrow
    import pyarrow.parquet as pq

    parquet = manifest.with_suffix(".parquet")
    pq.write_table(pyarrow.Table.from_pylist(rows), parquet)
    assert torch.equal(_dataset(parquet)[3]["inputs"]["tabular"], _dataset(manifest)[3]["inputs"]["tabular"])
    bad = manifest.with_suffix(".xlsx")
    bad.write_text("")
    with pytest.raises(DataError, match=r"unknown manifest format '\.xlsx'"):
        _dataset(bad)


def test_tabular_statistics_come_from_the_training_split(manifest):
    data = ManifestDataModule(str(manifest), _modalities(), num_workers=0, split_fractions=(0.5, 0.25, 0.25))
    tabular = data.modalities["tabular"]
    train_sizes = [float(c["size"]) for c in data.dataset("train").cells("tabular")]
    assert tabular.mean[0] == pytest.approx(np.mean(train_sizes))
    assert tabular.categories["group"] == sorted({c["group"] for c in data.dataset("train").cells("tabular")})


@pytest.mark.slow
def test_training_on_a_manifest_beats_the_mean_baseline_for_every_modality(tmp_path, compose_cfg):
    path = build_manifest(tmp_path / "data", rows=1000)
    report, _ = train(compose_cfg(*manifest_overrides(path), "trainer.max_epochs=12", "logger=none",
                                  "progress_bar=none"))
    for name, row in report["imputation"].items():
        assert row["from_others"] < row["baseline_mean"], (name, row)
    assert 0 < report["metrics"]["val/text/token_accuracy_all"] <= 1


@pytest.mark.parametrize("labels, expected", [
    (["3", "0", "7"], [1, 0, 2]),  # integers numbered in order of value (features give back 3, 0, 7)
    (["1.5", "2.5", "0.5"], [1, 2, 0]),  # not indices: sorted values
    (["-1", "0", "1"], [0, 1, 2]),  # -1 would collide with "unlabelled"
    (["dog", "cat", "dog"], [1, 0, 1]),
])
def test_labels_become_class_indices_without_collisions(manifest, labels, expected):
    for row in range(1, 13):
        _edit(manifest, row, "label", labels[(row - 1) % 3])
    dataset = _dataset(manifest)
    assert [int(dataset[i]["label"]) for i in range(3)] == expected


def _set_column(path, column: str, values: list[str]) -> None:
    rows = list(csv.DictReader(path.open()))
    for row, value in zip(rows, values, strict=True):
        row[column] = value
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_an_anomaly_column_marks_samples_for_anomaly_scores(manifest):
    assert "anomaly" not in _dataset(manifest)[0]["extras"]  # no column: nothing is claimed
    _set_column(manifest, "anomaly", ["1", "0", "", "true", "False", "yes", "no", "1.0", "0", "", "", ""])
    dataset = _dataset(manifest)
    flags = [bool(dataset[i]["extras"]["anomaly"]) for i in range(12)]
    assert flags == [True, False, False, True, False, True, False, True, False, False, False, False]


def test_a_bad_anomaly_cell_names_the_row(manifest):
    _set_column(manifest, "anomaly", ["0"] * 4 + ["maybe"] + ["0"] * 7)
    with pytest.raises(DataError, match=r"manifest\.csv, row 5, column 'anomaly': expected 1/0.*'maybe'"):
        _dataset(manifest)
