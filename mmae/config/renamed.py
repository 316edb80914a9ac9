"""Settings that moved to another key. The old key still works for one minor version: it is
rewritten to the new one with a `FutureWarning` that names both, on the command line
(`trainer.on_nonfinite=skip`), in a composed config (an experiment file of one's own) and in
an older run's saved config (resuming compares like with like)."""

from __future__ import annotations

import warnings
from collections.abc import MutableMapping
from contextlib import nullcontext

from omegaconf import DictConfig, open_dict

#: old dotted key -> new dotted key. mmae's own training settings were Trainer keys that
#: `build_trainer` had to pop before Lightning saw them; they have their own node now.
RENAMED = {
    "trainer.on_nonfinite": "training.on_nonfinite",
    "trainer.cache_backbones": "training.cache_backbones",
    "trainer.cache_features": "training.cache_features",
}


def _warn(old: str, new: str) -> None:
    warnings.warn(f"{old} is now {new}; the old name will stop working in mmae 0.9", FutureWarning,
                  stacklevel=3)


def renamed_overrides(overrides: list[str]) -> list[str]:
    """Command-line overrides with every old key written as its new one (`+` and `++` kept)."""
    renamed = []
    for override in overrides:
        sign = override[: len(override) - len(override.lstrip("+~"))]
        key, equals, value = override[len(sign):].partition("=")
        if key in RENAMED:
            _warn(key, RENAMED[key])
            sign = "" if sign == "+" else sign  # (the new key exists: adding it would be refused)
            override = f"{sign}{RENAMED[key]}{equals}{value}"
        renamed.append(override)
    return renamed


def move_renamed_keys(cfg: MutableMapping, warn: bool = True) -> None:
    """Move every old key of a composed or saved config to its new place, in place: the old
    key's value replaces the default that the config put at the new place, as the user meant."""
    for old, new in RENAMED.items():
        old_parent, old_leaf = old.rsplit(".", 1)
        new_parent, new_leaf = new.rsplit(".", 1)
        source = cfg.get(old_parent)
        if not isinstance(source, MutableMapping) or old_leaf not in source:
            continue
        if warn:
            _warn(old, new)
        with open_dict(cfg) if isinstance(cfg, DictConfig) else nullcontext():
            value = source.pop(old_leaf)
            if cfg.get(new_parent) is None:
                cfg[new_parent] = {}
            cfg[new_parent][new_leaf] = value

