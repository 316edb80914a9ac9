"""LightningDataModules: the train/val/test datasets of a dataset factory (the synthetic
data) or of a manifest, and their loaders."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence, Sized

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from mmae.core.errors import ConfigError, DataError
from mmae.core.modality import Modality
from mmae.data.manifest import ManifestDataset, OnError, collate_skipping
from mmae.data.statistics import fit_feature_statistics

#: The splits each Lightning stage reads.
STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
#: What to do about an empty split, said when a stage needs it.
EMPTY_SPLIT_HINTS = {
    "val": (" (checkpoints keep the best validation loss): give some rows split=val, or set "
            "data.val_fraction > 0 to carve them from train"),
    "train": ": give some rows split=train (or leave the split column out for a random split)",
    "test": ": give some rows split=test (or leave the split column out for a random split)",
}


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

    As soon as it is built, it fits the modalities' training-split statistics (feature
    standardisation; see `fit_statistics`), so the model built after it carries them.
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
        self.fit_statistics()

    def dataset(self, split: str) -> Dataset:
        """The dataset of one split, built once."""
        if split not in self.datasets:
            self.datasets[split] = self.dataset_factory(split=split, modalities=self.modalities)
        return self.datasets[split]

    def ready(self, split: str) -> Dataset:
        """The dataset of one split, ready to be read (subclasses decode or cache it here)."""
        return self.dataset(split)

    def loader_workers(self, dataset: Dataset) -> int:
        return self.num_workers

    def fit_statistics(self) -> None:
        """Fit every modality's training-split statistics that were not given
        (`Modality.needs_statistics`) from one pass over the training split."""
        if not any(m.needs_statistics for m in self.modalities.values()):
            return
        train = self.ready("train")
        loader = DataLoader(train, batch_size=256, num_workers=self.loader_workers(train),
                            collate_fn=self.collate_fn)
        fit_feature_statistics(self.modalities, loader, where=self._describe("train"))

    def _describe(self, split: str) -> str:
        data = self.datasets.get(split)
        path = getattr(data, "path", None)
        return f"{path.name} ({split})" if path is not None else f"the {split} split"

    def setup(self, stage: str) -> None:
        """Refuse, before any work, a split that `stage` reads and that has no sample."""
        for split in STAGE_SPLITS.get(stage, ()):
            if len(self.ready(split)) == 0:
                raise DataError(f"{self._describe(split)}: the {split} split is empty, and the {stage} "
                                f"stage needs it" + EMPTY_SPLIT_HINTS.get(split, ""))

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = self.ready(split)
        workers = self.loader_workers(dataset)
        return DataLoader(dataset, batch_size=self.batch_size,
                          sampler=EpochRandomSampler(dataset, self.seed) if shuffle else None,
                          num_workers=workers, pin_memory=self.pin_memory,
                          persistent_workers=workers > 0, collate_fn=self.collate_fn,
                          generator=torch.Generator().manual_seed(self.seed))

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


class ManifestDataModule(MultimodalDataModule):
    """`data=manifest data.path=FILE`: splits of one manifest. As soon as it is built (before
    the model is), it decodes the training split once and fits the modalities' training-split
    statistics (tabular columns, feature standardisation)."""

    def __init__(self, path: str, modalities: Mapping[str, Modality], batch_size: int = 32,
                 num_workers: int = 2, pin_memory: bool = False, on_error: OnError = "raise",
                 split_fractions: Sequence[float] = (0.8, 0.1, 0.1), val_fraction: float = 0.1,
                 cache: bool = True, cache_dir: str | None = None, seed: int = 0):
        def dataset(split: str, modalities: Mapping[str, Modality]) -> ManifestDataset:
            return ManifestDataset(path, modalities, split, on_error, split_fractions, seed,
                                   val_fraction, cache, cache_dir)

        self.cache_dir = cache_dir  # (before super().__init__, which fits the statistics)
        super().__init__(dataset, modalities, batch_size, num_workers, pin_memory,
                         collate_fn=collate_skipping, seed=seed)

    def fit_statistics(self) -> None:
        train = self.dataset("train")
        if len(train) == 0:
            raise DataError(f"{train.path}: no usable training rows")
        for name, modality in self.modalities.items():
            try:
                modality.fit(train.cells(name))
            except (ConfigError, DataError) as error:  # e.g. no training row has the modality
                raise DataError(f"{train.path.name}: cannot fit modality '{name}' (columns "
                                f"{train.columns[name]}) on the training split: {error}") from None
        train.warm(self.num_workers)  # (tabular cells decode with the categories just fitted)
        super().fit_statistics()

    def ready(self, split: str) -> Dataset:
        """A split's dataset, decoded into its cache."""
        data = self.dataset(split)
        data.warm(self.num_workers)
        return data

    def loader_workers(self, dataset: Dataset) -> int:
        """No worker processes for a split decoded into memory: they would only add copies."""
        cache = getattr(dataset, "cache", None)
        return 0 if cache is not None and cache.in_memory and not cache.missing_rows() else self.num_workers
