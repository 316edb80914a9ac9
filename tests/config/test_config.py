import subprocess
import sys
import zipfile

import pytest
import torch
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate

from mmae.config import CONFIG_DIR, build_modalities, check_group_overrides, group_options
from mmae.core.errors import ConfigError
from mmae.core.fusion import ConcatFusion, MeanFusion
from mmae.core.model import MultimodalAutoencoder


def test_default_config_composes_with_the_documented_groups(compose_cfg):
    cfg = compose_cfg()
    assert list(cfg.modality) == ["image", "vector"]
    assert cfg.fusion._target_ == "mmae.core.fusion.MeanFusion"
    assert cfg.model._target_ == "mmae.core.model.MultimodalAutoencoder"
    assert cfg.corruption.p == 0.3
    assert cfg.logger._target_.endswith("CSVLogger")
    assert cfg.trainer.accelerator == "cpu"
    assert cfg.callbacks.progress_bar._target_.endswith("TQDMProgressBar")
    for group in ("data", "model", "fusion", "modality", "objective", "corruption", "trainer",
                  "logger", "callbacks", "progress_bar", "experiment", "paths"):
        assert (CONFIG_DIR / group).is_dir(), group


@pytest.mark.parametrize("fusion, cls", [("mean", MeanFusion), ("concat", ConcatFusion)])
def test_model_and_fusion_choices_instantiate(compose_cfg, fusion, cls):
    cfg = compose_cfg(f"fusion={fusion}", "modality=[vector]")
    modalities = build_modalities(cfg.modality)
    model = instantiate(cfg.model, _partial_=True)(modalities=modalities, fusion=instantiate(cfg.fusion))
    assert isinstance(model, MultimodalAutoencoder) and isinstance(model.encoder.fusion, cls)
    assert list(model.modalities) == ["vector"]


def test_unknown_key_is_rejected_at_compose_time(compose_cfg):
    with pytest.raises(ConfigCompositionException, match="latent_dimm"):
        compose_cfg("model.latent_dimm=8")


def test_unknown_modality_is_named_with_the_available_ones():
    with pytest.raises(ConfigError, match=r"unknown modality 'imagee' in override 'modality=\[image,"
                                          r"imagee\]'; available: audio, image, tabular, text, vector"):
        check_group_overrides(["modality=[image,imagee]"])
    with pytest.raises(ConfigError, match="unknown fusion 'sum'"):
        check_group_overrides(["fusion=sum"])
    check_group_overrides(["modality=[image,vector]", "fusion=concat", "experiment=null",
                           "model.latent_dim=8", "trainer.max_epochs=1"])
    assert group_options("fusion") == ["attention", "concat", "mean", "moe", "mopoe", "poe"]


@pytest.mark.slow
def test_cli_reports_an_unknown_modality_before_training(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mmae.train", "modality=[image,imagee]",
                             f"paths.output_dir={tmp_path}"], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "unknown modality 'imagee'" in result.stderr
    assert "available: audio, image, tabular, text, vector" in result.stderr
    assert not (tmp_path / "checkpoints").exists()


def test_modality_config_must_build_a_modality():
    with pytest.raises(ConfigError, match="modality 'photo' has no _target_"):
        build_modalities({"photo": {"size": 28}})
    with pytest.raises(ConfigError, match=r"modality 'photo': _target_ collections.OrderedDict is not"):
        build_modalities({"photo": {"_target_": "collections.OrderedDict"}})
    with pytest.raises(ConfigError, match="no modality configured"):
        build_modalities({})


@pytest.mark.slow
def test_configs_ship_inside_the_wheel(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                    "-w", str(tmp_path), str(CONFIG_DIR.parents[1])], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("mmae-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"mmae/conf/{p.relative_to(CONFIG_DIR)}" for p in CONFIG_DIR.rglob("*.yaml")}
    assert "mmae/conf/train.yaml" in expected
    assert expected <= names


def test_the_default_optimizer_is_fused_and_another_runs_without_that_key(compose_cfg):
    from mmae.config.assembly import build_module
    from mmae.config.schema import validate_config

    module, _ = build_module(compose_cfg("experiment=tiny"))
    optimizer = module.configure_optimizers()["optimizer"]
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["fused"] is True
    cfg = compose_cfg("experiment=tiny", "optimizer._target_=torch.optim.RMSprop", "~optimizer.fused")
    validate_config(cfg)  # (with the key, the message says to drop it: test_no_silent_damage.py)
    module, _ = build_module(cfg)
    assert isinstance(module.configure_optimizers()["optimizer"], torch.optim.RMSprop)
