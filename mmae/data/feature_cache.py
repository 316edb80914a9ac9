"""Preprocessed features computed once: each sample's features from a fixed preprocessor (the
audio log-mel) kept after the first time its batch is read, so later epochs skip the STFT.

A preprocessor without trainable parameters is a fixed function of the sample's raw input, so
its output, once computed, is exact for every later epoch; corruption and augmentation act on
the features after this point and stay random. Entries are keyed by the sample's `index` within
a stage (train, val), in memory when the split fits, else memory-mapped (`StemStore`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from mmae.core.model import MultimodalEncoder
from mmae.data.batch import Batch, Tensors, split_batch, to_device
from mmae.data.stem_cache import PerSampleStores


def cacheable_preprocessors(encoder: MultimodalEncoder) -> list[str]:
    """The modalities whose preprocessor is a fixed function (no trainable parameter)."""
    return [name for name, module in encoder.preprocessors.items()
            if not any(p.requires_grad for p in module.parameters())]


class FeatureCache(PerSampleStores):
    """The preprocessed features of the `names` modalities, per stage (see the module
    docstring). `computed` counts the samples preprocessed, per modality, so a test can tell
    that an epoch computed none."""

    what = "preprocessed features"

    def __init__(self, names: list[str], capacity: Mapping[str, int], directory: Path | None = None):
        super().__init__(names, capacity, directory)
        self.computed = dict.fromkeys(self.names, 0)

    def features_of(self, encoder: MultimodalEncoder, batch: Batch,
                    stage: str) -> tuple[Tensors, Tensors, Tensors]:
        """As `mmae.data.batch.features_of(encoder, batch)`, with the cached modalities' features
        read from the cache where stored, else computed (on the clean raw input) and stored.
        The other modalities' preprocessors run as usual (with gradients, where they learn)."""
        raw, present = split_batch(batch, list(encoder.modalities))
        device = next(encoder.parameters()).device
        index = [int(i) for i in batch.index]
        cached: dict[str, Tensor] = {}
        for name in self.names:
            store = self._store(stage, name)
            missing = store.missing(index)
            if missing:
                rows = torch.tensor(missing)
                with torch.no_grad():
                    computed = encoder.preprocess({name: raw[name][rows].to(device)})[name]
                store.put([index[i] for i in missing], computed.float().cpu())
                self.computed[name] += len(missing)
            cached[name] = store.get(index).to(device, non_blocking=True)
        # The raw inputs of the modalities that `encodes_raw` still travel: their encoder reads them.
        kept = {name: raw[name] for name in raw if name not in cached or encoder.modalities[name].encodes_raw}
        kept = to_device(kept, device)
        features = {**encoder.preprocess({n: x for n, x in kept.items() if n not in cached}), **cached}
        encodes_raw = {n: x for n, x in kept.items() if encoder.modalities[n].encodes_raw}
        return {n: features[n] for n in raw}, to_device(present, device), encodes_raw
