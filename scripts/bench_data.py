"""Throughput of the manifest loader against reading the same files in a bare loop.

Writes a manifest of N PNG + WAV samples (default 10,000), then reports samples/s of:
  - a bare Python loop that decodes each file (Pillow, soundfile) and nothing else;
  - mmae's ManifestDataModule train loader (validation, tensors, collation) with 0 and 2
    DataLoader workers.
The ratio loader / bare loop is the figure: it prices mmae's per-sample work.

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
from PIL import Image

from mmae.data.manifest import ManifestDataModule
from mmae.modalities import AudioModality, ImageModality

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


def loader(path: Path, workers: int, batch_size: int) -> float:
    modalities = {"image": ImageModality(size=SIZE, hidden_channels=[8]),
                  "audio": AudioModality(sample_rate=RATE, duration=DURATION, n_fft=256, hop_length=64,
                                         n_mels=32, hidden_channels=[8])}
    data = ManifestDataModule(str(path), modalities, batch_size=batch_size, num_workers=workers,
                              split_fractions=(1.0, 0.0, 0.0))
    start = time.perf_counter()
    count = sum(len(batch["index"]) for batch in data.train_dataloader())
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = write_manifest(Path(folder), args.samples)
        bare = bare_loop(path)
        rows = [("bare loop (decode only)", bare)]
        rows += [(f"ManifestDataModule, {w} workers", loader(path, w, args.batch_size)) for w in args.workers]
    print(f"\n`python scripts/bench_data.py --samples {args.samples} --batch-size {args.batch_size}`\n")
    print("| reader | samples/s | ratio to bare loop |\n|---|---|---|")
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} | {rate / bare:.2f} |")


if __name__ == "__main__":
    main()
