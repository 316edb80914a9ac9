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

from mmae.core.model import MultimodalEncoder
from mmae.data.batch import Batch, Tensors
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

    def lookup(self, encoder: MultimodalEncoder, batch: Batch, stage: str) -> Tensors:
        """The cached modalities' features of this batch's samples, on the encoder's device:
        read where stored, else computed (without gradients: nothing in them learns) and
        stored. Pass them to `mmae.data.batch.features_of(..., precomputed=...)`."""
        device = next(encoder.parameters()).device
        index = [int(i) for i in batch.index]
        features = {}
        for name in self.names:
            store = self._store(stage, name)
            missing = store.missing(index)
            if missing:
                raw = batch.inputs[name][torch.tensor(missing)].to(device)
                with torch.no_grad():
                    computed = encoder.preprocess({name: raw})[name]
                store.put([index[i] for i in missing], computed.float().cpu())
                self.computed[name] += len(missing)
            features[name] = store.get(index).to(device, non_blocking=True)
        return features
