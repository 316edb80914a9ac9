"""The spoken-digits builder (scripts/realdata.py): a tiny build is well formed, splits by voice,
labels what is spoken, and rebuilds byte for byte from its seed."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil

import numpy as np
import pytest

LIMIT = 60

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("espeak-ng") is None,
                       reason="espeak-ng is not on PATH (apt-get install -y espeak-ng; CI installs it)"),
]


@pytest.fixture(scope="module")
def realdata():
    import realdata

    return realdata


@pytest.fixture(scope="module")
def built(realdata, tmp_path_factory):
    """(folder, manifest rows, dataset.json record) of one tiny build."""
    folder = tmp_path_factory.mktemp("spoken_digits")
    manifest = realdata.build_spoken_digits(folder, seed=0, limit=LIMIT)
    with manifest.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    record = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    return folder, rows, record


def test_manifest_has_train_and_test_only(built):
    _, rows, record = built
    assert list(rows[0]) == ["image", "audio", "label", "split", "voice"]
    assert len(rows) == LIMIT == record["counts"]["samples"]
    splits = [row["split"] for row in rows]
    assert set(splits) == {"train", "test"}
    assert 0.2 <= splits.count("test") / len(rows) <= 0.45
    assert sorted(int(row["label"]) for row in rows) == sorted(list(range(10)) * (LIMIT // 10))


def test_test_voices_never_heard_in_training(built):
    _, rows, _ = built
    train = {row["voice"] for row in rows if row["split"] == "train"}
    test = {row["voice"] for row in rows if row["split"] == "test"}
    assert train and test and not train & test


def test_files_decode_as_specified(built, realdata):
    import soundfile
    from PIL import Image

    folder, rows, record = built
    pixels, labels = realdata.load_digit_images()
    index = {s["image"]: s["index"] for s in record["samples"]}
    for row in rows:
        with Image.open(folder / row["image"]) as image:
            assert image.format == "PNG" and image.mode == "L" and image.size == (8, 8)
            assert np.array_equal(np.asarray(image), pixels[index[row["image"]]])
        assert int(row["label"]) == labels[index[row["image"]]]
        info = soundfile.info(folder / row["audio"])
        assert (info.format, info.subtype, info.samplerate, info.channels, info.frames) == (
            "WAV", "PCM_16", 16000, 1, 16000)
        assert soundfile.read(folder / row["audio"], dtype="int16")[0].any()


def test_label_is_the_spoken_word(built, realdata):
    """A clip is the rendering of its label's word, and of no other digit's word."""
    import soundfile

    folder, rows, record = built
    by_audio = {s["audio"]: s for s in record["samples"]}
    fields = {f.name for f in dataclasses.fields(realdata.Sample)}
    for row in rows[:3]:
        entry = by_audio[row["audio"]]
        sample = realdata.Sample(**{k: v for k, v in entry.items() if k in fields})
        assert entry["word"] == realdata.WORDS[int(row["label"])] == sample.word
        audio = soundfile.read(folder / row["audio"], dtype="int16")[0]
        matches = [np.array_equal(realdata.render(dataclasses.replace(sample, label=digit)), audio)
                   for digit in range(10)]
        assert matches == [digit == int(row["label"]) for digit in range(10)]


def test_same_seed_rebuilds_identical_bytes(built, realdata, tmp_path):
    folder, rows, _ = built
    stamp = (folder / "dataset.json").stat().st_mtime_ns
    realdata.build_spoken_digits(folder, seed=0, limit=LIMIT)  # complete: nothing to do
    assert (folder / "dataset.json").stat().st_mtime_ns == stamp
    again = realdata.build_spoken_digits(tmp_path / "again", seed=0, limit=LIMIT)
    assert again.read_bytes() == (folder / "manifest.csv").read_bytes()
    wav = rows[0]["audio"]
    assert (tmp_path / "again" / wav).read_bytes() == (folder / wav).read_bytes()
