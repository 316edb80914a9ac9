"""Throughput of the manifest loader (the first epoch, every file decoded once into the
cache, and later epochs, no file read) and of LitData shards, against bare loops.

Writes a manifest of N PNG + WAV samples (default 10,000), then reports samples/s of:
  - a bare Python loop that decodes each file (Pillow, soundfile) and nothing else;
  - a bare loop over the same samples as pre-decoded in-memory tensors (batches sliced out);
  - mmae's ManifestDataModule with `num_workers` 0 and 2: epoch 1 (building the datamodule,
    which decodes every file into the cache, then one pass of the train loader) and epoch 2+
    (the train loader alone); and, for reference, `data.cache=false` (decoding every epoch).
The figures are the ratios: epoch 2+ against the in-memory loop, epoch 1 against decoding.

    python scripts/bench_data.py [--samples 10000] [--batch-size 64] [--workers 0 2]
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch
from PIL import Image

from mmae.data.manifest import ManifestDataset, fit_modalities
from mmae.data.shards import write_shards
from mmae.modalities import AudioModality, ImageModality
from mmae.training.datamodule import ManifestDataModule, StreamDataModule

SIZE, RATE, DURATION = 32, 8000, 0.5


def write_manifest(folder: Path, samples: int) -> Path:
    rng = np.random.default_rng(0)
    (folder / "img").mkdir(parents=True)
    (folder / "wav").mkdir()
    path = folder / "manifest.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "audio", "label"])
        for i in range(samples):
            pixels = rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / "img" / f"{i}.png")
            soundfile.write(folder / "wav" / f"{i}.wav",
                            rng.standard_normal(int(RATE * DURATION)).astype(np.float32) * 0.1, RATE)
            writer.writerow([f"img/{i}.png", f"wav/{i}.wav", i % 10])
    return path


def bare_loop(path: Path) -> float:
    rows = list(csv.DictReader(path.open()))
    start = time.perf_counter()
    for row in rows:
        with Image.open(path.parent / row["image"]) as image:
            np.asarray(image, dtype=np.float32)
        soundfile.read(path.parent / row["audio"], dtype="float32")
    return len(rows) / (time.perf_counter() - start)


def _modalities() -> dict:
    return {"image": ImageModality(size=SIZE),
            "audio": AudioModality(sample_rate=RATE, duration=DURATION, n_fft=256, hop_length=64, n_mels=32)}


def in_memory_loop(path: Path, batch_size: int) -> float:
    """Batches sliced out of pre-decoded tensors: the floor of what any loader costs."""
    data = ManifestDataModule(str(path), _modalities(), num_workers=0, split_fractions=(1.0, 0.0, 0.0))
    train = data.dataset("train")
    tensors = {name: train.cache.values[name] for name in train.modalities}
    rows = len(train)
    start = time.perf_counter()
    order = torch.randperm(rows)
    for begin in range(0, rows, batch_size):
        picked = order[begin:begin + batch_size]
        _ = {name: values[picked] for name, values in tensors.items()}
    return rows / (time.perf_counter() - start)


def loader(path: Path, workers: int, batch_size: int, cache: bool = True) -> tuple[float, float]:
    """Samples/s of epoch 1 (building the datamodule included) and of epoch 2 and 3."""
    start = time.perf_counter()
    data = ManifestDataModule(str(path), _modalities(), batch_size=batch_size, num_workers=workers,
                              split_fractions=(1.0, 0.0, 0.0), cache=cache)
    count = sum(len(batch) for batch in data.train_dataloader())
    first = count / (time.perf_counter() - start)
    start = time.perf_counter()
    count = sum(len(batch) for _ in range(2) for batch in data.train_dataloader())
    return first, count / (time.perf_counter() - start)


def shard(path: Path, output: Path, workers: int) -> float:
    """Samples/s of `mmae-shard`'s work: decode every file once and write the shards."""
    start = time.perf_counter()
    modalities = _modalities()
    datasets = {split: ManifestDataset(path, modalities, split, split_fractions=(1.0, 0.0, 0.0), cache=False)
                for split in ("train", "val", "test")}
    fit_modalities(datasets["train"])
    meta = write_shards(datasets, output, num_workers=workers)
    return meta["splits"]["train"]["samples"] / (time.perf_counter() - start)


def stream(shards: Path, workers: int, batch_size: int) -> float:
    """Samples/s of two epochs of the `data=stream` training loader (building it included)."""
    start = time.perf_counter()
    data = StreamDataModule(str(shards), _modalities(), batch_size=batch_size, num_workers=workers)
    count = sum(len(batch) for _ in range(2) for batch in data.train_dataloader())
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = write_manifest(Path(folder), args.samples)
        decode, memory = bare_loop(path), in_memory_loop(path, args.batch_size)
        rows = []
        for workers in args.workers:
            first, later = loader(path, workers, args.batch_size)
            rows.append((f"mmae, {workers} workers, epoch 1 (decode + cache)", first, first / decode))
            rows.append((f"mmae, {workers} workers, epoch 2+ (cached)", later, later / memory))
        workers = max(args.workers)
        _, uncached = loader(path, workers, args.batch_size, cache=False)
        rows.append((f"mmae, data.cache=false, {workers} workers, epoch 2+", uncached, uncached / memory))
        shards = Path(folder) / "shards"
        sharded = shard(path, shards, workers)
        rows.append((f"mmae-shard, {workers} workers (decode + write, epoch 1)", sharded, sharded / decode))
        for workers in args.workers:
            streamed = stream(shards, workers, args.batch_size)
            rows.append((f"data=stream, {workers} workers, epochs 1-2", streamed, streamed / memory))
    print(f"\n`python scripts/bench_data.py --samples {args.samples} --batch-size {args.batch_size}`\n")
    print(f"bare decode loop: {decode:,.0f} samples/s; bare in-memory loop: {memory:,.0f} samples/s\n")
    print("| reader | samples/s | ratio |\n|---|---|---|")
    for name, rate, ratio in rows:
        against = "decode" if "epoch 1" in name else "in-memory"
        print(f"| {name} | {rate:,.0f} | {ratio:.2f} of the {against} loop |")


if __name__ == "__main__":
    main()
