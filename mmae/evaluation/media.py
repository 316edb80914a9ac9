"""What reconstruction media show, computed without any logger: a fixed set of samples, each
modality reconstructed from all inputs and imputed from the others, the latent codes, and
images tiled into one grid.

The model runs in eval mode without gradients and is put back as it was, so drawing media
changes nothing about training.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from mmae.core.model import MultimodalAutoencoder, evaluating
from mmae.data.batch import Batch, features_of, nonempty  # noqa: F401  (the callback reads a batch through features_of)
from mmae.evaluation.reconstruction import leave_one_out

#: Rows of a modality's media, in order.
ROWS = ("input", "from all", "from the others")


def gather(batches: Iterable[Batch | Mapping | None], limit: int) -> Batch | None:
    """The first `limit` samples of successive batches, as one CPU batch (tensors and dicts
    of tensors only; skipped batches, None, are passed over). None when there is no sample."""
    parts: list[Batch] = []
    count = 0
    for batch in nonempty(batches):
        parts.append(batch)
        count += len(batch)
        if count >= limit:
            break
    if not parts:
        return None
    return Batch(_concat([p.inputs for p in parts], limit), _concat([p.present for p in parts], limit),
                 _cat([p.labels for p in parts], limit),
                 None if any(p.index is None for p in parts) else _cat([p.index for p in parts], limit),
                 _concat([p.extras for p in parts], limit))


def _cat(tensors: Sequence[Tensor], limit: int) -> Tensor:
    return torch.cat([t.detach().cpu() for t in tensors])[:limit]


def _concat(parts: Sequence[Mapping[str, Tensor]], limit: int) -> dict[str, Tensor]:
    """Per key, the parts' tensors of one or more dimensions joined (counts such as `skipped`
    are left out)."""
    return {key: _cat([p[key] for p in parts], limit) for key, value in parts[0].items()
            if isinstance(value, Tensor) and value.dim() > 0}


def cross_reconstructions(model: MultimodalAutoencoder, features: Mapping[str, Tensor],
                          present: Mapping[str, Tensor], name: str, limit: int,
                          raw: Mapping[str, Tensor] | None = None) -> dict[str, Tensor] | None:
    """For modality `name`, features of up to `limit` samples that hold it (and, with other
    modalities, some other one): the input, its reconstruction from every present
    modality, and (with other modalities) its imputation from the others alone."""
    others = [present[m] for m in present if m != name]
    usable = present[name] & torch.stack(others).any(dim=0) if others else present[name]
    chosen = torch.nonzero(usable).flatten()[:limit]
    if len(chosen) == 0:
        return None
    inputs = {m: x[chosen] for m, x in features.items()}
    masks = {m: p[chosen] for m, p in present.items()}
    raw = {m: x[chosen] for m, x in (raw or {}).items()}
    with evaluating(model):
        rows = {ROWS[0]: inputs[name], ROWS[1]: model(inputs, masks, raw=raw).reconstructions[name]}
        if others:  # every chosen sample holds another modality
            rows[ROWS[2]] = leave_one_out(model, inputs, masks, name, raw)[1][name]
    return rows


def latent_codes(model: MultimodalAutoencoder, features: Mapping[str, Tensor],
                 present: Mapping[str, Tensor], raw: Mapping[str, Tensor] | None = None) -> Tensor:
    """The deterministic codes (posterior means for a VAE) from every present modality."""
    with evaluating(model):
        return model.encoder(features, present, raw=raw).code


def image_grid(rows: Sequence[Sequence[np.ndarray]], pad: int = 2, scale: int = 1,
               fill: int = 255) -> np.ndarray:
    """Tile uint8 `[H, W, C]` images (one list per row, equal sizes) into one image, `pad`
    pixels of `fill` apart, each enlarged `scale` times (nearest neighbour). Grey images give
    `[H', W']`, colour ones `[H', W', 3]`."""
    height, width, channels = rows[0][0].shape
    tile_h, tile_w = height * scale, width * scale
    columns = max(len(row) for row in rows)
    grid = np.full((pad + len(rows) * (tile_h + pad), pad + columns * (tile_w + pad), channels),
                   fill, dtype=np.uint8)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            top, left = pad + r * (tile_h + pad), pad + c * (tile_w + pad)
            grid[top:top + tile_h, left:left + tile_w] = image.repeat(scale, 0).repeat(scale, 1)
    return grid[..., 0] if channels == 1 else grid
