"""Build a small on-disk manifest (PNG, WAV, inline text, tabular columns) from the synthetic
factors, so that the modalities share information as real paired data would."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image

from mmae.data import SyntheticMultimodal
from mmae.modalities import AudioModality, ImageModality, TextModality, VectorModality

TEXT_CONFIG = {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 1,
               "num_attention_heads": 2, "intermediate_size": 64}
AUDIO = {"sample_rate": 8000, "duration": 0.5, "n_fft": 256, "hop_length": 64, "n_mels": 32,
         "hidden_channels": [8, 16]}


def build_manifest(folder: Path, rows: int = 400, seed: int = 0, empty_every: int = 7) -> Path:
    """Write `rows` samples under `folder`; every `empty_every`-th row misses one modality.

    Every third WAV is written at 16 kHz stereo (the modality expects 8 kHz mono), so loading
    exercises resampling and down-mixing.
    """
    modalities = {"image": ImageModality(size=16, hidden_channels=[8, 16]),
                  "audio": AudioModality(**AUDIO), "text": TextModality(model_config=TEXT_CONFIG),
                  "vector": VectorModality(dim=2)}
    data = SyntheticMultimodal(modalities, num_samples=rows, missing_rate=0.0, seed=seed,
                               split_fractions=(1.0, 0.0, 0.0))
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "audio").mkdir(exist_ok=True)
    path = folder / "manifest.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "audio", "text", "size", "weight", "group", "label"])
        for i in range(rows):
            pixels = (data.views["image"][i, 0].clamp(0, 1).numpy() * 255).round().astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(folder / "images" / f"{i}.png")
            wave = data.views["audio"][i].numpy()
            if i % 3 == 0:
                wave16 = np.interp(np.arange(2 * len(wave)) / 2, np.arange(len(wave)), wave)
                soundfile.write(folder / "audio" / f"{i}.wav", np.stack([wave16, wave16], 1), 16000)
            else:
                soundfile.write(folder / "audio" / f"{i}.wav", wave, 8000)
            text = modalities["text"].decode(data.views["text"][i : i + 1])[0]
            factors = data.factors[i].tolist()
            cells = [f"images/{i}.png", f"audio/{i}.wav", text, f"{50 + 20 * factors[0]:.3f}",
                     f"{factors[1]:.3f}", "abc"[int(data.labels[i]) % 3], int(data.labels[i])]
            if empty_every and i % empty_every == 1:
                cells[i % 3] = ""  # one of image, audio, text missing
            writer.writerow(cells)
    return path


def manifest_overrides(path: Path) -> list[str]:
    """The command-line overrides that train on a manifest written by `build_manifest`."""
    audio = [f"modality.audio.{k}={v}" for k, v in AUDIO.items() if k != "hidden_channels"]
    return [
        "data=manifest", f"data.path={path}", "data.num_workers=0", "data.batch_size=32",
        "modality=[image,audio,text,tabular]",
        "modality.image.size=16", "modality.image.hidden_channels=[8,16]",
        *audio, "modality.audio.hidden_channels=[8,16]",
        "modality.text.model_config.hidden_size=32", "modality.text.model_config.num_hidden_layers=1",
        "modality.text.model_config.num_attention_heads=2",
        "modality.text.model_config.intermediate_size=64",
        "modality.tabular.numeric=[size,weight]", "modality.tabular.categorical=[group]",
        "model.latent_dim=16", "model.embed_dim=64", "model.decoder_hidden=128",
    ]


PAIRED_RATE, PAIRED_SECONDS = 4000, 0.25


def write_paired_manifest(folder: Path, rows: int = 60, splits=("train", "test"), seed: int = 0) -> Path:
    """A paired image + audio + vector manifest whose split column holds only `splits`;
    the test rows are brighter and louder, so statistics fitted on them would differ."""
    rng = np.random.default_rng(seed)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    (folder / "wav").mkdir(exist_ok=True)
    path = folder / "manifest.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "audio", "vector", "label", "split"])
        for i in range(rows):
            split = splits[i % len(splits)]
            boost = 3.0 if split == "test" else 1.0
            label = i % 3
            pixels = np.clip(rng.random((8, 8)) * 0.3 * boost + 0.2 * label, 0, 1)
            Image.fromarray((pixels * 255).astype(np.uint8), mode="L").save(folder / "img" / f"{i}.png")
            t = np.arange(int(PAIRED_RATE * PAIRED_SECONDS)) / PAIRED_RATE
            tone = np.sin(2 * np.pi * (200 + 150 * label) * t)
            wave = 0.1 * boost * tone + 0.01 * rng.standard_normal(t.size)
            soundfile.write(folder / "wav" / f"{i}.wav", wave.astype(np.float32), PAIRED_RATE)
            vector = " ".join(f"{v:.4f}" for v in 1000 * boost * (rng.standard_normal(3) + label))
            writer.writerow([f"img/{i}.png", f"wav/{i}.wav", vector, label, split])
    return path
