"""Anomaly detection by reconstruction error: the metrics' closed forms, the scorer and the
synthetic anomalies (`mmae-eval task=anomaly` on a trained run: tests/evaluation/test_evaluate.py)."""

import math

import pytest
import torch

from mmae.core.errors import DataError
from mmae.core.fusion import MeanFusion
from mmae.core.model import MultimodalAutoencoder
from mmae.data.synthetic import SyntheticMultimodal
from mmae.evaluation.tasks.anomaly import (
    COMBINED,
    AnomalyScorer,
    SampleErrors,
    auroc,
    average_precision,
    best_f1_threshold,
    detection_summary,
    sample_errors,
)


def test_auroc_counts_the_ordered_pairs_and_halves_ties():
    # positives 0.35 and 0.8 against negatives 0.1 and 0.4: 3 of 4 pairs ordered right.
    assert auroc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])) == pytest.approx(0.75)
    assert auroc(torch.tensor([1.0, 1.0]), torch.tensor([1, 0])) == pytest.approx(0.5)
    assert auroc(torch.tensor([0.2, 0.3, 0.9]), torch.tensor([0, 0, 1])) == 1.0
    with pytest.raises(DataError, match="both anomalous and normal"):
        auroc(torch.tensor([0.1, 0.2]), torch.tensor([1, 1]))


def test_average_precision_is_the_mean_precision_at_each_positive():
    # ranked: +, -, +, -  -> precision 1/1 at the first positive, 2/3 at the second.
    scores, positive = torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([1, 0, 1, 0])
    assert average_precision(scores, positive) == pytest.approx((1 + 2 / 3) / 2)
    with pytest.raises(DataError, match="needs anomalous samples"):
        average_precision(scores, torch.zeros(4))


def test_sorted_metrics_match_their_definitions_on_random_ties():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        scores = torch.randint(0, 6, (40,), generator=g).double()  # many ties
        positive = torch.rand(40, generator=g) < 0.3
        pos, neg = scores[positive], scores[~positive]
        pairs = (pos[:, None] > neg[None, :]).double() + 0.5 * (pos[:, None] == neg[None, :]).double()
        assert auroc(scores, positive) == pytest.approx(float(pairs.mean()))
        precisions = [float(positive[scores >= s].double().mean()) for s in pos]
        assert average_precision(scores, positive) == pytest.approx(sum(precisions) / len(precisions))


def test_threshold_and_detection_summary():
    scores = torch.tensor([0.1, 0.2, 0.3, 0.7, 0.9])
    positive = torch.tensor([False, False, False, True, True])
    threshold = best_f1_threshold(scores, positive)
    assert threshold == pytest.approx(0.7)
    summary = detection_summary(scores, positive, 0.25)  # flags 0.3, 0.7, 0.9
    assert (summary["precision"], summary["recall"], summary["flagged"]) == (pytest.approx(2 / 3), 1.0, 3)
    assert summary["f1"] == pytest.approx(0.8)


def test_scorer_standardises_with_robust_training_statistics_and_skips_missing():
    train_errors = SampleErrors({"a/from_all": torch.tensor([1.0, 2.0, 3.0, 100.0]),
                                 "b/from_all": torch.tensor([10.0, 10.0, 12.0, math.nan])}, None,
                                torch.arange(4))
    scorer = AnomalyScorer().fit(train_errors)
    assert scorer.center == {"a/from_all": 2.5, "b/from_all": 10.0}  # medians: the outlier does not move them
    assert scorer.scale["a/from_all"] == pytest.approx(1.4826 * 1.0)
    test = SampleErrors({"a/from_all": torch.tensor([2.5, 2.5 + 2 * 1.4826]),
                         "b/from_all": torch.tensor([math.nan, 10.0])}, None, torch.arange(2))
    scores = scorer.scores(test)
    assert scores["a/from_all"].tolist() == pytest.approx([0.0, 2.0])
    assert scores[COMBINED][0] == 0.0  # only a's score: the missing b is not counted as 0
    assert scores[COMBINED][1] == pytest.approx((2.0 + 0.0) / 2)


def test_sample_errors_are_nan_where_a_modality_cannot_be_scored(small_modalities):
    model = MultimodalAutoencoder(small_modalities, fusion=MeanFusion, latent_dim=4)
    batch = {"image": torch.rand(3, 1, 8, 8), "vector": torch.randn(3, 5),
             "present": {"image": torch.tensor([True, True, False]),
                         "vector": torch.tensor([True, False, True])},
             "index": torch.tensor([7, 8, 9])}
    errors = sample_errors(model, [batch, None])
    assert errors.anomaly is None and errors.ids.tolist() == [7, 8, 9]
    assert errors.errors["image/from_all"].isnan().tolist() == [False, False, True]
    assert errors.errors["image/from_others"].isnan().tolist() == [False, True, True]  # no vector in row 2
    assert errors.errors["vector/from_others"].isnan().tolist() == [False, True, True]
    assert model.training  # put back as it was


def _dataset(split, rate, small_modalities):
    return SyntheticMultimodal(small_modalities, split=split, num_samples=400, seed=3, anomaly_rate=rate)


def test_synthetic_anomalies_change_only_the_chosen_val_and_test_samples(small_modalities):
    assert not _dataset("train", 0.3, small_modalities).anomaly.any()  # training stays clean
    for split in ("val", "test"):
        clean, dirty = _dataset(split, 0.0, small_modalities), _dataset(split, 0.3, small_modalities)
        assert int(dirty.anomaly.sum()) == round(0.3 * len(dirty))
        normal = ~dirty.anomaly
        changed = torch.zeros(len(dirty), dtype=torch.bool)
        for name in small_modalities:
            assert torch.equal(clean.views[name][normal], dirty.views[name][normal])
            changed |= (clean.views[name] != dirty.views[name]).flatten(1).any(dim=1)
        assert torch.equal(changed, dirty.anomaly)  # only anomalies change...
        altered = sum((clean.views[n] != dirty.views[n]).flatten(1).any(dim=1).long()
                      for n in small_modalities)
        assert altered[dirty.anomaly].eq(1).all()  # ...each in exactly one view
        assert dirty[int(torch.nonzero(dirty.anomaly)[0])]["extras"]["anomaly"].item() is True
    again = _dataset("test", 0.3, small_modalities)
    assert torch.equal(again.anomaly, dirty.anomaly)  # deterministic by seed


def test_mismatched_pairs_take_a_view_of_another_class(small_modalities):
    pool = SyntheticMultimodal(small_modalities, split="train", num_samples=400, seed=3,
                               split_fractions=(1.0, 0.0, 0.0), missing_rate=0.0)
    dirty = SyntheticMultimodal(small_modalities, split="train", num_samples=400, seed=3,
                                split_fractions=(1.0, 0.0, 0.0), missing_rate=0.0, anomaly_rate=0.5,
                                anomaly_splits=["train"])
    swapped = 0
    for i in torch.nonzero(dirty.anomaly).flatten().tolist():
        for name in small_modalities:
            view = dirty.views[name][i]
            if torch.equal(view, pool.views[name][i]):
                continue
            donors = (pool.views[name] == view).flatten(1).all(dim=1)
            if donors.any():
                assert (pool.labels[donors] != pool.labels[i]).all()
                swapped += 1
    assert 0.3 < swapped / int(dirty.anomaly.sum()) < 0.7  # about half are mismatches



def test_val_and_test_anomalies_differ_and_come_from_their_own_split(small_modalities):
    val, test = _dataset("val", 0.3, small_modalities), _dataset("test", 0.3, small_modalities)
    assert not torch.equal(val.anomaly, test.anomaly)  # not the same rows in both splits
    pool = SyntheticMultimodal(small_modalities, split="train", num_samples=400, seed=3,
                               split_fractions=(1.0, 0.0, 0.0))
    train_views = pool.views["vector"][:320]
    for i in torch.nonzero(test.anomaly & test.present["vector"]).flatten().tolist():
        assert not (train_views == test.views["vector"][i]).all(dim=1).any()  # no training view reused


def test_evaluate_anomalies_threshold_from_labels_or_a_quantile(small_modalities):
    from mmae.evaluation.tasks.anomaly import evaluate_anomalies
    from mmae.training.datamodule import MultimodalDataModule

    model = MultimodalAutoencoder(small_modalities, fusion=MeanFusion, latent_dim=4)

    def datamodule(rate):
        return MultimodalDataModule(
            lambda split, modalities: SyntheticMultimodal(modalities, split=split, num_samples=400,
                                                          seed=3, anomaly_rate=rate),
            small_modalities, batch_size=64)

    labelled = evaluate_anomalies(model, datamodule(0.3))
    assert labelled["threshold_from"] == "best F1 on val"
    assert labelled["samples"]["test_anomalies"] == 12 and 0 <= labelled["detection"]["f1"] <= 1
    assert set(labelled["scores"]) >= {"combined", "image/from_all", "vector/from_others"}
    unlabelled = evaluate_anomalies(model, datamodule(0.0))  # flags present but all False
    assert unlabelled["threshold_from"] == "95% quantile of val"
    assert unlabelled["scores"] == {} and "f1" not in unlabelled["detection"]
    assert 0 < unlabelled["detection"]["flagged"] <= 8  # ~5% of 40 test samples, give or take
