"""task=probe: linear probes of the codes (from all modalities and each alone) beside the raw
inputs and PCA; imputation errors when the decoder is given; a latent map."""

from __future__ import annotations

from mmae.core.registry import EVALUATIONS
from mmae.evaluation.base import EvalContext, Evaluation, TaskResult
from mmae.evaluation.probes import (
    format_results,
    imputation_errors,
    probe_results,
)


@EVALUATIONS.register("probe")
class Probe(Evaluation):
    """Linear probes of the codes from all modalities and from each alone, beside the same
    probe on the raw inputs (all, and each modality alone) and on PCA of the inputs; imputation
    errors when the decoder is given; a latent map."""

    order = 0
    needs_labels = True

    def run(self, context: EvalContext) -> TaskResult:
        encoder = context.encoder
        results = probe_results(context.codes, context.inputs, list(encoder.modalities), encoder.latent_dim)
        if context.model is not None:
            results["imputation"] = imputation_errors(context.model, context.loader("train"),
                                                      context.loader("test"))
        picture = context.figure("latent_map.png")
        if picture is not None:
            from mmae.evaluation.latent_map import project_2d, save_png

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
