"""Cross-modal and joint coherence (`mmae.evaluation.tasks.coherence`): the tables against hand-made
imputers whose coherence is known exactly, then the task on the trained evaluation runs."""

import pytest
import torch
from eval_context import eval_context, single_thread

from mmae.evaluation.probes import fit_linear_classifier, linear_probe
from mmae.evaluation.tasks.coherence import (
    Coherence,
    classifier_inputs,
    cross_coherence,
    fit_modality_classifier,
    joint_coherence,
    mean_by_inputs,
    subsets,
)

NAMES = ["a", "b", "c"]
CLASSES = 4


def _template(labels):
    """Every toy modality shows its class as a one-hot vector."""
    return torch.nn.functional.one_hot(labels, CLASSES).float()


def _argmax(x):
    return x.argmax(1)


CLASSIFIERS = dict.fromkeys(NAMES, _argmax)


def _batch(labels, missing=None):
    labels = torch.tensor(labels)
    present = {n: torch.ones(len(labels), dtype=torch.bool) for n in NAMES}
    for name, rows in (missing or {}).items():
        present[name][rows] = False
    return {n: _template(labels) for n in NAMES}, present, {}, labels


def _imputer(correct):
    """An imputer that reads the class off its inputs and returns, for every modality, the
    right class's template where `correct(labels, subset)` holds and the next class's elsewhere."""
    def impute(features, present, raw):
        subset = tuple(features)
        labels = next(iter(features.values())).argmax(1)
        right = correct(labels, subset)
        shown = torch.where(right, labels, (labels + 1) % CLASSES)
        return {n: _template(shown) for n in NAMES}
    return impute


def _table(correct, batches):
    return cross_coherence(_imputer(correct), CLASSIFIERS, batches, NAMES)


def test_subsets_are_every_nonempty_combination_smallest_first():
    assert subsets(NAMES) == [("a",), ("b",), ("c",), ("a", "b"), ("a", "c"), ("b", "c"), ("a", "b", "c")]
    assert subsets(NAMES, [2]) == [("a", "b"), ("a", "c"), ("b", "c")]


@pytest.mark.parametrize(("correct", "value"), [(lambda y, s: torch.ones_like(y, dtype=torch.bool), 1.0),
                                                (lambda y, s: torch.zeros_like(y, dtype=torch.bool), 0.0),
                                                (lambda y, s: y % 2 == 0, 0.5)])
def test_coherence_is_the_fraction_of_imputations_of_the_right_class(correct, value):
    """Two batches of unequal parity counts: 3 of 4 even labels, then 0 of 2; pooled, half the
    samples are even (a mean of the batches' accuracies would give 0.375)."""
    table = _table(correct, [_batch([0, 2, 0, 1]), _batch([1, 3])])
    for target in NAMES:
        row = table[target]
        assert row["real"] == 1.0  # the real features always show their class
        others = [n for n in NAMES if n != target]
        assert set(row["from"]) == {*others, "+".join(others)}
        assert all(v == value for v in row["from"].values())
        assert row["by_inputs"] == {"1": value, "2": value}


def test_means_by_number_of_inputs():
    """Right only when `a` is among the inputs: for target b, from a 1, from c 0, from a+c 1."""
    table = _table(lambda y, s: torch.full_like(y, "a" in s, dtype=torch.bool), [_batch([0, 1, 2, 3])])
    assert table["b"]["from"] == {"a": 1.0, "c": 0.0, "a+c": 1.0}
    assert table["b"]["by_inputs"] == {"1": 0.5, "2": 1.0}
    assert table["c"]["by_inputs"] == {"1": 0.5, "2": 1.0}
    assert table["a"]["by_inputs"] == {"1": 0.0, "2": 0.0}  # a is never an input of itself
    means = mean_by_inputs(table)
    assert means["1"] == pytest.approx(1 / 3) and means["2"] == pytest.approx(2 / 3)
    # Right only with two inputs: the by-count means separate 1 from 2 inputs exactly.
    table = _table(lambda y, s: torch.full_like(y, len(s) == 2, dtype=torch.bool), [_batch([0, 1, 2, 3])])
    assert mean_by_inputs(table) == {"1": 0.0, "2": 1.0}


def test_only_samples_with_every_input_present_are_counted():
    """b missing in rows 0-1 and c in row 2: from b, 2 samples; from b+c, 1; real c, 3."""
    seen = {}

    def impute(features, present, raw):
        seen[tuple(features)] = len(next(iter(features.values())))
        assert all(p.all() for p in present.values())
        return {n: next(iter(features.values())) for n in NAMES}

    features, present, raw, labels = _batch([0, 1, 2, 3], missing={"b": [0, 1], "c": [2]})
    features["c"] = _template((labels + 1) % CLASSES)  # c's real features show the wrong class
    table = cross_coherence(impute, CLASSIFIERS, [(features, present, raw, labels)], NAMES)
    assert seen == {("a",): 4, ("b",): 2, ("c",): 3, ("a", "b"): 2, ("a", "c"): 3, ("b", "c"): 1}
    assert table["c"]["real"] == 0.0
    assert table["a"]["from"]["c"] == 0.0 and table["a"]["from"]["b"] == 1.0  # the imputer copies
    # Beside each figure, the judge on the real target of the same samples (those that hold it):
    # c's real features are wrong on the 3 rows that hold c, a's right on every row.
    assert table["c"]["real_from"] == {"a": 0.0, "b": 0.0, "a+b": 0.0}
    assert table["a"]["real_from"] == {"b": 1.0, "c": 1.0, "b+c": 1.0}
    assert table["c"]["real_by_inputs"] == {"1": 0.0, "2": 0.0}
    assert mean_by_inputs(table, "real_by_inputs") == {"1": pytest.approx(2 / 3), "2": pytest.approx(2 / 3)}


def test_joint_coherence_counts_agreeing_samples_and_their_classes():
    decoded = {"a": _template(torch.tensor([0, 1, 2, 3, 3])), "b": _template(torch.tensor([0, 1, 0, 3, 3])),
               "c": _template(torch.tensor([0, 2, 2, 3, 3]))}
    assert joint_coherence(decoded, CLASSIFIERS) == {"coherence": 0.6, "classes": 2}


def test_token_ids_are_classified_as_a_bag_of_tokens():
    ids = torch.tensor([[1, 1, 3], [0, 2, 2]])
    assert torch.equal(classifier_inputs(ids, 4), torch.tensor([[0.0, 2, 0, 1], [1, 0, 2, 0]]))
    assert torch.equal(classifier_inputs(ids, 2), torch.tensor([[0.0, 3], [3, 0]]))  # ids folded mod 2
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (60,), generator=g)
    tokens = torch.randint(3, 9, (60, 5), generator=g)
    tokens[:, int(torch.randint(5, (1,), generator=g))] = labels  # the class token, at any position
    classify = fit_modality_classifier(tokens[:40], labels[:40], num_classes=3)
    assert torch.equal(classify(tokens[40:]), labels[40:])


def test_linear_probe_is_the_accuracy_of_the_fitted_classifier():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(80, 6, generator=g), torch.randint(0, 3, (80,), generator=g)
    x[:, 0] += 2 * y
    torch.manual_seed(1)
    accuracy = linear_probe(x[:60], y[:60], x[60:], y[60:])
    torch.manual_seed(1)
    classify = fit_linear_classifier(x[:60], y[:60], num_classes=3)
    assert accuracy == (classify(x[60:]) == y[60:]).double().mean().item()
    assert accuracy > 0.7


@pytest.mark.slow
def test_coherence_of_the_evaluation_run(eval_run):
    with single_thread():
        result = Coherence().run(eval_context(eval_run, prior_samples=200, gmm_components=4))
    results = result.results
    assert results["chance"] == 0.1 and results["chance_joint"] == pytest.approx(0.01)
    for target, row in results["cross"].items():
        others = [n for n in ["image", "vector", "text"] if n != target]
        assert list(row["from"]) == [*others, "+".join(others)]  # subsets of 1 and 2 inputs
        assert row["real"] > 0.6  # the classifiers are a meaningful judge: far above chance
        assert all(0.0 <= v <= 1.0 for v in row["from"].values())
        assert row["by_inputs"]["2"] == row["from"]["+".join(others)]
        assert row["by_inputs"]["1"] == pytest.approx(sum(row["from"][n] for n in others) / 2)
    assert set(results["by_inputs"]) == {"1", "2"}
    assert set(results["joint"]) == {"gmm"}  # no prior to draw from in an autoencoder
    assert 0.0 <= results["joint"]["gmm"]["coherence"] <= 1.0
    assert "coherence from 1" in result.summary and "real" in result.text
    assert result.summary["judge on real data, from 1"] > 0.6
    assert "coherence / the judge on the real target of the same samples" in result.text


@pytest.mark.slow
def test_joint_coherence_of_a_vae_from_the_prior_and_the_mixture(eval_vae_run):
    with single_thread():
        results = Coherence().run(eval_context(eval_vae_run, prior_samples=200, gmm_components=4)).results
    assert set(results["joint"]) == {"prior", "gmm"}
    for row in results["joint"].values():
        assert 0.0 <= row["coherence"] <= 1.0 and 0 <= row["classes"] <= 10
