"""How a collated batch is laid out, in one place."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

from mmae.errors import InputError

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
