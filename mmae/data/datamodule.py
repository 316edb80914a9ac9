"""The LightningDataModule: builds the train/val/test datasets and their loaders."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sized

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from mmae.errors import ConfigError
from mmae.modalities.base import Modality


class EpochRandomSampler(RandomSampler):
    """A fresh permutation each epoch, drawn from `(seed, epoch)` alone.

    The order never depends on the global random state, so a run resumed at epoch k sees
    epoch k's order exactly. Being a `RandomSampler`, Lightning swaps it for its seeded
    `DistributedSampler` under DDP.
    """

    def __init__(self, data_source: Sized, seed: int = 0):
        super().__init__(data_source)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()


class MultimodalDataModule(pl.LightningDataModule):
    """Wraps any dataset factory called as `dataset(split=..., modalities=...)`.

    Loaders draw their randomness (shuffle order, worker seeds) from `seed`, never from the
    global generator that training steps use, so resuming reproduces an uninterrupted run.
    """

    def __init__(self, dataset: Callable[..., Dataset], modalities: Mapping[str, Modality],
                 batch_size: int = 128, num_workers: int = 0, pin_memory: bool = False,
                 collate_fn: Callable | None = None, seed: int = 0):
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
        self.seed = seed
        self.datasets: dict[str, Dataset] = {}

    def dataset(self, split: str) -> Dataset:
        """The dataset of one split, built once."""
        if split not in self.datasets:
            self.datasets[split] = self.dataset_factory(split=split, modalities=self.modalities)
        return self.datasets[split]

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = self.dataset(split)
        return DataLoader(dataset, batch_size=self.batch_size,
                          sampler=EpochRandomSampler(dataset, self.seed) if shuffle else None,
                          num_workers=self.num_workers, pin_memory=self.pin_memory,
                          persistent_workers=self.num_workers > 0, collate_fn=self.collate_fn,
                          generator=torch.Generator().manual_seed(self.seed))

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
