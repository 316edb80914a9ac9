"""Helpers of the evaluation tasks' tests: a task's `EvalContext` on a trained run folder (the
`eval_run` / `eval_vae_run` fixtures), and one intra-op thread for the tasks' small probes."""

from __future__ import annotations

from contextlib import contextmanager

import torch

from mmae.config.assembly import build_eval_context, evaluation_config
from mmae.evaluation.base import EvalContext


def eval_context(run, model: bool = True, figures=None, **options) -> EvalContext:
    """The context `mmae-eval run=<run>` builds (the export, the run's data, the checkpoint's
    model), without the model when `model=False` (an export alone)."""
    context = build_eval_context(evaluation_config([f"run={run}"]), run, figures=figures)
    context.model = context.model if model else None
    context.options = options
    return context


@contextmanager
def single_thread():
    """Probes on a few hundred samples run several times faster without intra-op threads
    contending for a shared CPU; the thread count is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
