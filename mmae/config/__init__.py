"""Configs: composing them (Hydra), checking them (the schema) and building objects from them.

Importing the package registers the `${mmae.*:...}` resolvers the configs use.
"""

from mmae.config import resolvers  # noqa: F401  (registers the resolvers)
from mmae.config.build import build, build_modalities
from mmae.config.compose import CONFIG_DIR, check_group_overrides, compose_config, group_options
from mmae.config.resolvers import is_rank_zero_process

__all__ = ["CONFIG_DIR", "build", "build_modalities", "check_group_overrides", "compose_config",
           "group_options", "is_rank_zero_process"]
