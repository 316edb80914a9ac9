"""What a trained run is measured by and used for.

- `base`: what every `mmae-eval` task shares (`EvalContext`, which encodes each split once for
  every task; `TaskResult`; the `Evaluation` base class).
- `tasks/`: one module or package per task, found by `catalog`.
- The shared pieces the tasks, training and the public API read: `codes` (a split's codes),
  `probes` (linear probes, PCA, imputation and denoising errors), `reconstruction` (the
  validation metrics), `latent_map`, `media`.
- The inference calls of the public API: `applications` (`impute`, `denoise`, `generate`,
  `fit_sampler`) and `sampler` (the post-hoc Gaussian mixture).
"""
