"""The main job: compose the config, build, fit, validate the best checkpoint, report.

`mmae-train [overrides]` == `python -m mmae.train [overrides]`. `train(cfg)` is the same job
for a config composed elsewhere (tests, notebooks) and returns `(metrics, objects)`.

Under DDP every process runs this job; only global rank zero writes files (config.yaml,
metrics.json, encoder/; Lightning writes the checkpoints and logs from rank zero too).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from pytorch_lightning.utilities.exceptions import SIGTERMException

from mmae.artifacts.atomic import write_text_atomic
from mmae.artifacts.export import export_encoder
from mmae.artifacts.model_card import write_card
from mmae.cli.runner import run_command
from mmae.config import CONFIG_DIR, check_group_overrides, compose_config
from mmae.config.assembly import build_all, build_module, build_trainer
from mmae.config.renamed import move_renamed_keys, renamed_overrides
from mmae.config.resume import check_fresh_output_dir, check_resumable, logger_arguments, resolve_ckpt_path
from mmae.config.schema import validate_config
from mmae.core.errors import ConfigError, MMAEError, TrainingError
from mmae.core.model import MultimodalAutoencoder, parameter_counts
from mmae.evaluation.reconstruction import format_imputation, imputation_summary
from mmae.training.interruption import InterruptCheckpoint, Interrupted, SignalStop
from mmae.training.module import AutoencoderModule
from mmae.training.quiet import quiet_lightning
from mmae.training.tracking import log_encoder_artifact, tracking_session
from mmae.version import __version__

log = logging.getLogger(__name__)
#: Lightning's doubt about an IterableDataset's length; with data=stream LitData hands every
#: worker its own chunks, so the length is exact.
ITERABLE_LENGTH_WARNING = "Your `IterableDataset` has `__len__` defined"


def _check_launcher(trainer: pl.Trainer, multirun: bool) -> None:
    """Refuse what Lightning #11300 breaks: a Hydra sweep whose runs re-launch the script.
    (Processes that SLURM or torchrun started are not re-launched: submitit sweeps are fine.)
    The launcher's class is private: Lightning has no public way to ask whether it re-runs
    the script."""
    relaunches = (isinstance(trainer.strategy.launcher, _SubprocessScriptLauncher)
                  and not trainer.strategy.cluster_environment.creates_processes_externally)
    if multirun and relaunches:
        raise ConfigError(
            "a Hydra multirun (-m) cannot use trainer.strategy=ddp: Lightning re-launches the "
            "command line in every process, so each would run the whole sweep (Lightning #11300). "
            "Use trainer.strategy=ddp_spawn for sweeps, hydra/launcher=submitit_slurm on SLURM, "
            "or start each point as its own single run.")


def train(cfg: DictConfig, multirun: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train on `cfg` and write checkpoints/, encoder/, metrics.json and config.yaml to the
    output dir. `multirun` says the job is one point of a Hydra sweep."""
    move_renamed_keys(cfg)  # (an experiment file of one's own may still use an old name)
    validate_config(cfg, "train")  # unknown keys, wrong types, impossible combinations
    check_fresh_output_dir(Path(cfg.paths.output_dir), cfg.get("ckpt_path"))
    with tracking_session():
        return _train(cfg, multirun)


def _train(cfg: DictConfig, multirun: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    output_dir = Path(cfg.paths.output_dir).resolve()
    pl.seed_everything(cfg.seed, workers=True)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir)
    if ckpt_path:
        check_resumable(ckpt_path, cfg)

    module, datamodule = build_module(cfg)
    logger = cfg.get("logger")
    loggers = build_all(logger, **(logger_arguments(logger, output_dir) if ckpt_path else {}))
    on_interrupt = InterruptCheckpoint(output_dir / "checkpoints")
    trainer = build_trainer(cfg.trainer, callbacks=[*build_all(cfg.get("callbacks")), on_interrupt],
                            logger=loggers or False)
    _check_launcher(trainer, multirun)
    if trainer.is_global_zero:  # ranks are known once the Trainer exists
        output_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(output_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))

        log.info("parameters\n%s", format_parameters(module.model))

    stop = SignalStop()
    with warnings.catch_warnings(), stop.fitting():
        if ckpt_path:  # resuming into the run's own checkpoints/ is the point, not a hazard
            warnings.filterwarnings("ignore", "Checkpoint directory .* exists and is not empty")
        warnings.filterwarnings("ignore", ITERABLE_LENGTH_WARNING)
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        except SIGTERMException:  # Lightning's graceful stop (a SystemExit that would exit 0)
            raise Interrupted(stop.signum or signal.SIGTERM, on_interrupt.saved, trainer.current_epoch,
                              trainer.global_step) from None
        except Interrupted as interrupted:  # before training began: no checkpoint of this run's
            raise Interrupted(interrupted.signum) from None
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if best:  # the best epoch's weights (read safely by the Trainer's CheckpointIO), for the
        # export and the final report
        module.load_state_dict(trainer.strategy.load_checkpoint(best)["state_dict"])
    encoder_dir = output_dir / "encoder"
    if trainer.is_global_zero:  # saved before anything else can fail
        label_map = getattr(datamodule, "label_map", None)
        export_encoder(module.model, encoder_dir, labels=label_map.to_json() if label_map else None)
    try:
        report = _report(trainer, module, datamodule, best)
    except SIGTERMException:  # during the final validation: training itself is complete
        raise Interrupted(stop.signum or signal.SIGTERM) from None
    except Exception as error:
        saved = f"{Path(best).parent if best else output_dir / 'checkpoints'} and {encoder_dir}"
        if not isinstance(error, MMAEError):
            log.exception("the final report failed")
        raise TrainingError(f"training finished and its work is saved ({saved}), but the final report "
                            f"failed: {type(error).__name__}: {error}") from error
    report["encoder"] = str(encoder_dir)
    if trainer.is_global_zero:
        write_text_atomic(output_dir / "metrics.json", json.dumps(report, indent=2))
        try:  # (after metrics.json: the card shows them; before the artifact: it holds the card)
            write_card(encoder_dir, run_dir=output_dir)
        except Exception as error:  # the run's work is saved: a card can be written by mmae-export
            log.warning("the model card %s was not written (%s: %s); mmae-export %s writes it",
                        encoder_dir / "README.md", type(error).__name__, error, output_dir)
        log_encoder_artifact(trainer.loggers, encoder_dir, report)
    return report, {"trainer": trainer, "module": module, "datamodule": datamodule,
                    "output_dir": output_dir}


def _report(trainer: pl.Trainer, module: AutoencoderModule, datamodule: pl.LightningDataModule,
            best: str) -> dict[str, Any]:
    """The final validation of the module's (best) weights, with the run's facts."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ITERABLE_LENGTH_WARNING)
        results = trainer.validate(module, datamodule=datamodule, verbose=False)
    metrics = {name: float(value) for name, value in results[0].items()}
    return {
        "mmae_version": __version__,
        "rows": _rows(datamodule),
        "skipped_rows": {split: len(getattr(data, "skipped", []))
                         for split, data in datamodule.datasets.items()},
        "epochs": trainer.current_epoch,
        "labels": label_map.to_json() if (label_map := datamodule.label_map) else None,
        "nonfinite_skipped": module.nonfinite.skipped,
        "best_checkpoint": best,
        "metrics": metrics,
        "imputation": imputation_summary(metrics, module.model.modalities),
    }


def _rows(datamodule: pl.LightningDataModule) -> dict[str, int]:
    """Samples per split the run read (the model card's training data)."""
    size = getattr(datamodule, "split_size", None)
    rows = {}
    for split, data in datamodule.datasets.items():
        try:
            rows[split] = int(size(split)) if size else len(data)
        except TypeError:  # a stream of unknown length
            continue
    return rows


def format_parameters(model: MultimodalAutoencoder) -> str:
    """Parameters (trainable or frozen) per part: what each modality costs."""
    rows = parameter_counts(model)
    width = max(len(name) for name in rows)
    lines = [f"{'part':<{width}}{'encoder':>12}{'decoder':>12}"]
    for name, (encoder, decoder) in rows.items():
        lines.append(f"{name:<{width}}{encoder:>12,}{decoder:>12,}")
    parameters = list(model.parameters())
    trainable = sum(p.numel() for p in parameters if p.requires_grad)
    total = sum(p.numel() for p in parameters)
    size = sum(p.numel() * p.element_size() for p in parameters) / 2**20
    lines.append(f"trainable {trainable:,} of {total:,} ({size:.1f} MiB)")
    return "\n".join(lines)


def _explicit_output_dir(hydra_cfg: DictConfig) -> bool:
    return any(o.lstrip("+").startswith("paths.output_dir=") for o in hydra_cfg.overrides.task)


def _check_external_launch(hydra_cfg: DictConfig) -> None:
    """torchrun and `srun mmae-train` start every rank themselves: each composes its own
    config, so a time-stamped default output dir could differ between ranks. (A sweep's
    launcher, e.g. submitit, composes once and hands every rank the same config.)"""
    if hydra_cfg.mode == RunMode.MULTIRUN:
        return
    external = "TORCHELASTIC_RUN_ID" in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) > 1
    if external and not _explicit_output_dir(hydra_cfg):
        raise ConfigError("under torchrun or SLURM every process composes its own config; pass "
                          "paths.output_dir=DIR, the same for every process (e.g. runs/$SLURM_JOB_ID)")


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()

    def job() -> tuple[dict[str, Any], dict[str, Any]]:
        _check_external_launch(hydra_cfg)
        with open_dict(cfg):
            cfg.paths.output_dir = hydra_cfg.runtime.output_dir
        return train(cfg, multirun=hydra_cfg.mode == RunMode.MULTIRUN)

    try:
        # In a sweep, a point's error is the point's: Hydra records it and goes on with the rest.
        report, objects = job() if hydra_cfg.mode == RunMode.MULTIRUN else run_command("mmae-train", job)
    except Interrupted as interrupted:
        sys.exit(_interrupted_message(interrupted, hydra_cfg))
    if objects["trainer"].is_global_zero:
        print(format_imputation(report["imputation"]))
        print(f"mmae-train: outputs in {objects['output_dir']} "
              "(checkpoints/, encoder/, metrics.json, config.yaml)")


def _interrupted_message(interrupted: Interrupted, hydra_cfg: DictConfig) -> int:
    """Say where an interrupted run stopped and the command that resumes it; the exit code."""
    output_dir = hydra_cfg.runtime.output_dir
    kept = [o for o in hydra_cfg.overrides.task
            if o.lstrip("+").split("=")[0] not in ("paths.output_dir", "ckpt_path")]
    resume = shlex.join(["mmae-train", *kept, f"paths.output_dir={output_dir}", "ckpt_path=last"])
    name = signal.Signals(interrupted.signum).name
    if interrupted.checkpoint:
        where = (f"saved at epoch {interrupted.epoch}, step {interrupted.step} in {interrupted.checkpoint}; "
                 "nothing was exported")
    else:
        where = "no training step was lost (the run's checkpoints are as they were)"
    print(f"mmae-train: interrupted by {name}: {where}. Resume with:\n  {resume}", file=sys.stderr)
    return interrupted.exit_code


def _default_trainer(overrides: list[str]) -> list[str]:
    """`trainer=gpu` when a GPU is visible and the command line chose no trainer."""
    chose = any(o.lstrip("+~").split("=")[0] == "trainer" for o in overrides)
    return [] if chose or not torch.cuda.is_available() else ["trainer=gpu"]


def _validate_overrides(overrides: list[str]) -> None:
    """Compose and validate once before Hydra starts, so that a bad config leaves no run
    directory behind and an override of a key that does not exist (`model.latnt_dim=3`, which
    Hydra refuses naming only the key) lists the valid keys. Any other composition problem,
    sweeps (-m), Hydra's flags and `hydra.*` overrides are left to Hydra (`_hydra_main`
    validates each job)."""
    if any(o.startswith(("-", "hydra.", "+hydra.")) and not o.lstrip("+").startswith("hydra.searchpath=")
           for o in overrides):
        return  # (hydra.run.dir sets paths.output_dir, which composing here cannot see)
    try:
        cfg = compose_config("train", overrides)
    except ConfigError:
        raise
    except Exception:  # Hydra reports it as usual
        return
    try:
        output_dir = Path(cfg.paths.output_dir)
    except Exception:  # an interpolation only Hydra's run resolves: `train` checks it then
        return
    # (before Hydra writes its .hydra/ files into a directory that holds a run)
    check_fresh_output_dir(output_dir, cfg.get("ckpt_path"))


def main() -> None:
    """Console entry point of `mmae-train`."""
    quiet_lightning()
    def check() -> None:
        sys.argv[1:] = renamed_overrides(sys.argv[1:])
        check_group_overrides(sys.argv[1:])
        sys.argv += _default_trainer(sys.argv[1:])
        _validate_overrides(sys.argv[1:])

    run_command("mmae-train", check)
    _hydra_main()


if __name__ == "__main__":
    main()
