"""Audio: files decoded with soundfile, log-mel features computed inside the model, a CNN over
the spectrogram (the default) or a pretrained `transformers` speech backbone over the waveform
(wav2vec 2.0, HuBERT, WavLM; Whisper's encoder; AST) with its feature extractor in torch, and
Griffin-Lim to turn a reconstructed log-mel back into sound."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmae.core.backbone import Backbone, Pooling, plain, processor_settings
from mmae.core.errors import ConfigError, DataError
from mmae.core.modality import Modality, file_cell, signed_uniform
from mmae.core.nn import ConvNet
from mmae.core.registry import MODALITIES

LOG_EPS = 1e-5
#: Most elements (128 MiB of float32) of a resampling filter: torchaudio builds one of about
#: `new * (old + 2 * width)` for rates reduced by their gcd, so odd rates (a corrupt header's
#: 999983 Hz) would need gigabytes; 44.1 kHz to 16 kHz needs 76,000.
MAX_RESAMPLE_FILTER = 1 << 25


def resample_filter_size(old: int, new: int, lowpass_filter_width: int = 6, rolloff: float = 0.99) -> int:
    """Elements of the filter torchaudio's `resample` builds from `old` to `new` Hz."""
    gcd = math.gcd(old, new)
    old, new = old // gcd, new // gcd
    width = math.ceil(lowpass_filter_width * old / (min(old, new) * rolloff))
    return new * (old + 2 * width)


class LogMel(nn.Module):
    """Waveform `[B, N]` -> log-mel `[B, 1, n_mels, frames]` (torchaudio, so it runs on the GPU
    with the model)."""

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int):
        super().__init__()
        from torchaudio.transforms import MelSpectrogram

        self.mel = MelSpectrogram(sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels)

    def forward(self, waveform: Tensor) -> Tensor:
        return torch.log(self.mel(waveform.float()) + LOG_EPS).unsqueeze(1)


#: The default frame step of the log-mel, in seconds. A spoken sound lasts 50 ms or more, so
#: frames about 32 ms apart still resolve speech, and the CNN's cost follows the clip's seconds
#: rather than its sample rate (within the rounding to a power of two: 23 to 43 ms). 16 kHz gives
#: a hop of 512 samples: a 64 x 32 map for 1 s, where a 128-sample hop made it 64 x 126 at 3.8x
#: the FLOPs (docs/benchmarks.md).
HOP_SECONDS = 0.032


def default_hop(sample_rate: int) -> int:
    """The power of two nearest to `HOP_SECONDS` of samples (512 at 16 kHz, 1024 at 44.1 kHz)."""
    return max(1, 2 ** round(math.log2(HOP_SECONDS * sample_rate)))


def default_window(hop_length: int, n_mels: int) -> int:
    """Twice the hop, and at least the power of two of 8 frequency bins per mel band (512 for
    64 bands), so that no mel filter falls between two bins."""
    return max(2 * hop_length, 2 ** math.ceil(math.log2(8 * n_mels)))


#: Augmentation magnitudes at strength 1 (each scales with the strength): a gain of up to
#: +-GAIN_DB decibels; a time shift of up to SHIFT of the frames; one frequency mask of up to
#: FREQUENCY_MASK of the bands and one time mask of up to TIME_MASK of the frames (SpecAugment).
GAIN_DB = 6.0
SHIFT = 0.1
FREQUENCY_MASK = 0.15
TIME_MASK = 0.1
#: Natural-log power units per decibel: 10 dB is a factor of 10 in power.
NEPERS_PER_DB = math.log(10.0) / 10.0


def _shift_time(x: Tensor, most: int, generator: torch.Generator | None) -> Tensor:
    """Shift each spectrogram `[B, ..., T]` by up to `most` frames either way; frames shifted in
    are the sample's minimum (its silence)."""
    n, frames = x.shape[0], x.shape[-1]
    shift = torch.randint(-most, most + 1, (n, 1), generator=generator, device=x.device)
    source = torch.arange(frames, device=x.device) - shift  # [B, T]
    inside = ((source >= 0) & (source < frames)).view(n, *[1] * (x.dim() - 2), frames)
    index = source.clamp(0, frames - 1).view(n, *[1] * (x.dim() - 2), frames).expand_as(x)
    silence = x.flatten(1).amin(dim=1).view(n, *[1] * (x.dim() - 1))
    return torch.where(inside, x.gather(-1, index), silence)


def _band_mask(n: int, size: int, widest: int, generator: torch.Generator | None,
               device: torch.device) -> Tensor:
    """`[B, size]`: per sample one band of 0 to `widest` consecutive indices, placed at random."""
    width = torch.randint(0, widest + 1, (n, 1), generator=generator, device=device)
    start = (torch.rand(n, 1, generator=generator, device=device) * (size - width + 1)).long()
    index = torch.arange(size, device=device)
    return (index >= start) & (index < start + width)


def fit_length(waveform: Tensor, num_samples: int) -> Tensor:
    """Zero-pad or crop the last dimension to `num_samples`."""
    length = waveform.shape[-1]
    if length >= num_samples:
        return waveform[..., :num_samples]
    return F.pad(waveform, (0, num_samples - length))


class WaveformInputs(nn.Module):
    """Waveforms -> `input_values` of wav2vec 2.0-style models: each clip standardised to zero
    mean and unit variance when the extractor does so (`do_normalize`)."""

    def __init__(self, settings: dict):
        super().__init__()
        self.normalize = bool(settings.get("do_normalize", True))

    def forward(self, waveform: Tensor) -> tuple[dict[str, Tensor], None]:
        x = waveform.float()
        if self.normalize:
            variance = x.var(dim=1, keepdim=True, unbiased=False)
            x = (x - x.mean(dim=1, keepdim=True)) / torch.sqrt(variance + 1e-7)
        return {"input_values": x}, None


class WhisperInputs(nn.Module):
    """Waveforms -> Whisper's `input_features`: padded to its 30 s window, log10-mel of its own
    filter bank, clamped to 8 below each clip's peak and scaled, as its extractor does. The
    mask marks the encoder frames (two mel frames each) that hold the clip, so pooling leaves
    out the padding that fills most of the window for short clips."""

    def __init__(self, settings: dict):
        super().__init__()
        from transformers import WhisperFeatureExtractor

        extractor = WhisperFeatureExtractor(**{k: v for k, v in settings.items() if k != "type"})
        self.n_fft, self.hop_length = extractor.n_fft, extractor.hop_length
        self.n_samples = extractor.n_samples
        self.register_buffer("filters", torch.from_numpy(extractor.mel_filters).float().T, persistent=False)
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)

    def forward(self, waveform: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        x = fit_length(waveform.float(), self.n_samples)
        stft = torch.stft(x, self.n_fft, self.hop_length, window=self.window, return_complex=True)
        power = stft[..., :-1].abs() ** 2
        log_mel = (self.filters @ power).clamp_min(1e-10).log10()
        log_mel = torch.maximum(log_mel, log_mel.amax(dim=(1, 2), keepdim=True) - 8.0)
        frames = power.shape[-1] // 2  # the encoder's stride-2 convolution halves the mel frames
        held = math.ceil(min(waveform.shape[-1], self.n_samples) / self.hop_length / 2)
        mask = (torch.arange(frames, device=x.device) < held).expand(x.shape[0], frames)
        return {"input_features": (log_mel + 4.0) / 4.0}, mask


class FbankInputs(nn.Module):
    """Waveforms -> the Audio Spectrogram Transformer's `input_values`: Kaldi filter banks of
    `num_mel_bins`, padded or cut to `max_length` frames, normalised by its dataset statistics."""

    def __init__(self, settings: dict):
        super().__init__()
        self.rate, self.bins = int(settings["sampling_rate"]), int(settings["num_mel_bins"])
        self.frames = int(settings["max_length"])
        self.normalize = bool(settings.get("do_normalize", True))
        self.mean, self.std = float(settings.get("mean", 0.0)), float(settings.get("std", 0.5))

    def forward(self, waveform: Tensor) -> tuple[dict[str, Tensor], None]:
        from torchaudio.compliance.kaldi import fbank

        banks = [fbank(clip.float().unsqueeze(0), sample_frequency=self.rate, window_type="hanning",
                       num_mel_bins=self.bins) for clip in waveform]
        x = torch.stack([fit_length(b.T, self.frames).T for b in banks])
        if self.normalize:
            x = (x - self.mean) / (2 * self.std)
        return {"input_values": x}, None


#: The settings each extractor's module reads (a saved extractor's names for them).
EXTRACTOR_KEYS = {
    "Wav2Vec2FeatureExtractor": ("sampling_rate", "do_normalize"),
    "WhisperFeatureExtractor": ("feature_size", "sampling_rate", "n_fft", "hop_length", "chunk_length"),
    "ASTFeatureExtractor": ("sampling_rate", "num_mel_bins", "max_length", "do_normalize", "mean", "std")}
#: A saved feature extractor's type -> the torch module that does its work.
EXTRACTORS: dict[str, type[nn.Module]] = {
    "Wav2Vec2FeatureExtractor": WaveformInputs, "WhisperFeatureExtractor": WhisperInputs,
    "ASTFeatureExtractor": FbankInputs}


def feature_extractor(saved: dict) -> dict:
    """The settings of a saved feature extractor that its `EXTRACTORS` module applies."""
    kind = saved.get("feature_extractor_type")
    if kind not in EXTRACTORS:
        raise ConfigError(f"AudioModality: feature extractor {kind!r} is not one mmae computes in torch; "
                          f"supported: {sorted(EXTRACTORS)}")
    return {"type": kind, **{k: saved[k] for k in EXTRACTOR_KEYS[kind] if k in saved}}


@MODALITIES.register("audio")
class AudioModality(Modality):
    """Mono audio of `duration` seconds at `sample_rate`; files of another rate are resampled,
    multi-channel files down-mixed, shorter/longer ones zero-padded/cropped.

    The model encodes and reconstructs the log-mel spectrogram (natural log of power), which
    the encoder standardises per mel band with `mean`/`std` fitted on the training split
    (`normalize: false`: as it is). `to_waveform` inverts a reconstruction (inverse mel +
    Griffin-Lim) so it can be listened to. `hop_length: null` steps frames by about 32 ms
    (`default_hop`; at most half of a given `n_fft`) and `n_fft: null` is twice the hop, or more
    for many bands (`default_window`). `hidden_channels: null` sizes the CNN from the
    spectrogram (see `mmae.core.nn`).

    `model` (a directory saved with `save_pretrained`, or a hub name) encodes the waveform with
    a pretrained speech backbone instead of the CNN; its feature extractor's settings are read
    from the same place (or given as `extractor`), and its sampling rate must be the
    modality's. The decoder still reconstructs the log-mel. `model_config` builds an untrained
    backbone; `freeze`, `pooling`, `trainable_blocks`, `gradient_checkpointing`: see
    `mmae.core.backbone.Backbone`.
    """

    statistics_axis = 1  # per mel band of [1, n_mels, frames]
    decoding_keys = ("sample_rate", "duration")
    feature_keys = ("n_fft", "hop_length", "n_mels", "model", "extractor")
    preview_media = "audio"

    def __init__(self, sample_rate: int = 16000, duration: float = 1.0, n_fft: int | None = None,
                 hop_length: int | None = None, n_mels: int = 64,
                 hidden_channels: Sequence[int] | None = None,
                 normalize: bool = True, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, likelihood: str = "gaussian",
                 column: str | None = None, model: str | None = None, model_config: dict | None = None,
                 extractor: dict | None = None, freeze: bool | None = None, pooling: Pooling = "mean",
                 trainable_blocks: int | None = None, gradient_checkpointing: bool = False):
        if sample_rate <= 0 or duration <= 0 or n_mels <= 0:
            raise ConfigError("AudioModality: sample_rate, duration and n_mels must be positive, got "
                              f"{sample_rate}, {duration}, {n_mels}")
        if hop_length is None:  # about 32 ms, and no more than half the window when one is given
            hop_length = default_hop(sample_rate)
            hop_length = hop_length if n_fft is None else min(hop_length, n_fft // 2)
        if n_fft is None:
            n_fft = default_window(hop_length, n_mels)
        if hop_length <= 0 or n_fft <= 0:
            raise ConfigError(f"AudioModality: n_fft and hop_length must be positive, got {n_fft}, "
                              f"{hop_length}")
        self.sample_rate, self.duration = int(sample_rate), float(duration)
        self.n_fft, self.hop_length, self.n_mels = int(n_fft), int(hop_length), int(n_mels)
        self.num_samples = round(self.sample_rate * self.duration)
        self.frames = 1 + self.num_samples // self.hop_length  # torchaudio's centred STFT
        super().__init__((1, self.n_mels, self.frames), raw_shape=(self.num_samples,), column=column)
        self.net = ConvNet("AudioModality", 1, self.n_mels, self.frames, hidden_channels)
        self._continuous(normalize, mean, std, likelihood)
        self.backbone, self.extractor = None, None
        if model is not None or model_config is not None:
            self.backbone = Backbone("AudioModality", model, model_config, freeze, pooling, trainable_blocks,
                                     gradient_checkpointing)
            self.extractor = plain(extractor) if extractor is not None else self._default_extractor()
            self._check_backbone_rate()
            if pooling == "cls" and self.extractor["type"] != "ASTFeatureExtractor":
                raise ConfigError(f"AudioModality: pooling=cls, but backbone {self.backbone.source()} has "
                                  "no CLS token (only the Audio Spectrogram Transformer has one); use "
                                  "pooling=mean or attention")

    @property
    def encodes_raw(self) -> bool:
        """A speech backbone reads the waveform; the CNN reads the log-mel."""
        return self.backbone is not None

    def _default_extractor(self) -> dict:
        if self.backbone.model is not None:
            saved = processor_settings("AudioModality", self.backbone.model, "feature extractor")
            return feature_extractor(saved)
        return {"type": "Wav2Vec2FeatureExtractor", "sampling_rate": self.sample_rate, "do_normalize": True}

    def _check_backbone_rate(self) -> None:
        kind = self.extractor.get("type")
        if kind not in EXTRACTORS:
            raise ConfigError(f"AudioModality: extractor type must be one of {sorted(EXTRACTORS)}, "
                              f"got {kind!r}")
        unknown = sorted(set(self.extractor) - {"type", *EXTRACTOR_KEYS[kind]})
        if unknown:
            raise ConfigError(f"AudioModality: extractor settings {unknown} are not ones a {kind} has; "
                              f"expected some of {list(EXTRACTOR_KEYS[kind])}")
        rate = int(self.extractor.get("sampling_rate", self.sample_rate))
        if rate != self.sample_rate:
            raise ConfigError(f"AudioModality: backbone {self.backbone.source()} takes audio at {rate} Hz, "
                              f"but this modality reads it at {self.sample_rate} Hz: set "
                              f"modality.audio.sample_rate={rate} (files are resampled when read)")

    @property
    def hidden_channels(self) -> list[int]:
        return self.net.hidden_channels

    def build_encoder(self, embed_dim: int) -> nn.Module:
        if self.backbone is None:
            return self.net.encoder(embed_dim)
        adapter = EXTRACTORS[self.extractor["type"]](self.extractor)
        return self.backbone.encoder(adapter, embed_dim, example=0.1 * torch.randn(1, self.num_samples))

    def build_decoder(self, hidden_dim: int) -> nn.Module:
        return self.net.decoder(hidden_dim)

    def build_preprocessor(self) -> nn.Module:
        return LogMel(self.sample_rate, self.n_fft, self.hop_length, self.n_mels)

    def augment(self, features: Tensor, strength: float, generator: torch.Generator | None) -> Tensor:
        """On the log-mel `[B, 1, n_mels, frames]`: a random gain (a constant in log power),
        a time shift, then one frequency and one time mask (SpecAugment) set to the band's
        training mean (the sample's mean without statistics). Loudness, timing and a few
        bands change; the sound's identity does not. A speech backbone reads the waveform,
        so its features are left alone."""
        if strength == 0 or self.encodes_raw:
            return features
        n, device = features.shape[0], features.device
        gain = signed_uniform(n, GAIN_DB * NEPERS_PER_DB * strength, generator, device)
        x = features + gain.to(features.dtype).view(n, 1, 1, 1)
        x = _shift_time(x, int(SHIFT * strength * self.frames), generator)
        bands = _band_mask(n, self.n_mels, int(FREQUENCY_MASK * strength * self.n_mels), generator, device)
        frames = _band_mask(n, self.frames, int(TIME_MASK * strength * self.frames), generator, device)
        masked = bands.view(n, 1, -1, 1) | frames.view(n, 1, 1, -1)
        return torch.where(masked, self._mask_value(x), x)

    def _mask_value(self, x: Tensor) -> Tensor:
        """What a masked element becomes: its band's training mean, else the sample's mean."""
        statistics = self.feature_statistics()
        if statistics is not None:
            return statistics[0].to(x.device, x.dtype)
        return x.mean(dim=(1, 2, 3), keepdim=True)

    def file_path(self, value: Any, root: Path) -> Path:
        return file_cell(value, root)

    def load(self, value: Any, root: Path) -> Tensor:
        import soundfile

        path = file_cell(value, root)
        if not os.path.isfile(path):
            raise DataError(f"file not found: {path}")
        try:
            data, rate = soundfile.read(path, dtype="float32", always_2d=True)
        except (soundfile.LibsndfileError, RuntimeError, ValueError) as error:
            raise DataError(f"cannot decode audio {path}: {error}") from None
        if data.shape[0] == 0:
            raise DataError(f"audio file {path} has no samples")
        if not np.isfinite(data).all():  # float WAV / FLAC may hold them
            raise DataError(f"audio file {path} holds NaN or infinite samples")
        waveform = torch.from_numpy(data).mean(dim=1)  # down-mix to mono
        if rate != self.sample_rate:
            from torchaudio.functional import resample

            size = resample_filter_size(rate, self.sample_rate)
            if size > MAX_RESAMPLE_FILTER:
                raise DataError(f"audio file {path} is at {rate} Hz: resampling it to {self.sample_rate} Hz "
                                f"needs a {4 * size / 2**30:.1f} GiB filter; convert it to a usual rate "
                                "first")
            waveform = resample(waveform, rate, self.sample_rate)
        return fit_length(waveform, self.num_samples)

    @torch.no_grad()
    def to_waveform(self, log_mel: Tensor, n_iter: int = 32) -> Tensor:
        """Log-mel `[B, 1, n_mels, frames]` -> waveform `[B, num_samples]` (Griffin-Lim)."""
        from torchaudio.transforms import GriffinLim, InverseMelScale

        # On the CPU: the gelsd least-squares driver, which copes with the rank-deficient filter
        # bank of many mels over few FFT bins, has no CUDA implementation.
        power = (log_mel.detach().squeeze(1).float().cpu().exp() - LOG_EPS).clamp_min(0.0)
        inverse = InverseMelScale(self.n_fft // 2 + 1, self.n_mels, self.sample_rate, driver="gelsd")
        griffin_lim = GriffinLim(self.n_fft, n_iter=n_iter, hop_length=self.hop_length)
        return fit_length(griffin_lim(inverse(power)), self.num_samples).to(log_mel.device)

    def preview(self, features: Tensor, n_iter: int = 32) -> list:
        """Float waveforms `[num_samples]` at `sample_rate` (Griffin-Lim of the log-mel),
        scaled down where they would clip."""
        waves = self.to_waveform(features, n_iter=n_iter).float().cpu()
        peak = waves.abs().amax(dim=1, keepdim=True).clamp_min(1.0)
        return list((waves / peak).numpy())

    def synthetic_view(self, labels: Tensor, factors: Tensor, private: Tensor,
                       num_classes: int, g: torch.Generator) -> Tensor:
        """A decaying tone: pitch from the class, decay, overtone and detuning from three shared
        factors, and a quiet private low tone."""
        rate, n = self.sample_rate, self.num_samples
        f = lambda i: factors[:, i % factors.shape[1]].view(-1, 1)  # noqa: E731
        t = torch.arange(n).view(1, -1) / rate
        top = 0.35 * rate
        pitch = (150.0 + (top - 150.0) * labels.float() / max(num_classes - 1, 1)).view(-1, 1)
        pitch = pitch * (1.0 + 0.03 * f(2))
        envelope = torch.exp(-t * (2.0 + 1.5 * (f(0) + 1.0)) / self.duration)
        overtone = 0.25 * (f(1) + 1.0)
        tone = torch.sin(2 * torch.pi * pitch * t) + overtone * torch.sin(4 * torch.pi * pitch * t)
        hum = 0.1 * torch.sin(2 * torch.pi * (60.0 + 20.0 * private[:, :1]) * t)
        return 0.5 * envelope * tone + hum

    def config(self) -> dict:
        return {"sample_rate": self.sample_rate, "duration": self.duration, "n_fft": self.n_fft,
                "hop_length": self.hop_length, "n_mels": self.n_mels,
                "hidden_channels": self.hidden_channels, "normalize": self.normalize,
                "mean": self.mean, "std": self.std, "likelihood": self.likelihood, "column": self.column,
                **({} if self.backbone is None else {**self.backbone.config(), "extractor": self.extractor})}

    def export_assets(self, encoder: nn.Module, folder: Path, name: str) -> dict:
        """A backbone's architecture in place of its path (the weights are in the export)."""
        return {} if self.backbone is None else self.backbone.export_config()

    def referenced_weights(self, encoder: nn.Module) -> tuple[str, dict] | None:
        return None if self.backbone is None else self.backbone.referenced_weights()
