"""The `${mmae.*:...}` resolvers that mmae's configs use; registered on import."""

from __future__ import annotations

import os

from omegaconf import OmegaConf

from mmae.training.tracking import wandb_offline_default


def is_rank_zero_process() -> bool:
    """Whether this process is global rank zero, from the launcher's environment (usable
    before any process group exists: Lightning's children, torchrun and SLURM set these)."""
    return all(int(os.environ.get(var, "0")) == 0
               for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK"))


# For Hydra's own files: DDP ranks > 0 keep no log file and no .hydra/ copy of the config.
OmegaConf.register_new_resolver(
    "mmae.rank_zero_file", lambda path: path if is_rank_zero_process() else os.devnull, replace=True)
OmegaConf.register_new_resolver(
    "mmae.rank_zero_only", lambda value: value if is_rank_zero_process() else None, replace=True)

# logger=wandb's default `offline`: true only with no WANDB_MODE and no configured API key.
OmegaConf.register_new_resolver("mmae.wandb_offline", wandb_offline_default, replace=True,
                                use_cache=True)
