"""Reconstruction metrics that measure the missing-modality ability.

For every target modality: the error from all inputs, from every leave-one-out subset (one
modality removed; removing the target itself is cross-modal imputation), and the error of
predicting the training mean (the baseline a useful model must beat).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

from mmae.core.model import AutoencoderOutput, MultimodalAutoencoder
from mmae.data.batch import features_of, nonempty

Sums = dict[str, tuple[Tensor, Tensor]]


def metric_key(target: str, metric: str = "recon", removed: str | None = None) -> str:
    """The name of a reconstruction metric of `target`: from every input (`image/recon_all`)
    or with modality `removed` left out (`image/recon_without_vector`; removing the target
    itself is its imputation from the others). The one place these names are spelled."""
    return f"{target}/{metric}_{'all' if removed is None else f'without_{removed}'}"


def baseline_key(target: str) -> str:
    """The name of the "predict the training mean" error of `target`."""
    return f"{target}/baseline_mean"


def _add(sums: Sums, key: str, per_sample: Tensor, mask: Tensor) -> None:
    sums[key] = (torch.where(mask, per_sample, 0.0).sum(), mask.sum())


def _add_all(sums: Sums, name: str, removed: str | None, modality, reconstruction: Tensor,
             target: Tensor, mask: Tensor) -> None:
    _add(sums, metric_key(name, "recon", removed), modality.reconstruction_loss(reconstruction, target), mask)
    for metric, per_sample in modality.metrics(reconstruction, target).items():
        _add(sums, metric_key(name, metric, removed), per_sample, mask)


def leave_one_out(model: MultimodalAutoencoder, features: Mapping[str, Tensor],
                  present: Mapping[str, Tensor], removed: str, raw: Mapping[str, Tensor] | None = None,
                  cached: Mapping[str, Tensor] | None = None) -> tuple[Tensor, dict[str, Tensor]] | None:
    """Every modality reconstructed with `removed` taken out of the input (removing a target
    itself is its cross-modal imputation), on the rows that keep some other modality:
    `(rows, reconstructions of those rows)`, or None where no row keeps one. `raw` and
    `cached`: see `MultimodalEncoder.forward`."""
    reduced = {n: p if n != removed else torch.zeros_like(p) for n, p in present.items()}
    rows = torch.stack(list(reduced.values()), dim=1).any(dim=1)
    if not bool(rows.any()):
        return None
    inputs = {n: x[rows] for n, x in features.items() if n != removed}
    return rows, model(inputs, {n: reduced[n][rows] for n in inputs}, raw=_rows(raw, rows),
                       cached=_rows(cached, rows)).reconstructions


def _rows(tensors: Mapping[str, Tensor] | None, rows: Tensor) -> dict[str, Tensor] | None:
    return None if tensors is None else {n: x[rows] for n, x in tensors.items()}


@torch.no_grad()
def reconstruction_sums(model: MultimodalAutoencoder, inputs: Mapping[str, Tensor],
                        present: Mapping[str, Tensor],
                        baselines: Mapping[str, Tensor] | None = None,
                        output: AutoencoderOutput | None = None, raw: Mapping[str, Tensor] | None = None,
                        cached: Mapping[str, Tensor] | None = None) -> Sums:
    """Per metric name, the (sum of per-sample values, number of samples) over one batch of
    features. Returning sums rather than means lets the caller weight batches correctly.

    `baselines` holds each modality's "training mean" prediction of one sample; `output` is the
    model's output on the full batch when the caller already has it. `raw` and `cached`: see
    `MultimodalEncoder.forward`.
    """
    modalities = model.modalities
    sums: Sums = {}
    output = model(inputs, present, raw=raw, cached=cached) if output is None else output
    for name, modality in modalities.items():
        _add_all(sums, name, None, modality, output.reconstructions[name], inputs[name], present[name])
        if baselines is not None and name in baselines:
            target = inputs[name]
            prediction = baselines[name].expand(target.shape[0], *baselines[name].shape)
            _add(sums, baseline_key(name), modality.reconstruction_loss(prediction, target),
                 present[name])
    if len(modalities) < 2:
        return sums
    for removed in modalities:
        left = leave_one_out(model, inputs, present, removed, raw, cached)
        if left is None:
            continue
        rows, recon = left
        for name, modality in modalities.items():
            _add_all(sums, name, removed, modality, recon[name], inputs[name][rows],
                     present[name][rows])
    return sums


@torch.no_grad()
def estimate_baselines(model: MultimodalAutoencoder, batches: Iterable[Mapping],
                       max_batches: int | None = None) -> dict[str, Tensor]:
    """Each modality's "predict the training mean" reconstruction of one sample, over the
    samples where it is present (the mean of features for continuous modalities, the
    category frequencies for discrete ones)."""
    totals: dict[str, Tensor] = {}
    counts = dict.fromkeys(model.modalities, 0)
    for i, batch in enumerate(nonempty(batches)):
        if max_batches is not None and i >= max_batches:
            break
        features, present, _ = features_of(model.encoder, batch)
        for name, modality in model.modalities.items():
            mask = present[name]
            if not bool(mask.any()):
                continue
            total = modality.baseline_sum(features[name][mask])
            totals[name] = total if name not in totals else totals[name] + total
            counts[name] += int(mask.sum())
    return {n: model.modalities[n].baseline_prediction(totals[n] / counts[n]) for n in totals}


def baseline_ratios(values: Mapping[str, Tensor | float]) -> dict[str, Tensor | float]:
    """`<m>/ratio_<x>` = `<m>/recon_<x>` / `<m>/baseline_mean`: each error in units of the
    training-mean baseline (below 1 beats it), comparable across modalities and datasets."""
    ratios = {}
    for key, value in values.items():
        name, _, metric = key.partition("/")
        baseline = values.get(baseline_key(name))
        if metric.startswith("recon_") and baseline is not None and float(baseline) > 0:
            ratios[f"{name}/ratio_{metric.removeprefix('recon_')}"] = value / baseline
    return ratios


def imputation_summary(metrics: Mapping[str, float], modalities: Iterable[str],
                       prefix: str = "val/") -> dict[str, dict]:
    """Per modality, from metrics named by `metric_key` (after `prefix`): the error from all
    inputs, from the others alone, the mean baseline, and the relative gain of the
    cross-modal reconstruction over that baseline (1 - ratio)."""
    summary = {}
    for name in modalities:
        row = {
            "from_all": metrics.get(prefix + metric_key(name)),
            "from_others": metrics.get(prefix + metric_key(name, removed=name)),
            "baseline_mean": metrics.get(prefix + baseline_key(name)),
        }
        if row["from_others"] is not None and row["baseline_mean"]:
            row["gain_over_baseline"] = 1.0 - row["from_others"] / row["baseline_mean"]
        summary[name] = row
    return summary


def format_imputation(summary: Mapping[str, Mapping], title: str = "modality") -> str:
    """The table of an `imputation_summary`: can each modality be reconstructed from the others?"""
    first = max(12, len(title) + 1, *(len(name) + 2 for name in summary))
    lines = [f"{title:<{first}}{'from all':>12}{'from others':>14}{'mean baseline':>15}{'gain':>8}"]
    for name, row in summary.items():
        cells = "".join(f"{'-':>{w}}" if row.get(k) is None else f"{row[k]:>{w}.4f}"
                        for k, w in (("from_all", 12), ("from_others", 14), ("baseline_mean", 15)))
        gain = row.get("gain_over_baseline")
        lines.append(f"{name:<{first}}{cells}{'-' if gain is None else f'{gain:.0%}':>8}")
    return "\n".join(lines)
