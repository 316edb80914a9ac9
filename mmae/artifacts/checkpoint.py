"""Training checkpoints: read without unpickling code, written so a crash never leaves a part.

`load_checkpoint_file` is the one place mmae reads a `.ckpt` (resume checks, export, eval,
and Lightning's own `fit/validate(ckpt_path=...)` through `AtomicCheckpointIO`): always
`torch.load(weights_only=True)`, and every way a file can be wrong becomes an mmae error that
names the file: missing (ConfigError), truncated or corrupt, or holding objects other than
tensors and primitives (ArtifactError; such a file is refused, never unpickled).

`save_checkpoint_file` streams `torch.save` into a temporary file in the checkpoint's own
folder, fsyncs it and renames it over the target; `mmae.training.checkpoint_io.AtomicCheckpointIO`
makes it the way every Trainer mmae builds saves checkpoints. Lightning 2.6's
TorchCheckpointIO serialises the whole checkpoint into memory first, then writes it through
an fsspec transaction whose temporary file lives in the system temp folder and is moved with
`shutil.move`: when that folder is on another filesystem than the run (a local /tmp, a
network output dir) the move is a copy onto the final name, and a crash during it leaves a
truncated `last.ckpt`.

This module imports no Lightning, so `mmae.load_encoder` stays free of the training stack.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mmae.artifacts.atomic import write_atomic
from mmae.core.errors import ArtifactError, ConfigError

#: Every file `torch.save` writes (since torch 1.6) is a zip archive.
ZIP_MAGIC = b"PK\x03\x04"


def is_remote(path: str | os.PathLike) -> bool:
    """Whether `path` is an fsspec URL (s3://, gs://, https://, ...) rather than a local file."""
    text = str(path)
    return "://" in text and not text.startswith("file://")


def _local(path: str | os.PathLike) -> Path:
    text = str(path)
    return Path(text[len("file://"):] if text.startswith("file://") else text)


def _first_sentence(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text.split(". ")[0].rstrip(".") or type(error).__name__


def _refused(error: pickle.UnpicklingError) -> str | None:
    """What the weights-only unpickler refused (a global or an opcode), None for other errors."""
    text = str(error)
    if "Weights only load failed" not in text:
        return None
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if found:
        return f"the Python callable {found[1]}"
    found = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    return found[1].strip().rstrip(".") if found else "an unsupported pickle instruction"


def _checked_load(name: str, load: Callable[[], Any], size: int | None) -> dict[str, Any]:
    """Run `load` (a weights-only `torch.load`) and turn each way it fails into an ArtifactError."""
    try:
        with warnings.catch_warnings():
            # The weights-only unpickler warns about any pickle protocol above 2 before it
            # refuses such a file; the refusal below says all there is to say.
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            checkpoint = load()
    except pickle.UnpicklingError as error:
        refused = _refused(error)
        if refused is None:
            raise _corrupt(name, size, error) from None
        raise ArtifactError(
            f"{name} holds objects other than tensors and primitives ({refused}); refusing to "
            "unpickle it, since loading it could run code. mmae checkpoints hold tensors and "
            "primitives only: this file was not written by mmae-train, or was modified") from None
    except MemoryError:
        raise
    except Exception as error:  # truncated zip, EOF, garbage bytes, unreadable file
        raise _corrupt(name, size, error) from None
    if not isinstance(checkpoint, dict):
        raise ArtifactError(f"{name} holds a {type(checkpoint).__name__}, not a checkpoint (a dictionary)")
    return checkpoint


def _corrupt(name: str, size: int | None, error: BaseException) -> ArtifactError:
    length = "" if size is None else ("empty, " if size == 0 else f"{size} bytes, ")
    return ArtifactError(f"{name} is truncated or corrupt ({length}{_first_sentence(error)}): it cannot "
                         "be loaded; an interrupted copy or a crash while writing leaves such a file")


def load_checkpoint_file(path: str | os.PathLike, map_location: Any = "cpu",
                         mmap: bool = False) -> dict[str, Any]:
    """The dictionary a `.ckpt` holds, loaded with `weights_only=True` (tensors and primitives
    only: nothing is unpickled that could run code). `path` may be a local file or an fsspec
    URL; `mmap=True` maps a local file instead of reading it (cheap when only metadata is needed).

    Raises ConfigError when there is no such file, ArtifactError when it is truncated,
    corrupt, or holds anything but tensors and primitives.
    """
    if is_remote(path):
        return _load_remote(str(path), map_location)
    path = _local(path)
    if not path.exists():
        raise ConfigError(f"no checkpoint file at {path}")
    if path.is_dir():
        raise ConfigError(f"checkpoint {path} is a directory, not a .ckpt file")
    try:
        with path.open("rb") as handle:
            zipped = handle.read(len(ZIP_MAGIC)) == ZIP_MAGIC
        size = path.stat().st_size
    except OSError as error:
        raise ArtifactError(f"cannot read checkpoint {path}: {error.strerror or error}") from None
    # torch can map zip archives only; anything else is read (and refused or reported) as is.
    return _checked_load(str(path), lambda: torch.load(path, map_location=map_location, weights_only=True,
                                                       mmap=mmap and zipped), size)


def _load_remote(url: str, map_location: Any) -> dict[str, Any]:
    import fsspec

    try:
        fs, target = fsspec.core.url_to_fs(url)
        exists = fs.exists(target)
    except (ImportError, ValueError, OSError) as error:
        raise ConfigError(f"cannot open checkpoint {url}: {_first_sentence(error)}") from None
    if not exists:
        raise ConfigError(f"no checkpoint file at {url}")

    def load() -> Any:
        with fs.open(target, "rb") as handle:
            return torch.load(handle, map_location=map_location, weights_only=True)

    return _checked_load(url, load, None)


def save_checkpoint_file(checkpoint: dict[str, Any], path: str | os.PathLike) -> Path:
    """`torch.save(checkpoint)` to a local `path` atomically: streamed into a temporary file
    beside it, fsynced, renamed over it. A crash leaves the previous file as it was."""

    def write(temporary: Path) -> None:
        with temporary.open("wb") as handle:
            torch.save(checkpoint, handle)

    return write_atomic(_local(path), write)


__all__ = ["is_remote", "load_checkpoint_file", "save_checkpoint_file"]
