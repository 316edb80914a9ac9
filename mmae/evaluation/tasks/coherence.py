"""Cross-modal and joint coherence (MMVAE, Shi et al. 2019; MoPoE, Sutter et al. 2021): does
what the model makes of one modality carry the class of the sample it came from?

Definitions (`mmae-eval task=coherence`):

- **classifier of modality m**: a linear probe (`fit_linear_classifier`) trained on the *real*
  training features of m, flattened (token ids as a bag of tokens), to predict the label. It
  never sees the model, so it judges the model's outputs from outside.
- **real** (the ceiling): that classifier's accuracy on the real test features of m; beside every
  coherence figure, `real_from` holds its accuracy on the real features of m of the same test
  samples (those of them that hold m), so a weak judge cannot make a model look good or bad.
- **coherence of target t from subset S** (t not in S): on the labelled test samples with every
  modality of S present, the fraction whose imputation of t from S alone
  (`mmae.impute`) the classifier of t assigns the sample's label.
- **by number of inputs k**: the mean of those over the subsets of k modalities (k = 1 .. M-1),
  per target and over all targets, as the MMVAE and MoPoE papers report it.
- **joint coherence**: n codes drawn from a sampler, decoded to every modality, each output
  classified; the fraction where all M predicted classes agree. From the prior N(0, I) (VAEs
  only) and from a Gaussian mixture fitted on the training codes (`mmae.fit_sampler`; any
  model). A generator that always draws one class agrees trivially: `classes` counts the
  distinct classes of the agreeing samples.

Chance: 1/C for a cross-modal coherence (C classes); (1/C)^(M-1) for joint coherence if each
modality's class were drawn independently and uniformly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import combinations
from typing import ClassVar

import torch
from torch import Tensor

from mmae.core.errors import ConfigError, DataError
from mmae.core.model import MultimodalAutoencoder
from mmae.core.registry import EVALUATIONS
from mmae.data.batch import features_of, nonempty
from mmae.evaluation.applications import fit_sampler, generate, impute
from mmae.evaluation.base import EvalContext, Evaluation, TaskResult
from mmae.evaluation.probes import Classifier, fit_linear_classifier

Tensors = dict[str, Tensor]
#: `(features, present, raw) -> every modality's features` (the inputs' modalities only given).
Imputer = Callable[[Tensors, Tensors, Tensors], Mapping[str, Tensor]]
#: One test batch: features, presence masks, raw inputs (speech backbones) and labels.
Batch = tuple[Tensors, Tensors, Tensors, Tensor]
MAX_BUCKETS = 4096  # token ids beyond are folded into this many bag-of-tokens counts
MAX_TRAIN_SAMPLES = 20_000


def subsets(names: Sequence[str], sizes: Iterable[int] | None = None) -> list[tuple[str, ...]]:
    """The non-empty subsets of `names` (of the given sizes), smallest first, in `names` order."""
    sizes = range(1, len(names) + 1) if sizes is None else sizes
    return [subset for k in sizes for subset in combinations(names, k)]


def subset_key(subset: Sequence[str]) -> str:
    return "+".join(subset)


def classifier_inputs(x: Tensor, buckets: int | None) -> Tensor:
    """The classifiers' view of a modality's features: flattened floats; integer features
    (token ids) as counts of each id modulo `buckets`."""
    if torch.is_floating_point(x) or buckets is None:
        return x.float().flatten(1)
    ids = (x.flatten(1) % buckets).long()
    counts = torch.zeros(len(x), buckets, device=x.device)
    return counts.scatter_add_(1, ids, torch.ones_like(ids, dtype=torch.float))


def fit_modality_classifier(train_x: Tensor, train_y: Tensor, num_classes: int) -> Classifier:
    """A linear probe on the real features `train_x` of one modality: `features -> classes`."""
    buckets = None if torch.is_floating_point(train_x) else min(int(train_x.max()) + 1, MAX_BUCKETS)
    linear = fit_linear_classifier(classifier_inputs(train_x, buckets).cpu(), train_y,
                                   num_classes=num_classes)
    return lambda x: linear(classifier_inputs(x, buckets).cpu())


def labelled_batches(model: MultimodalAutoencoder, batches: Iterable) -> Iterable[Batch]:
    """Each batch's features, presence, raw inputs and labels, keeping the labelled samples."""
    for batch in nonempty(batches):
        keep = batch.labels >= 0
        if keep.any():
            features, present, raw = features_of(model.encoder, batch)
            rows = keep.to(next(iter(present.values())).device)
            yield ({n: x[rows] for n, x in features.items()}, {n: p[rows] for n, p in present.items()},
                   {n: x[rows] for n, x in raw.items()}, batch.labels[keep])


def fit_classifiers(model: MultimodalAutoencoder, batches: Iterable) -> tuple[dict[str, Classifier], int]:
    """Each modality's classifier, fitted on the real features of the labelled samples where
    it is present (up to `MAX_TRAIN_SAMPLES` each), and the number of classes."""
    parts: dict[str, tuple[list, list]] = {name: ([], []) for name in model.modalities}
    for features, present, _, labels in labelled_batches(model, batches):
        for name, (xs, ys) in parts.items():
            if sum(len(y) for y in ys) < MAX_TRAIN_SAMPLES:
                rows = present[name]
                xs.append(features[name][rows].cpu())
                ys.append(labels[rows.cpu()])
    empty = [name for name, (_, ys) in parts.items() if not sum(len(y) for y in ys)]
    if empty:
        raise DataError(f"task=coherence: no labelled training sample has the modalities {empty}")
    labels = {name: torch.cat(ys) for name, (_, ys) in parts.items()}
    num_classes = int(max(int(y.max()) for y in labels.values() if len(y))) + 1
    return {name: fit_modality_classifier(torch.cat(parts[name][0]), labels[name], num_classes)
            for name in model.modalities}, num_classes


@torch.no_grad()
def cross_coherence(imputer: Imputer, classifiers: Mapping[str, Classifier], batches: Iterable[Batch],
                    names: Sequence[str]) -> dict[str, dict]:
    """Per target modality: `real` (its classifier on the real features where present), `from`
    (subset key -> coherence of its imputation from that subset; None without samples) and
    `by_inputs` (number of inputs -> the mean of `from` over the subsets of that size)."""
    counts: dict[tuple[str, str], list[int]] = {}

    def tally(target: str, key: str, predicted: Tensor, labels: Tensor) -> None:
        entry = counts.setdefault((target, key), [0, 0])
        entry[0] += int((predicted.cpu() == labels.cpu()).sum())
        entry[1] += len(labels)

    for features, present, raw, labels in batches:
        for target in names:
            rows = present[target]
            if rows.any():
                tally(target, "real", classifiers[target](features[target][rows]), labels[rows.cpu()])
        for subset in subsets(names, range(1, len(names))):
            rows = torch.stack([present[n] for n in subset], dim=1).all(dim=1)
            if not rows.any():
                continue
            imputed = imputer({n: features[n][rows] for n in subset}, {n: present[n][rows] for n in subset},
                              {n: x[rows] for n, x in raw.items() if n in subset})
            for target in names:
                if target not in subset:
                    key, truth = subset_key(subset), labels[rows.cpu()]
                    tally(target, key, classifiers[target](imputed[target]), truth)
                    held = present[target][rows]
                    if held.any():  # the judge on the real target of these samples
                        tally(target, f"real|{key}", classifiers[target](features[target][rows][held]),
                              truth[held.cpu()])
    accuracy = {key: correct / total for key, (correct, total) in counts.items() if total}
    table = {}
    for target in names:
        others = [subset_key(s) for s in subsets([n for n in names if n != target])]
        row = {key: accuracy.get((target, key)) for key in others}
        real = {key: accuracy.get((target, f"real|{key}")) for key in others}
        table[target] = {"real": accuracy.get((target, "real")), "from": row, "by_inputs": by_inputs(row),
                         "real_from": real, "real_by_inputs": by_inputs(real)}
    return table


def by_inputs(coherence: Mapping[str, float | None]) -> dict[str, float]:
    """Subset key -> coherence, to number of inputs -> the mean over those subsets."""
    sizes: dict[str, list[float]] = {}
    for key, value in coherence.items():
        if value is not None:
            sizes.setdefault(str(key.count("+") + 1), []).append(value)
    return {k: sum(v) / len(v) for k, v in sorted(sizes.items())}


def mean_by_inputs(table: Mapping[str, Mapping], field: str = "by_inputs") -> dict[str, float]:
    """Number of inputs -> the mean over targets of their `by_inputs` (or another such field)."""
    pooled: dict[str, list[float]] = {}
    for row in table.values():
        for k, value in row.get(field, {}).items():
            pooled.setdefault(k, []).append(value)
    return {k: sum(v) / len(v) for k, v in sorted(pooled.items())}


@torch.no_grad()
def joint_coherence(decoded: Mapping[str, Tensor], classifiers: Mapping[str, Classifier]) -> dict:
    """The fraction of generated samples whose modalities' predicted classes all agree, and the
    number of distinct classes among those."""
    predicted = torch.stack([classifiers[name](x).cpu() for name, x in decoded.items()], dim=1)
    agree = (predicted == predicted[:, :1]).all(dim=1)
    return {"coherence": agree.double().mean().item(), "classes": len(predicted[agree, 0].unique())}


def format_coherence(results: Mapping) -> str:
    names = list(results["cross"])
    columns = [s for s in subsets(names, range(1, len(names)))]
    width = max(16, *(len(subset_key(s)) + 2 for s in columns))
    lines = [f"cross-modal coherence (test accuracy of the imputed target; chance {results['chance']:.1%});",
             "each cell: coherence / the judge on the real target of the same samples",
             f"  {'target':<10}{'real':>8}" + "".join(f"{subset_key(s):>{width}}" for s in columns)]
    for target, row in results["cross"].items():
        cells = "".join(f"{_pair(row['from'].get(k), row.get('real_from', {}).get(k)):>{width}}"
                        for k in map(subset_key, columns))
        lines.append(f"  {target:<10}{_percent(row['real']):>8}{cells}")
    real = results.get("real_by_inputs", {})
    lines.append("  mean by number of inputs: " + ", ".join(
        f"{k}: {_pair(v, real.get(k))}" for k, v in results["by_inputs"].items()))
    for sampler, row in results.get("joint", {}).items():
        lines.append(f"joint coherence ({sampler}, {results['samples']} samples): "
                     f"{_percent(row['coherence'])} ({row['classes']} classes)")
    return "\n".join(lines)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _pair(coherence: float | None, real: float | None) -> str:
    return f"{_percent(coherence)} / {_percent(real)}"


@EVALUATIONS.register("coherence")
class Coherence(Evaluation):
    """Cross-modal coherence of imputations and joint coherence of generated samples."""

    order = 3
    needs_model = True
    needs_labels = True
    options: ClassVar[dict[str, type]] = {"prior_samples": int, "gmm_components": int}

    def run(self, context: EvalContext) -> TaskResult:
        model = context.require_model("coherence")
        names = list(model.modalities)
        if len(names) < 2:
            raise ConfigError(f"task=coherence needs at least 2 modalities, the run has {names}")
        classifiers, num_classes = fit_classifiers(model, context.loader("train"))

        def imputer(features: Tensors, present: Tensors, raw: Tensors) -> Mapping[str, Tensor]:
            return impute(model, features, present, preprocessed=True, raw=raw)

        cross = cross_coherence(imputer, classifiers, labelled_batches(model, context.loader("test")), names)
        results = {"chance": 1.0 / num_classes, "chance_joint": num_classes ** (1 - len(names)),
                   "cross": cross, "by_inputs": mean_by_inputs(cross),
                   "real_by_inputs": mean_by_inputs(cross, "real_by_inputs")}
        results["joint"] = self._joint(context, model, classifiers)
        results["samples"] = context.options.get("prior_samples", 1000)
        summary = {f"coherence from {k}": v for k, v in results["by_inputs"].items()}
        summary.update({f"judge on real data, from {k}": v for k, v in results["real_by_inputs"].items()})
        summary.update({f"joint coherence ({s})": row["coherence"] for s, row in results["joint"].items()})
        return TaskResult(results, format_coherence(results), summary)

    def _joint(self, context: EvalContext, model: MultimodalAutoencoder,
               classifiers: Mapping[str, Classifier]) -> dict:
        n, seed = context.options.get("prior_samples", 1000), context.seed
        shared = context.codes("train").codes[:, :model.latent_dim]  # an export's private codes follow
        mixture = fit_sampler(model, shared,
                              components=context.options.get("gmm_components", 10), seed=seed)
        joint = {}
        if model.variational:  # the prior draws on the model's device, the mixture on the CPU
            device = next(model.parameters()).device
            joint["prior"] = joint_coherence(
                generate(model, n, "prior", torch.Generator(device).manual_seed(seed)), classifiers)
        joint["gmm"] = joint_coherence(generate(model, n, mixture, torch.Generator().manual_seed(seed)),
                                       classifiers)
        return joint
