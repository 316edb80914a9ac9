"""How a collated batch is laid out, in one place."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from mmae.core.errors import InputError

#: The dataset splits every datamodule provides.
SPLITS = ("train", "val", "test")


def to_device(tensors: Mapping[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    return {name: x.to(device) for name, x in tensors.items()}


def split_batch(batch: Mapping, modalities: Iterable[str]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Return the modality tensors and presence masks of `batch` for the named modalities.

    A modality named by the model but absent from the batch is an error: silently training
    without it would report a reconstruction that never happened.
    """
    present = batch.get("present")
    if present is None:
        raise InputError("batch has no 'present' masks; expected batch['present'][modality]")
    missing = [m for m in modalities if m not in batch or m not in present]
    if missing:
        given = sorted(k for k in batch if k != "present")
        raise InputError(f"batch lacks modalities {missing}; it has keys {given}")
    return {m: batch[m] for m in modalities}, {m: present[m] for m in modalities}


Tensors = dict[str, Tensor]


def nonempty(batches: Iterable[Any]) -> Iterator[Any]:
    """The batches that hold a sample: a manifest read with `on_error="skip"` collates a batch
    whose every sample failed to load as None (Lightning's loops take it and count nothing)."""
    return (batch for batch in batches if batch is not None)


def features_of(encoder: Any, batch: Mapping,
                modalities: Iterable[str] | None = None) -> tuple[Tensors, Tensors, Tensors]:
    """A collated batch's features, presence masks and the raw inputs its encoder reads, on
    the encoder's device: the raw inputs of `modalities` (default: all of
    `encoder.modalities`) through `encoder.preprocess`, the one way from a batch to what a
    `MultimodalEncoder` encodes (`encoder(features, present, raw=raw)`) and a decoder
    reconstructs. `raw` holds only the modalities that `encodes_raw` (speech backbones)."""
    raw, present = split_batch(batch, list(encoder.modalities if modalities is None else modalities))
    device = next(encoder.parameters()).device
    raw = to_device(raw, device)
    kept = {name: x for name, x in raw.items() if encoder.modalities[name].encodes_raw}
    return encoder.preprocess(raw), to_device(present, device), kept
