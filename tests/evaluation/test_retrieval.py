"""task=retrieval: the ranking and hashing metrics against hand-computed values, the numpy and
faiss searches, and the task end to end on trained runs (one with a binary latent)."""

from __future__ import annotations

import itertools
import json
import sys

import numpy as np
import pytest
from eval_context import eval_context
from trained_runs import train_run

from mmae.core.errors import ConfigError
from mmae.core.registry import EVALUATIONS
from mmae.evaluation.tasks.retrieval import ranking as rk
from mmae.evaluation.tasks.retrieval.task import BINARY, CODES_HASH, INPUTS_HASH, Retrieval

# Two queries, four ranks: query 0 has 2 relevant items in the database, query 1 has 3.
RELEVANT = np.array([[1, 0, 1, 0], [0, 0, 0, 1]], dtype=bool)
NUM_RELEVANT = np.array([2, 3])


def test_map_at_k_by_hand():
    # Query 0: P@1 = 1, P@3 = 2/3 -> (1 + 2/3) / min(4, 2) = 5/6. Query 1: P@4 = 1/4 -> (1/4) / 3 = 1/12.
    assert rk.mean_average_precision_at_k(RELEVANT, 4, NUM_RELEVANT) == pytest.approx((5 / 6 + 1 / 12) / 2)
    # k = 2: query 0: 1 / min(2, 2) = 1/2; query 1: nothing found -> 0.
    assert rk.mean_average_precision_at_k(RELEVANT, 2, NUM_RELEVANT) == pytest.approx(0.25)
    # Divided by the hits found instead: query 0: (5/3) / 2, query 1: (1/4) / 1.
    assert rk.mean_average_precision_at_k(RELEVANT, 4) == pytest.approx((5 / 6 + 1 / 4) / 2)
    # A query with no relevant item in the database is left out of the mean.
    with_empty = np.vstack([RELEVANT, np.zeros(4, dtype=bool)])
    assert rk.mean_average_precision_at_k(with_empty, 4, np.array([2, 3, 0])) == pytest.approx(11 / 24)
    # A perfect ranking scores 1 whatever k.
    assert rk.mean_average_precision_at_k(np.ones((3, 5), dtype=bool), 5, np.array([9, 9, 9])) == 1.0


def test_recall_at_k_by_hand():
    # Query 0 has a hit at rank 1, query 1 only at rank 4.
    assert rk.recall_at_k(RELEVANT, 1) == 0.5
    assert rk.recall_at_k(RELEVANT, 3) == 0.5
    assert rk.recall_at_k(RELEVANT, 4) == 1.0


def test_chance_scores_are_exact():
    # N = 4 items, R = 2 relevant, k = 2: E[P@1 rel_1] = 2/4; E[P@2 rel_2] = (2/4 + 1 * 2*1/(4*3)) / 2
    # = 1/3; AP@2 = (1/2 + 1/3) / 2 = 5/12. P(a hit in 2) = 1 - C(2,2)/C(4,2) = 5/6.
    ap, recall = rk.chance_scores(np.array([2]), 4, 2)
    assert ap == pytest.approx(5 / 12) and recall == pytest.approx(5 / 6)
    # The same by enumerating every ranking of 6 items, 2 of them relevant, for k = 1..6.
    items = np.array([1, 1, 0, 0, 0, 0], dtype=bool)
    rankings = np.array([items[list(p)] for p in itertools.permutations(range(6))])
    for k in range(1, 7):
        ap, recall = rk.chance_scores(np.full(len(rankings), 2), 6, k)
        assert ap == pytest.approx(rk.mean_average_precision_at_k(rankings, k, np.full(len(rankings), 2)))
        assert recall == pytest.approx(rk.recall_at_k(rankings, k))


def test_cosine_neighbours_and_ranks():
    database = rk.unit_rows(np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [1.0, 1.0]]), np.zeros(2))
    query = rk.unit_rows(np.array([[1.0, 0.2], [-1.0, -0.1]]), np.zeros(2))
    # Query 0 at 11.3 degrees: [1,0] (11.3 away), [1,1] (33.7), [0,1] (78.7), [-1,0] (168.7).
    # Query 1 at 185.7 degrees: [-1,0] (5.7), [0,1] (95.7), [1,1] (140.7), [1,0] (174.3).
    np.testing.assert_array_equal(rk.cosine_neighbours(query, database, 3), [[0, 3, 1], [2, 1, 3]])
    first, last = rk.rank_bounds(query, database, np.array([1, 0]))
    np.testing.assert_array_equal(first, [3, 4])
    np.testing.assert_array_equal(last, [3, 4])
    # Tied codes share their ranks: all four identical -> ranks 1..4, expected 2.5, P(top 1) = 1/4.
    first, last = rk.rank_bounds(np.ones((1, 2)), np.ones((4, 2)), np.array([2]))
    assert (first[0], last[0]) == (1, 4) and rk.expected_rank(first, last)[0] == 2.5
    assert rk.expected_hit(first, last, 1)[0] == 0.25 and rk.expected_hit(first, last, 4)[0] == 1.0


def test_hamming_distances_by_hand():
    a = np.array([[1, 1, -1, -1]])
    b = np.array([[1, 1, -1, -1], [1, -1, -1, 1], [-1, -1, 1, 1]])
    np.testing.assert_array_equal(rk.hamming_distances(a, b), [[0, 2, 4]])
    np.testing.assert_array_equal(rk.hamming_distances(a > 0, b > 0), [[0, 2, 4]])
    # Ties keep the database order: items 0 and 1 are both at distance 1 from 000.
    codes = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0], [1, 1, 1]], dtype=bool)
    ranked = rk.hamming_neighbours(np.zeros((1, 3), dtype=bool), codes, 4)
    np.testing.assert_array_equal(ranked, [[2, 0, 1, 3]])


def test_hamming_ball_precision_by_hand():
    bits = lambda rows: np.array([[c == "1" for c in r] for r in rows])  # noqa: E731
    database, database_labels = bits(["0000", "0001", "0011", "1110"]), np.array([0, 1, 0, 0])
    query, query_labels = bits(["0000", "1111", "1100"]), np.array([0, 1, 0])
    # Distances: 0000 -> 0 1 2 3; 1111 -> 4 3 2 1; 1100 -> 2 3 4 1.
    # Radius 1: {0000 (0), 0001 (1)} -> 1/2; {1110 (0)} vs label 1 -> 0; {1110 (0)} -> 1. Mean 1/2.
    assert rk.hamming_ball_precision(query, database, query_labels, database_labels, 1) == (0.5, 0.0)
    # Radius 0: only 0000 finds itself (precision 1); the two empty balls count as 0: 1/3, 2/3 empty.
    precision, empty = rk.hamming_ball_precision(query, database, query_labels, database_labels, 0)
    assert precision == pytest.approx(1 / 3) and empty == pytest.approx(2 / 3)


def test_sign_hash_splits_along_the_principal_direction():
    train = np.array([[-2.0, 0.1], [-1.0, -0.1], [1.0, 0.1], [2.0, -0.1]])
    test = np.array([[-3.0, 0.0], [3.0, 0.05]])
    import torch

    train_bits, test_bits = rk.sign_hash(torch.tensor(train), torch.tensor(test), 1)
    assert train_bits.shape == (4, 1) and train_bits.dtype == bool
    # One bit: the sign along x (which sign is which is arbitrary).
    assert train_bits[0, 0] == train_bits[1, 0] == test_bits[0, 0] != train_bits[2, 0] == test_bits[1, 0]
    with pytest.raises(ConfigError, match="3 bits"):
        rk.sign_hash(torch.tensor(train), torch.tensor(test), 3)


def test_backends(monkeypatch):
    assert rk.resolve_backend("auto", 1000) == "numpy"
    with pytest.raises(ConfigError, match=r"retrieval\.backend"):
        rk.resolve_backend("annoy", 10)
    monkeypatch.setitem(sys.modules, "faiss", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"pip install mmae\[faiss\]"):
        rk.resolve_backend("faiss", 10)
    assert rk.resolve_backend("auto", 10**6) == "numpy"


def test_numpy_and_faiss_agree():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    database, query = rng.standard_normal((500, 16)), rng.standard_normal((40, 16))
    database, query = rk.unit_rows(database, database.mean(0)), rk.unit_rows(query, database.mean(0))
    np.testing.assert_array_equal(rk.cosine_neighbours(query, database, 10, "numpy"),
                                  rk.cosine_neighbours(query, database, 10, "faiss"))


#: The task's settings in these tests (conf/evaluate.yaml's, with the exact numpy search).
OPTIONS = {"k": [1, 10], "bits": [8, 16, 32, 64], "radius": 2, "backend": "numpy"}


def _context(run):
    (run / "figures").mkdir(exist_ok=True)
    return eval_context(run, figures=run / "figures", **OPTIONS)


@pytest.mark.slow
def test_retrieval_task_on_a_trained_run(eval_run):
    assert EVALUATIONS["retrieval"] is Retrieval
    context = _context(eval_run)
    result = Retrieval().run(context)
    within, cross = result.results["within"], result.results["cross_modal"]
    assert list(within) == ["all modalities", "inputs (standardised)", "PCA-8 of the inputs"]
    assert len(cross) == 6 and "image -> text" in cross and "text -> image" in cross
    codes = within["all modalities"]
    assert codes["queries"] == len(context.codes("test").codes)
    # 10 classes: chance P@1 (= mAP@1) is 0.1 and chance mAP@10 0.036 (each query's relevant
    # items are a tenth of the database); measured: 0.31 and 0.082.
    assert codes["mAP@1"] > 0.1 + 0.1
    assert codes["chance mAP@10"] == pytest.approx(0.036, abs=0.01)
    assert codes["mAP@10"] > codes["chance mAP@10"] + 0.02
    # Same-sample retrieval across modalities: chance R@10 is 10/28; measured 0.30 to 0.63 per
    # ordered pair (mean 0.49), mean rank 11.8 against 14.5.
    same = [row["same_sample"] for row in cross.values()]
    assert np.mean([s["R@10"] for s in same]) > np.mean([s["chance R@10"] for s in same]) + 0.05
    assert np.mean([s["mean_rank"] for s in same]) < np.mean([s["chance_mean_rank"] for s in same]) - 1
    # Hashing: codes only up to their 8 units; inputs at every length; no binary latent here.
    hashing = {(row["method"], row["bits"]): row for row in result.results["hashing"]}
    assert set(hashing) == {(CODES_HASH, 8), *((INPUTS_HASH, b) for b in (8, 16, 32, 64))}
    assert all(0 <= row["precision"] <= 1 and 0 <= row["empty"] <= 1 for row in hashing.values())
    # Longer codes, emptier balls (measured: 0 at 8 bits, 1.0 at 64).
    assert hashing[(INPUTS_HASH, 64)]["empty"] > hashing[(INPUTS_HASH, 8)]["empty"]
    assert result.figures and (eval_run / "figures" / "retrieval_hashing.png").stat().st_size > 1000
    assert "label mAP@10 (codes)" in result.summary
    json.dumps(result.results)


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory):
    return train_run(tmp_path_factory.mktemp("binary"), "trainer.max_epochs=1",
                      "model.latent_activation=binary")


def test_binary_latent_row(binary_run):
    context = _context(binary_run)
    codes = context.codes("test").codes
    assert codes.abs().eq(1).all()  # a straight-through sign: exactly ±1
    result = Retrieval().run(context)
    rows = [row for row in result.results["hashing"] if row["method"] == BINARY]
    assert len(rows) == 1 and rows[0]["bits"] == context.encoder.latent_dim
    # The ±1 codes themselves: the same Hamming ranking as bits of the codes.
    train = context.codes("train")
    expected = rk.hamming_ball_precision(codes.numpy() > 0, train.codes.numpy() > 0,
                                         context.codes("test").labels, train.labels, 2)
    assert (rows[0]["precision"], rows[0]["empty"]) == pytest.approx(expected)
