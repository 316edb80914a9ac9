"""The speed yardstick of the benchmarks: a multimodal MLP autoencoder with a peer library's
settings, written as a plain PyTorch loop (no framework, nothing but training).

Settings (`PeerSettings`): per modality an MLP encoder [256, 128] to the shared code and the
mirrored decoder; the code is the mean of the present modalities' codes; mean squared error on
standardised inputs (8x8 pixels; a 40-band x 32-frame log-mel); modality dropout; Adam, batch 64,
100 epochs. Its timed whole covers what a user's run covers: reading the files, features,
training and the validation loss each epoch.

Its history feeds the time-to-accuracy measure of scripts/time_to_accuracy.py.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mmae.core.nn import mlp
from mmae.modalities.audio import LogMel


@dataclass(frozen=True)
class PeerSettings:
    hidden: tuple[int, ...] = (256, 128)
    latent_dim: int = 32
    batch_size: int = 64
    epochs: int = 100
    lr: float = 1e-3
    dropout: float = 0.3  # probability of hiding each modality of a sample (never all)
    n_mels: int = 40
    n_fft: int = 1024
    hop_length: int = 512  # 1 s at 16 kHz: 32 frames
    sample_rate: int = 16000
    val_fraction: float = 0.1


@dataclass
class PeerRun:
    """A trained peer model, its feature standardisation and its history."""

    model: PeerAutoencoder
    mean: dict[str, torch.Tensor]
    std: dict[str, torch.Tensor]
    settings: PeerSettings
    history: list[tuple[float, float]]  # (seconds since training began, validation loss) per epoch
    seconds: float  # the whole: files, features, training

    def features(self, raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Standardised flat features of raw inputs (pixels `[N, 1, H, W]`, waveforms `[N, S]`)."""
        return {name: (peer_features(name, x, self.settings) - self.mean[name]) / self.std[name]
                for name, x in raw.items()}

    @torch.no_grad()
    def encode(self, raw: dict[str, torch.Tensor]) -> torch.Tensor:
        self.model.eval()
        return self.model.encode(self.features(raw))

    @torch.no_grad()
    def impute(self, target: str, raw_source: dict[str, torch.Tensor]) -> torch.Tensor:
        """The target's standardised features decoded from the code of the source alone."""
        self.model.eval()
        return self.model.decoders[target](self.model.encode(self.features(raw_source)))


@functools.cache
def _log_mel(settings: PeerSettings) -> LogMel:
    return LogMel(settings.sample_rate, settings.n_fft, settings.hop_length, settings.n_mels)


def peer_features(name: str, x: torch.Tensor, settings: PeerSettings) -> torch.Tensor:
    """Flat features: pixels as they are; audio as a natural-log mel spectrogram."""
    return (_log_mel(settings)(x) if name == "audio" else x.float()).flatten(1)


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    return mlp(list(sizes), activation=nn.ReLU)  # (the peer's activation)


class PeerAutoencoder(nn.Module):
    def __init__(self, sizes: dict[str, int], settings: PeerSettings):
        super().__init__()
        hidden = list(settings.hidden)
        self.encoders = nn.ModuleDict({n: _mlp([d, *hidden, settings.latent_dim]) for n, d in sizes.items()})
        self.decoders = nn.ModuleDict({n: _mlp([settings.latent_dim, *hidden[::-1], d])
                                       for n, d in sizes.items()})

    def encode(self, inputs: dict[str, torch.Tensor], present: dict[str, torch.Tensor] | None = None):
        """The mean of the present modalities' codes (all present when `present` is None)."""
        total, count = 0.0, 0.0
        for name, x in inputs.items():
            weight = (torch.ones(len(x), 1) if present is None else present[name].float()[:, None])
            total = total + weight * self.encoders[name](x)
            count = count + weight
        return total / count.clamp(min=1.0)

    def loss(self, inputs: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> torch.Tensor:
        code = self.encode(inputs, present)
        return sum(((self.decoders[n](code) - x) ** 2).mean() for n, x in inputs.items())


def _dropout(n: int, names: list[str], p: float, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Per sample, hide each modality with probability `p`, never all of them."""
    kept = torch.rand(n, len(names), generator=generator) >= p
    empty = ~kept.any(dim=1)
    kept[empty, torch.randint(len(names), (int(empty.sum()),), generator=generator)] = True
    return {name: kept[:, i] for i, name in enumerate(names)}


def train_peer(load_raw: Callable[[], dict[str, torch.Tensor]], seed: int = 0,
               settings: PeerSettings = PeerSettings()) -> PeerRun:
    """Time the whole: `load_raw()` (reads the training files: raw inputs by modality), the
    features, then training with a validation pass every epoch."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    raw = load_raw()
    names = list(raw)
    feats = {name: peer_features(name, x, settings) for name, x in raw.items()}
    rows = len(feats[names[0]])
    order = torch.randperm(rows, generator=generator)
    held = max(1, int(settings.val_fraction * rows))
    val_rows, train_rows = order[:held], order[held:]
    mean = {n: f[train_rows].mean(0) for n, f in feats.items()}
    # A feature constant in training (a corner pixel, a silent band) is centred, not scaled.
    std = {n: torch.where(s > 1e-3, s, torch.ones_like(s)) for n, s in
           ((n, f[train_rows].std(0)) for n, f in feats.items())}
    feats = {n: (f - mean[n]) / std[n] for n, f in feats.items()}
    train = {n: f[train_rows] for n, f in feats.items()}
    val = {n: f[val_rows] for n, f in feats.items()}
    model = PeerAutoencoder({n: f.shape[1] for n, f in feats.items()}, settings)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    all_present = {n: torch.ones(len(val_rows), dtype=torch.bool) for n in names}
    history: list[tuple[float, float]] = []
    began = time.perf_counter()
    for _ in range(settings.epochs):
        model.train()
        shuffled = torch.randperm(len(train_rows), generator=generator)
        for begin in range(0, len(shuffled), settings.batch_size):
            picked = shuffled[begin:begin + settings.batch_size]
            present = _dropout(len(picked), names, settings.dropout, generator)
            loss = model.loss({n: x[picked] for n, x in train.items()}, present)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            history.append((time.perf_counter() - began, float(model.loss(val, all_present))))
    return PeerRun(model, mean, std, settings, history, time.perf_counter() - start)
