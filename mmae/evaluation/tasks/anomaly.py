"""Anomaly detection by reconstruction error.

Each sample gets, per modality, its reconstruction error from all inputs (is this view
unlike the training data?) and from the other modalities alone (does it fit the others?).
Errors are standardised with their median and median absolute deviation on the training
split, so modalities of different scales add up; the combined score is the mean of a
sample's standardised errors. A threshold is chosen on the validation split, and AUROC and
average precision are reported where the data marks its anomalies (`anomaly` in the batch).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from mmae.core.errors import DataError
from mmae.core.model import MultimodalAutoencoder, evaluating
from mmae.core.registry import EVALUATIONS
from mmae.data.batch import features_of, nonempty
from mmae.evaluation.base import EvalContext, Evaluation, TaskResult
from mmae.evaluation.reconstruction import leave_one_out

COMBINED = "combined"


@dataclass
class SampleErrors:
    """Per-sample reconstruction errors `{"<m>/from_all"|"<m>/from_others": [N]}` (NaN where
    the modality is missing or has no other modality to come from), with anomaly flags
    (None when the data has none) and sample ids."""

    errors: dict[str, Tensor]
    anomaly: Tensor | None
    ids: Tensor


def sample_errors(model: MultimodalAutoencoder, batches: Iterable[Mapping | None]) -> SampleErrors:
    """Reconstruction errors of every sample of `batches`, in order."""
    columns: dict[str, list[Tensor]] = {}
    flags, ids, seen = [], [], 0
    with evaluating(model):
        for batch in nonempty(batches):
            features, present, raw = features_of(model.encoder, batch)
            reconstructions = model(features, present, raw=raw).reconstructions
            for name, modality in model.modalities.items():
                error = modality.reconstruction_loss(reconstructions[name], features[name])
                columns.setdefault(f"{name}/from_all", []).append(_masked(error, present[name]))
                if len(model.modalities) > 1:
                    columns.setdefault(f"{name}/from_others", []).append(
                        _from_others(model, modality, name, features, present, raw))
            size = len(error)
            flags.append(batch.extras["anomaly"].bool() if "anomaly" in batch.extras else None)
            ids.append(batch.ids(seen))
            seen += size
    if not ids:
        raise DataError("anomaly scores: the data has no samples")
    anomaly = None if any(f is None for f in flags) else torch.cat(flags)
    return SampleErrors({k: torch.cat(v) for k, v in columns.items()}, anomaly, torch.cat(ids))


def _masked(error: Tensor, mask: Tensor) -> Tensor:
    return torch.where(mask, error.float(), torch.nan).cpu()


def _from_others(model: MultimodalAutoencoder, modality, name: str, features: dict[str, Tensor],
                 present: dict[str, Tensor], raw: dict[str, Tensor]) -> Tensor:
    error = torch.full(present[name].shape, torch.nan)
    left = leave_one_out(model, features, present, name, raw)
    if left is not None:
        rows, reconstructions = left
        loss = modality.reconstruction_loss(reconstructions[name], features[name][rows])
        error[rows.cpu()] = loss.float().cpu()
    return _masked(error, present[name].cpu())  # scored where the modality is there to compare


class AnomalyScorer:
    """Standardises errors with training statistics and combines them into one score.

    A robust scale (median and 1.4826 x median absolute deviation) keeps a few odd training
    samples from setting the scale. The deviation is floored at `rel_floor` of the median (and
    `eps`), so that an error that is nearly constant in training (a modality reconstructed
    almost perfectly) cannot blow up and dominate the combined score.
    """

    def __init__(self, rel_floor: float = 0.01, eps: float = 1e-8):
        self.rel_floor, self.eps = rel_floor, eps
        self.center: dict[str, float] = {}
        self.scale: dict[str, float] = {}

    def fit(self, train: SampleErrors) -> AnomalyScorer:
        for key, error in train.errors.items():
            values = error[~error.isnan()]
            if len(values) == 0:
                continue
            median = values.double().quantile(0.5)  # the midpoint, not torch.median's lower one
            self.center[key] = float(median)
            spread = float(1.4826 * (values - median).abs().quantile(0.5))
            self.scale[key] = max(spread, self.rel_floor * abs(float(median)), self.eps)
        return self

    def scores(self, errors: SampleErrors) -> dict[str, Tensor]:
        """`{key: standardised error [N]}` for every fitted key, plus `combined`: the mean of
        each sample's available standardised errors."""
        if not self.center:
            raise DataError("AnomalyScorer: call fit() on training errors first")
        scores = {k: (errors.errors[k] - self.center[k]) / self.scale[k] for k in self.center}
        stacked = torch.stack(list(scores.values()), dim=1)
        scores[COMBINED] = stacked.nansum(dim=1) / (~stacked.isnan()).sum(dim=1).clamp_min(1)
        return scores


def _tie_groups(scores: Tensor, positive: Tensor) -> tuple[Tensor, Tensor]:
    """Per distinct score, from the highest down: (samples, positives) at that score."""
    values, inverse = scores.unique(return_inverse=True)  # ascending
    counts = torch.zeros(len(values), dtype=torch.float64).index_add_(0, inverse, torch.ones_like(scores))
    hits = torch.zeros(len(values), dtype=torch.float64).index_add_(0, inverse, positive.double())
    return counts.flip(0), hits.flip(0)


def auroc(scores: Tensor, positive: Tensor) -> float:
    """Area under the ROC curve: the probability that a random positive scores above a random
    negative, ties counting one half (Mann-Whitney U). O(N log N)."""
    scores, positive = scores.double(), positive.bool()
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise DataError("AUROC needs both anomalous and normal samples")
    counts, hits = _tie_groups(scores, positive)
    negatives = counts - hits
    below = n_neg - negatives.cumsum(0)  # negatives scoring strictly lower than each group
    return float((hits * (below + negatives / 2)).sum() / (n_pos * n_neg))


def average_precision(scores: Tensor, positive: Tensor) -> float:
    """Mean over the positives of the precision among the samples scoring at least as high
    (tied samples all count). O(N log N)."""
    positive = positive.bool()
    if not positive.any():
        raise DataError("average precision needs anomalous samples")
    counts, hits = _tie_groups(scores.double(), positive)
    precision = hits.cumsum(0) / counts.cumsum(0)
    return float((hits * precision).sum() / hits.sum())


def best_f1_threshold(scores: Tensor, positive: Tensor) -> float:
    """The score threshold (flag `score >= threshold`) with the best F1 on labelled data."""
    scores, positive = scores.double(), positive.bool()
    counts, hits = _tie_groups(scores, positive)
    f1 = 2 * hits.cumsum(0) / (counts.cumsum(0) + positive.sum())
    return float(scores.unique().flip(0)[int(f1.argmax())])


def detection_summary(scores: Tensor, positive: Tensor, threshold: float) -> dict[str, float]:
    """Precision, recall and F1 of flagging `score >= threshold`."""
    flagged = scores >= threshold
    tp = int((flagged & positive).sum())
    precision = tp / max(int(flagged.sum()), 1)
    recall = tp / max(int(positive.sum()), 1)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"threshold": threshold, "precision": precision, "recall": recall, "f1": f1,
            "flagged": int(flagged.sum())}


def _labelled(errors: SampleErrors) -> bool:
    """Whether the data marks both anomalous and normal samples (else nothing to measure)."""
    return errors.anomaly is not None and 0 < int(errors.anomaly.sum()) < len(errors.anomaly)


def evaluate_anomalies(model: MultimodalAutoencoder, datamodule, quantile: float = 0.95) -> dict:
    """Scores fitted on the train split, a threshold chosen on the val split, and detection
    quality on the test split.

    The threshold maximises F1 on validation when it marks anomalies, and is otherwise the
    `quantile` of the validation scores (validation assumed normal).
    """
    scorer = AnomalyScorer().fit(sample_errors(model, datamodule.train_dataloader()))
    val = sample_errors(model, datamodule.val_dataloader())
    test = sample_errors(model, datamodule.test_dataloader())
    val_scores, test_scores = scorer.scores(val), scorer.scores(test)
    combined = val_scores[COMBINED]
    labelled_val = _labelled(val)
    threshold = (best_f1_threshold(combined, val.anomaly) if labelled_val
                 else float(combined.quantile(quantile)))
    source = "best F1 on val" if labelled_val else f"{quantile:.0%} quantile of val"
    results: dict = {"samples": {"val": len(val.ids), "test": len(test.ids)}, "threshold_from": source,
                     "scores": {}}
    if _labelled(test):
        results["samples"]["test_anomalies"] = int(test.anomaly.sum())
        for key, score in test_scores.items():
            known = ~score.isnan()
            if 0 < int(test.anomaly[known].sum()) < int(known.sum()):
                results["scores"][key] = {"auroc": auroc(score[known], test.anomaly[known]),
                                          "average_precision": average_precision(score[known],
                                                                                 test.anomaly[known])}
        results["detection"] = detection_summary(test_scores[COMBINED], test.anomaly, threshold)
    else:
        results["detection"] = {"threshold": threshold,
                                "flagged": int((test_scores[COMBINED] >= threshold).sum())}
    return results


def format_anomaly_results(results: dict) -> str:
    lines = [f"{'anomaly score (test)':<30}{'AUROC':>8}{'AP':>8}"]
    for key, row in results["scores"].items():
        lines.append(f"  {key:<28}{row['auroc']:>8.3f}{row['average_precision']:>8.3f}")
    detection = results["detection"]
    line = (f"threshold {detection['threshold']:.3f} ({results['threshold_from']}): "
            f"flags {detection['flagged']}")
    if "f1" in detection:
        line += (f" of {results['samples']['test']} test samples; precision {detection['precision']:.1%},"
                 f" recall {detection['recall']:.1%}, F1 {detection['f1']:.3f}")
    lines.append(line)
    return "\n".join(lines)


@EVALUATIONS.register("anomaly")
class Anomaly(Evaluation):
    """Anomaly scores from reconstruction errors; AUROC / AP where the data marks anomalies."""

    order = 1
    needs_model = True

    def run(self, context: EvalContext) -> TaskResult:
        results = evaluate_anomalies(context.require_model("anomaly"), context.datamodule)
        combined = results["scores"].get(COMBINED, {})
        summary = {"AUROC": combined.get("auroc"), "flagged": results["detection"]["flagged"]}
        return TaskResult(results, format_anomaly_results(results), summary)
