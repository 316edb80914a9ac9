"""What the DDP ranks of a fit agree on. Each helper is a no-op for one process.

The trainer's world, not `dist.is_initialized()`, decides: Lightning leaves a process group
behind, which a later single-process fit in the same Python must not wait on."""

from __future__ import annotations

from collections.abc import Iterable

import pytorch_lightning as pl
import torch
import torch.distributed as dist


def is_distributed(trainer: pl.Trainer | None) -> bool:
    return trainer is not None and trainer.world_size > 1


def on_any_rank(trainer: pl.Trainer | None, flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is true on at least one."""
    if not is_distributed(trainer):
        return flag
    votes = torch.tensor(float(flag), device=device)
    return bool(trainer.strategy.reduce(votes, reduce_op="sum") > 0)


def gather_objects(trainer: pl.Trainer | None, value: object) -> list:
    """Every rank's `value`, in rank order (picklable objects)."""
    if not is_distributed(trainer):
        return [value]
    gathered: list = [None] * trainer.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def union_over_ranks(trainer: pl.Trainer | None, names: Iterable[str]) -> set[str]:
    return set().union(*map(set, gather_objects(trainer, sorted(names))))
