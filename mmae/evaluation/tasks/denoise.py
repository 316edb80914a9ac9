"""task=denoise: the error to the clean test inputs before and after denoising inputs with
Gaussian noise; optionally the denoised inputs written to a file."""

from __future__ import annotations

from pathlib import Path

from mmae.core.registry import EVALUATIONS
from mmae.evaluation.base import EvalContext, Evaluation, TaskResult
from mmae.evaluation.probes import denoising_errors, format_denoising, save_denoised


@EVALUATIONS.register("denoise")
class Denoise(Evaluation):
    """Error to the clean test inputs before and after denoising inputs with Gaussian noise."""

    order = 2
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
