"""Shared fixtures: the real Hydra config composed in-process, and tiny modalities."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from mmae.config import CONFIG_DIR
from mmae.modalities import ImageModality, VectorModality


@pytest.fixture
def compose_cfg(tmp_path):
    """Compose `conf/train.yaml` as `mmae-train` would, writing under `tmp_path`."""

    def _compose(*overrides: str):
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            return compose("train", overrides=[f"paths.output_dir={tmp_path}", *overrides])

    return _compose


@pytest.fixture
def small_modalities():
    """Tiny image and vector modalities, fast enough for maths-level tests."""
    return {"image": ImageModality(channels=1, size=8, hidden_channels=[4]),
            "vector": VectorModality(dim=5, hidden=[8])}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
