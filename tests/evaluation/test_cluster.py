"""task=cluster: k-means and the clustering scores against hand-computed values and sklearn,
and the task end to end on a trained run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from eval_context import eval_context

from mmae.core.errors import ConfigError, DataError
from mmae.core.registry import EVALUATIONS
from mmae.evaluation.tasks.cluster import (
    Cluster,
    adjusted_rand_index,
    chance_scores,
    clustering_accuracy,
    kmeans,
    normalized_mutual_info,
)

# Six samples: labels 0 0 0 1 1 1, clusters 1 1 0 0 2 2. Contingency (label x cluster):
#   label 0: cluster0 1, cluster1 2, cluster2 0;  label 1: cluster0 1, cluster1 0, cluster2 2.
LABELS = [0, 0, 0, 1, 1, 1]
CLUSTERS = [1, 1, 0, 0, 2, 2]


def test_accuracy_by_hand():
    # Best one-to-one map: label 0 -> cluster 1 (2 samples), label 1 -> cluster 2 (2): 4 / 6.
    assert clustering_accuracy(LABELS, CLUSTERS) == pytest.approx(4 / 6)
    assert clustering_accuracy(LABELS, [5, 5, 5, 7, 7, 7]) == 1.0
    # All in one cluster: only one label can be matched.
    assert clustering_accuracy(LABELS, [0] * 6) == pytest.approx(0.5)


def test_nmi_by_hand():
    # Joint p: (0,c0) 1/6, (0,c1) 2/6, (1,c0) 1/6, (1,c2) 2/6; p(label) 1/2 each, p(cluster) 1/3 each.
    # MI = 2 * 1/6 * ln(1/6 / (1/2 * 1/3)) + 2 * 2/6 * ln(2/6 / (1/6)) = 0 + 2/3 ln 2.
    # H(labels) = ln 2, H(clusters) = ln 3; NMI = (2/3 ln 2) / ((ln 2 + ln 3) / 2) = 4/3 ln 2 / ln 6 = 0.5158.
    assert normalized_mutual_info(LABELS, CLUSTERS) == pytest.approx(4 / 3 * math.log(2) / math.log(6))
    assert normalized_mutual_info(LABELS, [3, 3, 3, 4, 4, 4]) == pytest.approx(1.0)
    assert normalized_mutual_info(LABELS, [0] * 6) == 0.0  # no information
    assert normalized_mutual_info([0] * 6, [0] * 6) == 1.0  # sklearn's convention


def test_ari_by_hand():
    # sum_ij C(n_ij, 2) = C(2,2) + C(2,2) = 2; rows C(3,2) * 2 = 6; columns C(2,2) * 3 = 3;
    # C(6, 2) = 15; expected 6 * 3 / 15 = 1.2; max (6 + 3) / 2 = 4.5; ARI = (2 - 1.2) / (4.5 - 1.2) = 0.2424.
    assert adjusted_rand_index(LABELS, CLUSTERS) == pytest.approx(0.8 / 3.3)
    assert adjusted_rand_index(LABELS, [1, 1, 1, 0, 0, 0]) == pytest.approx(1.0)
    # Every sample alone on both sides, or one group on both sides: identical partitions.
    assert adjusted_rand_index(range(6), range(6)) == 1.0
    assert adjusted_rand_index([0] * 6, [0] * 6) == 1.0
    # 0 0 1 1 vs 0 1 0 1: no pair together in both; expected 2 * 2 / 6, max 2: ARI = -2/3 / (4/3) = -0.5.
    assert adjusted_rand_index([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(-0.5)


def test_scores_match_sklearn_on_random_labellings():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for n, classes, clusters in [(6, 2, 3), (30, 4, 4), (200, 10, 7), (50, 3, 12)]:
        labels, assignments = rng.integers(classes, size=n), rng.integers(clusters, size=n)
        assert normalized_mutual_info(labels, assignments) == pytest.approx(
            metrics.normalized_mutual_info_score(labels, assignments), abs=1e-10)
        assert adjusted_rand_index(labels, assignments) == pytest.approx(
            metrics.adjusted_rand_score(labels, assignments), abs=1e-10)


def test_scores_are_permutation_invariant():
    rng = np.random.default_rng(1)
    labels, assignments = rng.integers(4, size=40), rng.integers(5, size=40)
    renamed = np.array([3, 0, 4, 1, 2])[assignments]  # the same partition, other cluster names
    order = rng.permutation(40)  # the same samples, in another order
    for score in (clustering_accuracy, normalized_mutual_info, adjusted_rand_index):
        base = score(labels, assignments)
        assert score(labels, renamed) == pytest.approx(base)
        assert score(labels[order], assignments[order]) == pytest.approx(base)
        assert score(assignments, labels) == pytest.approx(base)  # symmetric


def test_chance_of_a_perfect_clustering_is_low():
    labels = np.repeat(np.arange(4), 25)
    chance = chance_scores(labels, labels, shuffles=200, seed=0)
    assert abs(chance["ari"]) < 0.02 and chance["nmi"] < 0.1 and 0.25 <= chance["accuracy"] < 0.4


def test_kmeans_recovers_separated_blobs():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 10.0]])
    truth = rng.permutation(np.repeat(np.arange(4), 15))
    x = centres[truth] + 0.3 * rng.standard_normal((60, 3))
    result = kmeans(x, 4, restarts=5, seed=0)
    assert clustering_accuracy(truth, result.assignments) == 1.0
    assert adjusted_rand_index(truth, result.assignments) == 1.0
    # Each centre is its blob's mean, and the inertia the sum of squared deviations from them.
    means = np.stack([x[result.assignments == j].mean(0) for j in range(4)])
    np.testing.assert_allclose(result.centres, means)
    assert result.inertia == pytest.approx(((x - means[result.assignments]) ** 2).sum())
    again = kmeans(x, 4, restarts=5, seed=0)
    np.testing.assert_array_equal(again.assignments, result.assignments)


def test_kmeans_keeps_the_restart_of_least_inertia():
    x = np.random.default_rng(2).standard_normal((80, 2))
    best = kmeans(x, 6, restarts=8, seed=3).inertia
    assert best <= min(kmeans(x, 6, restarts=1, seed=s).inertia for s in range(3)) * 1.05
    assert kmeans(x, 1, restarts=1).inertia == pytest.approx(((x - x.mean(0)) ** 2).sum())


def test_kmeans_with_duplicate_points_and_errors():
    x = np.array([[0.0], [0.0], [1.0], [1.0]])  # two distinct points, three clusters
    result = kmeans(x, 3, restarts=3, seed=0)
    assert result.inertia == 0.0
    with pytest.raises(DataError, match="k=5"):
        kmeans(x, 5)
    with pytest.raises(ConfigError, match="restarts"):
        kmeans(x, 2, restarts=0)


@pytest.mark.slow
def test_cluster_task_on_a_trained_run(eval_run):
    assert EVALUATIONS["cluster"] is Cluster
    context = eval_context(eval_run, restarts=10)
    assert Cluster().applies(context) is None
    result = Cluster().run(context)
    rows = result.results["rows"]
    codes = ["all modalities", "image only", "vector only", "text only"]
    assert list(rows) == [*codes, "inputs (standardised)", "PCA-8 of the inputs"]
    assert result.results["k"] == 10
    for name, subset in zip(codes, [None, ["image"], ["vector"], ["text"]], strict=True):
        assert rows[name]["samples"] == len(context.codes("test", subset).codes)
    # The scores are those of k-means on the context's own codes and labels (nothing misaligned).
    test = context.codes("test", ["text"])
    again = kmeans(test.codes, 10, restarts=10, seed=context.seed)
    assert rows["text only"]["ari"] == pytest.approx(adjusted_rand_index(test.labels, again.assignments))
    for row in rows.values():
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["nmi"] <= 1 and -1 <= row["ari"] <= 1
    # 32 test samples in 10 clusters: chance NMI is about 0.5 (+- 0.033 per row) and chance ARI
    # 0 (+- 0.045). Measured on this 4-epoch run: NMI 0.013 to 0.097 above chance (mean 0.05),
    # ARI 0.02 (all modalities), 0.04 / 0.10 / 0.09 (image / vector / text alone), 0.11 / 0.10
    # (inputs, PCA of them): weak structure, but above chance taken together.
    assert np.mean([row["nmi"] - row["chance"]["nmi"] for row in rows.values()]) > 0.015
    assert np.mean([row["ari"] for row in rows.values()]) > 0.03
    assert set(result.summary) >= {"cluster accuracy (codes)", "NMI (codes)", "ARI (codes)"}
    assert all(name in result.text for name in rows)
    json.dumps(result.results)
