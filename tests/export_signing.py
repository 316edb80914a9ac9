"""Rewrite an export as only a test should: edit config.json and sign it again (its digest in
model.safetensors' metadata, the new weights' SHA-256 in config.json), so that a test reaches
the check it is about; or make an export look as mmae wrote it before format 4 (no digest)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from mmae.artifacts.export import CONFIG, CONFIG_HASH_KEY, WEIGHTS, config_digest, sha256


def resign(folder: Path, record_digest: bool = True) -> None:
    """Record config.json's digest in the weights' metadata (or, with `record_digest=False`,
    drop it) and config.json's weights_sha256 of the rewritten weights."""
    config = json.loads((folder / CONFIG).read_text())
    with safe_open(folder / WEIGHTS, "pt") as handle:
        metadata = dict(handle.metadata() or {})
    metadata.pop(CONFIG_HASH_KEY, None)
    if record_digest:
        metadata[CONFIG_HASH_KEY] = config_digest(config)
    save_file(load_file(folder / WEIGHTS), folder / WEIGHTS, metadata=metadata)
    config["weights_sha256"] = sha256(folder / WEIGHTS)
    (folder / CONFIG).write_text(json.dumps(config, indent=2))


def edit_signed(folder: Path, change: Callable[[dict], None]) -> None:
    """`change` config.json, then sign it again: the export's integrity no longer tells."""
    config = json.loads((folder / CONFIG).read_text())
    change(config)
    (folder / CONFIG).write_text(json.dumps(config))
    resign(folder)


def as_unsigned_format(folder: Path, version: int, change: Callable[[dict], None] | None = None) -> None:
    """Make the export look as a format `version` (2 or 3) export: no digest in the weights'
    metadata, `format_version` set, `change` applied to config.json, weights_sha256 fixed."""
    config = json.loads((folder / CONFIG).read_text())
    config["format_version"] = version
    if change is not None:
        change(config)
    (folder / CONFIG).write_text(json.dumps(config))
    resign(folder, record_digest=False)
