"""LightningDataModules: the train/val/test datasets of a dataset factory (the synthetic
data), of a manifest or of shards, and their loaders."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence, Sized

import pytorch_lightning as pl
import torch
from litdata import StreamingDataLoader, StreamingDataset
from torch.utils.data import DataLoader, Dataset, RandomSampler

from mmae.core.errors import ConfigError, DataError
from mmae.core.modality import Modality
from mmae.data.batch import check_modality_name, collate, collate_counting_skipped
from mmae.data.labels import LabelMap
from mmae.data.manifest import ManifestDataset, OnError, fit_modalities
from mmae.data.shards import ShardSet, collate_items
from mmae.data.statistics import fit_feature_statistics

log = logging.getLogger(__name__)

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


class ResumableLoader(DataLoader):
    """The training loader, whose place within an epoch is part of every checkpoint.

    `position()` says how many batches of the current epoch were trained on. A run resumed
    from a checkpoint written mid-epoch (an interrupted run) is handed that number back and
    skips as many batches of the epoch's order, so it trains on exactly the batches the
    uninterrupted run would have. The skipped batches are read and dropped, not trained on:
    with the default in-memory cache that costs a fraction of a second. (Lightning calls
    `state_dict` when it saves a checkpoint and `load_state_dict` only when it resumes
    within an epoch.)"""

    def __init__(self, *args, position: Callable[[], int], **kwargs):
        super().__init__(*args, **kwargs)
        self.position = position
        self._skip = 0

    def state_dict(self) -> dict[str, int]:
        return {"batches": int(self.position())}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._skip = int(state.get("batches", 0))

    def __iter__(self):
        iterator = super().__iter__()
        skip, self._skip = self._skip, 0
        return _skipping(iterator, skip) if skip else iterator


def _skipping(iterator: Iterator, count: int) -> Iterator:
    """`iterator` after its first `count` items, skipped on the first `next` (not before: Lightning
    creates a resumed epoch's iterator before it sets the sampler's epoch)."""
    for _ in range(count):
        next(iterator)
    yield from iterator


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
        for name in modalities:
            check_modality_name(name)
        self.dataset_factory = dataset
        self.modalities = dict(modalities)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.collate_fn = collate_fn or collate
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

    def split_size(self, split: str) -> int:
        """The distinct samples a split can yield, whichever of them this process reads (what
        the per-sample caches hold)."""
        return len(self.dataset(split))

    @property
    def label_map(self) -> LabelMap | None:
        """The data's labels (class index -> the label as given), None without labels."""
        return getattr(self.dataset("train"), "label_map", None)

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
        stage = getattr(stage, "value", stage)  # (Lightning passes its TrainerFn enum)
        for split in STAGE_SPLITS.get(stage, ()):
            self.require_split(split, f"the {stage} stage")

    def require_split(self, split: str, reader: str) -> None:
        """Refuse an empty split that `reader` (a stage, a command) needs, naming it."""
        if len(self.ready(split)) == 0:
            raise DataError(f"{self._describe(split)}: the {split} split is empty, and {reader} "
                            f"needs it" + EMPTY_SPLIT_HINTS.get(split, ""))

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = self.ready(split)
        workers = self.loader_workers(dataset)
        options = {"batch_size": self.batch_size, "num_workers": workers, "pin_memory": self.pin_memory,
                   "persistent_workers": workers > 0, "collate_fn": self.collate_fn,
                   "generator": torch.Generator().manual_seed(self.seed)}
        if not shuffle:
            return DataLoader(dataset, **options)
        trainer = self.trainer
        return ResumableLoader(dataset, sampler=EpochRandomSampler(dataset, self.seed), **options,
                               position=lambda: trainer.fit_loop.epoch_loop.batch_progress.current.processed
                               if trainer else 0)

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
                         collate_fn=collate_counting_skipped, seed=seed)

    def fit_statistics(self) -> None:
        train = self.dataset("train")
        fit_modalities(train)
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


class StreamDataModule(MultimodalDataModule):
    """`data=stream data.path=DIR_OR_URL`: the splits of a shard directory (`mmae-shard`),
    streamed by LitData. The modalities must be the shards' (`ShardSet.adopt`); they take the
    statistics stored with the shards, so nothing is scanned before training. Under DDP and
    with workers every reader takes its own chunks; the training loader's position is part of
    each checkpoint, so `ckpt_path=last` goes on from where the checkpoint was written."""

    def __init__(self, path: str, modalities: Mapping[str, Modality], batch_size: int = 32,
                 num_workers: int = 2, pin_memory: bool = False, cache_dir: str | None = None,
                 max_cache_size: str = "50GB", storage_options: Mapping | None = None, seed: int = 0):
        self.shards = ShardSet(path, cache_dir, max_cache_size, storage_options)
        self.shards.adopt(modalities)  # (before super().__init__, which fits what is still unfitted)

        def dataset(split: str, modalities: Mapping[str, Modality]) -> Dataset:
            return self.shards.split(split, shuffle=split == "train", seed=seed)

        super().__init__(dataset, modalities, batch_size, num_workers, pin_memory, seed=seed)

    def fit_statistics(self) -> None:
        """Statistics the shards could not lend (other log-mel settings, say): one pass over
        the training shards, with a dataset that is not kept. (LitData reads the DDP world
        when a dataset is built: the ones kept are built once the processes are up.)"""
        if not any(m.needs_statistics for m in self.modalities.values()):
            return
        names = [n for n, m in self.modalities.items() if m.needs_statistics]
        log.info("%s: fitting the statistics of %s from the training shards (the stored ones were "
                 "fitted on other features)", self.shards.location, ", ".join(names))
        train = self.shards.split("train")
        loader = DataLoader(train, batch_size=256, num_workers=self.num_workers)
        fit_feature_statistics(self.modalities, loader, where=self._describe("train"))

    def _describe(self, split: str) -> str:
        return f"{self.shards.location} ({split})"

    def split_size(self, split: str) -> int:
        # Under DDP a streamed split's length is this rank's share, and which samples make the
        # share changes with the epoch: the split's whole count bounds what a rank may see.
        return int(self.shards.meta["splits"].get(split, {}).get("samples", 0))

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = self.ready(split)
        if not isinstance(dataset, StreamingDataset):  # an empty split
            return DataLoader(dataset, batch_size=self.batch_size, collate_fn=collate_items)
        if not shuffle:
            # Evaluation needs no resumable state, and LitData parts a split among ranks and
            # workers by whole batches of its loader: a small validation split would leave a
            # rank without any. Parted by sample, every rank reads its share.
            dataset.set_batch_size(1)
            dataset.set_num_workers(self.num_workers)
            return DataLoader(dataset, batch_size=self.batch_size, num_workers=self.num_workers,
                              pin_memory=self.pin_memory, persistent_workers=self.num_workers > 0,
                              collate_fn=collate_items)
        trainer = self.trainer
        # (the epoch Lightning hands samplers' `set_epoch`: right while a resumed epoch starts,
        # when `trainer.current_epoch` still says the checkpoint's)
        return TrainerEpochLoader(dataset, epoch=lambda: trainer.fit_loop.epoch_progress.current.processed
                                  if trainer else None,
                                  batch_size=self.batch_size, num_workers=self.num_workers,
                                  pin_memory=self.pin_memory, collate_fn=collate_items,
                                  # (workers kept: LitData hands them each epoch's order)
                                  persistent_workers=self.num_workers > 0,
                                  # (else starting an iterator draws from the global generator)
                                  generator=torch.Generator().manual_seed(self.seed))


class TrainerEpochLoader(StreamingDataLoader):
    """LitData's loader, drawing each epoch's order from the trainer's epoch (`epoch()`).

    LitData counts the epochs it was iterated itself, and Lightning hands a loader its
    checkpointed state only when resuming within an epoch: a run resumed at epoch k from an
    epoch-end checkpoint would read epoch 0's order again. Within an epoch, LitData's own
    restored state goes on where it stopped."""

    def __init__(self, *args, epoch: Callable[[], int | None], **kwargs):
        super().__init__(*args, **kwargs)
        self._trainer_epoch = epoch

    def __iter__(self):
        epoch = self._trainer_epoch()
        if epoch is not None and not self.restore:
            self.current_epoch = epoch  # (LitData adds one as the epoch starts)
        for batch in super().__iter__():
            # A restored state is spent once its epoch has started: LitData clears it only when an
            # epoch is read to the end, and Lightning stops at the epoch's last batch, so the next
            # epoch would replay the restored one.
            self.restore = False
            yield batch
