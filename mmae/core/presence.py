"""Which samples hold which modality: a batch's presence masks checked against its tensors
(one bool per sample and modality, never a sample with every modality missing), and missing
samples zeroed so that nothing of theirs reaches a network."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from mmae.core.errors import InputError
from mmae.core.modality import Modality


def presence_masks(inputs: Mapping[str, Tensor], present: Mapping[str, Tensor] | None,
              modalities: Mapping[str, Modality]) -> dict[str, Tensor]:
    """Validate a batch and return one boolean mask `[B]` per given modality.

    A modality absent from `inputs` is missing for the whole batch; `present=None` means every
    given modality is present for every sample.
    """
    if not inputs:
        raise InputError(f"no modality given; expected a non-empty subset of {list(modalities)}")
    for name, x in inputs.items():
        if name not in modalities:
            raise InputError(
                f"unknown modality '{name}'; this model was built for {list(modalities)}"
            )
        modalities[name].check_batch(name, x)
    sizes = {name: x.shape[0] for name, x in inputs.items()}
    batch_size = next(iter(sizes.values()))
    if any(n != batch_size for n in sizes.values()):
        raise InputError(f"modalities disagree on the batch size: {sizes}")

    present = dict(present or {})
    masks = {}
    for name, x in inputs.items():
        mask = present.pop(name, None)
        if mask is None:
            mask = torch.ones(batch_size, dtype=torch.bool, device=x.device)
        elif mask.dtype != torch.bool or tuple(mask.shape) != (batch_size,) or mask.device != x.device:
            raise InputError(
                f"present['{name}']: expected a bool tensor of shape [{batch_size}] on {x.device}, "
                f"got {mask.dtype} of shape {list(mask.shape)} on {mask.device}"
            )
        masks[name] = mask
    for name, mask in present.items():  # masks for modalities without a tensor
        if name not in modalities:
            raise InputError(f"present names unknown modality '{name}'; expected {list(modalities)}")
        if not torch.compiler.is_compiling() and bool(mask.any()):
            raise InputError(f"present['{name}'] marks samples present but no '{name}' tensor was given")
    if torch.compiler.is_compiling():
        return masks  # value checks need the data; traced graphs (compile, ONNX) skip them

    any_present = torch.stack(list(masks.values()), dim=1).any(dim=1)
    if not bool(any_present.all()):
        empty = torch.nonzero(~any_present).flatten().tolist()
        raise InputError(
            f"sample(s) {empty[:10]}{' ...' if len(empty) > 10 else ''} of the batch have every "
            f"modality missing; each sample needs at least one of {list(inputs)}"
        )
    return masks


def readable_masks(masks: Mapping[str, Tensor],
              unimodal_present: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
    """Per modality, the samples whose input the encoder reads: those the fusion uses, plus
    those whose own code is asked for (`unimodal_present`)."""
    if unimodal_present is None:
        return dict(masks)
    readable = {}
    for name, mask in masks.items():
        wanted = unimodal_present.get(name)
        if wanted is not None and (wanted.dtype != torch.bool or wanted.shape != mask.shape):
            raise InputError(f"unimodal_present['{name}']: expected a bool tensor of shape "
                             f"{list(mask.shape)}, got {wanted.dtype} of shape {list(wanted.shape)}")
        readable[name] = mask if wanted is None else mask | wanted.to(mask.device)
    return readable


def zero_missing(x: Tensor, mask: Tensor) -> Tensor:
    """Zero the samples whose modality is missing, so their values (even NaN) cannot leak."""
    return x.masked_fill(~mask.view(-1, *([1] * (x.dim() - 1))), 0.0)
