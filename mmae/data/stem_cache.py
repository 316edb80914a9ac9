"""Frozen backbones computed once: each sample's stem output (`BackboneEncoder.stem`, the
frozen backbone and its fixed pooling) kept after its first forward pass, so later epochs run
only the small trainable heads.

A stem is a fixed function of a sample's clean input (frozen weights, eval mode), so its
output, once computed, is exact for every later epoch. Entries are keyed by the sample's
`index` within a stage (train, val). They live in memory when the split fits
(`mmae.data.cache.fits_in_memory`), else in a memory-mapped file under the data cache
directory. Element corruptions (noise) of such a modality's features never reach its
encoder; modality dropout still does, since it only masks.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mmae.core.model import MultimodalEncoder
from mmae.core.presence import zero_missing
from mmae.data.batch import Batch
from mmae.data.cache import default_cache_dir, fits_in_memory

log = logging.getLogger(__name__)


def cacheable_modalities(encoder: MultimodalEncoder) -> list[str]:
    """The modalities whose encoder has a frozen, deterministic stem."""
    return [name for name, module in encoder.encoders.items() if getattr(module, "cacheable", False)]


class StemStore:
    """Per-sample tensors (stem outputs, preprocessed features) of up to `capacity` samples of
    one modality and stage, by sample index."""

    def __init__(self, capacity: int, directory: Path | None, label: str = "",
                 what: str = "frozen backbone outputs"):
        self.capacity, self.directory, self.label, self.what = capacity, directory, label, what
        self.rows: dict[int, int] = {}  # sample index -> row of `values`
        self.values: Tensor | None = None

    def _allocate(self, shape: tuple[int, ...]) -> None:
        size = self.capacity * int(np.prod(shape)) * 4
        if fits_in_memory(size):
            self.values = torch.zeros((self.capacity, *shape))
            where = "memory"
        else:
            folder = self.directory or default_cache_dir().parent / "stems"
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, suffix=".f32") as handle:
                mapped = np.memmap(handle.name, np.float32, "w+", 0, (self.capacity, *shape))
            # The name is gone once the file closes; the mapping lives until the cache does, and
            # nothing is left on disk after the run (only this process reads it).
            self.values = torch.from_numpy(mapped)
            where = f"a memory-mapped file under {folder}"
        log.info("%s: %s (up to %d samples x %s) cached in %s (%.1f MiB)", self.label, self.what,
                 self.capacity, list(shape), where, size / 2**20)

    def missing(self, index: list[int]) -> list[int]:
        """Positions in `index` of the samples not stored yet."""
        return [i for i, key in enumerate(index) if key not in self.rows]

    def put(self, keys: list[int], stems: Tensor) -> None:
        if self.values is None:
            self._allocate(tuple(stems.shape[1:]))
        for key, stem in zip(keys, stems, strict=True):
            row = self.rows.setdefault(key, len(self.rows))
            if row >= self.capacity:
                raise IndexError(f"{self.what} cache: more than {self.capacity} distinct samples")
            self.values[row] = stem

    def get(self, index: list[int]) -> Tensor:
        return self.values[torch.tensor([self.rows[key] for key in index])]


class PerSampleStores:
    """Per-sample tensors of the `names` modalities, one `StemStore` per stage and modality.
    `capacity[stage]` bounds the samples a stage holds (the size of its split); `what` names
    the tensors in logs and errors."""

    what = "frozen backbone outputs"

    def __init__(self, names: list[str], capacity: Mapping[str, int], directory: Path | None = None):
        self.names = list(names)
        self.capacity = dict(capacity)
        self.directory = directory
        self.stores: dict[tuple[str, str], StemStore] = {}

    def _store(self, stage: str, name: str) -> StemStore:
        key = (stage, name)
        if key not in self.stores:
            self.stores[key] = StemStore(self.capacity[stage], self.directory, f"{name} ({stage})",
                                         what=self.what)
        return self.stores[key]


class StemCache(PerSampleStores):
    """The stem outputs of every cacheable modality (see the module docstring), per stage.
    `forwards` counts the stem passes run, per modality, so a test or a log can tell that an
    epoch ran none."""

    def __init__(self, names: list[str], capacity: Mapping[str, int], directory: Path | None = None):
        super().__init__(names, capacity, directory)
        self.forwards = dict.fromkeys(self.names, 0)

    @torch.no_grad()
    def lookup(self, encoder: MultimodalEncoder, batch: Batch, features: Mapping[str, Tensor],
               present: Mapping[str, Tensor], raw: Mapping[str, Tensor], stage: str) -> dict[str, Tensor]:
        """The stems of this batch's samples for every cacheable modality, on the features'
        device: read where stored, else computed (on the clean input) and stored."""
        index = [int(i) for i in batch.index]
        stems = {}
        for name in self.names:
            store = self._store(stage, name)
            missing = store.missing(index)
            if missing:
                rows = torch.tensor(missing, device=features[name].device)
                sub_raw = {name: raw[name][rows]} if name in raw else None
                x = encoder.encoder_input(name, features[name][rows], sub_raw)
                x = zero_missing(x, present[name][rows])
                store.put([index[i] for i in missing], encoder.encoders[name].stem(x).float().cpu())
                self.forwards[name] += 1
            stems[name] = store.get(index).to(features[name].device, non_blocking=True)
        return stems
