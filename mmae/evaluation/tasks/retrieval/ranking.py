"""Ranking and hashing metrics for retrieval, as plain functions of arrays.

Definitions (per query, then averaged over queries):

- `recall_at_k`: 1 if at least one relevant item is among the first k, else 0 (the R@k of
  cross-modal retrieval; with one relevant item, the same-sample match, it is that item's hit
  rate). Chance with one relevant item among N: k / N.
- `mean_average_precision_at_k`: AP@k = sum over ranks i <= k of P@i * rel_i, divided by
  min(k, R) where R is the query's number of relevant items in the whole database (queries
  with R = 0 are left out), so missing relevant items costs as much as ranking them low; or,
  with `num_relevant=None`, divided by the relevant items found in the top k (the convention
  of many hashing papers; a query with none scores 0).
- `hamming_ball_precision`: among the database items within Hamming distance r of the query,
  the fraction sharing its label; a query whose ball is empty counts as precision 0, and the
  fraction of empty balls is reported beside it (Salakhutdinov & Hinton, 2009, and the
  hashing papers after them).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from mmae.core.errors import ConfigError
from mmae.evaluation.probes import pca

BACKENDS = ("auto", "numpy", "faiss")
#: backend=auto uses faiss (when installed) above this many database items.
FAISS_THRESHOLD = 50_000
_CHUNK = 1024  # queries scored at a time, to bound the [queries, database] matrices


def as_numpy(x: Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def standardise(train: Tensor, test: Tensor) -> tuple[Tensor, Tensor]:
    """Both sets in units of the training set's per-feature mean and standard deviation
    (constant features stay 0)."""
    mean, std = train.mean(0), train.std(0, unbiased=False)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return (train - mean) / std, (test - mean) / std


def seeded_pca(train: Tensor, test: Tensor, components: int, seed: int) -> tuple[Tensor, Tensor]:
    """`mmae.evaluation.probes.pca` (a randomised low-rank PCA) with its random draws seeded,
    so the same run always gets the same baseline; the global torch RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return pca(train.double(), test.double(), components)


def unit_rows(x: Tensor | np.ndarray, mean: Tensor | np.ndarray) -> np.ndarray:
    """Rows centred by `mean` and scaled to unit length: inner products are cosines."""
    x = as_numpy(x).astype(np.float64) - as_numpy(mean).astype(np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _top_k(keys: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k smallest keys of each row, smallest first."""
    k = min(k, keys.shape[1])
    if k == keys.shape[1]:
        return np.argsort(keys, axis=1, kind="stable")
    part = np.argpartition(keys, k - 1, axis=1)[:, :k]
    order = np.argsort(np.take_along_axis(keys, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def _faiss():
    try:
        import faiss
    except ImportError:
        raise ConfigError("retrieval.backend=faiss needs faiss: pip install mmae[faiss] "
                          "(or retrieval.backend=numpy)") from None
    return faiss


def resolve_backend(backend: str, database_size: int) -> str:
    """`numpy` or `faiss` (checked to be importable): `auto` picks faiss when it is importable
    and the database has more than `FAISS_THRESHOLD` items."""
    if backend not in BACKENDS:
        raise ConfigError(f"retrieval.backend={backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "numpy" or (backend == "auto" and database_size <= FAISS_THRESHOLD):
        return "numpy"
    try:
        _faiss()
    except ConfigError:
        if backend == "faiss":
            raise
        return "numpy"
    return "faiss"


def cosine_neighbours(query: np.ndarray, database: np.ndarray, k: int, backend: str = "numpy") -> np.ndarray:
    """Indices `[Q, min(k, N)]` of each query's k nearest database rows by inner product
    (cosine for `unit_rows`), best first: exact search by numpy or by a flat faiss index."""
    if resolve_backend(backend, len(database)) == "faiss":
        faiss = _faiss()
        index = faiss.IndexFlatIP(database.shape[1])
        index.add(np.ascontiguousarray(database, dtype=np.float32))
        return index.search(np.ascontiguousarray(query, dtype=np.float32), min(k, len(database)))[1]
    return np.concatenate([_top_k(-(query[i:i + _CHUNK] @ database.T), k)
                           for i in range(0, len(query), _CHUNK)])


def rank_bounds(query: np.ndarray, database: np.ndarray,
                targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The best and worst 1-based rank, by inner product, of database row `targets[i]` for
    query i: they differ when other rows score exactly as high (identical codes)."""
    first, last = [], []
    for i in range(0, len(query), _CHUNK):
        scores = query[i:i + _CHUNK] @ database.T
        own = scores[np.arange(len(scores)), targets[i:i + _CHUNK]][:, None]
        first.append(1 + (scores > own).sum(1))
        last.append((scores >= own).sum(1))
    return np.concatenate(first), np.concatenate(last)


def expected_rank(first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """The rank under a random order of the tied items."""
    return (first + last) / 2


def expected_hit(first: np.ndarray, last: np.ndarray, k: int) -> np.ndarray:
    """The probability that the item is among the first k, under a random order of the tied items."""
    return np.clip((k - first + 1) / (last - first + 1), 0.0, 1.0)


def chance_scores(num_relevant: np.ndarray, database_size: int, k: int) -> tuple[float, float]:
    """`(mAP@k, recall@k)` expected of a random ranking (exact): per query with R relevant
    items among N, E[sum_i P@i rel_i] = sum_{i<=k} (R/N + (i-1) R(R-1) / (N(N-1))) / i and
    P(a hit in the first k) = 1 - C(N-R, k) / C(N, k)."""
    r = np.asarray(num_relevant, dtype=np.float64)
    r = r[r > 0]
    n, depth = float(database_size), min(k, database_size)
    if not len(r):
        return float("nan"), float("nan")
    i = np.arange(1, depth + 1, dtype=np.float64)[None, :]
    pair = r[:, None] * (r[:, None] - 1) / (n * (n - 1)) if n > 1 else 0.0
    ap = ((r[:, None] / n + (i - 1) * pair) / i).sum(1) / np.minimum(k, r)
    miss = np.prod(np.clip((n - r[:, None] - (i - 1)) / (n - (i - 1)), 0.0, None), axis=1)
    return float(ap.mean()), float((1 - miss).mean())


def relevance(ranked: np.ndarray, query_labels, database_labels) -> np.ndarray:
    """bool `[Q, K]`: does the database item at each rank share the query's label?"""
    return as_numpy(database_labels)[ranked] == as_numpy(query_labels)[:, None]


def num_relevant(query_labels, database_labels) -> np.ndarray:
    """Per query, how many database items share its label."""
    database_labels = as_numpy(database_labels)
    values, counts = np.unique(database_labels, return_counts=True)
    lookup = dict(zip(values.tolist(), counts.tolist(), strict=True))
    return np.array([lookup.get(label, 0) for label in as_numpy(query_labels).tolist()])


def mean_average_precision_at_k(relevant: np.ndarray, k: int,
                                num_relevant: np.ndarray | None = None) -> float:
    """mAP@k of ranked relevance `relevant` (bool `[Q, >= k or the whole database]`), by the
    definition in the module docstring."""
    hits = np.asarray(relevant, dtype=np.float64)[:, :k]
    precision = np.cumsum(hits, axis=1) / np.arange(1, hits.shape[1] + 1)
    total = (precision * hits).sum(1)
    if num_relevant is None:
        found = hits.sum(1)
        return float(np.mean(np.divide(total, found, out=np.zeros_like(total), where=found > 0)))
    keep = np.asarray(num_relevant) > 0
    if not keep.any():
        return float("nan")
    return float(np.mean(total[keep] / np.minimum(k, np.asarray(num_relevant)[keep])))


def recall_at_k(relevant: np.ndarray, k: int) -> float:
    """Fraction of queries with a relevant item among their first k."""
    return float(np.asarray(relevant)[:, :k].any(axis=1).mean())


def _bits(x) -> np.ndarray:
    """Codes as bits: bool arrays as they are, ±1 (or any real) codes as `x >= 0`."""
    x = as_numpy(x)
    return x if x.dtype == bool else x >= 0


def hamming_distances(a, b) -> np.ndarray:
    """Hamming distances `[Q, N]` (int64) between binary codes `a` `[Q, bits]` and `b`
    `[N, bits]`, given as bool arrays or as ±1 codes."""
    a, b = _bits(a).astype(np.int64), _bits(b).astype(np.int64)
    return a @ (1 - b).T + (1 - a) @ b.T


def hamming_neighbours(query, database, k: int) -> np.ndarray:
    """Indices `[Q, min(k, N)]` of the k database codes nearest each query in Hamming
    distance; ties go to the earlier database item, so a ranking is reproducible."""
    n = len(as_numpy(database))
    return np.concatenate([_top_k(hamming_distances(query[i:i + _CHUNK], database) * n + np.arange(n), k)
                           for i in range(0, len(query), _CHUNK)])


def hamming_ball_precision(query, database, query_labels, database_labels,
                           radius: int) -> tuple[float, float]:
    """`(precision, empty)`: the mean over queries of the label precision within Hamming
    distance <= `radius` (0 for an empty ball), and the fraction of queries whose ball is empty."""
    query_labels, database_labels = as_numpy(query_labels), as_numpy(database_labels)
    precisions, empty = [], []
    for i in range(0, len(query_labels), _CHUNK):
        inside = hamming_distances(query[i:i + _CHUNK], database) <= radius
        same = database_labels[None, :] == query_labels[i:i + _CHUNK, None]
        size = inside.sum(1)
        precisions.append(np.divide((inside & same).sum(1), size, out=np.zeros(len(size)), where=size > 0))
        empty.append(size == 0)
    return float(np.concatenate(precisions).mean()), float(np.concatenate(empty).mean())


def sign_hash(train: Tensor, test: Tensor, bits: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Binary codes of `bits` bits (bool arrays) for both sets: the sign of their projection on
    the top `bits` principal directions of the training set (centred by its mean)."""
    if bits > min(train.shape):
        raise ConfigError(f"sign_hash: {bits} bits need at least {bits} features and training samples, "
                          f"got {list(train.shape)}")
    train_p, test_p = seeded_pca(train, test, bits, seed)
    return as_numpy(train_p) >= 0, as_numpy(test_p) >= 0
