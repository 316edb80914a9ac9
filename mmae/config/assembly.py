"""From a composed config to the objects a command runs: the LightningModule (the model and
its objective, optimizer, schedule and corruption), the datamodule and the Trainer that
`mmae-train` fits, and the `EvalContext` that `mmae-eval`'s tasks read.

The CLI fits or evaluates what this builds; benchmarks and tests build the same objects to
time or inspect them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ProgressBar
from pytorch_lightning.plugins import CheckpointIO
from pytorch_lightning.strategies import Strategy

from mmae.artifacts.export import FrozenEncoder, describe, load_checkpoint_model, load_encoder
from mmae.config.build import build, build_modalities
from mmae.config.compose import compose_config
from mmae.core.errors import ConfigError
from mmae.evaluation.base import EvalContext
from mmae.training.checkpoint_io import AtomicCheckpointIO
from mmae.training.module import AutoencoderModule


def build_all(group: DictConfig | None, **kwargs: Any) -> list:
    """One object for a node with a `_target_` (`kwargs` added to its arguments), else one
    per non-null child node."""
    if not group:
        return []
    if "_target_" in group:
        return [build(group, **kwargs)]
    return [build(node) for node in group.values() if node is not None]


def build_module(cfg: DictConfig) -> tuple[AutoencoderModule, pl.LightningDataModule]:
    """The LightningModule (model compiled in place when `compile=true`) and the datamodule
    that `cfg` describes: what `train` fits, and what a benchmark times."""
    modalities = build_modalities(cfg.modality)
    datamodule = build(cfg.data, _partial_=True)(modalities=modalities)
    model = build(cfg.model, _partial_=True)(modalities=modalities, fusion=build(cfg.fusion))
    if cfg.get("compile"):
        compile_model(model, cfg.get("compile_options"))
    module = AutoencoderModule(
        model=model,
        objective=build(cfg.objective),
        optimizer=build(cfg.optimizer),
        scheduler=build(cfg.scheduler) if cfg.get("scheduler") else None,
        corruption=build(cfg.corruption),
        config=OmegaConf.to_container(cfg, resolve=True),
        **cfg.get("training", {}),
    )
    return module, datamodule


def _plugins(settings: dict, kwargs: dict) -> list:
    """The Trainer's plugins (those of `kwargs`, else of the config) plus `AtomicCheckpointIO`,
    unless one of them or a Strategy object already brings its own CheckpointIO."""
    given = settings.pop("plugins", None)
    given = kwargs.get("plugins", given)
    plugins = [] if given is None else list(given) if isinstance(given, (list, tuple)) else [given]
    plugins = [build(p) if isinstance(p, dict) else p for p in plugins]
    strategy = kwargs.get("strategy", settings.get("strategy"))
    has_io = (any(isinstance(p, CheckpointIO) for p in plugins)
              # (the private `_checkpoint_io`: the public property creates a default when none was given)
              or (isinstance(strategy, Strategy) and strategy._checkpoint_io is not None)
              or (isinstance(strategy, dict) and strategy.get("checkpoint_io") is not None))
    return plugins if has_io else [*plugins, AtomicCheckpointIO()]


def build_trainer(trainer_cfg: DictConfig, **kwargs: Any) -> pl.Trainer:
    """The Lightning Trainer of a `trainer` config node (`kwargs` added to its arguments);
    `enable_progress_bar: false` drops the bar that the `progress_bar` group added."""
    settings = OmegaConf.to_container(trainer_cfg, resolve=True)
    if not settings.get("enable_progress_bar", True):  # it overrules the progress_bar choice
        kwargs["callbacks"] = [c for c in kwargs.get("callbacks", []) if not isinstance(c, ProgressBar)]
    kwargs["plugins"] = _plugins(settings, kwargs)  # checkpoints written atomically, loaded safely
    return build(settings, **kwargs)


def compile_model(model: torch.nn.Module, options: DictConfig | None) -> None:
    """Compile in place: parameter names (state dict, checkpoint, export) stay unprefixed."""
    kwargs = {k: v for k, v in (options or {}).items() if v is not None}
    model.compile(**kwargs)


def evaluation_config(overrides: list[str]) -> DictConfig:
    """`conf/evaluate.yaml` with `overrides`, not yet validated (a task of the user's own adds
    its section to the schema). With `run=DIR` and no `data=` choice, the data is the run's own
    (its `config.yaml`), with the overrides' `data.*` keys on top."""
    cfg = compose_config("evaluate", overrides, validate=False)
    run = Path(cfg.run) if cfg.run else None
    switches_data = any(o.startswith(("data=", "+data=")) for o in overrides)
    if run and (run / "config.yaml").is_file() and not switches_data:
        try:
            trained = OmegaConf.load(run / "config.yaml")
        except yaml.YAMLError as error:  # mmae-train writes it atomically: damaged since
            raise ConfigError(f"{run / 'config.yaml'} is truncated or corrupt: "
                              f"{' '.join(str(error).split())}") from None
        for override in overrides:
            key, _, value = override.lstrip("+").partition("=")
            if key.startswith("data."):
                OmegaConf.update(trained, key, yaml.safe_load(value), force_add=True)
        cfg.data = trained.data
    return cfg


def build_eval_context(cfg: DictConfig, run: Path | None, figures: Path | None = None) -> EvalContext:
    """The run as every task reads it: the export, the whole model when a checkpoint is known
    (`run=DIR` or `checkpoint=FILE`), the data, and where figures go."""
    encoder_dir = Path(cfg.encoder) if cfg.encoder else (run / "encoder" if run else None)
    checkpoint = Path(cfg.checkpoint) if cfg.checkpoint else (
        run / "checkpoints" / "best.ckpt" if run else None)
    if encoder_dir is None:
        if checkpoint is None:
            raise ConfigError("give run=DIR (an mmae-train output) or encoder=DIR")
        model = load_checkpoint_model(checkpoint, trust_code=cfg.trust_code)
        encoder = FrozenEncoder(model.encoder, describe(model))
    else:
        encoder = load_encoder(encoder_dir, trust_code=cfg.trust_code)
        model = load_checkpoint_model(checkpoint, trust_code=cfg.trust_code) if checkpoint else None
    datamodule = build(cfg.data, _partial_=True)(modalities=encoder.modalities)
    return EvalContext(encoder, datamodule, model, figures=figures, seed=cfg.seed)
