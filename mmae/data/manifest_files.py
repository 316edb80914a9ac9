"""Reading a manifest file into rows: CSV, TSV, JSONL or Parquet, UTF-8, every column named
once and every CSV row as long as its header, or a `DataError` naming the file, row and line."""

from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
from pathlib import Path
from typing import Any

from mmae.core.errors import DataError


def empty_cell(value: Any) -> bool:
    """Whether a cell holds nothing: None, blank text or NaN (a missing modality)."""
    return value is None or (isinstance(value, str) and not value.strip()) or (
        isinstance(value, float) and math.isnan(value))


def unreadable_file(path: str | Path) -> str:
    """Why `path` is not a file to read: missing, a directory, a broken or looping link, ..."""
    if os.path.isdir(path):
        return f"{path} is a directory, not a file"
    try:
        os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            return f"{path}: symbolic link loop"
        if os.path.islink(path):
            return f"{path}: broken symbolic link (to {os.readlink(path)}, which does not exist)"
        if error.errno == errno.ENOENT:
            return f"file not found: {path}"
        return f"cannot read {path}: {error.strerror}"
    return f"{path} is not a regular file (a device, socket or pipe)"


def read_manifest(path: Path) -> list[dict[str, Any]]:
    """The manifest's rows as dicts, by file extension (.csv, .tsv, .jsonl, .parquet).

    Text manifests must be UTF-8 (a byte-order mark is allowed). A file that cannot be parsed,
    a column named twice or a CSV row with more or fewer cells than the header is a
    `DataError`: guessing which cell is which would load the wrong values silently.
    """
    if not os.path.isfile(path):
        reason = unreadable_file(path)
        raise DataError(f"manifest not found: {path}" if reason.startswith("file not found") else
                        f"manifest: {reason}")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tsv", ".jsonl", ".ndjson", ".parquet"):
        raise DataError(f"{path}: unknown manifest format '{suffix}'; use .csv, .tsv, .jsonl or .parquet")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the manifest has no rows (the file is empty)")
    if suffix in (".csv", ".tsv"):
        return _read_csv(path, _read_text(path), "\t" if suffix == ".tsv" else ",")
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(path, _read_text(path))
    return _read_parquet(path)


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise DataError(f"{path.name}, line {line}: not UTF-8 text (byte {error.start}: {error.reason}); "
                        "save the manifest as UTF-8") from None


def _read_csv(path: Path, text: str, delimiter: str) -> list[dict[str, Any]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows: list[dict[str, Any]] = []
    try:
        header = next(reader, None)
        if header is None:
            return rows
        _refuse_duplicates(path, header)
        for cells in reader:
            if not cells:
                continue  # a blank line
            if len(cells) != len(header):
                raise DataError(f"{path.name}, row {len(rows) + 1}: {len(cells)} cells, but the header names "
                                f"{len(header)} columns (line {reader.line_num}; a cell holding the "
                                f"delimiter {delimiter!r} must be quoted)")
            rows.append(dict(zip(header, cells, strict=True)))
    except csv.Error as error:
        reason = (f"a cell is longer than {csv.field_size_limit()} characters (put long values in files, "
                  "or use JSONL or Parquet)" if "field limit" in str(error) else str(error))
        raise DataError(f"{path.name}, row {len(rows) + 1} (line {reader.line_num}): {reason}") from None
    return rows


class _DuplicateKeys(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise _DuplicateKeys(sorted({k for k in keys if keys.count(k) > 1}))
    return dict(pairs)


def _read_jsonl(path: Path, text: str) -> list[dict[str, Any]]:
    rows = []
    for line_number, line in enumerate(text.split("\n"), start=1):  # not splitlines: JSON may hold U+2028
        if not line.strip():
            continue
        try:
            row = json.loads(line, object_pairs_hook=_unique_keys)
        except _DuplicateKeys as error:
            raise DataError(f"{path.name}, row {len(rows) + 1} (line {line_number}): key(s) {error} appear "
                            "more than once") from None
        except (ValueError, RecursionError) as error:  # JSONDecodeError, too many digits, too deep
            raise DataError(f"{path.name}, line {line_number}: invalid JSON ({error})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path.name}, line {line_number}: expected a JSON object, "
                            f"got {type(row).__name__}")
        rows.append(row)
    return rows


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    import pyarrow
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path).read()
        _refuse_duplicates(path, table.column_names)
        return table.to_pylist()
    except (pyarrow.ArrowException, OSError) as error:
        raise DataError(f"{path.name}: cannot read the Parquet file ({error})") from None


def _refuse_duplicates(path: Path, columns: list[str]) -> None:
    # (Unnamed columns, as spreadsheets leave after the last one, are not columns mmae reads.)
    duplicated = sorted({c for c in columns if c and columns.count(c) > 1})
    if duplicated:
        raise DataError(f"{path.name}: column(s) {duplicated} appear more than once in the header")
