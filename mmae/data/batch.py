"""How a sample and a batch are laid out, in one place: every dataset yields `make_sample`'s
items and every loader collates them into a `Batch`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import default_collate

from mmae.core.errors import ConfigError, InputError

#: The dataset splits every datamodule provides.
SPLITS = ("train", "val", "test")


def to_device(tensors: Mapping[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    return {name: x.to(device) for name, x in tensors.items()}


#: Names a sample carries beside its modalities: no modality may take one (a flat mapping,
#: as earlier mmae's batches were, could not tell them apart).
RESERVED_NAMES = frozenset({"present", "label", "labels", "index", "anomaly", "skipped", "factors",
                            "inputs", "extras"})


def check_modality_name(name: str) -> None:
    """Refuse a modality name that a batch uses for something else."""
    if name in RESERVED_NAMES:
        raise ConfigError(f"a modality cannot be named '{name}': a sample uses that name for what it "
                          "carries beside its modalities; rename the modality (its manifest column can "
                          "keep the name: modality.<name>.column)")


def make_sample(inputs: Mapping[str, Any], present: Mapping[str, Any], label: Any, index: Any,
                **extras: Any) -> dict[str, Any]:
    """One dataset item: the modalities' raw inputs (zeros where missing) and presence flags,
    the label (-1: none), the sample's index within its split or manifest, and extras (an
    `anomaly` flag, the synthetic data's `factors`)."""
    return {"inputs": dict(inputs), "present": dict(present), "label": label, "index": index,
            "extras": extras}


@dataclass
class Batch:
    """A collated batch: `inputs` and `present` by modality (`[B, ...]` and bool `[B]`),
    `labels` `[B]` (-1: none), `index` `[B]` (each sample's place in its split or manifest; None
    from a loader of the user's own that gives none), and `extras` (`anomaly`, `factors`, and
    `skipped`: the samples of this batch that could not load)."""

    inputs: dict[str, Tensor]
    present: dict[str, Tensor]
    labels: Tensor
    index: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def ids(self, start: int = 0) -> Tensor:
        """Each sample's index, or, from a loader that gives none, its place in the stream
        counting from `start`."""
        return self.index if self.index is not None else torch.arange(start, start + len(self))

    def pin_memory(self) -> Batch:
        """Page-locked copies (`DataLoader(pin_memory=True)` calls this on a custom batch)."""
        def pinned(part: Mapping[str, Tensor]) -> dict[str, Tensor]:
            return {key: value.pin_memory() for key, value in part.items()}

        return Batch(pinned(self.inputs), pinned(self.present), self.labels.pin_memory(),
                     None if self.index is None else self.index.pin_memory(), pinned(self.extras))


def collate(samples: list[dict | None], count_skipped: bool = False) -> Batch | None:
    """`make_sample` items -> a `Batch`; None when no sample loaded. `count_skipped`: the
    samples that failed to load (None, from a manifest read with `on_error="skip"`) are
    counted in `extras["skipped"]`."""
    kept = [sample for sample in samples if sample is not None]
    if not kept:
        return None
    items = default_collate(kept)
    batch = (Batch(items["inputs"], items["present"], items["label"], items["index"],
                   dict(items.get("extras", {})))
             if "inputs" in items else as_batch(items))  # (else the flat layout of earlier mmae)
    if count_skipped:
        batch.extras["skipped"] = torch.tensor(len(samples) - len(kept))
    return batch


def collate_counting_skipped(samples: list[dict | None]) -> Batch | None:
    """`collate` for a manifest's loaders: a batch says how many of its samples were skipped."""
    return collate(samples, count_skipped=True)


def as_batch(batch: Batch | Mapping) -> Batch:
    """A `Batch`, or one from a flat mapping (`{modality: ..., "present": {...}, "label": ...}`,
    the layout of earlier mmae and of a hand-made batch)."""
    if isinstance(batch, Batch):
        return batch
    present = batch.get("present")
    if present is None:
        raise InputError("batch has no 'present' masks; expected batch['present'][modality]")
    inputs = {name: x for name, x in batch.items() if name not in RESERVED_NAMES}
    size = len(next(iter(present.values()))) if present else 0
    labels = batch.get("label", torch.full((size,), -1, dtype=torch.long))
    index = batch.get("index")
    extras = {key: batch[key] for key in ("anomaly", "factors", "skipped") if key in batch}
    return Batch(inputs, dict(present), labels, index, extras)


def split_batch(batch: Batch | Mapping,
                modalities: Iterable[str]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Return the modality tensors and presence masks of `batch` for the named modalities.

    A modality named by the model but absent from the batch is an error: silently training
    without it would report a reconstruction that never happened.
    """
    batch = as_batch(batch)
    missing = [m for m in modalities if m not in batch.inputs or m not in batch.present]
    if missing:
        raise InputError(f"batch lacks modalities {missing}; it has {sorted(batch.inputs)}")
    return {m: batch.inputs[m] for m in modalities}, {m: batch.present[m] for m in modalities}


Tensors = dict[str, Tensor]


def nonempty(batches: Iterable[Batch | Mapping | None]) -> Iterator[Batch]:
    """The batches that hold a sample, as `Batch`es: a manifest read with `on_error="skip"`
    collates a batch whose every sample failed to load as None (Lightning's loops take it and
    count nothing); a loader of the user's own may yield flat mappings (`as_batch`)."""
    return (as_batch(batch) for batch in batches if batch is not None)


def features_of(encoder: Any, batch: Batch | Mapping, modalities: Iterable[str] | None = None,
                precomputed: Mapping[str, Tensor] | None = None) -> tuple[Tensors, Tensors, Tensors]:
    """A collated batch's features, presence masks and the raw inputs its encoder reads, on
    the encoder's device: the raw inputs of `modalities` (default: all of
    `encoder.modalities`) through `encoder.preprocess`, the one way from a batch to what a
    `MultimodalEncoder` encodes (`encoder(features, present, raw=raw)`) and a decoder
    reconstructs. `raw` holds only the modalities that `encodes_raw` (speech backbones).
    `precomputed`: features already at hand (`mmae.data.feature_cache`), used as they are."""
    raw, present = split_batch(batch, list(encoder.modalities if modalities is None else modalities))
    precomputed = precomputed or {}
    device = next(encoder.parameters()).device
    kept = to_device({name: x for name, x in raw.items() if encoder.modalities[name].encodes_raw}, device)
    computed = encoder.preprocess({name: kept[name] if name in kept else x.to(device)
                                   for name, x in raw.items() if name not in precomputed})
    features = {name: precomputed[name] if name in precomputed else computed[name] for name in raw}
    return features, to_device(present, device), kept
