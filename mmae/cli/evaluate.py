"""`mmae-eval run=DIR [task=...]`: probes, imputation, anomaly scores and denoising of a trained run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from mmae.analysis.anomaly import evaluate_anomalies, format_anomaly_results
from mmae.analysis.evaluate import (
    TASKS,
    denoising_errors,
    evaluate,
    format_denoising,
    format_results,
    save_denoised,
)
from mmae.artifacts.atomic import write_text_atomic
from mmae.artifacts.export import load_checkpoint_model, load_encoder
from mmae.cli.runner import run_command
from mmae.config.build import build
from mmae.config.compose import compose_config
from mmae.config.schema import validate_config
from mmae.core.errors import ConfigError


def main(argv: list[str] | None = None) -> None:
    """`mmae-eval run=DIR [task=probe|anomaly|denoise] [data=... data.path=...] [output=FILE]`.

    task=probe (default): linear probes and imputation; task=anomaly: anomaly scores from
    reconstruction errors, AUROC / AP where the data marks anomalies; task=denoise: error to
    the clean test inputs before and after denoising inputs with Gaussian noise (noise_std).

    `run=DIR` is an mmae-train output directory: its encoder/, checkpoints/best.ckpt and, unless
    data is overridden, the data of its config.yaml. Or give `encoder=DIR` (probes only) and
    optionally `checkpoint=FILE` (imputation).
    """
    overrides = sys.argv[1:] if argv is None else argv
    run_command("mmae-eval", lambda: _evaluate(overrides))


def _evaluate(overrides: list[str]) -> None:
    # validated below, once `run=DIR` has lent its data config
    cfg = compose_config("evaluate", overrides, validate=False)
    run = Path(cfg.run) if cfg.run else None
    switches_data = any(o.startswith(("data=", "+data=")) for o in overrides)
    if run and (run / "config.yaml").is_file() and not switches_data:
        # Evaluate on the data the run trained on, with this command's data.* overrides on top.
        try:
            trained = OmegaConf.load(run / "config.yaml")
        except yaml.YAMLError as error:  # mmae-train writes it atomically: damaged since
            raise ConfigError(f"{run / 'config.yaml'} is truncated or corrupt: "
                              f"{' '.join(str(error).split())}") from None
        for override in overrides:
            key, _, value = override.lstrip("+").partition("=")
            if key.startswith("data."):
                OmegaConf.update(trained, key, yaml.safe_load(value), force_add=True)
        cfg.data = trained.data
    validate_config(cfg, "evaluate")
    encoder_dir = Path(cfg.encoder) if cfg.encoder else (run / "encoder" if run else None)
    checkpoint = Path(cfg.checkpoint) if cfg.checkpoint else (
        run / "checkpoints" / "best.ckpt" if run else None)
    if cfg.task not in TASKS:
        raise ConfigError(f"unknown task '{cfg.task}'; available: {', '.join(TASKS)}")
    if cfg.task in ("anomaly", "denoise"):
        results, text = _reconstruction_task(cfg.task, checkpoint, cfg)
    else:
        if encoder_dir is None:
            raise ConfigError("give run=DIR (an mmae-train output) or encoder=DIR")
        encoder = load_encoder(encoder_dir, trust_code=cfg.trust_code)
        model = load_checkpoint_model(checkpoint, trust_code=cfg.trust_code) if checkpoint else None
        datamodule = build(cfg.data, _partial_=True)(modalities=encoder.modalities)
        picture = _output_path(cfg, run, "eval.json")
        picture = picture.with_name("latent_map.png") if picture else None
        results = evaluate(encoder, datamodule, model, latent_map=picture, projection=cfg.projection)
        if picture:
            results["latent_map"] = str(picture)
        text = format_results(results)
    print(text)
    output = _output_path(cfg, run, {"anomaly": "anomaly.json", "denoise": "denoise.json"}.get(
        cfg.task, "eval.json"))
    if output is not None:
        write_text_atomic(output, json.dumps(results, indent=2))
        print(f"mmae-eval: results in {output}")


def _output_path(cfg, run: Path | None, default_name: str) -> Path | None:
    return Path(cfg.output) if cfg.output else (run / default_name if run else None)


def _reconstruction_task(task: str, checkpoint: Path | None, cfg) -> tuple[dict, str]:
    """task=anomaly or task=denoise: both need the whole model (the decoder too)."""
    if checkpoint is None:
        raise ConfigError(f"task={task} needs the decoder: give run=DIR or checkpoint=FILE")
    model = load_checkpoint_model(checkpoint, trust_code=cfg.trust_code)
    datamodule = build(cfg.data, _partial_=True)(modalities=model.modalities)
    if task == "anomaly":
        results = evaluate_anomalies(model, datamodule)
        return results, format_anomaly_results(results)
    results = denoising_errors(model, datamodule.test_dataloader(), cfg.noise_std, cfg.seed)
    text = format_denoising(results, cfg.noise_std)
    if cfg.cleaned:
        path = save_denoised(model, datamodule.test_dataloader(), cfg.noise_std, Path(cfg.cleaned), cfg.seed)
        results["cleaned"] = str(path)
        text += f"\ndenoised test inputs in {path}"
    return results, text


if __name__ == "__main__":
    main()
