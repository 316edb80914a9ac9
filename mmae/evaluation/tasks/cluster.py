"""`mmae-eval task=cluster`: do the codes cluster by label without being told the labels?

k-means (k = the number of labels in the test split) on the test codes, from all modalities
and from each modality alone, against k-means on the standardised inputs and on PCA of them
to the code size (fitted on the training split). Scored by clustering accuracy (the best
one-to-one matching of clusters to labels), normalised mutual information and the adjusted
Rand index: all 1 for a clustering that is the labelling, ARI about 0 for a random one.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment

from mmae.core.errors import ConfigError, DataError
from mmae.core.registry import EVALUATIONS
from mmae.evaluation.base import EvalContext, Evaluation, TaskResult
from mmae.evaluation.tasks.retrieval.ranking import as_numpy, seeded_pca, standardise


class KMeans(NamedTuple):
    assignments: np.ndarray  # [N] cluster of each sample
    centres: np.ndarray  # [k, D]
    inertia: float  # sum of squared distances to the assigned centres


def _squared_distances(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    return np.maximum((x * x).sum(1)[:, None] - 2 * x @ centres.T + (centres * centres).sum(1)[None], 0.0)


def _plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeds (Arthur & Vassilvitskii, 2007): each next seed drawn with probability
    proportional to its squared distance to the nearest seed so far."""
    centres = [x[rng.integers(len(x))]]
    nearest = _squared_distances(x, centres[0][None])[:, 0]
    for _ in range(1, k):
        total = nearest.sum()
        pick = rng.choice(len(x), p=nearest / total) if total > 0 else rng.integers(len(x))
        centres.append(x[pick])
        nearest = np.minimum(nearest, _squared_distances(x, x[pick][None])[:, 0])
    return np.stack(centres)


def _lloyd(x: np.ndarray, centres: np.ndarray, max_iter: int) -> KMeans:
    """Lloyd iterations until no assignment changes; an empty cluster takes over the point
    farthest from its centre."""
    assignments = None
    for _ in range(max_iter):
        distances = _squared_distances(x, centres)
        new = distances.argmin(1)
        if assignments is not None and np.array_equal(new, assignments):
            break
        assignments = new
        counts = np.bincount(assignments, minlength=len(centres))
        sums = np.zeros_like(centres)
        np.add.at(sums, assignments, x)
        centres = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centres)
        empty = np.flatnonzero(counts == 0)
        if len(empty):
            farthest = np.argsort(-distances[np.arange(len(x)), assignments], kind="stable")[:len(empty)]
            centres[empty] = x[farthest]
    distances = _squared_distances(x, centres)
    assignments = distances.argmin(1)
    return KMeans(assignments, centres, float(distances[np.arange(len(x)), assignments].sum()))


def kmeans(x, k: int, restarts: int = 10, seed: int = 0, max_iter: int = 300) -> KMeans:
    """k-means of the rows of `x` (float64): `restarts` runs from k-means++ seeds drawn by a
    generator seeded with `seed`; the run of least inertia is kept."""
    x = as_numpy(x).astype(np.float64)
    if not 1 <= k <= len(x):
        raise DataError(f"k-means: k={k} clusters need 1 <= k <= the {len(x)} samples")
    if restarts < 1:
        raise ConfigError(f"cluster.restarts must be at least 1, got {restarts}")
    rng = np.random.default_rng(seed)
    runs = (_lloyd(x, _plus_plus(x, k, rng), max_iter) for _ in range(restarts))
    return min(runs, key=lambda run: run.inertia)


def contingency(labels, assignments) -> np.ndarray:
    """Counts `[labels, clusters]` of the samples with each label in each cluster."""
    _, label_index = np.unique(as_numpy(labels), return_inverse=True)
    _, cluster_index = np.unique(as_numpy(assignments), return_inverse=True)
    table = np.zeros((label_index.max() + 1, cluster_index.max() + 1), dtype=np.int64)
    np.add.at(table, (label_index, cluster_index), 1)
    return table


def clustering_accuracy(labels, assignments) -> float:
    """The fraction of samples whose cluster maps to their label under the best one-to-one
    map of clusters to labels (Hungarian matching; with more clusters than labels the
    unmatched clusters count as wrong)."""
    table = contingency(labels, assignments)
    rows, columns = linear_sum_assignment(table, maximize=True)
    return float(table[rows, columns].sum() / table.sum())


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def normalized_mutual_info(labels, assignments) -> float:
    """I(labels; clusters) / ((H(labels) + H(clusters)) / 2), sklearn's default (arithmetic)
    normalisation; 1 when both are a single group."""
    table = contingency(labels, assignments)
    if table.shape == (1, 1):
        return 1.0
    joint = table / table.sum()
    outer = joint.sum(1, keepdims=True) @ joint.sum(0, keepdims=True)
    nonzero = joint > 0
    mutual = float((joint[nonzero] * np.log(joint[nonzero] / outer[nonzero])).sum())
    mean_entropy = (_entropy(table.sum(1)) + _entropy(table.sum(0))) / 2
    return 0.0 if mutual <= 0 else min(1.0, mutual / mean_entropy)


def adjusted_rand_index(labels, assignments) -> float:
    """The Rand index (agreement on which pairs of samples are together) corrected for
    chance (Hubert & Arabie, 1985): 1 for identical partitions, 0 expected of random ones."""
    table = contingency(labels, assignments).astype(np.float64)

    def pairs(x):
        return (x * (x - 1) / 2).sum()

    together, rows, columns = pairs(table), pairs(table.sum(1)), pairs(table.sum(0))
    total = pairs(table.sum())
    if total == 0:  # a single sample: one partition
        return 1.0
    expected = rows * columns / total
    maximum = (rows + columns) / 2
    return 1.0 if maximum == expected else float((together - expected) / (maximum - expected))


def _scores(labels, assignments) -> dict[str, float]:
    return {"accuracy": clustering_accuracy(labels, assignments),
            "nmi": normalized_mutual_info(labels, assignments),
            "ari": adjusted_rand_index(labels, assignments)}


def chance_scores(labels, assignments, shuffles: int = 100, seed: int = 0) -> dict[str, float]:
    """The mean scores of the same clustering against shuffled labels: what chance reaches
    with these cluster sizes, which matters on small sets (accuracy and NMI are far above 0
    for 30 samples in 10 clusters; ARI is about 0)."""
    rng = np.random.default_rng(seed)
    labels = as_numpy(labels)
    runs = [_scores(rng.permutation(labels), assignments) for _ in range(shuffles)]
    return {key: float(np.mean([run[key] for run in runs])) for key in runs[0]}


def cluster_scores(x, labels, k: int, restarts: int, seed: int) -> dict:
    """k-means of `x` scored against `labels`, with the chance level of its clustering."""
    result = kmeans(x, k, restarts, seed)
    return {"samples": len(result.assignments), **_scores(labels, result.assignments),
            "inertia": result.inertia, "chance": chance_scores(labels, result.assignments, seed=seed)}


def _feature_sets(context: EvalContext) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Row name -> (test features, labels)."""
    sets = {"all modalities": context.codes("test")}
    sets.update({f"{m} only": context.codes("test", [m]) for m in context.encoder.modalities})
    rows = {name: (as_numpy(f.codes), as_numpy(f.labels)) for name, f in sets.items()}
    (train_x, _), (test_x, test_y) = context.inputs("train"), context.inputs("test")
    train_x, test_x = standardise(train_x, test_x)
    d = context.encoder.latent_dim
    rows["inputs (standardised)"] = (as_numpy(test_x), as_numpy(test_y))
    rows[f"PCA-{d} of the inputs"] = (as_numpy(seeded_pca(train_x, test_x, d, context.seed)[1]),
                                      as_numpy(test_y))
    return {name: (x[y >= 0], y[y >= 0]) for name, (x, y) in rows.items()}


def format_clusters(results: dict) -> str:
    lines = [f"k-means clustering of the test split (k={results['k']}, {results['restarts']} restarts; "
             "chance: the same clusters against shuffled labels)",
             f"  {'':<28}{'samples':>8}{'accuracy':>10}{'(chance)':>10}{'NMI':>8}{'(chance)':>10}{'ARI':>8}"]
    for name, row in results["rows"].items():
        chance = row["chance"]
        lines.append(f"  {name:<28}{row['samples']:>8}{row['accuracy']:>10.3f}{chance['accuracy']:>10.3f}"
                     f"{row['nmi']:>8.3f}{chance['nmi']:>10.3f}{row['ari']:>8.3f}")
    return "\n".join(lines)


@EVALUATIONS.register("cluster")
class Cluster(Evaluation):
    """k-means of the test codes against the labels, with raw-input and PCA baselines."""

    order = 5
    needs_labels: ClassVar[bool] = True
    options: ClassVar[dict[str, type]] = {"restarts": int}

    def run(self, context: EvalContext) -> TaskResult:
        restarts = context.options.get("restarts", 10)
        if not isinstance(restarts, int) or isinstance(restarts, bool) or restarts < 1:
            raise ConfigError(f"cluster.restarts must be a positive integer, got {restarts!r}")
        sets = _feature_sets(context)
        k = len(np.unique(sets["all modalities"][1]))
        rows = {name: cluster_scores(x, y, k, restarts, context.seed) for name, (x, y) in sets.items()}
        results = {"k": k, "restarts": restarts, "rows": rows}
        d = context.encoder.latent_dim
        codes, pcs = rows["all modalities"], rows[f"PCA-{d} of the inputs"]
        summary = {"cluster accuracy (codes)": codes["accuracy"], "NMI (codes)": codes["nmi"],
                   "ARI (codes)": codes["ari"], f"cluster accuracy (PCA-{d} inputs)": pcs["accuracy"]}
        return TaskResult(results, format_clusters(results), summary)
