"""The user's own data: a manifest (CSV, JSONL or Parquet) with one row per sample.

Each modality reads its column(s): a path relative to the manifest (image, audio, `.npy`
vectors) or an inline value (text, numbers). An empty cell means the modality is missing
for that sample. Optional columns: `split` (train / val / test; otherwise a seeded random
split; a `split` column without `val` rows has a seeded `val_fraction` of its training rows
carved out) and `label` (integers or strings: `mmae.data.labels.LabelMap` numbers them and
gives them back as they were). Every file is decoded once, up front, into a `DecodedCache`
(in memory when it fits, else memory-mapped files under `cache_dir`), so later epochs read no
file; `cache=False` reads files lazily in the DataLoader's workers instead.

Every problem is reported as a `DataError` naming the manifest, the row (1-based, header not
counted) and the column. With `on_error="skip"` the sample is skipped instead and counted;
problems with the file as a whole (not UTF-8, unparsable, a column named twice, a CSV row
with more or fewer cells than the header) and with the `split`, `label` and `anomaly`
columns are raised either way. There is no id column: a row is a sample, identified by its
row number (`index`), so a row repeating another is kept, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import reprlib
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from mmae.core.errors import ConfigError, DataError
from mmae.core.modality import Modality
from mmae.data.batch import SPLITS, make_sample
from mmae.data.cache import DecodedCache, cache_bytes, default_cache_dir, entry_key, fits_in_memory
from mmae.data.labels import UNLABELLED, LabelMap
from mmae.data.manifest_files import empty_cell, read_manifest, unreadable_file

log = logging.getLogger(__name__)

OnError = Literal["raise", "skip"]
ON_ERROR = get_args(OnError)
#: Accepted cells of the optional `anomaly` column.
ANOMALY_VALUES = {"": False, "0": False, "0.0": False, "false": False, "no": False,
                  "1": True, "1.0": True, "true": True, "yes": True}
#: Modality settings that do not change what a file decodes to (the cache ignores them).
FITTED_KEYS = frozenset({"mean", "std", "normalize", "likelihood", "hidden_channels", "hidden"})


class ManifestDataset(Dataset):
    """One split of a manifest, validated up front; its files are decoded once (`warm`, or
    as they are first read) into a `DecodedCache` unless `cache=False`."""

    def __init__(self, path: str | Path, modalities: Mapping[str, Modality], split: str = "train",
                 on_error: OnError = "raise", split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
                 seed: int = 0, val_fraction: float = 0.1, cache: bool = True,
                 cache_dir: str | Path | None = None):
        if split not in SPLITS:
            raise ConfigError(f"ManifestDataset: split must be one of {SPLITS}, got '{split}'")
        if on_error not in ON_ERROR:
            raise ConfigError(f"ManifestDataset: on_error must be one of {ON_ERROR}, got '{on_error}'")
        if not 0 <= val_fraction < 1:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
        self.path = Path(path).expanduser().resolve()
        self.root = self.path.parent
        self.modalities = dict(modalities)
        self.on_error = on_error
        self.skipped: list[str] = []
        rows = read_manifest(self.path)
        self.columns = {n: m.manifest_columns(n) for n, m in self.modalities.items()}
        self._check_columns(rows)
        self.label_map = self._label_map(rows)
        self.anomaly = self._anomaly_flags(rows)
        splits = self._splits(rows, split_fractions, seed, val_fraction)
        if split == "train":
            self._warn_duplicates(rows)
            counts = {s: splits.count(s) for s in SPLITS}
            log.info("%s: %s", self.path.name, ", ".join(f"{counts[s]} {s}" for s in SPLITS)
                     + (f" (val carved from train: data.val_fraction={val_fraction})"
                        if self.carved_val else ""))
        self.split = split
        self.rows: list[tuple[int, dict]] = []
        for number, row in enumerate(rows, start=1):
            if splits[number - 1] == split and self._accept(number, row):
                self.rows.append((number, row))
        if self.skipped:
            warnings.warn(f"{self.path.name} ({split}): skipped {len(self.skipped)} row(s): "
                          + "; ".join(self.skipped[:5]) + (" ..." if len(self.skipped) > 5 else ""),
                          UserWarning, stacklevel=2)
        self.cache = self._open_cache(cache_dir) if cache else None

    def _where(self, number: int, name: str) -> str:
        columns = self.columns[name]
        single = len(columns) == 1 and not self.modalities[name].multi_column
        column = f"column '{columns[0]}'" if single else f"columns {columns} ({name})"
        return f"{self.path.name}, row {number}, {column}"

    def _check_columns(self, rows: list[dict]) -> None:
        if not rows:
            raise DataError(f"{self.path}: the manifest has no rows")
        available = set().union(*(r.keys() for r in rows[:1000]))
        for name, columns in self.columns.items():
            for column in columns:
                if column not in available:
                    raise DataError(f"{self.path.name}: column '{column}' (modality '{name}') is not in "
                                    f"the manifest; its columns are {sorted(available)}")

    def _anomaly_flags(self, rows: list[dict]) -> list[bool] | None:
        """The optional `anomaly` column (1/0, true/false, yes/no; empty = normal), which
        `mmae-eval task=anomaly` scores against; None without the column."""
        if not any("anomaly" in row for row in rows[:1000]):
            return None
        flags = []
        for number, row in enumerate(rows, start=1):
            value = row.get("anomaly")
            text = "" if empty_cell(value) else str(value).strip().lower()
            if text not in ANOMALY_VALUES:
                raise DataError(f"{self.path.name}, row {number}, column 'anomaly': expected 1/0, "
                                f"true/false or yes/no (empty: normal), got {value!r}")
            flags.append(ANOMALY_VALUES[text])
        return flags

    def _label_map(self, rows: list[dict]) -> LabelMap | None:
        values = []
        for number, row in enumerate(rows, start=1):
            value = row.get("label")
            if empty_cell(value):
                continue
            if not isinstance(value, (str, int, float)):
                raise DataError(f"{self.path.name}, row {number}, column 'label': expected a class name or "
                                f"index, got {type(value).__name__} {reprlib.repr(value)}")
            values.append(value)
        return LabelMap.from_cells(values)

    def _warn_duplicates(self, rows: list[dict]) -> None:
        """Rows repeating an earlier row are kept (a row is a sample; `index` is its row number),
        but said: a repeat that lands in another split leaks evaluation data into training."""
        first: dict[Any, int] = {}
        repeats = []
        for number, row in enumerate(rows, start=1):
            sample = {k: v for k, v in row.items() if k != "split"}  # the same sample in two splits
            try:
                key: Any = tuple(sorted(sample.items(), key=lambda item: item[0]))
                hash(key)
            except TypeError:  # JSONL lists or objects in cells
                key = json.dumps(sample, sort_keys=True, default=repr)
            if key in first:
                repeats.append(f"row {number} = row {first[key]}")
            else:
                first[key] = number
        if repeats:
            warnings.warn(f"{self.path.name}: {len(repeats)} row(s) repeat an earlier row ("
                          + "; ".join(repeats[:5]) + (" ..." if len(repeats) > 5 else "")
                          + "); each is kept as a separate sample, and a repeat in another split leaks "
                          "evaluation data into training: deduplicate the manifest unless they are meant",
                          UserWarning, stacklevel=3)

    def _splits(self, rows: list[dict], fractions: Sequence[float], seed: int,
                val_fraction: float) -> list[str]:
        """Each row's split: the `split` column's (with validation rows carved from train when
        it has none), else a seeded random split by `fractions`."""
        self.carved_val = False
        if any(not empty_cell(r.get("split")) for r in rows):
            for number, row in enumerate(rows, start=1):
                if str(row.get("split")).strip() not in SPLITS:
                    raise DataError(f"{self.path.name}, row {number}, column 'split': "
                                    f"{row.get('split')!r}, expected one of {SPLITS}")
            assigned = [str(r["split"]).strip() for r in rows]
            if "val" not in assigned and val_fraction > 0:
                self._carve_val(assigned, val_fraction, seed)
            return assigned
        if len(fractions) != 3 or not all(0 <= f <= 1 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
            raise ConfigError(f"split_fractions must be 3 numbers in [0, 1] summing to 1, "
                              f"got {list(fractions)}")
        order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist()
        n_train, n_val = round(fractions[0] * len(rows)), round(fractions[1] * len(rows))
        assigned = [""] * len(rows)
        for rank, index in enumerate(order):
            assigned[index] = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
        return assigned

    def _carve_val(self, assigned: list[str], val_fraction: float, seed: int) -> None:
        """Turn a seeded `val_fraction` of the training rows (at least one) into validation rows."""
        train = [i for i, s in enumerate(assigned) if s == "train"]
        count = min(max(1, round(val_fraction * len(train))), len(train) - 1)
        if count <= 0:
            return
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).tolist()
        for position in order[:count]:
            assigned[train[position]] = "val"
        self.carved_val = True

    def _present(self, name: str, row: dict, number: int) -> bool:
        cells = [row.get(c) for c in self.columns[name]]
        empty = [empty_cell(c) for c in cells]
        if all(empty):
            return False
        if any(empty):
            missing = [c for c, e in zip(self.columns[name], empty, strict=True) if e]
            raise DataError(f"{self._where(number, name)}: empty cell(s) {missing} while others are set")
        return True

    def _accept(self, number: int, row: dict) -> bool:
        """Check what is cheap to check up front: presence, and that files exist."""
        try:
            present = [n for n in self.modalities if self._present(n, row, number)]
            if not present:
                raise DataError(f"{self.path.name}, row {number}: every modality is missing "
                                f"(columns {sorted(c for cs in self.columns.values() for c in cs)})")
            for name in present:
                modality, value = self.modalities[name], self._value(name, row)
                try:
                    file = modality.file_path(value, self.root)
                    if file is None:
                        modality.check_cell(value)
                    elif not os.path.isfile(file):  # unlike Path.is_file, False for a name too long
                        raise DataError(unreadable_file(file))
                except DataError as error:
                    raise DataError(f"{self._where(number, name)}: {error}") from None
        except DataError as error:
            if self.on_error == "raise":
                raise
            self.skipped.append(str(error))
            return False
        return True

    def _value(self, name: str, row: dict) -> Any:
        """A modality's cell: the value, or a dict of values for a multi-column modality."""
        columns = self.columns[name]
        if not self.modalities[name].multi_column:
            return row[columns[0]]
        return {c: row[c] for c in columns}  # even for one column: a table of one column

    def cells(self, name: str) -> list[Any]:
        """The present cells of one modality, in row order."""
        return [self._value(name, row) for number, row in self.rows if self._present(name, row, number)]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict | None:
        tensors = self._cached(index)
        if tensors is None:
            tensors = self._decode(index)
            if isinstance(tensors, DataError):
                if self.on_error == "skip":
                    return None
                raise tensors
            if self.cache is not None and get_worker_info() is None:  # (a worker's copy is lost)
                self.cache.put(index, tensors)
        elif self.cache.failed[index]:
            return None
        return self.sample(index, tensors)

    def sample(self, index: int, tensors: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        """The dataset item of row position `index` from its decoded present modalities: every
        modality (zeros where missing), `present` masks, `label` (-1: none), `index` (the row
        number) and, with an `anomaly` column, the row's flag."""
        number, row = self.rows[index]
        inputs, present = {}, {}
        for name, modality in self.modalities.items():
            present[name] = torch.tensor(name in tensors)
            if name in tensors:
                inputs[name] = tensors[name]
            else:
                dtype = torch.long if modality.dtype_kind == "long" else torch.float32
                inputs[name] = torch.zeros(modality.raw_shape, dtype=dtype)
        label = row.get("label")
        unlabelled = self.label_map is None or empty_cell(label)
        label = UNLABELLED if unlabelled else self.label_map.index(label)
        extras = {} if self.anomaly is None else {"anomaly": torch.tensor(self.anomaly[number - 1])}
        return make_sample(inputs, present, torch.tensor(label), torch.tensor(number), **extras)

    def decoded(self, num_workers: int = 0, order: Sequence[int] | None = None) -> Iterator[dict[str, Any]]:
        """Every row's sample, decoded once by `num_workers` processes in row order (or in
        `order`, positions of the split) and not cached (`mmae-shard` writes them out); a row
        that fails is raised or, with `on_error="skip"`, counted in `skipped` and left out."""
        positions = list(range(len(self))) if order is None else list(order)
        batch = 64
        loader = DataLoader(_Decoding(self, positions), batch_size=batch, num_workers=num_workers,
                            collate_fn=_stack_decoded)  # (a worker hands over a tensor per modality)
        for start, (stacked, failures) in zip(range(0, len(positions), batch), loader, strict=True):
            rows: dict[int, dict[str, torch.Tensor]] = {}
            for name, (indices, values) in stacked.items():
                for index, value in zip(indices, values, strict=True):
                    rows.setdefault(index, {})[name] = value
            failed = dict(failures)
            for index in positions[start:start + batch]:
                if index in failed:
                    if self.on_error == "raise":
                        raise failed[index]
                    self.skipped.append(str(failed[index]))
                    continue
                yield self.sample(index, rows.get(index, {}))

    def _decode(self, index: int) -> dict[str, torch.Tensor] | DataError:
        """Read a row's present modalities; a failure is returned (not raised) as a `DataError`
        naming the row and column, so that decoding workers can hand it back."""
        number, row = self.rows[index]
        tensors = {}
        for name, modality in self.modalities.items():
            if not self._present(name, row, number):
                continue
            try:
                tensor = modality.load(self._value(name, row), self.root)
                if tuple(tensor.shape) != modality.raw_shape:
                    raise DataError(f"loaded shape {tuple(tensor.shape)}, expected {modality.raw_shape}")
            except Exception as error:  # any failure becomes a DataError with row and column
                failure = DataError(f"{self._where(number, name)}: {error}")
                failure.__cause__ = error
                return failure
            tensors[name] = tensor
        return tensors

    # -- the decoded-sample cache --------------------------------------------------------------
    def _entry_keys(self) -> dict[str, np.ndarray]:
        keys = {name: np.zeros(len(self.rows), dtype=np.int64) for name in self.modalities}
        for index, (number, row) in enumerate(self.rows):
            for name, modality in self.modalities.items():
                if self._present(name, row, number):
                    value = self._value(name, row)
                    keys[name][index] = entry_key(value, modality.file_path(value, self.root))
        return keys

    def _open_cache(self, cache_dir: str | Path | None) -> DecodedCache:
        shapes = {n: m.raw_shape for n, m in self.modalities.items()}
        dtypes = {n: torch.long if m.dtype_kind == "long" else torch.float32
                  for n, m in self.modalities.items()}
        size = cache_bytes(len(self.rows), shapes, dtypes)
        directory = None
        if cache_dir is None and not fits_in_memory(size):
            cache_dir = default_cache_dir()
            log.info("%s (%s): decoded, the split takes %.1f GiB, more than a quarter of the free memory; "
                     "caching it in memory-mapped files under %s (data.cache_dir)", self.path.name,
                     self.split, size / 2**30, cache_dir)
        if cache_dir is not None and self.rows:  # (an empty split has nothing to map)
            directory = Path(cache_dir).expanduser() / self._cache_name()
        return DecodedCache(self._entry_keys(), shapes, dtypes, directory)

    def _cache_name(self) -> str:
        """A folder per manifest, split and decoding settings (not the fitted statistics)."""
        settings = {n: {"class": type(m).__qualname__, "raw_shape": list(m.raw_shape),
                        "config": {k: v for k, v in m.config().items() if k not in FITTED_KEYS}}
                    for n, m in self.modalities.items()}
        text = json.dumps([str(self.path), self.split, settings], sort_keys=True, default=repr)
        return f"{self.path.stem}-{self.split}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"

    def _cached(self, index: int) -> dict[str, torch.Tensor] | None:
        if self.cache is None or not self.cache.complete(index):
            return None
        return {name: self.cache.get(name, index) for name in self.modalities
                if self.cache.keys[name][index] != 0}

    def warm(self, num_workers: int = 0) -> None:
        """Decode every row the cache lacks, once, in `num_workers` processes (the main one
        when 0), and keep the results in the cache; rows that fail are raised or, with
        `on_error="skip"`, marked so that they are skipped without another read."""
        if self.cache is None:
            return
        missing = self.cache.missing_rows()
        if not missing:
            return
        start = time.perf_counter()
        loader = DataLoader(_Decoding(self, missing), batch_size=64, num_workers=num_workers,
                            collate_fn=_stack_decoded)
        failed = []
        for stacked, failures in loader:
            for index, error in failures:
                if self.on_error == "raise":
                    raise error
                self.cache.failed[index] = True
                failed.append(str(error))
            for name, (rows, values) in stacked.items():
                self.cache.put_rows(name, rows, values)
        self.cache.flush()
        self.skipped.extend(failed)
        where = "memory" if self.cache.in_memory else f"memory-mapped files in {self.cache.directory}"
        log.info("%s (%s): decoded %d of %d rows in %.1f s, cached in %s", self.path.name, self.split,
                 len(missing) - len(failed), len(self.rows), time.perf_counter() - start, where)
        if failed:
            warnings.warn(f"{self.path.name} ({self.split}): skipped {len(failed)} row(s) whose files failed "
                          "to decode (data.on_error=skip): " + "; ".join(failed[:5])
                          + (" ..." if len(failed) > 5 else ""), UserWarning, stacklevel=2)


def fit_modalities(train: ManifestDataset) -> None:
    """Fit every modality's cell statistics (`Modality.fit`: tabular columns) on the training
    split's cells, before any file is decoded: tabular cells decode with what is fitted."""
    if len(train) == 0:
        raise DataError(f"{train.path}: no usable training rows")
    for name, modality in train.modalities.items():
        try:
            modality.fit(train.cells(name))
        except (ConfigError, DataError) as error:  # e.g. no training row has the modality
            raise DataError(f"{train.path.name}: cannot fit modality '{name}' (columns "
                            f"{train.columns[name]}) on the training split: {error}") from None


def _stack_decoded(items: list[tuple[int, dict | DataError]]):
    """A batch of decoded rows as one tensor per modality (with the rows it holds) and the
    failures: a worker hands over two tensors instead of one per sample and modality."""
    done = [(index, tensors) for index, tensors in items if not isinstance(tensors, DataError)]
    stacked = {}
    for name in {n for _, tensors in done for n in tensors}:
        rows = [index for index, tensors in done if name in tensors]
        stacked[name] = (rows, torch.stack([tensors[name] for _, tensors in done if name in tensors]))
    return stacked, [(index, error) for index, error in items if isinstance(error, DataError)]


class _Decoding(Dataset):
    """The rows of a manifest split still to decode, as `(position, tensors or DataError)`."""

    def __init__(self, dataset: ManifestDataset, positions: list[int]):
        self.dataset, self.positions = dataset, positions

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, item: int):
        index = self.positions[item]
        return index, self.dataset._decode(index)
