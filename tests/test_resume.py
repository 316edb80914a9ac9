"""Resuming with `ckpt_path`: a 1 + 1 epoch run ends exactly where a 2-epoch run does."""

import pytest
import torch

from mmae.errors import ConfigError
from mmae.train import train

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
