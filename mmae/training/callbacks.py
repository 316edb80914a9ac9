"""Lightning callbacks of the training job."""

from __future__ import annotations

import math
import time
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.trainer.states import TrainerFn

from mmae.core.errors import ConfigError
from mmae.evaluation import media
from mmae.training.tracking import recording, wandb_loggers


class TrainingClock(pl.Callback):
    """Logs `time/train_s`, the wall seconds spent training so far (validation passes included,
    start-up and the final report not), with every validation: the x-axis of time-to-accuracy.

    The count is part of the checkpoint, so a resumed run goes on from where it stopped.
    """

    def __init__(self) -> None:
        self.seconds = 0.0  # before the current stretch of training
        self._since: float | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._since = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds, self._since = self.elapsed(), None

    def elapsed(self) -> float:
        return self.seconds + (0.0 if self._since is None else time.perf_counter() - self._since)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == TrainerFn.FITTING:
            pl_module.log("time/train_s", self.elapsed(), sync_dist=True)

    def state_dict(self) -> dict[str, float]:
        return {"seconds": self.elapsed()}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self.seconds = float(state_dict.get("seconds", 0.0))


class ReconstructionMedia(pl.Callback):
    """Logs what the autoencoder does to a fixed set of validation samples to W&B, every
    `every_n_epochs` epochs and at the last one.

    Per modality: images as one grid (rows: input, reconstruction from all modalities,
    imputation from the others), a few audio clips of the same three (Griffin-Lim with
    `griffin_lim_iters` iterations), or a table of decoded text; vectors and tables have
    nothing to show. Plus a PCA map of the latent codes of up to `max_points` validation
    samples, coloured by their label where the data has one.

    Without a WandbLogger (or with WANDB_MODE=disabled) it does nothing, not even read a batch.
    Only global rank zero draws.
    """

    #: Audio samples per modality: each is three clips (input, from all, from the others).
    audio_samples = 2

    def __init__(self, every_n_epochs: int = 1, num_samples: int = 8, max_points: int = 512,
                 griffin_lim_iters: int = 32):
        if every_n_epochs < 1 or num_samples < 1 or max_points < 1 or griffin_lim_iters < 1:
            raise ConfigError("ReconstructionMedia: every_n_epochs, num_samples, max_points and "
                              "griffin_lim_iters must be positive")
        self.every_n_epochs = every_n_epochs
        self.num_samples = num_samples
        self.max_points = max_points
        self.griffin_lim_iters = griffin_lim_iters
        self._batch: dict | None = None  # the samples every epoch shows, read once
        self._drawn_epoch: int | None = None

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._due(trainer):
            self._draw(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Training stopped before its last epoch (early stopping): show where it ended."""
        final = trainer.current_epoch - 1
        if trainer.is_global_zero and final >= 0 and self._drawn_epoch not in (None, final):
            self._draw(trainer, pl_module)

    def _draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loggers = wandb_loggers(trainer.loggers)
        if not loggers or not (loggers := recording(loggers)):
            return
        # Griffin-Lim draws its initial phases: keep the training's random streams untouched.
        with torch.random.fork_rng(devices=[]):
            self._log(trainer, pl_module, loggers)
        self._drawn_epoch = trainer.current_epoch

    def _due(self, trainer: pl.Trainer) -> bool:
        if trainer.sanity_checking or not trainer.is_global_zero or trainer.state.fn != TrainerFn.FITTING:
            return False
        epoch = trainer.current_epoch + 1
        last = trainer.max_epochs is not None and trainer.max_epochs > 0 and epoch >= trainer.max_epochs
        return last or epoch % self.every_n_epochs == 0

    def _samples(self, trainer: pl.Trainer) -> dict | None:
        if self._batch is None:
            loaders = trainer.val_dataloaders
            loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
            if loader is not None:
                self._batch = media.gather(loader, max(self.num_samples, self.max_points))
        return self._batch

    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loggers: list[WandbLogger]) -> None:
        batch = self._samples(trainer)
        if batch is None:
            return
        model = pl_module.model
        with torch.no_grad():
            features, present, raw = media.features_of(model.encoder, batch)
        step = trainer.global_step
        for name, modality in model.modalities.items():
            if modality.preview_media is None:
                continue  # vectors and tables: nothing to look at or listen to
            rows = media.cross_reconstructions(model, features, present, name, self.num_samples, raw)
            if rows is None:
                continue
            if modality.preview_media == "audio":
                clips = {row: modality.preview(x[: self.audio_samples], n_iter=self.griffin_lim_iters)
                         for row, x in rows.items()}
                self._log_audio(loggers, name, clips, modality.sample_rate, step)
                continue
            previews = {row: modality.preview(x) for row, x in rows.items()}
            log = self._log_images if modality.preview_media == "image" else self._log_text
            log(loggers, name, previews, step)
        self._log_latent_map(loggers, model, features, present, raw, batch.labels,
                             trainer.current_epoch, step)

    @staticmethod
    def _log_images(loggers: list[WandbLogger], name: str, previews: dict[str, list], step: int) -> None:
        height, width = previews[media.ROWS[0]][0].shape[:2]
        grid = media.image_grid(list(previews.values()), scale=max(1, math.ceil(64 / min(height, width))))
        caption = f"{name}, rows: {', '.join(previews)}"
        for logger in loggers:
            logger.log_image(key=f"media/{name}/reconstruction", images=[grid], caption=[caption], step=step)

    @staticmethod
    def _log_audio(loggers: list[WandbLogger], name: str, clips: dict[str, list], sample_rate: int,
                   step: int) -> None:
        audios, captions = [], []
        for i in range(len(clips[media.ROWS[0]])):
            for row, waves in clips.items():
                audios.append(waves[i])
                captions.append(f"sample {i}: {row}")
        for logger in loggers:
            logger.log_audio(key=f"media/{name}/audio", audios=audios, caption=captions,
                             sample_rate=[sample_rate] * len(audios), step=step)

    @staticmethod
    def _log_text(loggers: list[WandbLogger], name: str, previews: dict[str, list], step: int) -> None:
        data = [list(texts) for texts in zip(*previews.values(), strict=True)]
        for logger in loggers:
            logger.log_text(key=f"media/{name}/text", columns=list(previews), data=data, step=step)

    def _log_latent_map(self, loggers: list[WandbLogger], model: Any, features: dict, present: dict,
                        raw: dict, labels: torch.Tensor | None, epoch: int, step: int) -> None:
        from mmae.evaluation.latent_map import project_2d, scatter_image

        n = self.max_points
        codes = media.latent_codes(model, {m: x[:n] for m, x in features.items()},
                                   {m: p[:n] for m, p in present.items()}, {m: x[:n] for m, x in raw.items()})
        if len(codes) < 2:
            return
        labels = None if labels is None else labels[:n].numpy()
        image = scatter_image(project_2d(codes), labels, title=f"latent codes (PCA), epoch {epoch}")
        for logger in loggers:
            logger.log_image(key="media/latent_map", images=[image], step=step,
                             caption=[f"PCA of {len(codes)} validation codes"])
