"""Lossy compression through the shared latent (`mmae-eval task=compress`).

The test split's codes (from all modalities) are quantised uniformly, rated in bits by
per-unit histograms fitted on the training split (`mmae.evaluation.tasks.compression.entropy`: a static table,
not a learned entropy model) and decoded; each modality's distortion is the model's own
validation error (`Modality.reconstruction_loss`). The baselines (`mmae.evaluation.tasks.compression.codecs`),
PCA and JPEG, spend all their bits on one modality; the latent's pay for every one at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from mmae.core.errors import ConfigError, DataError
from mmae.core.model import MultimodalAutoencoder, evaluating
from mmae.core.registry import EVALUATIONS
from mmae.data.batch import features_of, nonempty
from mmae.evaluation.base import EvalContext, Evaluation, TaskResult
from mmae.evaluation.tasks.compression.codecs import jpeg_points, pca_points, pixel_range
from mmae.evaluation.tasks.compression.entropy import KT_PRIOR
from mmae.evaluation.tasks.compression.figures import plot_modality
from mmae.evaluation.tasks.compression.rd_curves import best_within, frontier, jpeg_match, rate_distortion

#: The defaults of `conf/evaluate.yaml`'s `compress:` section.
LEVELS = [2, 4, 8, 16, 32, 64]
JPEG_QUALITIES = [5, 10, 25, 50, 75, 95]
#: Test samples held in memory (as `mmae.evaluation.probes.input_features` holds inputs).
MAX_TEST_SAMPLES = 20_000
#: Training samples PCA is fitted on (its rank is at most this minus one).
PCA_FIT_SAMPLES = 2048
#: The summary's rate: the latent point nearest this many bits per sample.
TARGET_BITS = 64
FLOAT_BITS = 32
DECODE_CHUNK = 512


# -- the data ------------------------------------------------------------------------------


@dataclass
class Samples:
    """A split's features (CPU), presence masks and sample ids, in loader order; only samples
    with some modality present, as `encode_batches` keeps them."""

    features: dict[str, Tensor]
    present: dict[str, Tensor]
    ids: Tensor

    def __len__(self) -> int:
        return len(self.ids)


@torch.no_grad()
def gather_samples(model: MultimodalAutoencoder, batches, limit: int) -> Samples:
    """The first `limit` samples of `batches`, as features (`features_of`, on the CPU)."""
    parts: dict[str, list] = {}
    present: dict[str, list] = {}
    ids, seen, offset = [], 0, 0
    for batch in nonempty(batches):
        features, masks, _ = features_of(model.encoder, batch)
        keep = torch.stack(list(masks.values()), dim=1).any(dim=1).cpu()
        for name, x in features.items():
            parts.setdefault(name, []).append(x.cpu()[keep])
            present.setdefault(name, []).append(masks[name].cpu()[keep])
        ids.append(batch.ids(offset)[keep])
        offset += len(batch)
        seen += int(keep.sum())
        if seen >= limit:
            break
    if not seen:
        raise DataError("compress: the split has no sample with any modality present")
    return Samples({n: torch.cat(p)[:limit] for n, p in parts.items()},
                   {n: torch.cat(p)[:limit] for n, p in present.items()}, torch.cat(ids)[:limit])


def aligned_codes(codes, samples: Samples) -> Tensor:
    """The rows of `context.codes(split)` that belong to `samples` (the same loader order),
    checked by sample id."""
    rows = codes.codes[: len(samples)]
    if len(rows) != len(samples) or not torch.equal(codes.ids[: len(samples)].cpu(), samples.ids.cpu()):
        raise DataError("compress: the test codes and the test features list different samples (is the "
                        "test loader's order not fixed, or the encoder from another run?)")
    return rows


def continuous_modalities(model: MultimodalAutoencoder) -> list[str]:
    """The modalities whose reconstruction is itself in the features' form (float features,
    decoded to the same shape): pixels, vectors, log-mel; not tokens or category logits. They
    get the PCA baseline, which reconstructs features."""
    with evaluating(model):
        decoded = model.decoder(torch.zeros(1, model.latent_dim, device=next(model.parameters()).device))
    return [n for n, m in model.modalities.items()
            if m.dtype_kind == "float" and tuple(decoded[n].shape[1:]) == tuple(m.shape)]


def image_modalities(model: MultimodalAutoencoder, names: Sequence[str]) -> list[str]:
    """The continuous modalities shown as pictures (`preview_media`), of `[C, H, W]` features
    with 1 (grey) or 3 (RGB) channels: they get the JPEG baseline."""
    return [n for n in names if model.modalities[n].preview_media == "image"
            and len(model.modalities[n].shape) == 3 and model.modalities[n].shape[0] in (1, 3)]


# -- distortion ----------------------------------------------------------------------------


@torch.no_grad()
def decoded_distortion(model: MultimodalAutoencoder, codes: Tensor, samples: Samples) -> dict:
    """Every modality decoded from `codes` (a row per sample) against its present features:
    `{"distortion": {modality: mean error}, "metrics": {"<modality>/<metric>": mean}}`."""
    losses: dict[str, list[Tensor]] = {}
    metrics: dict[str, list[Tensor]] = {}
    device = next(model.parameters()).device
    with evaluating(model):
        for start in range(0, len(samples), DECODE_CHUNK):
            rows = slice(start, start + DECODE_CHUNK)
            decoded = model.decoder(codes[rows].to(device))
            for name, modality in model.modalities.items():
                mask = samples.present[name][rows].to(device)
                if not bool(mask.any()):
                    continue
                reconstruction = decoded[name][mask]
                target = samples.features[name][rows].to(device)[mask]
                losses.setdefault(name, []).append(modality.reconstruction_loss(reconstruction, target))
                for metric, values in modality.metrics(reconstruction, target).items():
                    metrics.setdefault(f"{name}/{metric}", []).append(values)

    def means(parts: dict[str, list[Tensor]]) -> dict[str, float]:
        return {key: float(torch.cat(values).double().mean()) for key, values in parts.items()}

    distortion = means(losses)
    return {"distortion": {n: distortion[n] for n in model.modalities if n in distortion},
            "metrics": means(metrics)}


# -- the task ------------------------------------------------------------------------------


def _int_list(options: Mapping, key: str, default: list[int], check: Callable[[int], bool],
              expected: str) -> list[int]:
    values = options.get(key, default)
    values = [values] if isinstance(values, int) else list(values)
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and check(v) for v in values):
        raise ConfigError(f"compress.{key} must be a non-empty list of {expected}, got {values!r}")
    return sorted(set(values))


def _present_rows(samples: Samples, name: str) -> Tensor:
    return samples.features[name][samples.present[name]]


def compress(model: MultimodalAutoencoder, context: EvalContext, levels: Sequence[int],
             qualities: Sequence[int]) -> dict:
    """The rate-distortion points of the latent (quantised and as float32), of PCA of each
    continuous modality and of JPEG of each image modality, on the test split."""
    test = gather_samples(model, context.loader("test"), MAX_TEST_SAMPLES)
    train_codes, test_codes = context.codes("train").codes, aligned_codes(context.codes("test"), test)

    def decode(codes: Tensor) -> dict:
        return decoded_distortion(model, codes, test)

    results = {
        "samples": {"train": len(train_codes), "test": len(test)},
        "latent_dim": model.latent_dim,
        "rate_model": f"per-unit symbol histograms of the training split, add-{KT_PRIOR:g} smoothing",
        "latent": rate_distortion(train_codes, test_codes, levels, decode),
        "unquantised": {"bits_per_sample": float(FLOAT_BITS * model.latent_dim), **decode(test_codes)},
        "pca": {}, "jpeg": {},
    }
    continuous = continuous_modalities(model)
    images = image_modalities(model, continuous)
    fit = gather_samples(model, context.loader("train"), PCA_FIT_SAMPLES) if continuous else None
    for name in continuous:
        train_x, test_x = _present_rows(fit, name), _present_rows(test, name)
        if len(train_x) < 2 or len(test_x) == 0:
            continue
        modality = model.modalities[name]
        results["pca"][name] = pca_points(name, modality, train_x, test_x, levels, model.latent_dim)
        if name in images:
            low, high = pixel_range(train_x)
            results["jpeg"][name] = jpeg_points(name, modality, test_x, qualities, low, high)
    return results


def summarise(results: dict) -> dict[str, float | None]:
    """The latent point nearest `TARGET_BITS`: its rate; per PCA modality its distortion and
    the best PCA distortion at no more bits; per image modality the latent rate from which
    mmae matches JPEG."""
    nearest = min(results["latent"], key=lambda p: abs(p["bits_per_sample"] - TARGET_BITS))
    bits = nearest["bits_per_sample"]
    summary: dict[str, float | None] = {f"latent bits (point nearest {TARGET_BITS})": bits}
    for name, points in results["pca"].items():
        summary[f"{name} distortion: mmae"] = nearest["distortion"].get(name)
        summary[f"{name} distortion: PCA at <= those bits"] = best_within(points, name, bits)
    for name, points in results["jpeg"].items():
        summary[f"{name}: latent bits matching JPEG"] = jpeg_match(results["latent"], points, name)
    return summary


def _cell(value: float | None, width: int, digits: int = 4) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}g}"


def format_compression(results: dict) -> str:
    names = list(results["unquantised"]["distortion"])
    samples = results["samples"]
    lines = [f"compress (test: {samples['test']} samples; rate: bits per sample, per-unit histograms "
             f"fitted on {samples['train']} training codes; distortion: each modality's validation error)",
             f"mmae latent ({results['latent_dim']} units)",
             f"  {'levels':>8}{'bits':>10}{'test H':>10}" + "".join(f"{n[:12]:>14}" for n in names)]
    rows = [(str(p["levels"]), p) for p in results["latent"]] + [("float32", results["unquantised"])]
    for label, point in rows:
        lines.append(f"  {label:>8}{point['bits_per_sample']:>10.1f}"
                     + _cell(point.get("test_entropy_bits"), 10, 4)
                     + "".join(_cell(point["distortion"].get(n), 14) for n in names))
    for name, points in results["pca"].items():
        lines.append(f"PCA of {name} (standardised; the points no other beats)")
        lines.append(f"  {'components':>10}{'levels':>8}{'bits':>10}{'distortion':>14}")
        for point in frontier(points, name):
            lines.append(f"  {point['components']:>10}{point['levels']:>8}{point['bits_per_sample']:>10.1f}"
                         + _cell(point["distortion"][name], 14))
    for name, points in results["jpeg"].items():
        lines.append(f"JPEG of {name} (Pillow; bits of the whole file, and of its scan alone)")
        lines.append(f"  {'quality':>10}{'file bits':>12}{'scan bits':>12}{'distortion':>14}")
        for point in points:
            lines.append(f"  {point['quality']:>10}{point['bits_per_sample']:>12.0f}"
                         f"{point['scan_bits_per_sample']:>12.0f}" + _cell(point["distortion"][name], 14))
    return "\n".join(lines)


@EVALUATIONS.register("compress")
class Compress(Evaluation):
    """Lossy compression through the shared latent against PCA and JPEG at the same rates."""

    order = 7
    needs_model: ClassVar[bool] = True
    options: ClassVar[dict[str, type]] = {"levels": list[int], "jpeg_quality": list[int]}

    def run(self, context: EvalContext) -> TaskResult:
        model = context.require_model("compress")
        levels = _int_list(context.options, "levels", LEVELS, lambda v: v >= 2, "integers >= 2")
        qualities = _int_list(context.options, "jpeg_quality", JPEG_QUALITIES, lambda v: 1 <= v <= 100,
                              "JPEG qualities from 1 to 100")
        results = compress(model, context, levels, qualities)
        figures = []
        for name in results["unquantised"]["distortion"]:
            path = context.figure(f"compress_{name}.png")
            if path is not None:
                figures.append(str(plot_modality(path, results, name)))
        return TaskResult(results, format_compression(results), summarise(results), figures)
