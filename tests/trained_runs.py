"""Training runs for tests that need a trained model: one run per call (`train_run`), or one run
per test session shared by the xdist workers (`session_run`)."""

from __future__ import annotations

import os

from filelock import FileLock
from hydra import compose, initialize_config_dir

from mmae.config import CONFIG_DIR


def train_run(folder, *overrides: str):
    """Train the tiny experiment into `folder` (no logger, no progress bar) with `overrides`."""
    from mmae.cli.train import train

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=tiny", "logger=none", "progress_bar=none",
                                          f"paths.output_dir={folder}", *overrides])
    train(cfg)
    return folder


def session_run(tmp_path_factory, name: str, *overrides: str):
    """A run trained once per test session, even with the tests spread over xdist workers:
    the first worker to need it trains it under a file lock, the others wait and share it."""
    root = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        root = root.parent  # the session's folder, above each worker's own
    folder = root / name
    with FileLock(f"{folder}.lock"):
        if not (folder / "metrics.json").exists():
            train_run(folder, *overrides)
    return folder
