"""Decoded samples in LitData shards, for corpora larger than a node's disk.

`write_shards` decodes a manifest once (the manifest's own loaders, checks and `on_error`)
and writes each split as a LitData dataset (`<dir>/train/`, `val/`, `test/`: chunk files and
an `index.json`), then `mmae-shards.json`: the mmae version and shard format, every
modality's settings with the statistics fitted while the training split was written (so a
huge corpus is never scanned twice), the label names, and per split the samples, bytes and
the rows skipped. That file is written last: a directory without it is an unfinished write.

`ShardSet` opens such a directory, locally or at an object-store URL (`s3://`, `gs://`,
`azure://`: LitData downloads chunks into a local cache as they are read), and `adopt`s a
configuration's modalities: the same names and kinds, decoded with the same settings, given
the stored statistics wherever the configuration gives none. Each split streams as a
`ShardDataset` whose items are laid out as a manifest's: modality tensors (zeros where
missing), `present`, `label`, `index` (the manifest row) and `anomaly` where marked.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from litdata import StreamingDataset
from litdata.streaming.writer import BinaryWriter
from torch.utils.data import Dataset

from mmae.artifacts.atomic import write_text_atomic
from mmae.core.errors import ConfigError, DataError
from mmae.core.modality import Modality
from mmae.core.registry import MODALITIES
from mmae.data.batch import SPLITS, Batch, collate, make_sample
from mmae.data.labels import LabelMap
from mmae.data.manifest import ManifestDataset
from mmae.data.statistics import FeatureStatistics
from mmae.version import __version__

#: Bumped whenever what a shard holds changes; other formats are refused, not guessed at.
SHARD_FORMAT = 1
META = "mmae-shards.json"
#: LitData's chunk size: large enough for object stores (one request per chunk), small
#: enough that every worker of every rank has several per epoch.
DEFAULT_CHUNK_BYTES = "64MB"
STATISTICS_BATCH = 256


def is_url(path: str) -> bool:
    """An object-store URL, or LitData's `local:/path`: a directory read as one (chunks copied
    into the cache as they are read: shards on a network filesystem, cached on a local disk)."""
    return "://" in str(path) or str(path).startswith("local:")


# -- writing -----------------------------------------------------------------------------------
@dataclass
class SplitWritten:
    samples: int = 0
    bytes: int = 0
    chunks: int = 0
    skipped: list[str] = field(default_factory=list)


def _item(sample: Mapping[str, Any], modalities: Iterable[str]) -> dict[str, Any]:
    """A manifest sample as a shard item: tensors for the modalities, plain values for the rest
    (a 0-d tensor costs a header per sample). Items keep the layout shards were first written
    in (the modalities beside `present`, `label`, `index`), so older shards still read."""
    item = {name: sample["inputs"][name] for name in modalities}
    item["present"] = {name: bool(sample["present"][name]) for name in modalities}
    item["label"], item["index"] = int(sample["label"]), int(sample["index"])
    if "anomaly" in sample["extras"]:
        item["anomaly"] = bool(sample["extras"]["anomaly"])
    return item


def _sample(item: Mapping[str, Any]) -> dict[str, Any]:
    """A shard item read back as a dataset sample (`make_sample`)."""
    extras = {"anomaly": torch.tensor(bool(item["anomaly"]))} if "anomaly" in item else {}
    present = {name: torch.tensor(bool(flag)) for name, flag in item["present"].items()}
    return make_sample({name: item[name] for name in present}, present, torch.tensor(int(item["label"])),
                       torch.tensor(int(item["index"])), **extras)


def collate_items(items: list[Mapping[str, Any]]) -> Batch | None:
    """The loaders' `collate_fn` for shards: items as written -> a `Batch`."""
    return collate([_sample(item) for item in items])


def _write_split(dataset: ManifestDataset, directory: Path, chunk_bytes: int | str, num_workers: int,
                 statistics: FeatureStatistics | None, order: list[int] | None) -> SplitWritten:
    names = list(dataset.modalities)
    written = SplitWritten()
    if len(dataset) == 0:
        written.skipped = list(dataset.skipped)
        return written
    writer = BinaryWriter(str(directory), chunk_bytes=chunk_bytes)
    pending: list[dict] = []
    for sample in dataset.decoded(num_workers, order):
        writer.add_item(written.samples, _item(sample, names))
        written.samples += 1
        if statistics is not None:
            pending.append(sample)
            if len(pending) == STATISTICS_BATCH:
                statistics.add(collate(pending))
                pending = []
    if statistics is not None and pending:
        statistics.add(collate(pending))
    if written.samples:
        writer.done()
        writer.merge()
        chunks = json.loads((directory / "index.json").read_text())["chunks"]
        written.chunks, written.bytes = len(chunks), sum(c["chunk_bytes"] for c in chunks)
    written.skipped = list(dataset.skipped)
    return written


def _check_chunk_bytes(value: int | str) -> None:
    """A size LitData reads: bytes, or a number with kb / mb / gb / tb (or k / m / g / t)."""
    if isinstance(value, int) and value > 0:
        return
    if not isinstance(value, str) or not re.fullmatch(r"\d+(\.\d+)?\s*([kmgt]b?|b)?", value.strip().lower()):
        raise ConfigError(f"chunk_bytes={value!r}: give a number of bytes or a size such as 64MB")


def _refuse_existing(output: Path) -> None:
    if (output / META).exists():
        raise ConfigError(f"output={output} holds shards already ({META}); remove it or choose "
                          "another output")
    if output.exists() and any(output.iterdir()):
        raise ConfigError(f"output={output} is not empty (an unfinished mmae-shard leaves no {META}: "
                          "remove it); choose a new directory for the shards")


def write_shards(datasets: Mapping[str, ManifestDataset], output: str | Path,
                 chunk_bytes: int | str = DEFAULT_CHUNK_BYTES, num_workers: int = 0, seed: int = 0) -> dict:
    """Write the splits of one manifest (`datasets[split]`, sharing fitted modalities) as shards
    under `output`, fitting the training split's feature statistics on the way; return what
    `mmae-shards.json` records.

    The training split is written in a seeded random order, so that every chunk is a random
    sample of it: streaming shuffles the chunks and the samples within one, and a manifest
    sorted by class or by source would otherwise give batches of one class. Evaluation
    splits keep the manifest's row order."""
    if is_url(str(output)):
        raise ConfigError(f"output={output}: shards are written to a local directory; copy it to "
                          "the object store afterwards (docs/scaling.md)")
    output = Path(output).expanduser()
    _check_chunk_bytes(chunk_bytes)
    _refuse_existing(output)
    output.mkdir(parents=True, exist_ok=True)
    train = datasets["train"]
    modalities = train.modalities
    statistics = FeatureStatistics(modalities)
    start = time.perf_counter()
    splits = {}
    for split in SPLITS:
        dataset = datasets[split]
        fitting, order = None, None
        if split == "train":
            fitting = statistics
            order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
        splits[split] = _write_split(dataset, output / split, chunk_bytes, num_workers, fitting, order)
    statistics.apply(where=f"{train.path.name} (train)")
    meta = {
        "mmae_version": __version__,
        "format": SHARD_FORMAT,
        "source": str(train.path),
        "seconds": round(time.perf_counter() - start, 1),
        "modalities": {name: describe_modality(m) for name, m in modalities.items()},
        "labels": train.label_map.to_json() if train.label_map else None,
        "splits": {split: {"samples": w.samples, "bytes": w.bytes, "chunks": w.chunks,
                           "skipped": len(w.skipped), "skipped_rows": w.skipped}
                   for split, w in splits.items()},
    }
    write_text_atomic(output / META, json.dumps(meta, indent=2))
    return meta


def describe_modality(modality: Modality) -> dict:
    return {"class": MODALITIES.reference(modality), "raw_shape": list(modality.raw_shape),
            "dtype": modality.dtype_kind, "decoding": modality.decoding_settings(),
            "config": modality.config()}


# -- reading -----------------------------------------------------------------------------------
class ShardDataset(StreamingDataset):
    """One split of a shard directory, streamed (`shuffle` re-orders chunks and samples every
    epoch from `seed`; under DDP and with workers each reader takes its own chunks)."""

    def __init__(self, location: str, skipped: list[str], shuffle: bool, seed: int,
                 cache_dir: str | None, max_cache_size: str, storage_options: dict | None):
        # drop_last: LitData's default for the training split (under DDP it drops what would
        # give ranks unequal step counts, which would hang the gradient all-reduce); never for
        # evaluation, where a rank may read fewer batches.
        # Shuffled: a full permutation within each chunk, items decoded one by one (LitData's
        # windowed batch decoding reads a shuffled chunk ten times slower: scripts/bench_data.py).
        super().__init__(location, cache_dir=cache_dir, shuffle=shuffle, seed=seed,
                         drop_last=None if shuffle else False, max_cache_size=max_cache_size,
                         storage_options=storage_options or {},
                         item_shuffle_window="full" if shuffle else None,
                         batch_decode=False if shuffle else "auto")
        self.path = PurePosixPath(location) if is_url(location) else Path(location)
        self.skipped = skipped


class EmptySplit(Dataset):
    """A split that the shards hold no sample of."""

    def __init__(self, path: str, skipped: list[str]):
        self.path, self.skipped = PurePosixPath(path), skipped

    def __len__(self) -> int:
        return 0

    def __getitem__(self, index: int):
        raise IndexError(index)


def _plain(value: Any) -> Any:
    """`value` as JSON gives it back (tuples as lists), so that settings compare alike."""
    return json.loads(json.dumps(value, default=repr))


class ShardSet:
    """A shard directory written by `write_shards`, opened and checked: see the module docstring.

    `storage_options` go to LitData's object-store client (credentials, endpoint); chunks read
    from a URL are kept under `cache_dir` (LitData's default when None), at most
    `max_cache_size` of them.
    """

    def __init__(self, path: str, cache_dir: str | None = None, max_cache_size: str = "50GB",
                 storage_options: Mapping | None = None):
        self.location = str(path).rstrip("/") if is_url(str(path)) else str(Path(path).expanduser())
        self.remote = is_url(self.location)
        self.cache_dir, self.max_cache_size = cache_dir, max_cache_size
        self.storage_options = dict(storage_options or {})
        self.meta = self._read_meta()
        self._check_format()

    def _url(self, *parts: str) -> str:
        if self.remote:
            return "/".join([self.location, *parts])
        return str(Path(self.location, *parts))

    # -- the metadata ---------------------------------------------------------------------------
    def _read_meta(self) -> dict:
        if self.remote:
            text = self._download(META)
        else:
            folder = Path(self.location)
            if not folder.is_dir():
                raise DataError(f"data.path={self.location}: no such shard directory (write one with "
                                "mmae-shard data=manifest data.path=FILE output=DIR)")
            if not (folder / META).is_file():
                unfinished = any((folder / split).is_dir() for split in SPLITS)
                raise DataError(f"{folder}: no {META}: " + (
                    "the shards were not finished (mmae-shard stopped before writing it); write them "
                    "again" if unfinished else "not an mmae shard directory (mmae-shard writes one)"))
            text = (folder / META).read_text()
        try:
            meta = json.loads(text)
        except ValueError as error:
            raise DataError(f"{self._url(META)} is truncated or corrupt: {error}") from None
        if not isinstance(meta, dict):
            raise DataError(f"{self._url(META)}: expected a JSON object")
        return meta

    def _download(self, name: str) -> str:
        """A small file of a URL shard directory, through LitData's own object-store client."""
        from litdata.streaming.downloader import get_downloader

        self._check_credentials()
        url = self._url(name)
        with tempfile.TemporaryDirectory() as folder:
            local = os.path.join(folder, name)
            try:
                get_downloader(self.location, folder, [], self.storage_options).download_file(url, local)
                return Path(local).read_text()
            except Exception as error:
                reason = " ".join(str(error).split())[:300]
                raise DataError(f"data.path={self.location}: cannot read {url} ({type(error).__name__}: "
                                f"{reason}); check the URL and the credentials (the provider's environment "
                                "variables or data.storage_options)") from None

    def _check_credentials(self) -> None:
        """An S3 URL with no credentials anywhere fails deep in the client with an unrelated
        message; say what is missing instead."""
        if not self.location.startswith("s3://") or self.storage_options:
            return
        import boto3

        if boto3.Session().get_credentials() is None:
            raise ConfigError(f"data.path={self.location}: no AWS credentials found; set "
                              "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or an instance "
                              "role), or pass them as data.storage_options (LitData's S3 options)")

    def _check_format(self) -> None:
        written = self.meta.get("format")
        if written != SHARD_FORMAT:
            version = self.meta.get("mmae_version", "?")
            raise DataError(f"{self._url(META)}: shards written by mmae {version} in shard format {written}; "
                            f"mmae {__version__} reads format {SHARD_FORMAT}: write them again with this "
                            "mmae's mmae-shard")

    # -- the modalities -------------------------------------------------------------------------
    def adopt(self, modalities: Mapping[str, Modality]) -> None:
        """Check that `modalities` are the shards' (names, kinds, decoding settings) and give
        them the stored fitted statistics where they have none of their own."""
        stored = self.meta["modalities"]
        if set(stored) != set(modalities):
            raise ConfigError(f"{self.location} holds modalities {sorted(stored)}, the config has "
                              f"{sorted(modalities)}: set modality=[{','.join(stored)}] (and their "
                              "settings as given to mmae-shard)")
        for name, modality in modalities.items():
            entry = stored[name]
            kind = MODALITIES.reference(modality)
            if kind != entry["class"]:
                raise ConfigError(f"modality '{name}': the shards in {self.location} hold "
                                  f"'{entry['class']}', the config builds '{kind}'")
            modality.restore_fitted(entry["config"])
            given = _plain(modality.decoding_settings())
            for key, value in entry["decoding"].items():
                if given.get(key) != value:
                    raise ConfigError(f"modality.{name}.{key}: the shards in {self.location} were decoded "
                                      f"with {value!r}, the config says {given.get(key)!r}; use their "
                                      "setting or write the shards again")
            if list(modality.raw_shape) != entry["raw_shape"]:
                raise ConfigError(f"modality '{name}': the shards hold samples of shape "
                                  f"{entry['raw_shape']}, the config expects {list(modality.raw_shape)}")

    # -- the splits -----------------------------------------------------------------------------
    def split(self, split: str, shuffle: bool = False, seed: int = 0) -> Dataset:
        """One split as a `ShardDataset` (an `EmptySplit` when it has no sample)."""
        written = self.meta["splits"][split]
        skipped = list(written.get("skipped_rows", []))
        if not written["samples"]:
            dataset = EmptySplit(self._url(split), skipped)
        else:
            if not self.remote:
                self._check_chunks(Path(self.location) / split)
            try:
                dataset = ShardDataset(self._url(split), skipped, shuffle, seed, self.cache_dir,
                                       self.max_cache_size, self.storage_options)
            except Exception as error:
                raise DataError(f"{self._url(split)}: cannot open the shards ({type(error).__name__}: "
                                f"{' '.join(str(error).split())[:300]})") from None
        dataset.label_map = self.label_map
        return dataset

    @property
    def label_map(self) -> LabelMap | None:
        """The labels the shards were written with (their samples carry the class indices)."""
        return LabelMap.from_json(self.meta.get("labels"))

    def _check_chunks(self, folder: Path) -> None:
        """Every chunk `index.json` names is there, whole: a copy cut short would otherwise
        fail mid-epoch with an unrelated error, or read garbage."""
        index = folder / "index.json"
        if not index.is_file():
            raise DataError(f"{index}: missing; the split's shards are incomplete")
        try:
            chunks = json.loads(index.read_text())["chunks"]
        except (ValueError, KeyError) as error:
            raise DataError(f"{index} is truncated or corrupt: {error}") from None
        for chunk in chunks:
            file = folder / chunk["filename"]
            if not file.is_file():
                raise DataError(f"{file}: missing (named by {index}); copy the shards again")
            size = file.stat().st_size
            if size != chunk["chunk_bytes"]:
                raise DataError(f"{file}: {size} bytes, {index} says {chunk['chunk_bytes']}: the shard is "
                                "truncated or was changed; copy it again or rerun mmae-shard")
