"""Robustness of the codes to missing modalities and to input noise (`mmae-eval task=robustness`).

Definitions (every accuracy on the labelled test samples):

- **missing modalities**: for every non-empty subset S of the modalities (2^M - 1 of them) the
  test inputs of S alone (each present where the data has it; samples with none of S left
  out). `deployed`: a linear probe fitted on the training codes from *all* modalities (one
  classifier trained on complete data, then fed whatever arrives), on the codes from S.
  `matched` (option `matched_probes`): a probe fitted on the training codes from S itself, the
  information left in the code; `deployed` below `matched` means the code shifts when
  modalities go missing. `raw`: a probe on the flattened inputs (`input_features`) trained on
  all modalities, deployed with those outside S zero-filled.
- **input noise**: Gaussian noise of `sigma` standard deviations of each feature (in the
  modality's standardised units where it has training statistics, as training-time
  `GaussianNoise` draws it) on every continuous modality the encoder reads. `probe`: the
  deployed probe (fitted on clean training codes) on the codes of the noisy inputs; `raw`: the
  raw-input probe on the noisy inputs.
- **reconstruction** (with the decoder): each modality's per-sample `reconstruction_loss` (the
  validation metric) against the clean features where it is present, and its `ratio` to the
  training-mean baseline's (below 1 beats predicting the mean).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from mmae.core.corruption import GaussianNoise
from mmae.core.model import MultimodalAutoencoder, evaluating
from mmae.core.registry import EVALUATIONS
from mmae.data.batch import features_of, nonempty, to_device
from mmae.evaluation.base import EvalContext, Evaluation, TaskResult
from mmae.evaluation.codes import code_function, flat_inputs
from mmae.evaluation.probes import Classifier, fit_linear_classifier
from mmae.evaluation.reconstruction import estimate_baselines
from mmae.evaluation.tasks.coherence import subset_key, subsets
from mmae.evaluation.tasks.robustness import figures as draw

Tensors = dict[str, Tensor]
#: `(features, present) -> (the features given to the encoder, their presence)`.
Condition = Callable[[Tensors, Tensors], tuple[Tensors, Tensors]]


@dataclass
class Measured:
    """What one test condition gave, for the samples it kept: their codes, the raw-input
    probe's classes (the inputs themselves would not fit in memory for every condition) and
    labels, and per modality the summed reconstruction error and its number of samples."""

    codes: list[Tensor] = field(default_factory=list)
    raw: list[Tensor] = field(default_factory=list)
    labels: list[Tensor] = field(default_factory=list)
    errors: dict[str, list[float]] = field(default_factory=dict)

    def accuracy(self, classify: Classifier) -> float | None:
        """The accuracy of `classify` on the codes."""
        x, y = torch.cat(self.codes), torch.cat(self.labels)
        return _accuracy(lambda: classify(x[y >= 0]), y)

    def raw_accuracy(self) -> float | None:
        return _accuracy(lambda: torch.cat(self.raw)[torch.cat(self.labels) >= 0], torch.cat(self.labels))

    def reconstruction(self, baselines: Mapping[str, float]) -> dict[str, dict[str, float | None]]:
        rows = {}
        for name, (total, count) in self.errors.items():
            error = total / count if count else None
            base = baselines.get(name)
            rows[name] = {"error": error, "ratio": error / base if error is not None and base else None}
        return rows


def _accuracy(predict: Callable[[], Tensor], labels: Tensor) -> float | None:
    """The accuracy of `predict()` (classes of the labelled samples) on the labelled samples."""
    known = labels[labels >= 0]
    return (predict() == known).double().mean().item() if len(known) else None


def drop_to(subset: Sequence[str]) -> Condition:
    """Only the modalities of `subset` given."""
    return lambda features, present: ({n: features[n] for n in subset}, {n: present[n] for n in subset})


def noised(sigma: float, names: Sequence[str], modalities: Mapping, seed: int) -> Condition:
    """Gaussian noise of `sigma` (standardised units) on the continuous features of `names`,
    drawn on the CPU from a generator of its own seeded by `seed`; sigma 0 is the identity."""
    noise, generator = GaussianNoise(sigma, modalities=names), torch.Generator().manual_seed(seed)

    def condition(features: Tensors, present: Tensors) -> tuple[Tensors, Tensors]:
        if sigma == 0:
            return dict(features), dict(present)
        device = next(iter(features.values())).device
        noisy, _ = noise({n: x.cpu() for n, x in features.items()}, present, generator, modalities)
        return to_device(noisy, device), dict(present)

    return condition


@torch.no_grad()
def measure(encoder, batches: Iterable, conditions: Mapping[str, Condition], raw_probe: Classifier,
            model: MultimodalAutoencoder | None = None) -> dict[str, Measured]:
    """One pass over `batches` through every condition: for the samples with some modality
    given, the codes (by `encoder`, an export or a model), the classes `raw_probe` gives their
    zero-filled flattened inputs, and with `model` each modality's reconstruction error to the
    clean features."""
    code_of, names = code_function(encoder), list(encoder.modalities)
    measured = {key: Measured() for key in conditions}
    for batch in nonempty(batches):
        features, present, raw = features_of(encoder.encoder, batch)
        for key, condition in conditions.items():
            given, given_present = condition(features, present)
            rows = torch.stack(list(given_present.values()), dim=1).any(dim=1)
            if not rows.any():
                continue
            inputs, masks = ({n: x[rows] for n, x in d.items()} for d in (given, given_present))
            raw_rows = {n: x[rows] for n, x in raw.items() if n in inputs}
            entry = measured[key]
            entry.codes.append(code_of(inputs, masks, raw_rows).cpu())
            absent = torch.zeros(int(rows.sum()), dtype=torch.bool, device=rows.device)
            entry.raw.append(raw_probe(flat_inputs({n: given.get(n, features[n])[rows] for n in names},
                                                   {n: masks.get(n, absent) for n in names}, names)))
            entry.labels.append(batch.labels[rows.cpu()])
            if model is not None:
                clean, where = ({n: x[rows] for n, x in d.items()} for d in (features, present))
                _add_errors(entry, model, inputs, masks, raw_rows, clean, where)
    return measured


def _add_errors(entry: Measured, model: MultimodalAutoencoder, inputs: Tensors, masks: Tensors,
                raw: Tensors, clean: Tensors, present: Tensors) -> None:
    with evaluating(model):
        reconstructions = model(inputs, masks, raw=raw).reconstructions
    for name, modality in model.modalities.items():
        rows = present[name]
        total = entry.errors.setdefault(name, [0.0, 0])
        if rows.any():
            error = modality.reconstruction_loss(reconstructions[name][rows], clean[name][rows])
            total[0], total[1] = total[0] + float(error.sum()), total[1] + int(rows.sum())


@torch.no_grad()
def baseline_errors(model: MultimodalAutoencoder, baselines: Mapping[str, Tensor],
                    batches: Iterable) -> dict[str, float]:
    """Each modality's mean error of predicting the training mean (`estimate_baselines`)."""
    sums: dict[str, list[float]] = {}
    for batch in nonempty(batches):
        features, present, _ = features_of(model.encoder, batch)
        for name, prediction in baselines.items():
            target = features[name][present[name]]
            guess = prediction.expand(len(target), *prediction.shape)
            loss = model.modalities[name].reconstruction_loss(guess, target)
            total = sums.setdefault(name, [0.0, 0])
            total[0], total[1] = total[0] + float(loss.sum()), total[1] + len(target)
    return {name: total / count for name, (total, count) in sums.items() if count}


def labelled(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    keep = y >= 0
    return x[keep], y[keep]


def robustness(context: EvalContext, sigmas: Sequence[float], matched: bool = True) -> dict:
    """The missing-modality and noise tables (see the module docstring) of a run."""
    encoder, model, names = context.encoder, context.model, list(context.encoder.modalities)
    train = context.codes("train")
    deployed = fit_linear_classifier(*labelled(train.codes, train.labels))
    raw_probe = fit_linear_classifier(*labelled(*context.inputs("train")))
    every = subsets(names)
    read = [n for n in names if not encoder.modalities[n].encodes_raw]  # noise on the features they read
    conditions = {subset_key(s): drop_to(s) for s in every}
    conditions.update({f"sigma={sigma}": noised(sigma, read, encoder.modalities, context.seed + i)
                       for i, sigma in enumerate(sigmas)})
    measured = measure(encoder, context.loader("test"), conditions, raw_probe, model)
    references = {}
    if model is not None:
        references = baseline_errors(model, estimate_baselines(model, context.loader("train")),
                                     context.loader("test"))
    results = {"chance": 1.0 / (int(train.labels.max()) + 1), "subsets": {}, "noise": []}
    for subset in every:
        key, entry = subset_key(subset), measured[subset_key(subset)]
        row = {"samples": sum(len(y) for y in entry.labels), "deployed": entry.accuracy(deployed),
               "raw": entry.raw_accuracy()}
        if matched:  # from every modality, the matched probe is the deployed one
            codes = None if len(subset) == len(names) else context.codes("train", list(subset))
            probe = deployed if codes is None else fit_linear_classifier(*labelled(codes.codes, codes.labels))
            row["matched"] = entry.accuracy(probe)
        if model is not None:
            row["reconstruction"] = entry.reconstruction(references)
        results["subsets"][key] = row
    for sigma in sigmas:
        entry = measured[f"sigma={sigma}"]
        row = {"sigma": sigma, "probe": entry.accuracy(deployed), "raw": entry.raw_accuracy()}
        if model is not None:
            row["reconstruction"] = entry.reconstruction(references)
        results["noise"].append(row)
    if model is not None:
        results["baseline_mean"] = references
    return results


def _cell(value: float | None, width: int, percent: bool = True) -> str:
    if value is None:
        return f"{'-':>{width}}"
    return f"{value:>{width}.1%}" if percent else f"{value:>{width}.3f}"


def format_robustness(results: Mapping) -> str:
    subsets_table = results["subsets"]
    names = list(next(iter(subsets_table.values())).get("reconstruction", {}))
    first = max(10, *(len(k) + 2 for k in subsets_table))
    probes = [p for p in ("deployed", "matched", "raw") if p in next(iter(subsets_table.values()))]
    lines = [f"missing modalities (test accuracy; chance {results['chance']:.1%}; reconstruction: "
             "error / training-mean error)",
             f"  {'given':<{first}}{'samples':>8}" + "".join(f"{p:>10}" for p in probes)
             + "".join(f"{n[:9]:>10}" for n in names)]
    for key, row in subsets_table.items():
        errors = row.get("reconstruction", {})
        lines.append(f"  {key:<{first}}{row['samples']:>8}" + "".join(_cell(row.get(p), 10) for p in probes)
                     + "".join(_cell(errors[n]["ratio"], 10, percent=False) for n in names))
    lines.append("input noise (sigma in standard deviations of each feature)")
    lines.append(f"  {'sigma':<{first}}{'codes':>8}{'raw':>10}" + "".join(f"{n[:9]:>10}" for n in names))
    for row in results["noise"]:
        errors = row.get("reconstruction", {})
        lines.append(f"  {row['sigma']:<{first}}{_cell(row['probe'], 8)}{_cell(row['raw'], 10)}"
                     + "".join(_cell(errors[n]["ratio"], 10, percent=False) for n in names))
    return "\n".join(lines)


@EVALUATIONS.register("robustness")
class Robustness(Evaluation):
    """Linear probes and reconstructions with modalities missing and with noisy inputs,
    against a raw-input probe; the reconstruction parts with the decoder only."""

    order = 4
    needs_labels = True
    options: ClassVar[dict[str, type]] = {"sigmas": list[float], "matched_probes": bool}

    def run(self, context: EvalContext) -> TaskResult:
        sigmas = [float(s) for s in context.options.get("sigmas", [0.0, 0.1, 0.25, 0.5, 1.0])]
        results = robustness(context, sigmas, matched=context.options.get("matched_probes", True))
        names = list(context.encoder.modalities)
        summary = {"probe all": results["subsets"][subset_key(names)]["deployed"],
                   "probe from 1 (mean)": _mean([results["subsets"][n]["deployed"] for n in names])}
        if sigmas:
            summary[f"probe at sigma {sigmas[-1]}"] = results["noise"][-1]["probe"]
            summary[f"raw at sigma {sigmas[-1]}"] = results["noise"][-1]["raw"]
        drawn = {"robustness_subsets.png": draw.subsets_png}
        if sigmas:
            drawn["robustness_noise.png"] = draw.noise_png
            if context.model is not None:
                drawn["robustness_reconstruction.png"] = draw.reconstruction_png
        figures = [str(drawer(results, path)) for name, drawer in drawn.items()
                   if (path := context.figure(name)) is not None]
        return TaskResult(results, format_robustness(results), summary, figures)


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None
