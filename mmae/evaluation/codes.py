"""Codes of a dataset: every batch through an encoder, in order.

Below `evaluate.py` and `applications.py` (which `evaluate.py` calls for denoising) so both
can encode: `mmae.fit_sampler` fits its mixture on these codes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mmae.artifacts.export import FrozenEncoder
from mmae.core.errors import DataError
from mmae.core.model import MultimodalAutoencoder
from mmae.data.batch import features_of, nonempty

CodeFn = Callable[[Mapping[str, Tensor], Mapping[str, Tensor], Mapping[str, Tensor]], Tensor]


@dataclass
class Features:
    """Codes of a dataset split, with each sample's label (-1 if none) and manifest/pool id."""

    codes: Tensor
    labels: Tensor
    ids: Tensor


def code_function(encoder: MultimodalAutoencoder | FrozenEncoder) -> CodeFn:
    """`(features, present, raw) -> deterministic codes`, for a trained model or a loaded export."""
    if isinstance(encoder, MultimodalAutoencoder):
        return lambda features, present, raw: encoder.encoder(features, present, raw=raw).code
    return lambda features, present, raw: encoder(features, present, preprocessed=True, raw=raw)


@torch.no_grad()
def encode_batches(encoder: MultimodalAutoencoder | FrozenEncoder, batches: Iterable[dict | None],
                   modalities: Sequence[str] | None = None, progress: bool = False) -> Features:
    """Deterministic codes (posterior means for VAEs) of every batch, in order.

    `encoder` is a trained model or a loaded export. `modalities` restricts the input to a
    subset; samples with none of them present are left out.
    """
    was_training = encoder.training
    encoder.eval()
    code_of = code_function(encoder)
    names = list(modalities or encoder.modalities)
    codes, labels, ids, seen = [], [], [], 0
    if progress:  # tqdm only then: `import mmae` stays light
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="encoding")
    for batch in nonempty(batches):
        features, present, raw = features_of(encoder.encoder, batch, names)
        keep = torch.stack(list(present.values()), dim=1).any(dim=1)
        if keep.any():
            codes.append(code_of({n: x[keep] for n, x in features.items()},
                                 {n: p[keep] for n, p in present.items()},
                                 {n: x[keep] for n, x in raw.items()}))
            labels.append(batch.labels[keep.cpu()])
            ids.append(batch.ids(seen)[keep.cpu()])
        seen += len(batch)
    encoder.train(was_training)
    if not codes:
        raise DataError(f"no sample has any of the modalities {names}")
    return Features(torch.cat(codes).cpu(), torch.cat(labels), torch.cat(ids))


def flat_inputs(features: Mapping[str, Tensor], present: Mapping[str, Tensor],
                names: Sequence[str]) -> Tensor:
    """The features of `names` flattened side by side, zeros where a modality is missing: the
    raw-input baselines' view of a batch, on the CPU."""
    return torch.cat([(features[n].float().flatten(1) * present[n].unsqueeze(1)).cpu() for n in names], dim=1)
