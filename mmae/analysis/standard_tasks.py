"""The first three `mmae-eval` tasks as `Evaluation`s: linear probes with imputation
(`probe`), anomaly detection by reconstruction error (`anomaly`) and denoising (`denoise`)."""

from __future__ import annotations

from pathlib import Path

from mmae.analysis.anomaly import COMBINED, evaluate_anomalies, format_anomaly_results
from mmae.analysis.evaluate import (
    denoising_errors,
    format_denoising,
    format_results,
    imputation_errors,
    probe_results,
    save_denoised,
)
from mmae.analysis.tasks import EvalContext, Evaluation, TaskResult
from mmae.core.registry import EVALUATIONS


@EVALUATIONS.register("probe")
class Probe(Evaluation):
    """Linear probes of the codes from all modalities and from each alone, beside the same
    probe on the raw inputs (all, and each modality alone) and on PCA of the inputs; imputation
    errors when the decoder is given; a latent map."""

    needs_labels = True

    def run(self, context: EvalContext) -> TaskResult:
        encoder = context.encoder
        results = probe_results(context.codes, context.inputs, list(encoder.modalities), encoder.latent_dim)
        if context.model is not None:
            results["imputation"] = imputation_errors(context.model, context.loader("train"),
                                                      context.loader("test"))
        picture = context.figure("latent_map.png")
        if picture is not None:
            from mmae.analysis.latent_map import project_2d, save_png

            projection = context.options.get("projection", "pca")
            test = context.codes("test")
            save_png(picture, project_2d(test.codes, projection), test.labels,
                     title=f"test codes ({projection} of {encoder.latent_dim} dimensions)")
            results["latent_map"] = str(picture)
        probes = results["linear_probe_accuracy"]
        summary = {"probe all": probes["all modalities"],
                   "raw inputs all": results["raw_input_probe_accuracy"]["all modalities"],
                   **{k: v for k, v in probes.items() if k.startswith("PCA")}}
        return TaskResult(results, format_results(results), summary,
                          [str(picture)] if picture is not None else [])


@EVALUATIONS.register("anomaly")
class Anomaly(Evaluation):
    """Anomaly scores from reconstruction errors; AUROC / AP where the data marks anomalies."""

    needs_model = True

    def run(self, context: EvalContext) -> TaskResult:
        results = evaluate_anomalies(context.require_model("anomaly"), context.datamodule)
        combined = results["scores"].get(COMBINED, {})
        summary = {"AUROC": combined.get("auroc"), "flagged": results["detection"]["flagged"]}
        return TaskResult(results, format_anomaly_results(results), summary)


@EVALUATIONS.register("denoise")
class Denoise(Evaluation):
    """Error to the clean test inputs before and after denoising inputs with Gaussian noise."""

    needs_model = True

    def run(self, context: EvalContext) -> TaskResult:
        model = context.require_model("denoise")
        sigma, seed = context.options.get("noise_std", 0.2), context.seed
        results = denoising_errors(model, context.loader("test"), sigma, seed)
        text = format_denoising(results, sigma)
        cleaned = context.options.get("cleaned")
        if cleaned:
            path = save_denoised(model, context.loader("test"), sigma, Path(cleaned), seed)
            results["cleaned"] = str(path)
            text += f"\ndenoised test inputs in {path}"
        summary = {f"{name} noise removed": row["reduction"] for name, row in results.items()
                   if isinstance(row, dict)}
        return TaskResult(results, text, summary)
