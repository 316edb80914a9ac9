"""The real-data suite (scripts/realdata_suite.py, scripts/speech.py): small builds are well
formed, split by font, voice and word, miss modalities at the stated rate, rebuild byte for byte
from their seed, keep the class in the table's geometry only, and load with the overrides the
suite names for them."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

LETTERS_LIMIT = 78  # 3 rows per class
SHAPES_LIMIT = 60
SMALL = 26  # a second, smaller build: its rows are the first of the bigger one's


def _missing_tools() -> str | None:
    """Why the builders cannot run here (None when they can)."""
    needs = {"espeak-ng": "espeak-ng", "flite": "flite", "text2wave": "festival", "fc-list": "fontconfig"}
    absent = [package for program, package in needs.items() if shutil.which(program) is None]
    if not Path("/usr/share/festival/voices/english/kal_diphone").is_dir():
        absent.append("festvox-kallpc16k")
    if not Path("/usr/share/dict/words").is_file():
        absent.append("wamerican")
    return f"apt-get install -y {' '.join(absent)} (CI installs them: .ci/run)" if absent else None


pytestmark = pytest.mark.skipif(_missing_tools() is not None, reason=f"speech engines, fonts or words "
                                f"missing: {_missing_tools()}")


@pytest.fixture(scope="module")
def suite():
    import realdata_suite

    return realdata_suite


def _rows(manifest: Path) -> list[dict]:
    with manifest.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def letters(suite, tmp_path_factory):
    """(manifest, rows) of a small letters build."""
    manifest = suite.build_letters(tmp_path_factory.mktemp("letters"), seed=0, limit=LETTERS_LIMIT)
    return manifest, _rows(manifest)


@pytest.fixture(scope="module")
def shapes(suite, tmp_path_factory):
    manifest = suite.build_shapes(tmp_path_factory.mktemp("shapes"), seed=0, limit=SHAPES_LIMIT)
    return manifest, _rows(manifest)


def _split_values(rows: list[dict], column: str) -> tuple[set, set]:
    """A column's non-empty values in train rows and in test rows."""
    return tuple({r[column] for r in rows if r["split"] == split and r[column]}
                 for split in ("train", "test"))


# --------------------------------------------------------------------------- manifests


@pytest.mark.slow
def test_letters_manifest_is_well_formed(letters):
    _, rows = letters
    assert list(rows[0]) == ["image", "audio", "text", "label", "split", "font", "voice"]
    assert len(rows) == LETTERS_LIMIT and {r["label"] for r in rows} == set("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    assert {r["split"] for r in rows} == {"train", "test"}
    assert 0.2 <= sum(r["split"] == "test" for r in rows) / len(rows) <= 0.4
    for row in rows:
        if row["text"]:
            assert re.fullmatch(r"[a-z]{3,8}", row["text"]) and row["text"][0] == row["label"].lower()
        assert bool(row["font"]) == bool(row["image"]) and bool(row["voice"]) == bool(row["audio"])
        assert row["image"] or row["audio"] or row["text"]


@pytest.mark.slow
def test_shapes_manifest_is_well_formed(shapes, suite):
    _, rows = shapes
    assert list(rows[0]) == ["image", "audio", *suite.NUMERIC, "camera", "label", "split", "voice"]
    assert {r["label"] for r in rows} == set(suite.SHAPES) and {r["split"] for r in rows} == {"train", "test"}
    for row in rows:
        table = [row[c] for c in (*suite.NUMERIC, "camera")]
        assert all(table) or not any(table)  # the table is missing as a whole
        if all(table):
            assert all(np.isfinite(float(row[c])) for c in suite.NUMERIC) and row["camera"] in suite.CAMERAS
        assert row["image"] or row["audio"] or all(table)


def test_files_decode_as_declared(letters, shapes):
    import soundfile
    from PIL import Image

    for manifest, rows in (letters, shapes):
        for row in [r for r in rows if r["image"] and r["audio"]][:4]:
            with Image.open(manifest.parent / row["image"]) as image:
                assert (image.format, image.mode, image.size) == ("PNG", "RGB", (32, 32))
            info = soundfile.info(manifest.parent / row["audio"])
            assert (info.subtype, info.samplerate, info.channels, info.frames) == ("PCM_16", 16000, 1, 20000)


# --------------------------------------------------------------------------- splits and rates


@pytest.mark.slow
def test_letters_test_fonts_voices_and_words_are_never_in_training(letters, suite):
    _, rows = letters
    for column in ("font", "voice", "text"):
        train, test = _split_values(rows, column)
        assert train and test and not train & test, column
    # On the whole plan, by design and by speaker (fonts are split by design, voices by speaker).
    plan = suite.plan_letters(0, suite.split_fonts(suite.letter_fonts(), 0),
                              suite.split_words(suite.WORDS_FILE, 0), suite.voice_pools(0))
    designs = {f.name: f.design for f in suite.letter_fonts()}

    def by_split(key):
        return [{key(s) for s in plan if s.split == split} for split in ("train", "test")]

    for key in (lambda s: designs[s.font], lambda s: s.word, lambda s: _speaker(suite, s.utterance.voice)):
        train, test = by_split(key)
        assert not train & test
    engines = by_split(lambda s: s.utterance.voice.split("/")[0])
    assert len(engines[0]) >= 2 and len(engines[1]) >= 2


def _speaker(suite, voice: str) -> str:
    engine, name = voice.split("/", 1)
    return suite.speech.Voice(engine, name).speaker


def test_shapes_test_voices_are_never_heard_in_training(shapes, suite):
    _, rows = shapes
    train, test = _split_values(rows, "voice")
    assert train and test and not {_speaker(suite, v) for v in train} & {_speaker(suite, v) for v in test}


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["letters", "shapes"])
def test_each_modality_is_missing_at_the_stated_rate_never_all(suite, dataset):
    voices = suite.voice_pools(0)
    if dataset == "letters":
        plan = suite.plan_letters(0, suite.split_fonts(suite.letter_fonts(), 0),
                                  suite.split_words(suite.WORDS_FILE, 0), voices)
        modalities = suite.LETTER_MODALITIES
    else:
        plan, modalities = suite.plan_shapes(0, voices), suite.SHAPE_MODALITIES
    for modality in modalities:
        assert 0.14 <= np.mean([modality in s.missing for s in plan]) <= 0.21, modality
    assert all(len(s.missing) < len(modalities) for s in plan)


# --------------------------------------------------------------------------- determinism


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["letters", "shapes"])
def test_same_seed_rebuilds_identical_files_another_seed_differs(suite, dataset, request, tmp_path):
    manifest, rows = request.getfixturevalue(dataset)
    build = getattr(suite, f"build_{dataset}")
    stamp = (manifest.parent / "dataset.json").stat().st_mtime_ns
    build(manifest.parent, seed=0, limit=len(rows))  # complete: nothing to do
    assert (manifest.parent / "dataset.json").stat().st_mtime_ns == stamp
    # A smaller build of the same seed: its rows are the bigger one's, byte for byte.
    again = _rows(build(tmp_path / "again", seed=0, limit=SMALL))
    by_image = {r["image"]: r for r in rows if r["image"]}
    files = [(r, c) for r in again for c in ("image", "audio") if r[c]]
    assert files and all(r["image"] in by_image for r in again if r["image"])
    for row, column in files[:8]:
        assert _digest(tmp_path / "again" / row[column]) == _digest(manifest.parent / row[column])
    other = _rows(build(tmp_path / "other", seed=1, limit=SMALL))
    first = next(r for r in other if r["image"])
    assert _digest(tmp_path / "other" / first["image"]) not in {_digest(tmp_path / "again" / r["image"])
                                                                  for r in again if r["image"]}


def test_a_limit_is_stratified_by_class_and_split(suite):
    labels = [letter for letter in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" for _ in range(160)]
    splits = suite.row_splits(labels, 0)
    order = suite.subset_order(labels, splits, 0)
    assert sorted(order) == list(range(len(labels)))
    first = order[:52]
    assert sorted(labels[i] for i in first) == sorted(sorted(set(labels)) * 2)
    assert 0.25 <= sum(splits[i] == "test" for i in first) / 52 <= 0.35


# --------------------------------------------------------------------------- the table's signal


@pytest.mark.slow
def test_the_class_is_in_the_geometry_columns_not_the_nuisance_columns(suite):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    plan = suite.limited(suite.plan_shapes(0, suite.voice_pools(0)), 600, 0)
    cells = [suite.tabular(s) for s in plan]  # measured without writing any file
    labels = np.array([s.label for s in plan])
    train = np.array([s.split == "train" for s in plan])

    def accuracy(columns):
        x = np.array([[c[k] for k in columns] for c in cells], dtype=float)
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
        return model.fit(x[train], labels[train]).score(x[~train], labels[~train])

    chance = 1 / len(suite.SHAPES)
    assert accuracy(suite.GEOMETRY) > 5 * chance
    assert accuracy(suite.NUISANCE) < 2 * chance


# --------------------------------------------------------------------------- speech


def test_speech_fits_the_clip_and_names_missing_packages(suite, monkeypatch):
    speech = suite.speech
    voice = speech.Voice("flite", "slt")
    clip = speech.speak(voice, "eight point star", num_samples=8000, tempo=0.8, lead_s=0.4, noise_seed=1)
    assert clip.dtype == np.float32 and clip.shape == (8000,) and abs(np.abs(clip).max() - speech.PEAK) < 1e-6
    assert len(speech.fitted(voice, "eight point star", 0.8, 0.0, 16000, 8000)) <= 8000
    train, test = speech.split_voices(speech.voices(), np.random.default_rng(0))
    assert not {v.speaker for v in train} & {v.speaker for v in test}
    monkeypatch.setattr(speech.shutil, "which", lambda _: None)
    with pytest.raises(speech.EngineMissing, match="apt-get install -y festival festvox-kallpc16k"):
        speech.require("festival")


# --------------------------------------------------------------------------- mmae reads them


@pytest.mark.parametrize("dataset", ["letters", "shapes", "spoken_digits"])
def test_mmae_reads_each_manifest_with_the_suite_overrides(suite, dataset, request, compose_cfg, tmp_path):
    from mmae.config import build, build_modalities

    spec = suite.SUITE[dataset]
    if dataset == "spoken_digits":
        manifest = spec.build(tmp_path / "digits", seed=0, limit=20)
    else:
        manifest = request.getfixturevalue(dataset)[0]
    cfg = compose_cfg("data=manifest", f"data.path={manifest}", "data.num_workers=0", *spec.train_overrides)
    assert tuple(cfg.modality) == spec.modalities
    datamodule = build(cfg.data, _partial_=True)(modalities=build_modalities(cfg.modality))
    assert len(datamodule.label_map) == spec.classes
    test = datamodule.ready("test")
    rows = _rows(manifest)
    assert len(test) == sum(r["split"] == "test" for r in rows)
    sample = test[0]
    assert set(sample["present"]) == set(spec.modalities)
    record = json.loads((manifest.parent / "dataset.json").read_text(encoding="utf-8"))
    assert record["counts"]["samples"] == len(rows)
