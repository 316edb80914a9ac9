"""`mmae-shard data=manifest data.path=FILE output=DIR [chunk_bytes=64MB]`: a manifest decoded
once into LitData shards, for `mmae-train data=stream data.path=DIR` (`mmae.data.shards`).

The manifest is read as training reads it: the same modality loaders and checks, its split
column or seeded split, `data.on_error`, and `data.num_workers` decoding processes.
"""

from __future__ import annotations

import sys

from mmae.cli.runner import run_command
from mmae.config import build_modalities, compose_config
from mmae.core.errors import ConfigError
from mmae.data.batch import SPLITS
from mmae.data.manifest import ManifestDataset, fit_modalities
from mmae.data.shards import write_shards

MANIFEST_TARGET = "mmae.training.datamodule.ManifestDataModule"


def main(argv: list[str] | None = None) -> None:
    run_command("mmae-shard", lambda: _shard(sys.argv[1:] if argv is None else argv))


def _shard(overrides: list[str]) -> None:
    cfg = compose_config("shard", overrides)
    data = cfg.data
    if data.get("_target_") != MANIFEST_TARGET:
        raise ConfigError("mmae-shard reads a manifest: give data=manifest data.path=FILE")
    if not cfg.output:
        raise ConfigError("give output=DIR: the directory the shards are written to")
    modalities = build_modalities(cfg.modality)
    datasets = {split: ManifestDataset(data.path, modalities, split, data.on_error,
                                       list(data.split_fractions), data.seed, data.val_fraction,
                                       cache=False)
                for split in SPLITS}
    fit_modalities(datasets["train"])
    meta = write_shards(datasets, cfg.output, cfg.chunk_bytes, data.num_workers, seed=data.seed)
    print(format_written(meta, cfg.output))


def format_written(meta: dict, output: str) -> str:
    """What `mmae-shard` wrote, split by split, and the rows it skipped."""
    lines = [f"mmae-shard: {meta['source']} -> {output} ({meta['seconds']} s)"]
    for split, written in meta["splits"].items():
        lines.append(f"  {split:<5} {written['samples']:>9,} samples {written['bytes'] / 2**20:>10.1f} MiB "
                     f"in {written['chunks']} chunk(s), {written['skipped']} row(s) skipped")
        lines += [f"        skipped: {reason}" for reason in written["skipped_rows"][:5]]
    lines.append(f"train with: mmae-train data=stream data.path={output} and the same modality settings")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
