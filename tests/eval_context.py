"""Helpers of the evaluation tasks' tests: a task's `EvalContext` on a trained run folder (the
`eval_run` / `eval_vae_run` fixtures), and one intra-op thread for the tasks' small probes."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from omegaconf import OmegaConf

from mmae import load_checkpoint_model, load_encoder
from mmae.analysis.tasks import EvalContext
from mmae.config.build import build


def eval_context(run, model: bool = True, figures=None, **options) -> EvalContext:
    """The context `mmae-eval run=<run>` builds: the export, the data, and the checkpoint's
    model unless `model=False` (an export alone)."""
    cfg = OmegaConf.load(run / "config.yaml")
    trained = load_checkpoint_model(run / "checkpoints" / "best.ckpt")
    datamodule = build(cfg.data, _partial_=True)(modalities=trained.modalities)
    return EvalContext(load_encoder(run / "encoder"), datamodule, trained if model else None,
                       figures=figures, options=options)


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
