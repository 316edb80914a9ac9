"""Robustness to missing modalities and input noise (`mmae.evaluation.tasks.robustness.task`): the
conditions by hand, then the task on the trained evaluation run."""

from itertools import pairwise

import pytest
import torch
from eval_context import eval_context, single_thread

from mmae.evaluation.probes import fit_linear_classifier
from mmae.evaluation.tasks.coherence import subsets
from mmae.evaluation.tasks.robustness.task import Measured, Robustness, drop_to, labelled, noised
from mmae.modalities import TextModality, VectorModality

SIGMAS = [0.0, 0.25, 1.0, 2.0]
NAMES = ["image", "vector", "text"]


def test_noise_is_in_standard_deviations_of_each_feature():
    vector = VectorModality(dim=3, hidden=[4], mean=[0.0, 5.0, -1.0], std=[1.0, 10.0, 0.1])
    text = TextModality(model_config={"model_type": "bert", "hidden_size": 16, "num_hidden_layers": 1,
                                      "num_attention_heads": 2, "intermediate_size": 32}, max_length=4)
    modalities = {"vector": vector, "text": text}
    features = {"vector": torch.zeros(20_000, 3), "text": torch.ones(20_000, 4, dtype=torch.long)}
    present = {n: torch.ones(20_000, dtype=torch.bool) for n in modalities}
    noisy, kept = noised(0.5, ["vector", "text"], modalities, seed=0)(features, present)
    assert torch.allclose(noisy["vector"].std(0), 0.5 * torch.tensor([1.0, 10.0, 0.1]), rtol=0.03)
    assert torch.equal(noisy["text"], features["text"])  # token ids are never noised
    assert kept["vector"].all()
    same, _ = noised(0.0, ["vector"], modalities, seed=0)(features, present)
    assert same["vector"] is features["vector"]  # sigma 0: the inputs as they are, bit for bit
    repeat, _ = noised(0.5, ["vector"], modalities, seed=0)(features, present)
    assert torch.equal(repeat["vector"], noisy["vector"])


def test_a_subset_condition_gives_only_its_modalities():
    features = {n: torch.full((2, 1), float(i)) for i, n in enumerate(NAMES)}
    present = {n: torch.ones(2, dtype=torch.bool) for n in NAMES}
    given, masks = drop_to(("image", "text"))(features, present)
    assert list(given) == ["image", "text"] and list(masks) == ["image", "text"]


def test_measured_accuracy_skips_unlabelled_samples_and_ratios_use_the_baseline():
    entry = Measured(codes=[torch.tensor([[0.0], [1.0]]), torch.tensor([[1.0], [0.0]])],
                     raw=[torch.tensor([0, 0]), torch.tensor([0, 0])],
                     labels=[torch.tensor([0, 1]), torch.tensor([-1, 1])],
                     errors={"vector": [3.0, 4], "text": [1.0, 0]})
    assert entry.accuracy(lambda x: x[:, 0].long()) == pytest.approx(2 / 3)
    assert entry.raw_accuracy() == pytest.approx(1 / 3)
    assert entry.reconstruction({"vector": 1.5}) == {"vector": {"error": 0.75, "ratio": 0.5},
                                                     "text": {"error": None, "ratio": None}}
    assert labelled(torch.arange(3), torch.tensor([2, -1, 0]))[0].tolist() == [0, 2]


@pytest.fixture(scope="module")
def measured(eval_run, tmp_path_factory):
    context = eval_context(eval_run, figures=tmp_path_factory.mktemp("robustness"), sigmas=SIGMAS)
    torch.manual_seed(0)  # the first probe fitted is the deployed one: refitted below from this seed
    with single_thread():
        return context, Robustness().run(context)


@pytest.mark.slow
def test_every_subset_of_modalities_is_measured_against_the_raw_baseline(measured):
    _, result = measured
    rows = result.results["subsets"]
    assert len(rows) == 2 ** len(NAMES) - 1
    assert set(rows) == {"+".join(s) for s in subsets(NAMES)}
    for row in rows.values():
        assert {"deployed", "matched", "raw", "samples", "reconstruction"} <= set(row)
        assert all(0.0 <= row[p] <= 1.0 for p in ("deployed", "matched", "raw"))
        assert set(row["reconstruction"]) == set(NAMES)
        assert all(r["ratio"] > 0 for r in row["reconstruction"].values())
    full = rows["image+vector+text"]
    assert full["deployed"] == full["matched"]  # the same probe on the same codes
    assert full["raw"] > 0.5 and full["deployed"] > 0.18  # above chance (0.1): 0.96 and 0.25 measured
    assert rows["image"]["samples"] < full["samples"]  # samples without an image are left out


def test_without_noise_the_accuracy_is_the_clean_probe_and_noise_does_not_help(measured):
    context, result = measured
    noise = result.results["noise"]
    assert [row["sigma"] for row in noise] == SIGMAS
    train, test = context.codes("train"), context.codes("test")
    torch.manual_seed(0)
    with single_thread():  # as the task fitted it: the same start, the same arithmetic
        clean = fit_linear_classifier(*labelled(train.codes, train.labels))
    x, y = labelled(test.codes, test.labels)
    assert noise[0]["probe"] == (clean(x) == y).double().mean().item()
    full = result.results["subsets"]["image+vector+text"]
    assert noise[0]["probe"] == full["deployed"] and noise[0]["raw"] == full["raw"]
    assert noise[0]["reconstruction"] == full["reconstruction"]
    tolerance = 4 / len(y)  # four test samples: a little noise can flip a few by luck
    for before, after in pairwise(noise):
        assert after["probe"] <= before["probe"] + tolerance
        assert after["raw"] <= before["raw"] + tolerance
    assert noise[-1]["probe"] < noise[0]["probe"]  # two standard deviations of noise do cost


def test_the_figures_and_the_table(measured):
    _, result = measured
    assert [name.rsplit("/", 1)[-1] for name in result.figures] == [
        "robustness_subsets.png", "robustness_noise.png", "robustness_reconstruction.png"]
    for path in result.figures:
        with open(path, "rb") as handle:
            assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "image+vector+text" in result.text and "sigma" in result.text
    assert set(result.summary) == {"probe all", "probe from 1 (mean)", "probe at sigma 2.0",
                                   "raw at sigma 2.0"}


@pytest.mark.slow
def test_without_the_decoder_the_reconstruction_is_left_out(eval_run):
    context = eval_context(eval_run, model=False, sigmas=[0.0, 0.5], matched_probes=False)
    with single_thread():
        results = Robustness().run(context).results
    assert all("reconstruction" not in row and "matched" not in row for row in results["subsets"].values())
    assert all("reconstruction" not in row for row in results["noise"])
    assert "baseline_mean" not in results
