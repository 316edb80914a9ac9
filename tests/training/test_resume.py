"""Resuming with `ckpt_path`: a 1 + 1 epoch run ends exactly where a 2-epoch run does."""

import csv

import pytest
import torch

from mmae.cli.train import train
from mmae.core.errors import ConfigError
from mmae.training import random_state

QUIET = ["experiment=tiny", "logger=none", "progress_bar=none", "trainer.enable_model_summary=false"]


def _last_checkpoint(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)


@pytest.fixture
def compose_in(tmp_path):
    """Compose the train config writing to a chosen directory (two runs per test)."""
    from hydra import compose, initialize_config_dir

    from mmae.config import CONFIG_DIR

    def _compose(run_dir, *overrides):
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            return compose("train", overrides=[f"paths.output_dir={run_dir}", *QUIET, *overrides])

    return _compose


@pytest.mark.slow
@pytest.mark.parametrize("model", ["ae", "vae"])
def test_resumed_run_equals_an_uninterrupted_one(compose_in, tmp_path, model):
    """Exact equality, not a tolerance: the data order comes from (seed, epoch) alone and the
    random state of the corruption (and of the VAE's sampling) is stored in the checkpoint."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(compose_in(straight, f"model={model}", "trainer.max_epochs=3"))
    train(compose_in(resumed, f"model={model}", "trainer.max_epochs=1"))
    after_one = _last_checkpoint(resumed)
    report, _ = train(compose_in(resumed, f"model={model}", "trainer.max_epochs=3", "ckpt_path=last"))

    expected, actual = _last_checkpoint(straight), _last_checkpoint(resumed)
    assert (after_one["epoch"], actual["epoch"]) == (0, 2)
    assert actual["global_step"] == expected["global_step"] == 24
    assert expected["state_dict"].keys() == actual["state_dict"].keys()
    for name, weight in expected["state_dict"].items():
        assert torch.equal(weight, actual["state_dict"][name]), name
    # The optimizer's moments continue too, not only the weights.
    assert torch.equal(expected["optimizer_states"][0]["state"][0]["exp_avg"],
                       actual["optimizer_states"][0]["state"][0]["exp_avg"])
    assert report["epochs"] == 3


@pytest.mark.slow
def test_resume_from_an_explicit_checkpoint_path(compose_in, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    train(compose_in(first, "trainer.max_epochs=1"))
    train(compose_in(second, "trainer.max_epochs=2", f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}"))
    assert _last_checkpoint(second)["epoch"] == 1  # continued at epoch 2, not from scratch


def test_resume_without_a_checkpoint_says_which_run_to_pass(compose_in, tmp_path):
    with pytest.raises(ConfigError, match=r"no checkpoint at .*last\.ckpt.*pass the run's directory"):
        train(compose_in(tmp_path / "fresh", "ckpt_path=last"))
    with pytest.raises(ConfigError, match=r"no checkpoint at /nowhere/x\.ckpt"):
        train(compose_in(tmp_path / "fresh", "ckpt_path=/nowhere/x.ckpt"))


def test_auto_starts_afresh_then_continues(compose_in, tmp_path):
    run = tmp_path / "run"
    train(compose_in(run, "trainer.max_epochs=1", "ckpt_path=auto"))  # nothing to resume: a start
    assert _last_checkpoint(run)["epoch"] == 0
    train(compose_in(run, "trainer.max_epochs=2", "ckpt_path=auto"))  # requeued: goes on
    assert _last_checkpoint(run)["global_step"] == 16


@pytest.mark.slow
def test_resuming_with_another_model_names_the_difference(compose_in, tmp_path):
    run = tmp_path / "run"
    train(compose_in(run, "trainer.max_epochs=1"))
    with pytest.raises(ConfigError, match=r"its model differs.*model\.latent_dim: 8 -> 4"):
        train(compose_in(run, "trainer.max_epochs=2", "ckpt_path=last", "model.latent_dim=4"))
    with pytest.warns(UserWarning, match=r"corruption\.p: 0\.3 -> 0\.5.*will not equal"):
        train(compose_in(run, "trainer.max_epochs=2", "ckpt_path=last", "corruption.p=0.5"))


def _training_epochs(path) -> set[str]:
    """The epochs that have training-loss rows in a CSV log."""
    rows = list(csv.DictReader(path.open()))
    return {row["epoch"] for row in rows if row["train/loss"]}


@pytest.mark.slow
def test_resuming_keeps_the_first_part_of_the_csv_log(compose_in, tmp_path):
    run = tmp_path / "run"
    train(compose_in(run, "trainer.max_epochs=1", "logger=csv"))
    train(compose_in(run, "trainer.max_epochs=2", "logger=csv", "ckpt_path=last"))
    first = _training_epochs(run / "csv" / "metrics.csv")
    second = _training_epochs(run / "csv" / "resumed-1" / "metrics.csv")
    assert (first, second) == ({"0"}, {"1"})
    # The training clock goes on from the checkpoint rather than from zero.
    clock = [_clock(run / "csv" / part / "metrics.csv") for part in ("", "resumed-1")]
    assert len(clock[0]) == len(clock[1]) == 1 and clock[1][0] > clock[0][0] > 0
    assert _last_checkpoint(run)["callbacks"]["TrainingClock"]["seconds"] >= clock[1][0]


def _clock(path):
    return [float(row["time/train_s"]) for row in csv.DictReader(path.open()) if row.get("time/train_s")]

def test_ranks_draw_different_numbers_after_the_offset():
    draws = []
    for rank in (0, 1):
        torch.manual_seed(42)
        random_state.offset_for_rank(rank)
        draws.append(torch.rand(4))
    assert not torch.equal(draws[0], draws[1])
    torch.manual_seed(42)
    random_state.offset_for_rank(1)
    assert torch.equal(torch.rand(4), draws[1])  # still seeded: reproducible per rank
