"""Objects from config nodes: Hydra's `instantiate`, with mmae's errors left as they are."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate

from mmae.config.compose import group_options
from mmae.core.errors import ConfigError, MMAEError
from mmae.core.modality import Modality


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
