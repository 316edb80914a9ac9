"""Continuing a run from a checkpoint: which checkpoint, whether this config still fits it,
and where the loggers continue so the first part's records are kept."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mmae.artifacts.checkpoint import load_checkpoint_file
from mmae.config.renamed import move_renamed_keys
from mmae.config.resolvers import is_rank_zero_process
from mmae.core.errors import ConfigError
from mmae.training.tracking import previous_run_id

#: What a run writes into its output directory (Hydra's own log and `.hydra/` are not a run).
RUN_FILES = ("config.yaml", "checkpoints", "encoder", "metrics.json")
#: Config sections that decide the weights' shapes: a difference means the checkpoint cannot load.
ARCHITECTURE = ("modality", "model", "fusion")
#: Settings a resumed run may change without changing what it computes.
FREE = ("ckpt_path", "paths", "logger", "callbacks", "compile", "compile_options",
        "trainer.default_root_dir", "trainer.max_epochs", "trainer.max_steps", "trainer.max_time",
        "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.log_every_n_steps",
        "training.on_nonfinite",
        "data.num_workers", "data.pin_memory")


def resolve_ckpt_path(ckpt_path: str | None, output_dir: Path) -> str | None:
    """The checkpoint to continue from, or None to start afresh.

    `last`: the run's `checkpoints/last.ckpt`, which must exist; `auto`: that file if it
    exists, else a fresh start (for jobs a cluster may requeue); anything else: a file.
    """
    if not ckpt_path:
        return None
    last = output_dir / "checkpoints" / "last.ckpt"
    if ckpt_path == "auto":
        return str(last) if last.is_file() else None
    path = last if ckpt_path == "last" else Path(ckpt_path)
    if not path.is_file():
        hint = (" (ckpt_path=last resumes the run in paths.output_dir: pass the run's directory)"
                if ckpt_path == "last" else "")
        raise ConfigError(f"ckpt_path: no checkpoint at {path}{hint}")
    return str(path)


def run_files(output_dir: Path) -> list[str]:
    """What of a run `output_dir` already holds (its config, checkpoints, export, metrics)."""
    return [name for name in RUN_FILES if (output_dir / name).exists()]


def check_fresh_output_dir(output_dir: Path, ckpt_path: str | None) -> None:
    """A run directory holds one run: starting another there (no `ckpt_path`) would replace
    its checkpoints, export and metrics, so it is refused before anything is written. Checked
    by global rank zero only: the other DDP ranks start once it has begun writing the run."""
    found = run_files(output_dir) if not ckpt_path and is_rank_zero_process() else []
    if found:
        raise ConfigError(f"paths.output_dir={output_dir} already holds a run ({', '.join(found)}); "
                          "continue it with ckpt_path=last, or give a fresh paths.output_dir")


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, Mapping):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def config_differences(saved: Mapping, current: Mapping) -> dict[str, tuple[Any, Any]]:
    """`{dotted key: (saved, current)}` for every setting that differs, except `FREE` ones."""
    old, new = _flatten(saved), _flatten(current)
    return {key: (old.get(key), new.get(key)) for key in sorted(old.keys() | new.keys())
            if old.get(key) != new.get(key)
            and not any(key == free or key.startswith(f"{free}.") for free in FREE)}


def _listing(differences: Mapping[str, tuple[Any, Any]], most: int = 8) -> str:
    items = [f"{key}: {old!r} -> {new!r}" for key, (old, new) in differences.items()]
    more = f" (+{len(items) - most} more)" if len(items) > most else ""
    return "; ".join(items[:most]) + more


def check_resumable(ckpt_path: str, cfg: DictConfig) -> None:
    """Compare the checkpoint's run config with `cfg` before anything is built.

    A different architecture is an error (the weights cannot load); other differences are a
    warning (the run continues, but will not equal an uninterrupted one).
    """
    checkpoint = load_checkpoint_file(ckpt_path, mmap=True)  # a truncated or planted file: refused here
    hyper_parameters = checkpoint.get("hyper_parameters")
    saved = hyper_parameters.get("config") if isinstance(hyper_parameters, Mapping) else None
    if saved is None:
        return  # not written by mmae-train: Lightning's own checks apply
    saved = copy.deepcopy(dict(saved))
    move_renamed_keys(saved, warn=False)  # a run of an older mmae: compared under today's names
    differences = config_differences(saved, OmegaConf.to_container(cfg, resolve=True))
    architecture = {k: v for k, v in differences.items() if k.split(".")[0] in ARCHITECTURE}
    if architecture:
        raise ConfigError(f"ckpt_path {ckpt_path}: its model differs from this config "
                          f"({_listing(architecture)}); resume with the run's own overrides "
                          "(its config.yaml lists every setting)")
    if differences:
        warnings.warn(f"resuming {ckpt_path} with settings that differ from its run "
                      f"({_listing(differences)}): the result will not equal an uninterrupted run",
                      UserWarning, stacklevel=2)


def logger_arguments(logger_node: Mapping | None, output_dir: Path) -> dict:
    """Extra logger arguments for a resumed run, so that it adds to the first part's records:
    W&B continues the same run (same id); the CSV logger, which would delete an existing
    metrics.csv, writes `csv/resumed-<n>/metrics.csv` beside it."""
    if not logger_node or "_target_" not in logger_node:
        return {}
    if logger_node.get("id") or logger_node.get("version"):
        return {}  # the user chose where to continue
    target = str(logger_node["_target_"])
    if target.endswith("WandbLogger"):
        run_id = previous_run_id(output_dir)
        return {"id": run_id, "resume": "allow"} if run_id else {}
    if target.endswith("CSVLogger"):
        root = Path(logger_node["save_dir"]) / str(logger_node.get("name") or "")
        if (root / "metrics.csv").is_file():
            return {"version": f"resumed-{len(list(root.glob('resumed-*'))) + 1}"}
    return {}
