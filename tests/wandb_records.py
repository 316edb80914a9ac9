"""Read an offline W&B run back from its `run-<id>.wandb` file.

wandb 0.31 keeps an offline run's history, config, artifacts and exit status only in that
file (no config.yaml or wandb-summary.json next to it) and ships no Python reader for it. The
file is a LevelDB-style log: a 7-byte header (":W&B", magic 0xBEE1, version 0), then 32 KiB
blocks of chunks, each `crc32 (4) | length (2) | type (1) | data`, a record split over blocks
as FIRST/MIDDLE/LAST chunks; each record is a serialised `wandb_internal_pb2.Record`.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
FILE_HEADER = struct.Struct("<4sHB")
CHUNK_HEADER = struct.Struct("<IHB")
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _payloads(data: bytes) -> Iterator[bytes]:
    ident, magic, version = FILE_HEADER.unpack_from(data)
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), (ident, hex(magic), version)
    position, pending = FILE_HEADER.size, b""
    while position + CHUNK_HEADER.size <= len(data):
        room = BLOCK - position % BLOCK
        if room < CHUNK_HEADER.size:  # a block's tail too short for a header is padding
            position += room
            continue
        checksum, length, kind = CHUNK_HEADER.unpack_from(data, position)
        if (checksum, length, kind) == (0, 0, 0):  # zero padding up to the next block
            position += room
            continue
        start = position + CHUNK_HEADER.size
        chunk = data[start:start + length]
        assert zlib.crc32(bytes([kind]) + chunk) == checksum, f"bad checksum at byte {position}"
        position = start + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
        else:
            raise AssertionError(f"unknown chunk type {kind} at byte {position}")


def _key(item) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


@dataclass
class OfflineRun:
    """What a `.wandb` file says about its run."""

    run_id: str = ""
    project: str = ""
    config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    artifacts: list = field(default_factory=list)  # wandb_internal_pb2.ArtifactRecord
    exit_code: int | None = None

    def values(self, key: str) -> list:
        """Every value `key` took in the history, in order."""
        return [row[key] for row in self.history if key in row]


def read_run(path: Path) -> OfflineRun:
    run = OfflineRun()
    for payload in _payloads(Path(path).read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id, run.project = record.run.run_id, record.run.project
            run.config.update({_key(u): json.loads(u.value_json) for u in record.run.config.update})
        elif kind == "config":
            run.config.update({_key(u): json.loads(u.value_json) for u in record.config.update})
        elif kind == "history":
            run.history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "artifact":
            run.artifacts.append(record.artifact)
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run


def offline_run_dir(save_dir: Path) -> Path:
    """The single offline run directory under `<save_dir>/wandb/`."""
    runs = sorted((Path(save_dir) / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    return runs[0]


def read_offline_run(save_dir: Path) -> tuple[Path, OfflineRun]:
    folder = offline_run_dir(save_dir)
    (record_file,) = folder.glob("run-*.wandb")
    return folder, read_run(record_file)
