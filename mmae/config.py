"""Where the configs live, and checks Hydra does not make on its own."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mmae.errors import ConfigError, MMAEError
from mmae.modalities.base import Modality
from mmae.schema import validate_config
from mmae.tracking import wandb_offline_default

CONFIG_DIR = Path(__file__).parent / "conf"

_GROUP_OVERRIDE = re.compile(r"^[+~]*(?P<group>[\w/]+)(@[\w.]+)?=(?P<value>.+)$")


def compose_config(name: str, overrides: list[str], validate: bool = True):
    """Compose `conf/<name>.yaml` with command-line overrides, outside `hydra.main` (for the
    command-line tools that need no run directory), and validate it (`mmae.schema`).

    Hydra refuses an override of a key that does not exist (`model.latnt_dim=3`) naming only
    the key; the schema then says which keys are valid. `validate=False` does only that."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException

    check_group_overrides(overrides)
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        try:
            cfg = compose(name, overrides=overrides)
        except ConfigCompositionException as error:
            explained = ("not in struct" in str(error.__cause__)
                         and _unknown_override_error(name, overrides))
            if explained:
                raise explained from None
            raise
    if validate:
        validate_config(cfg, name)
    return cfg


def _unknown_override_error(name: str, overrides: list[str]) -> ConfigError | None:
    """Compose again with every `key=value` as `++key=value` (add or override): the schema's
    `ConfigError`, which lists the valid keys, or None where it finds nothing wrong."""
    from hydra import compose

    def lenient(override: str) -> str:
        key = override.partition("=")[0]
        if ("=" not in override or override.startswith(("+", "~")) or key.startswith("hydra")
                or "/" in key or "@" in key or (CONFIG_DIR / key).is_dir()):
            return override  # a group choice, Hydra's own setting, or already explicit
        return f"++{override}"

    try:
        validate_config(compose(name, overrides=[lenient(o) for o in overrides]), name)
    except ConfigError as error:
        return error
    except Exception:  # Hydra's own error then stands
        return None
    return None


def group_options(group: str, search: Iterable[Path] = (CONFIG_DIR,)) -> list[str]:
    """The config names available in a config group (e.g. `modality` -> image, vector), in
    mmae's configs and the other config directories of `search`."""
    return sorted({p.stem for root in search for p in (Path(root) / group).glob("*.yaml")})


def _search_path(overrides: Iterable[str]) -> list[Path] | None:
    """mmae's config directory and those a `hydra.searchpath=[...]` override adds (file://
    or plain paths); None where one is a `pkg://` path or an interpolation, not listed here."""
    roots = [CONFIG_DIR]
    for override in overrides:
        key, _, value = override.lstrip("+").partition("=")
        if key != "hydra.searchpath":
            continue
        for entry in re.split(r"[\[\],\s]+", value):
            entry = entry.strip("'\"")
            if entry.startswith("pkg://") or "$" in entry:
                return None
            if entry:
                roots.append(Path(entry.removeprefix("file://")))
    return roots


def check_group_overrides(overrides: Iterable[str]) -> None:
    """Reject `group=name` overrides naming a config that does not exist, listing the choices.

    Hydra reports a missing list element (`modality=[image,imagee]`) without the options;
    this check names the bad value and what is available before anything is composed. Config
    directories added with `hydra.searchpath=[DIR]` (e.g. your own experiments) count too.
    """
    overrides = list(overrides)
    search = _search_path(overrides)
    if search is None:
        return  # a pkg:// search path: Hydra's own check applies
    for override in overrides:
        match = _GROUP_OVERRIDE.match(override)
        if (not match or match["group"].startswith("hydra/")
                or not any((root / match["group"]).is_dir() for root in search)):
            continue  # hydra/* groups live mostly in Hydra itself: its own check applies
        group, value = match["group"], match["value"].strip()
        if value == "null" or "$" in value or "(" in value:
            continue  # deletion, interpolation or sweep function: Hydra's business
        available = group_options(group, search)
        for name in re.split(r"[\[\],\s]+", value):
            if name and name not in available:
                raise ConfigError(
                    f"unknown {group} '{name}' in override '{override}'; "
                    f"available: {', '.join(available)}"
                )


def build(node: Any, **kwargs: Any) -> Any:
    """`instantiate`, but an mmae config error surfaces as itself, not wrapped by Hydra."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        while cause is not None and not isinstance(cause, MMAEError):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause from error


def build_modalities(config: Mapping) -> dict[str, Modality]:
    """Instantiate the `modality` config node: one `Modality` per name."""
    if not config:
        raise ConfigError(f"no modality configured; choose from {', '.join(group_options('modality'))}"
                          " (e.g. modality=[image,vector])")
    modalities = {}
    for name, spec in config.items():
        if "_target_" not in spec:
            raise ConfigError(f"modality '{name}' has no _target_; known modality configs: "
                              f"{', '.join(group_options('modality'))}")
        modality = build(spec)
        if not isinstance(modality, Modality):
            raise ConfigError(f"modality '{name}': _target_ {spec['_target_']} is not a "
                              "mmae.modalities.Modality")
        modalities[str(name)] = modality
    return modalities


def is_rank_zero_process() -> bool:
    """Whether this process is global rank zero, from the launcher's environment (usable
    before any process group exists: Lightning's children, torchrun and SLURM set these)."""
    return all(int(os.environ.get(var, "0")) == 0
               for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK"))


# For Hydra's own files: DDP ranks > 0 keep no log file and no .hydra/ copy of the config.
OmegaConf.register_new_resolver(
    "mmae.rank_zero_file", lambda path: path if is_rank_zero_process() else os.devnull, replace=True)
OmegaConf.register_new_resolver(
    "mmae.rank_zero_only", lambda value: value if is_rank_zero_process() else None, replace=True)

# logger=wandb's default `offline`: true only with no WANDB_MODE and no configured API key.
OmegaConf.register_new_resolver("mmae.wandb_offline", wandb_offline_default, replace=True,
                                use_cache=True)
