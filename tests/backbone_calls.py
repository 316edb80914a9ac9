"""A callback counting the forward passes of every pretrained backbone, epoch by epoch."""

import pytorch_lightning as pl


class BackboneCalls(pl.Callback):
    """`per_epoch[i]`: backbone forwards from the start of epoch i (its training and its
    validation) to the start of the next; the sanity check counts towards epoch 0."""

    def __init__(self):
        self.per_epoch: list[int] = []
        self._calls = 0

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for encoder in pl_module.model.encoder.encoders.values():
            if hasattr(encoder, "backbone"):
                encoder.backbone.register_forward_hook(self._count)

    def _count(self, *_) -> None:
        self._calls += 1

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch > 0:
            self.per_epoch.append(self._calls)
            self._calls = 0

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.per_epoch.append(self._calls)
