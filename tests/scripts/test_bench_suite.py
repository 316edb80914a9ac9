"""The suite benchmark's own pieces: how baselines read each modality, how a single-modality
run is configured, and how seeds are summarised (scripts/bench_suite.py)."""

from pathlib import Path

import numpy as np
import pytest
import torch

bench_suite = pytest.importorskip("bench_suite")

from manifest_factory import TEXT_CONFIG  # noqa: E402

from mmae.modalities import TabularModality, TextModality  # noqa: E402


def test_a_single_modality_run_keeps_only_that_modality_settings():
    spec = bench_suite.SUITE["letters"]
    overrides = bench_suite.single_modality_overrides(spec, "audio")
    assert overrides[0] == "modality=[audio]"
    others = ("modality.image.", "modality.text.", "modality=[image")
    assert not any(o.startswith(others) for o in overrides[1:])
    assert any(o.startswith("modality.audio.") for o in overrides)


def test_the_text_view_is_character_ngrams_of_the_decoded_tokens():
    text = TextModality(model_config=TEXT_CONFIG, max_length=16)
    words = ["apple", "avocado", "banana", "blueberry"]
    ids = torch.stack([text.encode_text(w) for w in words])
    view = bench_suite.View(text).fit(ids)
    vocabulary = view.tfidf.vocabulary_
    assert {" ap", " av", " ba", " bl", "le "} <= set(vocabulary)  # the words, not their byte ids
    dense = view(ids)
    assert dense.shape == (4, len(vocabulary))
    # The word-initial "a" trigram marks the a-words, whatever the standardisation.
    column = dense[:, vocabulary[" a"]]
    assert column[:2].min() > column[2:].max()


def test_the_table_view_one_hot_encodes_categories_and_folds_unseen_ones():
    table = TabularModality(numeric=["x"], categorical=["camera"])
    table.fit([{"x": "1.0", "camera": "a"}, {"x": "2.0", "camera": "b"}])
    train = torch.tensor([[1.0, 0.0], [2.0, 1.0]])
    view = bench_suite.View(table).fit(train)
    unseen = view(torch.tensor([[1.5, 2.0]]))  # category index 2: beyond the training ones
    assert view(train).shape == (2, 1 + 3)  # x, then a, b and "other"
    assert unseen.shape == (1, 4) and np.isfinite(unseen).all()


def test_seeds_are_summarised_by_mean_and_spread_and_tabled():
    rows = [{"all": 0.5, "image": 0.25, "train_s": 10.0, "t95_s": None},
            {"all": 0.7, "image": 0.35, "train_s": 12.0, "t95_s": 8.0}]
    summary = bench_suite.summarise(rows)
    assert summary["all"] == pytest.approx(0.6) and summary["spread"]["all"] == pytest.approx(0.1)
    assert summary["seeds"] == 2 and summary["t95_s"] == 8.0  # over the seeds that have one
    ctx = bench_suite.Context(bench_suite.SUITE["spoken_digits"], Path("m.csv"), None, None, None)
    text = bench_suite.table(ctx, {"mmae default": summary, "judge on real data": {"image<-audio": 0.9}})
    assert "| mmae default | 60.0 ± 10.0 | 30.0 ± 5.0 | - | - | - | 11 | 8 | - |" in text
    assert "| judge on real data | - | - | - | 90.0 | - | - | - | - |" in text
    assert "image from audio" in text.splitlines()[0]
