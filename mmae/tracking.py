"""Experiment tracking with Weights & Biases: a run always ends, and the process is left as found.

WandbLogger(offline=True) sets WANDB_MODE for the whole process and a run left open is reused
by the next `wandb.init`; `tracking_session` undoes both however the job ends.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


def finish_wandb(exit_code: int = 0) -> None:
    """Finish the active W&B run, if any (without importing wandb when nothing used it)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=exit_code)


@contextmanager
def tracking_session() -> Iterator[None]:
    """Finish any W&B run the block started (exit code 1 on an error) and restore WANDB_MODE."""
    mode = os.environ.get("WANDB_MODE")
    try:
        yield
    except BaseException:
        finish_wandb(exit_code=1)
        raise
    else:
        finish_wandb()
    finally:
        if mode is None:
            os.environ.pop("WANDB_MODE", None)
        else:
            os.environ["WANDB_MODE"] = mode


def log_encoder_artifact(loggers, encoder_dir, report: dict) -> None:
    """Record the exported encoder as a W&B model artifact (placeholder: filled in below)."""
