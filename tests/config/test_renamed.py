"""Settings that moved keep working under their old name for a while, saying the new one: on
the command line, in a composed config, and in an older run's saved config when resuming."""

import subprocess
import sys

import pytest
import yaml

from mmae.config import compose_config
from mmae.config.renamed import RENAMED, move_renamed_keys, renamed_overrides
from mmae.config.resume import config_differences
from mmae.config.schema import validate_config

MOVED = "trainer.on_nonfinite is now training.on_nonfinite"


def test_old_overrides_are_rewritten_with_a_warning_naming_both_keys():
    with pytest.warns(FutureWarning) as warned:
        rewritten = renamed_overrides(["trainer.on_nonfinite=skip", "+trainer.cache_features=false",
                                       "~trainer.cache_backbones", "trainer.max_epochs=2"])
    moved = ("on_nonfinite", "cache_features", "cache_backbones")
    assert [str(w.message).split(";")[0] for w in warned] == [f"trainer.{k} is now training.{k}"
                                                              for k in moved]
    assert rewritten == ["training.on_nonfinite=skip", "training.cache_features=false",
                         "~training.cache_backbones", "trainer.max_epochs=2"]


def test_a_config_composed_with_an_old_override_holds_the_setting_at_its_new_place():
    with pytest.warns(FutureWarning, match=MOVED):
        cfg = compose_config("train", ["trainer.on_nonfinite=skip"])
    assert cfg.training.on_nonfinite == "skip" and "on_nonfinite" not in cfg.trainer


def test_an_old_key_in_a_composed_config_is_moved_and_overrules_the_default(compose_cfg):
    """An experiment file of one's own that still sets `trainer: {cache_features: false}`."""
    cfg = compose_cfg("+trainer.cache_features=false")
    with pytest.raises(Exception, match=r"unknown key 'trainer\.cache_features'"):
        validate_config(cfg)  # the Trainer has no such argument
    with pytest.warns(FutureWarning, match="trainer.cache_features is now training.cache_features"):
        move_renamed_keys(cfg)
    validate_config(cfg)
    assert cfg.training.cache_features is False and "cache_features" not in cfg.trainer


def test_an_older_run_s_saved_config_compares_equal_under_the_new_names(compose_cfg):
    """What `check_resumable` does with a checkpoint's saved config: no difference to warn about."""
    from omegaconf import OmegaConf

    current = OmegaConf.to_container(compose_cfg(), resolve=True)
    saved = yaml.safe_load(yaml.safe_dump(current))
    training = saved.pop("training")
    saved["trainer"].update(training)  # as mmae 0.7 wrote it
    assert config_differences(saved, current)  # before the move: every renamed key differs
    move_renamed_keys(saved, warn=False)
    assert config_differences(saved, current) == {}
    assert set(RENAMED) == {f"trainer.{key}" for key in training}


def test_mmae_train_takes_the_old_name_and_saves_the_new_one(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mmae.train", "experiment=tiny", "logger=none",
                             "progress_bar=none", "trainer.max_epochs=1", "+trainer.limit_train_batches=2",
                             "+trainer.limit_val_batches=2", "trainer.on_nonfinite=skip",
                             f"paths.output_dir={tmp_path}"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert MOVED in result.stderr
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["training"]["on_nonfinite"] == "skip" and "on_nonfinite" not in saved["trainer"]
