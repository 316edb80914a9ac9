"""A callback that appends the sample ids (`batch.index`) of every training batch to a file,
one line per batch: `rank epoch id id ...`, so a test can see what each process read."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl


class RecordIds(pl.Callback):
    def __init__(self, path: str):
        self.path = Path(path)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        ids = " ".join(str(i) for i in batch.index.tolist())
        with self.path.open("a") as handle:
            handle.write(f"{trainer.global_rank} {trainer.current_epoch} {ids}\n")

