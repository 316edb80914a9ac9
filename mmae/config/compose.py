"""Where the configs live, composing them, and the override checks Hydra does not make."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from mmae.config.renamed import renamed_overrides
from mmae.config.schema import validate_config
from mmae.core.errors import ConfigError

CONFIG_DIR = Path(__file__).parent.parent / "conf"

_GROUP_OVERRIDE = re.compile(r"^[+~]*(?P<group>[\w/]+)(@[\w.]+)?=(?P<value>.+)$")


def compose_config(name: str, overrides: list[str], validate: bool = True):
    """Compose `conf/<name>.yaml` with command-line overrides, outside `hydra.main` (for the
    command-line tools that need no run directory), and validate it (`mmae.config.schema`).

    Hydra refuses an override of a key that does not exist (`model.latnt_dim=3`) naming only
    the key; the schema then says which keys are valid. `validate=False` does only that."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException

    overrides = renamed_overrides(overrides)
    check_group_overrides(overrides)
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        try:
            cfg = compose(name, overrides=overrides)
        except ConfigCompositionException as error:
            explained = ("not in struct" in str(error.__cause__)
                         and _unknown_override_error(name, overrides))
            if explained:
                raise explained from None
            raise ConfigError(_composition_error(name, error)) from None
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


def _composition_error(name: str, error: Exception) -> str:
    """Hydra's reason in one line; for an override of a group `conf/<name>.yaml` does not use
    (`progress_bar=none` is an mmae-train setting, not an mmae-eval one), what the config has."""
    message = " ".join(str(error).split())
    match = re.match(r"Could not override '([^']+)'\. No match in the defaults list", message)
    if not match:
        return message
    from hydra import compose

    keys = sorted(k for k in compose(name) if k != "hydra")
    return (f"'{match[1]}' is not a setting of {name}.yaml (it is a config group of another command); "
            f"its settings are: {', '.join(keys)}")


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
