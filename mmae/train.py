"""The main job: compose the config, build, fit, validate the best checkpoint, report.

`mmae-train [overrides]` == `python -m mmae.train [overrides]`. `train(cfg)` is the same job
for a config composed elsewhere (tests, notebooks) and returns `(metrics, objects)`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from mmae.config import CONFIG_DIR, build, build_modalities, check_group_overrides
from mmae.errors import MMAEError
from mmae.export import export_encoder
from mmae.io import write_text_atomic
from mmae.lit import AutoencoderModule
from mmae.metrics import imputation_summary
from mmae.version import __version__


def _build_all(group: DictConfig | None) -> list:
    return [build(node) for node in (group or {}).values() if node is not None]


def train(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train on `cfg` and write checkpoints/, metrics.json and config.yaml to the output dir."""
    output_dir = Path(cfg.paths.output_dir).resolve()
    pl.seed_everything(cfg.seed, workers=True)

    modalities = build_modalities(cfg.modality)
    datamodule = build(cfg.data, _partial_=True)(modalities=modalities)
    model = build(cfg.model, _partial_=True)(modalities=modalities, fusion=build(cfg.fusion))
    module = AutoencoderModule(
        model=model,
        objective=build(cfg.objective),
        optimizer=build(cfg.optimizer),
        scheduler=build(cfg.scheduler) if cfg.get("scheduler") else None,
        corruption=build(cfg.corruption),
        config=OmegaConf.to_container(cfg, resolve=True),
    )
    loggers = _build_all(cfg.get("logger"))
    trainer: pl.Trainer = build(cfg.trainer, callbacks=_build_all(cfg.get("callbacks")),
                                logger=loggers or False)
    if trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, output_dir / "config.yaml", resolve=True)

    trainer.fit(module, datamodule=datamodule)
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    results = trainer.validate(module, datamodule=datamodule, ckpt_path=best or None, verbose=False)
    metrics = {name: float(value) for name, value in results[0].items()}
    report = {
        "mmae_version": __version__,
        "skipped_rows": {split: len(getattr(data, "skipped", []))
                         for split, data in datamodule.datasets.items()},
        "epochs": trainer.current_epoch,
        "best_checkpoint": best,
        "metrics": metrics,
        "imputation": imputation_summary(metrics, modalities),
    }
    if trainer.is_global_zero:
        report["encoder"] = str(export_encoder(module.model, output_dir / "encoder"))
        write_text_atomic(output_dir / "metrics.json", json.dumps(report, indent=2))
    return report, {"trainer": trainer, "module": module, "datamodule": datamodule,
                    "output_dir": output_dir}


def format_imputation(report: dict) -> str:
    """A small table: can each modality be reconstructed from the others?"""
    lines = [f"{'modality':<12}{'from all':>12}{'from others':>14}{'mean baseline':>15}{'gain':>8}"]
    for name, row in report["imputation"].items():
        cells = [row.get(k) for k in ("from_all", "from_others", "baseline_mean")]
        text = "".join(f"{c:>{w}.4f}" if c is not None else f"{'-':>{w}}"
                       for c, w in zip(cells, (12, 14, 15), strict=True))
        gain = row.get("gain_over_baseline")
        lines.append(f"{name:<12}{text}{f'{gain:.0%}' if gain is not None else '-':>8}")
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> None:
    with open_dict(cfg):
        cfg.paths.output_dir = HydraConfig.get().runtime.output_dir
    report, objects = train(cfg)
    if objects["trainer"].is_global_zero:
        print(format_imputation(report))
        print(f"mmae-train: outputs in {objects['output_dir']} "
              "(checkpoints/, encoder/, metrics.json, config.yaml)")


def main() -> None:
    """Console entry point of `mmae-train`."""
    try:
        check_group_overrides(sys.argv[1:])
    except MMAEError as error:
        sys.exit(f"mmae-train: {error}")
    _hydra_main()


if __name__ == "__main__":
    main()
