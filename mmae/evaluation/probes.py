"""Evaluation of learned representations: codes of a dataset, linear probes, code sparsity."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from mmae.artifacts.export import FrozenEncoder
from mmae.core.errors import DataError
from mmae.core.model import MultimodalAutoencoder
from mmae.data.batch import features_of, nonempty, to_device
from mmae.evaluation.codes import Features, flat_inputs
from mmae.evaluation.reconstruction import (
    estimate_baselines,
    format_imputation,
    imputation_summary,
    reconstruction_sums,
)

#: A split's codes, from all modalities (None) or a subset: `EvalContext.codes`.
CodesOf = Callable[[str, Sequence[str] | None], Features]
#: A split's flattened inputs and labels, of all modalities (None) or a subset: `EvalContext.inputs`.
InputsOf = Callable[[str, Sequence[str] | None], tuple[Tensor, Tensor]]

Classifier = Callable[[Tensor], Tensor]


def fit_linear_classifier(train_x: Tensor, train_y: Tensor, l2: float = 1e-3, steps: int = 200,
                          num_classes: int | None = None) -> Classifier:
    """A multinomial logistic regression fitted on standardised features: `features -> classes`.

    Full-batch L-BFGS: deterministic, and exact enough that differences between feature sets
    reflect the features rather than the optimiser. `num_classes` defaults to the largest
    training label + 1.
    """
    if train_x.shape[0] < 2:
        raise DataError(f"a linear probe needs at least 2 labelled training samples, got {train_x.shape[0]}")
    mean, std = train_x.mean(0), train_x.std(0, unbiased=False).clamp_min(1e-6)
    x, y = ((train_x - mean) / std).double(), train_y.long()
    linear = torch.nn.Linear(x.shape[1], num_classes or int(y.max()) + 1).double()
    optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(linear(x), y) + l2 * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)

    @torch.no_grad()
    def classify(features: Tensor) -> Tensor:
        return linear(((features.to(mean.device) - mean) / std).double()).argmax(dim=1)

    return classify


def linear_probe(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor,
                 l2: float = 1e-3, steps: int = 200) -> float:
    """Test accuracy of `fit_linear_classifier` fitted on the training set."""
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    classify = fit_linear_classifier(train_x, train_y, l2, steps, num_classes)
    return (classify(test_x) == test_y).double().mean().item()


def hoyer_sparsity(codes: Tensor) -> float:
    """Mean Hoyer sparsity of the codes, in [0, 1]: 0 when all units are equally active, 1 when
    one unit carries everything (or none does). Scale-free, so codes of different ranges compare."""
    n = codes.shape[1]
    if n < 2:
        return 0.0
    ratio = codes.abs().sum(1) / codes.norm(dim=1).clamp_min(1e-12)
    return ((n**0.5 - ratio) / (n**0.5 - 1)).clamp(0.0, 1.0).mean().item()


@torch.no_grad()
def input_features(encoder: FrozenEncoder, batches: Iterable[dict | None], max_samples: int = 20_000,
                   modalities: Sequence[str] | None = None) -> tuple[Tensor, Tensor]:
    """The preprocessed inputs of every modality (or of `modalities`, keeping the samples that
    have one of them, as the codes from a subset do), flattened side by side (zeros where a
    modality is missing), with the labels: what a baseline without learning gets to see."""
    names = list(modalities or encoder.modalities)
    rows, labels, seen = [], [], 0
    for batch in nonempty(batches):
        features, present, _ = features_of(encoder.encoder, batch, names)
        keep = torch.stack([present[n] for n in names], dim=1).any(dim=1).cpu()
        rows.append(flat_inputs(features, present, names)[keep])
        labels.append(batch.labels[keep])
        seen += int(keep.sum())
        if seen >= max_samples:
            break
    return torch.cat(rows), torch.cat(labels)


def pca(train_x: Tensor, test_x: Tensor, components: int) -> tuple[Tensor, Tensor]:
    """Project both sets on the top principal components of the training set."""
    mean = train_x.mean(0)
    _, _, basis = torch.pca_lowrank(train_x - mean, q=min(components, *train_x.shape), center=False)
    return (train_x - mean) @ basis, (test_x - mean) @ basis


def _probe(train: Features, test: Features) -> float | None:
    keep_train, keep_test = train.labels >= 0, test.labels >= 0
    if not keep_train.any() or not keep_test.any():
        return None
    return linear_probe(train.codes[keep_train], train.labels[keep_train], test.codes[keep_test],
                        test.labels[keep_test])


def _input_probe(train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor]) -> float | None:
    """`_probe` of features that are not codes (raw inputs, their PCA): `(features, labels)`."""
    return _probe(Features(train[0], train[1], train[1]), Features(test[0], test[1], test[1]))


@torch.no_grad()
def imputation_errors(model: MultimodalAutoencoder, train_batches: Iterable, test_batches: Iterable,
                      ) -> dict[str, dict[str, float]]:
    """Per modality on the test split: reconstruction error from all inputs, from the other
    modalities alone, and of the training-mean baseline."""
    model.eval()
    baselines = estimate_baselines(model, train_batches)
    totals: dict[str, list[float]] = {}
    for batch in nonempty(test_batches):
        features, present, raw = features_of(model.encoder, batch)
        sums = reconstruction_sums(model, features, present, baselines, raw=raw)
        for key, (total, count) in sums.items():
            entry = totals.setdefault(key, [0.0, 0])
            entry[0] += float(total)
            entry[1] += int(count)
    return imputation_summary({k: t / c for k, (t, c) in totals.items() if c}, model.modalities, prefix="")


@torch.no_grad()
def denoised_batches(model: MultimodalAutoencoder, batches: Iterable, sigma: float, seed: int = 0):
    """Per batch: `(clean, noisy, cleaned, present, ids)`, features of every modality, where
    `noisy` adds Gaussian noise of `sigma` in the features' own units (pixels, log-mel; 0: the
    data as it is), so the figures read the same whatever the model, and `cleaned` is
    `mmae.denoise` of it. A modality encoded from its raw input (a speech backbone) is left
    out: noise on its features would never reach its encoder."""
    from mmae.core.corruption import GaussianNoise
    from mmae.evaluation.applications import denoise

    noise, generator = GaussianNoise(sigma, standardised=False), torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    for batch in nonempty(batches):
        clean, present, raw = features_of(model.encoder, batch)
        clean = {n: x for n, x in clean.items() if n not in raw}
        present = {n: p for n, p in present.items() if n not in raw}
        noisy, _ = noise({n: x.cpu() for n, x in clean.items()}, present, generator, model.modalities)
        noisy = to_device(noisy, device)
        yield clean, noisy, denoise(model, noisy, present, preprocessed=True), present, batch.index


def denoising_errors(model: MultimodalAutoencoder, batches: Iterable, sigma: float,
                     seed: int = 0) -> dict[str, dict[str, float]]:
    """Per continuous modality: the mean squared error to the clean features of the inputs
    with Gaussian noise (`sigma`, in the features' units) and of their denoised version."""
    sums: dict[str, list[float]] = {}
    for clean, noisy, cleaned, present, _ in denoised_batches(model, batches, sigma, seed):
        for name, x in clean.items():
            rows = present[name]
            if not torch.is_floating_point(x) or not rows.any():
                continue
            # Only the elements noise may change (not, say, a table's category indices).
            allowed = model.modalities[name].noise_mask(x)
            keep = slice(None) if allowed is None else allowed
            target = x[rows][..., keep]
            entry = sums.setdefault(name, [0.0, 0.0, 0])
            for slot, version in ((0, noisy[name]), (1, cleaned[name])):
                entry[slot] += float((version[rows][..., keep] - target).pow(2).flatten(1).mean(1).sum())
            entry[2] += int(rows.sum())
    return {name: {"noisy": noisy_sum / n, "denoised": denoised_sum / n,
                   "reduction": 1.0 - denoised_sum / noisy_sum if noisy_sum else None}
            for name, (noisy_sum, denoised_sum, n) in sums.items()}


def save_denoised(model: MultimodalAutoencoder, batches: Iterable, sigma: float, path: Path,
                  seed: int = 0) -> Path:
    """Write the denoised features of every sample to an `.npz`: one array per modality, its
    presence mask (`present_<m>`) and the sample `ids`."""
    import numpy as np

    from mmae.artifacts.atomic import write_atomic

    parts: dict[str, list] = {}
    for _, _, cleaned, present, ids in denoised_batches(model, batches, sigma, seed):
        for name, x in cleaned.items():
            parts.setdefault(name, []).append(x.cpu())
            parts.setdefault(f"present_{name}", []).append(present[name].cpu())
        if ids is not None:
            parts.setdefault("ids", []).append(ids)
    arrays = {key: torch.cat(values).numpy() for key, values in parts.items()}

    def write(target: Path) -> None:
        with target.open("wb") as handle:  # a path without .npz would get one appended
            np.savez(handle, **arrays)

    return write_atomic(path, write)


def format_denoising(results: dict, sigma: float) -> str:
    lines = [f"denoising (test, Gaussian noise sigma={sigma})", f"  {'modality':<14}{'noisy':>12}"
             f"{'denoised':>12}{'reduction':>11}"]
    for name, row in results.items():
        reduction = "-" if row["reduction"] is None else f"{row['reduction']:.0%}"
        lines.append(f"  {name:<14}{row['noisy']:>12.4f}{row['denoised']:>12.4f}{reduction:>11}")
    return "\n".join(lines)


def probe_results(codes: CodesOf, inputs: InputsOf, modalities: Sequence[str], latent_dim: int,
                  ) -> dict:
    """Linear probes (train split -> test split) of the codes from all modalities and from each
    one alone, beside the same probe on the raw inputs (all, and each alone) and on PCA of the
    inputs with as many components as the code. `codes(split, modalities)` and
    `inputs(split, modalities)` give a split's codes and flattened inputs (`EvalContext`'s,
    computed once for every task that reads them)."""
    train_codes, test_codes = codes("train", None), codes("test", None)
    probes = {"all modalities": _probe(train_codes, test_codes)}
    for name in modalities:
        probes[f"{name} only"] = _probe(codes("train", [name]), codes("test", [name]))
    train_x, train_y = inputs("train", None)
    test_x, test_y = inputs("test", None)
    train_pca, test_pca = pca(train_x, test_x, latent_dim)
    probes[f"PCA-{latent_dim} of the inputs"] = _input_probe((train_pca, train_y), (test_pca, test_y))
    raw = {"all modalities": _input_probe((train_x, train_y), (test_x, test_y))}
    for name in modalities:
        raw[f"{name} only"] = _input_probe(inputs("train", [name]), inputs("test", [name]))
    return {"samples": {"train": len(train_codes.codes), "test": len(test_codes.codes)},
            "linear_probe_accuracy": probes, "raw_input_probe_accuracy": raw}


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def format_results(results: dict) -> str:
    """The probe table: the codes beside the same probe on the raw inputs (where measured),
    and a plain line naming every row where the codes lose to the raw inputs."""
    raw = results.get("raw_input_probe_accuracy", {})
    lines = [f"{'linear probe (test accuracy)':<36}{'codes':>8}{'raw inputs':>12}"]
    losses = []
    for name, accuracy in results["linear_probe_accuracy"].items():
        baseline = raw.get(name)
        lines.append(f"  {name:<34}{_percent(accuracy):>8}{_percent(baseline) if name in raw else '':>12}")
        if accuracy is not None and baseline is not None and accuracy < baseline:
            losses.append(f"{name} ({100 * (accuracy - baseline):+.1f} points)")
    if losses:
        lines.append("the codes lose to a probe on the raw inputs: " + ", ".join(losses))
    elif raw:
        lines.append("the codes beat (or match) a probe on the raw inputs in every row")
    if "imputation" in results:
        lines.append(format_imputation(results["imputation"], title="imputation (test)"))
    return "\n".join(lines)

