"""Decoded samples kept after their first read, so that an epoch after the first reads no file.

One `DecodedCache` holds one manifest split: per modality a tensor `[rows, *raw_shape]` and
which rows hold a decoded value. It lives in memory when it fits (`fits_in_memory`), else in
memory-mapped `.npy` files under `default_cache_dir()` (under `data.cache_dir` whenever one is
given), which DataLoader workers share and later runs reuse. Every entry is keyed by what it
was decoded from (the cell, and for a file its path, size and modification time), so a
changed file is decoded again and an unchanged one never is.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mmae.artifacts.atomic import write_atomic, write_text_atomic

#: Share of the memory available at start-up that an in-memory cache may take.
MEMORY_SHARE = 0.25
FORMAT = 1


def entry_key(cell: object, file: Path | None) -> int:
    """A 63-bit key of what one entry is decoded from: the cell, and the file's identity."""
    identity = repr(cell)
    if file is not None:
        try:
            stat = os.stat(file)
            identity += f"|{file}|{stat.st_size}|{stat.st_mtime_ns}"
        except OSError:
            identity += f"|{file}|missing"
    return int.from_bytes(hashlib.blake2b(identity.encode(), digest_size=8).digest(), "little") >> 1


def default_cache_dir() -> Path:
    """Where a split too large for memory is cached when no `data.cache_dir` is given."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mmae" / "decoded"


def available_memory() -> int:
    """Bytes of memory available now (Linux), or a conservative guess elsewhere."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2 << 30


def cache_bytes(rows: int, shapes: Mapping[str, Sequence[int]], dtypes: Mapping[str, torch.dtype]) -> int:
    return sum(rows * int(np.prod(shape)) * torch.empty((), dtype=dtypes[n]).element_size()
               for n, shape in shapes.items())


def fits_in_memory(size: int) -> bool:
    return size <= MEMORY_SHARE * available_memory()


class DecodedCache:
    """Decoded tensors of one split, by modality and row position; see the module docstring.

    `keys[name]` holds the entry key of each row (0 where the modality is missing): an entry
    is valid only when the stored key equals it. `failed` marks entries that could not be
    decoded (skipped with `on_error=skip`), so they are not tried again every epoch.
    """

    def __init__(self, keys: Mapping[str, np.ndarray], shapes: Mapping[str, Sequence[int]],
                 dtypes: Mapping[str, torch.dtype], directory: Path | None = None):
        self.directory = directory
        self.names = list(keys)
        self.keys = {n: np.asarray(k, dtype=np.int64) for n, k in keys.items()}
        rows = len(next(iter(self.keys.values()))) if self.keys else 0
        self.rows = rows
        if directory is None:
            self.values = {n: torch.zeros((rows, *shapes[n]), dtype=dtypes[n]) for n in self.names}
            self.stored = {n: np.zeros(rows, dtype=np.int64) for n in self.names}  # key held per row
            self.failed = np.zeros(rows, dtype=bool)
        else:
            self._open_files(shapes, dtypes)

    # -- on disk -------------------------------------------------------------------------------
    def _open_files(self, shapes: Mapping[str, Sequence[int]], dtypes: Mapping[str, torch.dtype]) -> None:
        """Open (or create) the memory-mapped files; entries of another layout are dropped."""
        directory = self.directory
        directory.mkdir(parents=True, exist_ok=True)
        layout = {"format": FORMAT, "rows": self.rows,
                  "modalities": {n: [list(map(int, shapes[n])), str(dtypes[n])] for n in self.names}}
        layout_file = directory / "layout.json"
        same = layout_file.is_file() and json.loads(layout_file.read_text()) == layout
        mode = "r+" if same else "w+"
        self.values, self.stored, self._maps = {}, {}, []
        for name in self.names:
            dtype = torch.empty((), dtype=dtypes[name]).numpy().dtype
            array = np.lib.format.open_memmap(directory / f"{name}.npy", mode=mode, dtype=dtype,
                                              shape=(self.rows, *shapes[name]))
            self.values[name] = torch.from_numpy(array)
            self._maps.append(array)
            keys = directory / f"{name}.keys.npy"
            self.stored[name] = (np.load(keys) if same and keys.is_file()
                                 else np.zeros(self.rows, dtype=np.int64))
        self.failed = np.zeros(self.rows, dtype=bool)
        if not same:
            write_text_atomic(layout_file, json.dumps(layout))

    def flush(self) -> None:
        """Write the decoded values out, then (atomically) the keys that vouch for them, so a
        crash in between leaves entries that are decoded again, never stale ones (a no-op in
        memory)."""
        if self.directory is None:
            return
        for array in self._maps:
            array.flush()
        for name in self.names:
            write_atomic(self.directory / f"{name}.keys.npy",
                         lambda path, keys=self.stored[name]: np.save(path, keys))
    # -- entries -------------------------------------------------------------------------------
    def valid(self, name: str, row: int) -> bool:
        key = self.keys[name][row]
        return key == 0 or self.stored[name][row] == key

    def complete(self, row: int) -> bool:
        """Whether every present modality of `row` is decoded (or the row failed)."""
        return bool(self.failed[row]) or all(self.valid(n, row) for n in self.names)

    def missing_rows(self) -> list[int]:
        """Rows with an entry still to decode."""
        pending = np.zeros(self.rows, dtype=bool)
        for name in self.names:
            pending |= (self.keys[name] != 0) & (self.stored[name][:] != self.keys[name])
        return np.flatnonzero(pending & ~self.failed).tolist()

    def put(self, row: int, tensors: Mapping[str, Tensor]) -> None:
        for name, tensor in tensors.items():
            self.values[name][row] = tensor
            self.stored[name][row] = self.keys[name][row]

    def put_rows(self, name: str, rows: Sequence[int], values: Tensor) -> None:
        """Store one modality's decoded values of several rows at once."""
        self.values[name][torch.as_tensor(rows)] = values
        self.stored[name][np.asarray(rows)] = self.keys[name][np.asarray(rows)]

    def get(self, name: str, row: int) -> Tensor:
        return self.values[name][row]

    @property
    def in_memory(self) -> bool:
        return self.directory is None
