"""Lightning's checkpoint plugin with mmae's atomic writes and safe, explained loads.

Kept apart from `mmae.artifacts.checkpoint` because it imports Lightning, which the encoder loader must
not. `mmae.cli.train.build_trainer` gives it to every Trainer mmae builds (DDP included).
"""

from __future__ import annotations

from typing import Any

from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from mmae.artifacts.checkpoint import is_remote, load_checkpoint_file, save_checkpoint_file
from mmae.core.errors import ConfigError


class AtomicCheckpointIO(TorchCheckpointIO):
    """Local paths: `save_checkpoint_file` / `load_checkpoint_file`. Remote (fsspec) paths are
    written by Lightning's own fsspec transaction (object stores replace an object whole) and
    read by `load_checkpoint_file`, with the same checks."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any,
                        storage_options: Any | None = None) -> None:
        if storage_options is not None or is_remote(path):
            super().save_checkpoint(checkpoint, path, storage_options)  # Lightning's checks
            return
        save_checkpoint_file(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = "cpu",
                        weights_only: bool | None = None) -> dict[str, Any]:
        if weights_only is False:
            raise ConfigError(f"refusing to load {path} with weights_only=False: mmae loads "
                              "checkpoints as tensors and primitives only")
        return load_checkpoint_file(path, map_location=map_location or "cpu")
