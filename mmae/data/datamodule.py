"""The LightningDataModule: builds the train/val/test datasets and their loaders."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset

from mmae.errors import ConfigError
from mmae.modalities.base import Modality


class MultimodalDataModule(pl.LightningDataModule):
    """Wraps any dataset factory called as `dataset(split=..., modalities=...)`."""

    def __init__(self, dataset: Callable[..., Dataset], modalities: Mapping[str, Modality],
                 batch_size: int = 128, num_workers: int = 0, pin_memory: bool = False,
                 collate_fn: Callable | None = None):
        super().__init__()
        if batch_size <= 0 or num_workers < 0:
            raise ConfigError(f"data: batch_size must be > 0 and num_workers >= 0, "
                              f"got batch_size={batch_size}, num_workers={num_workers}")
        self.dataset_factory = dataset
        self.modalities = dict(modalities)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.collate_fn = collate_fn
        self.datasets: dict[str, Dataset] = {}

    def dataset(self, split: str) -> Dataset:
        """The dataset of one split, built once."""
        if split not in self.datasets:
            self.datasets[split] = self.dataset_factory(split=split, modalities=self.modalities)
        return self.datasets[split]

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(self.dataset(split), batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers, pin_memory=self.pin_memory,
                          persistent_workers=self.num_workers > 0, collate_fn=self.collate_fn)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
