"""The random state of a process (torch, CUDA, numpy, Python) as checkpoint-safe primitives,
so a resumed run draws the same dropout masks and shuffles as an uninterrupted one."""

from __future__ import annotations

import random

import numpy as np
import torch
from pytorch_lightning import Callback

from mmae.training.ranks import gather_objects


def capture() -> dict:
    """This process's generator states, as tensors and tuples (loadable with weights_only)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached),
        "python": random.getstate(),
    }


def restore(state: dict) -> None:
    """Put the generators back to a state from `capture`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    random.setstate(state["python"])


def offset_for_rank(rank: int) -> None:
    """Re-seed torch, numpy and Python with the current torch seed plus `rank`, so that DDP
    ranks seeded alike draw different random numbers. (Not `seed_everything`: that would also
    change PL_GLOBAL_SEED, which must stay equal on every rank for the data shards.)"""
    seed = torch.initial_seed() + rank
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


class ResumableRandomState(Callback):
    """A resumed run draws the same dropout masks, noise and shuffles as an uninterrupted one.

    Every checkpoint keeps every rank's generator states (`mmae_random_state`); resuming a fit
    restores them after loading and the sanity check, so that the next draw is the one the
    uninterrupted run would have made. DDP ranks, seeded alike, are offset by their rank."""

    def __init__(self):
        self._resumed: dict | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit" and trainer.world_size > 1:
            offset_for_rank(trainer.global_rank)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        # Called on every rank; rank zero writes the file.
        checkpoint["mmae_random_state"] = gather_objects(trainer, capture())

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        states = checkpoint.get("mmae_random_state")
        if states and trainer.state.fn == "fit":
            # This rank's state if the world size is unchanged; otherwise the checkpoint's
            # rank-zero state (the run goes on, but no longer equals an uninterrupted one).
            self._resumed = states[trainer.global_rank if len(states) == trainer.world_size else 0]

    def on_train_start(self, trainer, pl_module) -> None:
        if self._resumed is not None:
            restore(self._resumed)
            self._resumed = None
