"""mmae's configs as the checker sees them, and the combinations it cannot see alone.

`validate_config(cfg, name)` runs right after a config is composed and before anything is
built (`mmae-train`, `train(cfg)`, and `compose_config` for mmae-eval / mmae-features), so a
typo or a wrong value fails at once with its dotted key path and what would be valid, rather
than as a TypeError deep inside `hydra.utils.instantiate`, or never.

- The top level of each entry config (train, evaluate, features) and its plain sections are
  declared here (`entry_schema`); `modality`, `callbacks` and `logger` map names to target
  nodes. The checking itself is `mmae.config.checker`'s.
- `_check_train_combinations`: the few impossible combinations that the config alone shows.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from mmae.config.checker import (
    IGNORED,
    MISSING,
    UNRESOLVED,
    Nodes,
    Target,
    check_section,
    get,
    is_mapping,
    is_target_node,
    locate,
)
from mmae.core.errors import ConfigError
from mmae.training.nonfinite import POLICIES

#: mmae's own settings of the training loop (`training:`): the Trainer's are Lightning's.
TRAINING_KEYS: dict[str, Any] = {"on_nonfinite": Literal[POLICIES], "cache_backbones": bool,
                                 "cache_features": bool}

#: torch.compile's modes (`torch._inductor.list_mode_options`).
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]




def _train_schema() -> dict[str, Any]:
    return {
        "seed": int | None,
        "ckpt_path": str | None,
        "compile": bool,
        # torch.compile's keyword arguments (the model is compiled in place: no `model`).
        "compile_options": {"backend": str, "mode": CompileMode | None, "dynamic": bool | None,
                            "fullgraph": bool, "options": dict | None, "disable": bool},
        "optimizer": Target(passed=("params",)),
        "scheduler": Target(passed=("optimizer",), optional=True),
        "paths": dict[str, str],  # open: `+paths.data_dir=...` for interpolations is common
        "data": Target(passed=("modalities",)),
        "modality": Nodes(Target()),
        "model": Target(passed=("modalities", "fusion")),
        "fusion": Target(passed=("modalities", "embed_dim", "latent_dim")),
        "objective": Target(),
        "corruption": Target(),
        "training": TRAINING_KEYS,
        "trainer": Target(passed=("callbacks", "logger")),
        "logger": Nodes(Target(optional=True), single=True),
        "callbacks": Nodes(Target(optional=True), single=True),
        "hydra": IGNORED,
    }


def _evaluate_schema() -> dict[str, Any]:
    from mmae.core.registry import EVALUATIONS
    from mmae.evaluation.catalog import task_names
    from mmae.evaluation.latent_map import PROJECTIONS

    own = {name: EVALUATIONS[name].options for name in EVALUATIONS if EVALUATIONS[name].options}
    return {"task": Literal[tuple(task_names())], "projection": Literal[tuple(PROJECTIONS)],
            "noise_std": float, "cleaned": str | None, "seed": int, "run": str | None,
            "encoder": str | None, "checkpoint": str | None, "output": str | None, "trust_code": bool,
            "data": Target(passed=("modalities",)), "hydra": IGNORED, **own}


def _features_schema() -> dict[str, Any]:
    from mmae.data.batch import SPLITS

    return {"seed": int, "encoder": str | None, "revision": str | None, "output": str | None,
            "split": Literal[SPLITS], "modalities": list[str] | None, "trust_code": bool, "private": bool,
            "data": Target(passed=("modalities",)),
            "hydra": IGNORED}


def _shard_schema() -> dict[str, Any]:
    return {"seed": int, "output": str | None, "chunk_bytes": int | str,
            "data": Target(passed=("modalities",)), "modality": Nodes(Target()), "hydra": IGNORED}


_ENTRY_SCHEMAS: dict[str, Callable[[], dict[str, Any]]] = {
    "train": _train_schema, "evaluate": _evaluate_schema, "features": _features_schema,
    "shard": _shard_schema}


@functools.cache
def entry_schema(name: str) -> dict[str, Any]:
    """The declared top level of `conf/<name>.yaml`: key -> type, `Target`, `Nodes` or section."""
    if name not in _ENTRY_SCHEMAS:
        raise ValueError(f"no schema for config '{name}'; known: {', '.join(_ENTRY_SCHEMAS)}")
    return _ENTRY_SCHEMAS[name]()


def validate_config(cfg: Mapping, name: str = "train", extra: Mapping[str, Any] | None = None) -> None:
    """Raise `ConfigError` for the first unknown key, wrong type or impossible combination in
    `cfg` (composed from `conf/<name>.yaml`), naming its dotted key and the valid choices.
    `extra` adds to or replaces entries of the schema (a user's evaluation task and its section)."""
    check_section(cfg, {**entry_schema(name), **(extra or {})}, "", f"{name}.yaml")
    if name == "train":
        _check_train_combinations(cfg)


# --- combinations -----------------------------------------------------------------------------

def _check_train_combinations(cfg: Mapping) -> None:
    """Choices that are each valid but cannot work together, saying what to choose instead."""
    _check_precision(cfg.get("trainer"))
    _check_training_length(cfg.get("trainer"))
    _check_optimizer(cfg.get("optimizer"), cfg.get("scheduler"))
    _check_compile(cfg)
    _check_encoder(cfg.get("model"), cfg.get("fusion"))
    _check_ckpt_path(cfg)


def _check_precision(trainer: Any) -> None:
    if not is_mapping(trainer):
        return
    accelerator, precision = get(trainer, "accelerator"), get(trainer, "precision")
    if accelerator == "cpu" and str(precision) in ("16", "16-mixed"):
        raise ConfigError(
            f"trainer.precision={precision} (float16 mixed precision) needs a GPU, but "
            "trainer.accelerator=cpu (Lightning would quietly switch to bf16-mixed): choose "
            "trainer.precision=bf16-mixed or 32-true on the CPU, or trainer=gpu")


def _check_training_length(trainer: Any) -> None:
    """Training must end: Lightning reads `max_epochs=-1` as "forever" and null as 1000 epochs."""
    if not is_mapping(trainer):
        return
    epochs, steps, time = (get(trainer, k) for k in ("max_epochs", "max_steps", "max_time"))
    if any(v in (UNRESOLVED, MISSING) for v in (epochs, steps, time)):
        return
    if isinstance(epochs, int) and epochs >= 1:
        return
    if (isinstance(steps, int) and steps >= 1) or time is not None:
        return  # bounded by steps or time
    shown = "null" if epochs is None else epochs
    raise ConfigError(f"trainer.max_epochs={shown} with no trainer.max_steps or trainer.max_time would "
                      + ("train forever" if epochs == -1 else "not train as meant")
                      + ": set trainer.max_epochs to 1 or more (or bound the run with trainer.max_steps=N "
                        "or trainer.max_time=DD:HH:MM:SS)")


def _arguments(node: Any) -> dict | None:
    """A target node's arguments as plain values; None where one has no value outside a run."""
    from omegaconf import OmegaConf

    values = {k: get(node, k) for k in node if k not in ("_target_", "_partial_")}
    if any(v in (UNRESOLVED, MISSING) for v in values.values()):
        return None
    return {k: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for k, v in values.items()}


def _check_optimizer(optimizer: Any, scheduler: Any) -> None:
    """Build the optimizer (and scheduler) once on a stand-in parameter, so that a value torch
    refuses (a negative learning rate, betas outside [0, 1)) is one line naming the section
    now, not a traceback once training starts."""
    import torch

    arguments = _arguments(optimizer) if is_target_node(optimizer) else None
    cls = locate(optimizer["_target_"]) if arguments is not None else None
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        return  # not a torch optimizer (or not known here): its own checks apply when it is built
    try:
        built = cls([torch.nn.Parameter(torch.zeros(1))], **arguments)
    except (ValueError, TypeError) as error:
        values = ", ".join(f"optimizer.{k}={v}" for k, v in arguments.items())
        raise ConfigError(f"optimizer ({optimizer['_target_']}): {error} ({values})") from None
    arguments = _arguments(scheduler) if is_target_node(scheduler) else None
    scheduler_cls = locate(scheduler["_target_"]) if arguments is not None else None
    if not isinstance(scheduler_cls, type):
        return
    try:
        scheduler_cls(built, **arguments)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"scheduler ({scheduler['_target_']}): {error}") from None


def _check_compile(cfg: Mapping) -> None:
    options = cfg.get("compile_options")
    if get(cfg, "compile") is not True or not is_mapping(options):
        return
    mode, inductor = get(options, "mode"), get(options, "options")
    if mode not in (None, UNRESOLVED, MISSING) and inductor not in (None, UNRESOLVED, MISSING):
        raise ConfigError(
            f"compile_options.mode={mode} and compile_options.options cannot both be set "
            "(torch.compile takes one or the other): set compile_options.options=null, or "
            "compile_options.mode=null and put the settings you need in options")


def _check_encoder(model: Any, fusion: Any) -> None:
    """The model/fusion choices `MultimodalEncoder` refuses, found from the config alone."""
    if not (is_target_node(model) and is_target_node(fusion)):
        return
    from mmae.core.fusion import Fusion
    from mmae.core.model import MultimodalAutoencoder, check_encoder_choices

    model_cls, fusion_cls = locate(model["_target_"]), locate(fusion["_target_"])
    if not (isinstance(model_cls, type) and issubclass(model_cls, MultimodalAutoencoder)
            and isinstance(fusion_cls, type) and issubclass(fusion_cls, Fusion)):
        return  # the user's own classes: their own checks apply when they are built
    defaults = inspect.signature(model_cls).parameters
    if not all(key in defaults for key in ("variational", "latent_activation")):
        return  # a subclass with other arguments: its own checks apply when it is built
    keys = [key for key in ("variational", "latent_activation", "top_k", "latent_dim", "private_dim")
            if key in defaults]
    settings = {key: get(model, key, defaults[key].default) for key in keys}
    if not any(v in (UNRESOLVED, MISSING) for v in settings.values()):
        check_encoder_choices(fusion_cls, **settings)


def _check_ckpt_path(cfg: Mapping) -> None:
    """A checkpoint to resume from must exist (`mmae.config.resume.resolve_ckpt_path` decides)."""
    ckpt_path = get(cfg, "ckpt_path")
    if not isinstance(ckpt_path, str) or not ckpt_path:
        return
    from mmae.config.resume import resolve_ckpt_path

    output_dir = get(cfg.get("paths") or {}, "output_dir")
    if not isinstance(output_dir, str):
        if ckpt_path in ("last", "auto"):
            return  # the run directory is not known here
        output_dir = "."
    resolve_ckpt_path(ckpt_path, Path(output_dir))
