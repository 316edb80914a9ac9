"""Words spoken by the speech synthesisers installed from Debian, as fixed-length clips: the
audio side of the real-data suite (scripts/realdata_suite.py).

Engines and voices
------------------
- **espeak-ng** (package `espeak-ng`): every English accent of scripts/realdata.py with every
  voice variant (`en-us+m3`, `en-gb-scotland+whisper`, ...). The *speaker* is the variant: it
  sets the voice's character in every accent, so a held-out variant is held out everywhere.
- **flite** (package `flite`): `kal`, `kal16`, `awb`, `rms`, `slt` (`awb_time` only speaks
  clock times). `kal` and `kal16` are one speaker at two sample rates.
- **festival** (packages `festival festvox-kallpc16k`): `kal_diphone`, the same speaker as
  flite's kal, so it shares that speaker.

`split_voices` holds out whole speakers, per engine, so a test voice is never heard in
training and both splits keep more than one engine (a speaker whose engine has no other, like
festival's, stays in training).

A clip
------
`speak` asks the engine for the text at a tempo (1 = the engine's default) and a pitch offset
(semitones from the voice's own mean), trims the engine's leading and trailing silence,
resamples to the clip's rate, places the speech after a leading silence, adds white noise at a
signal-to-noise ratio and peak-normalises. The word is never cut off: when it does not fit,
the lead is shortened, then the word is re-synthesised faster, and at last time-compressed.
Every engine is deterministic for the same arguments, and the noise comes from the given seed.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realdata import ACCENTS, VARIANTS

ENGINES = ("espeak-ng", "flite", "festival")
#: The Debian packages each engine needs.
PACKAGES = {"espeak-ng": "espeak-ng", "flite": "flite", "festival": "festival festvox-kallpc16k"}
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
#: Each flite voice's mean pitch in Hz (measured on a sentence at the default settings): the
#: base of the pitch offset, since flite takes an absolute target mean.
FLITE_F0 = {"kal": 90.0, "kal16": 90.0, "awb": 130.0, "rms": 100.0, "slt": 174.0}
FESTIVAL_VOICE = "kal_diphone"
FESTIVAL_VOICE_DIR = Path("/usr/share/festival/voices/english/kal_diphone")
FESTIVAL_F0 = 105.0  # kal_diphone's int_lr_params target_f0_mean
FESTIVAL_STRETCH = 1.1  # kal_diphone's own Duration_Stretch
ESPEAK_WPM = 175  # espeak-ng's default speed (words per minute)
ESPEAK_PITCH_PER_SEMITONE = 8  # on espeak's 0..99 pitch scale, around its default 50
SILENCE = 0.01  # an engine's silence is trimmed where |x| < SILENCE * peak
PEAK = 0.9  # peak amplitude after normalisation (headroom below full scale)
REFITS = 3  # re-syntheses at a higher tempo before a word that does not fit is time-compressed


class EngineMissing(RuntimeError):
    """A speech engine (or its voice data) is not installed; the message names the package."""


@dataclass(frozen=True, order=True)
class Voice:
    """One voice of one engine; `str(voice)` ("flite/slt") is how manifests name it."""

    engine: str
    name: str

    def __str__(self) -> str:
        return f"{self.engine}/{self.name}"

    @property
    def speaker(self) -> str:
        """The person (or espeak variant) behind the voice: splits hold out whole speakers."""
        if self.engine == "espeak-ng":
            return f"espeak-ng/{self.name.split('+')[1]}"
        if self.name in ("kal", "kal16", FESTIVAL_VOICE):
            return "kal"
        return str(self)


def voices(engines: tuple[str, ...] = ENGINES) -> list[Voice]:
    """Every voice of `engines`, in a fixed order."""
    table = {"espeak-ng": [f"{a}+{v}" for a in ACCENTS for v in VARIANTS],
             "flite": list(FLITE_VOICES), "festival": [FESTIVAL_VOICE]}
    return [Voice(engine, name) for engine in engines for name in table[engine]]


def require(engine: str) -> None:
    """Raise `EngineMissing`, naming the Debian package, when `engine` cannot speak here."""
    program = {"espeak-ng": "espeak-ng", "flite": "flite", "festival": "text2wave"}[engine]
    voice_missing = engine == "festival" and not FESTIVAL_VOICE_DIR.is_dir()
    if shutil.which(program) is None or voice_missing:
        raise EngineMissing(f"{engine} is not installed (it speaks the suite's words): "
                            f"apt-get install -y {PACKAGES[engine]}")


def engine_version(engine: str) -> str:
    """The engine's version line (recorded with a dataset: another version, other sounds)."""
    require(engine)
    command = {"espeak-ng": ["espeak-ng", "--version"], "flite": ["flite", "--version"],
               "festival": ["festival", "--version"]}[engine]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    lines = [line.strip() for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    return (lines[-1] if engine == "flite" else lines[0]).split("Data at")[0].strip()


def _run(command: list[str], stdin: str | None = None) -> bytes:
    result = subprocess.run(command, input=None if stdin is None else stdin.encode(), capture_output=True,
                            check=False, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): "
                           f"{result.stderr.decode(errors='replace').strip()}")
    return result.stdout


def _espeak(voice: Voice, text: str, tempo: float, pitch: float, _: Path) -> bytes:
    speed = round(ESPEAK_WPM * tempo)
    level = int(np.clip(round(50 + ESPEAK_PITCH_PER_SEMITONE * pitch), 0, 99))
    return _run(["espeak-ng", "-v", voice.name, "-s", str(speed), "-p", str(level), "--stdout", text])


def _flite(voice: Voice, text: str, tempo: float, pitch: float, scratch: Path) -> bytes:
    f0 = FLITE_F0[voice.name] * 2 ** (pitch / 12)
    _run(["flite", "-voice", voice.name, "--setf", f"duration_stretch={1 / tempo:.4f}",
          "--setf", f"int_f0_target_mean={f0:.2f}", "-t", text, "-o", str(scratch)])
    return scratch.read_bytes()


def _festival(voice: Voice, text: str, tempo: float, pitch: float, scratch: Path) -> bytes:
    f0 = FESTIVAL_F0 * 2 ** (pitch / 12)
    scheme = (f"(begin (Parameter.set 'Duration_Stretch {FESTIVAL_STRETCH / tempo:.4f}) "
              f"(set! int_lr_params '((target_f0_mean {f0:.2f}) (target_f0_std 14) "
              "(model_f0_mean 170) (model_f0_std 34))))")
    _run(["text2wave", "-o", str(scratch), "-eval", scheme], stdin=text)
    return scratch.read_bytes()


SYNTHESISERS = {"espeak-ng": _espeak, "flite": _flite, "festival": _festival}


def synthesise(voice: Voice, text: str, tempo: float = 1.0, pitch: float = 0.0) -> tuple[np.ndarray, int]:
    """The engine's own rendering of `text`: float samples and their rate."""
    import soundfile

    if not text.strip():
        raise ValueError(f"{voice}: nothing to say (empty text)")
    with tempfile.TemporaryDirectory(prefix="mmae-speech-") as folder:
        data = SYNTHESISERS[voice.engine](voice, text, tempo, pitch, Path(folder) / "speech.wav")
    samples, rate = soundfile.read(io.BytesIO(data), dtype="float64", always_2d=True)
    if not np.abs(samples).max() > 0:
        raise RuntimeError(f"{voice} said nothing for {text!r}")
    return samples.mean(axis=1), int(rate)


def trim(speech: np.ndarray) -> np.ndarray:
    """The speech without the engine's leading and trailing silence."""
    loud = np.flatnonzero(np.abs(speech) >= SILENCE * np.abs(speech).max())
    return speech[loud[0]: loud[-1] + 1]


def resample(speech: np.ndarray, rate: int, target: int) -> np.ndarray:
    """`speech` from `rate` to `target` Hz (a windowed-sinc filter: torchaudio's)."""
    if rate == target:
        return speech
    import torch
    from torchaudio.functional import resample as torch_resample

    return torch_resample(torch.from_numpy(speech), rate, target).numpy()


def fitted(voice: Voice, text: str, tempo: float, pitch: float, sample_rate: int,
           num_samples: int) -> np.ndarray:
    """The trimmed speech at `sample_rate`, at most `num_samples` long: re-synthesised faster
    while it is too long, then (rarely) time-compressed, so nothing of the word is cut."""
    for _ in range(REFITS + 1):
        raw, rate = synthesise(voice, text, tempo, pitch)
        speech = resample(trim(raw), rate, sample_rate)
        if len(speech) <= num_samples:
            return speech
        tempo *= 1.05 * len(speech) / num_samples
    return compress(speech, num_samples)


def compress(speech: np.ndarray, num_samples: int) -> np.ndarray:
    """`speech` squeezed into `num_samples` by linear interpolation (faster and higher: the
    last resort of `fitted`)."""
    return np.interp(np.linspace(0, len(speech) - 1, num_samples), np.arange(len(speech)), speech)


def speak(voice: Voice, text: str, *, sample_rate: int = 16_000, num_samples: int = 16_000,
          tempo: float = 1.0, pitch: float = 0.0, lead_s: float = 0.0, snr_db: float = 30.0,
          noise_seed: int = 0) -> np.ndarray:
    """`text` spoken by `voice` as float32 mono, exactly `num_samples` at `sample_rate`: speech
    at `tempo` and `pitch` (semitones), after `lead_s` of silence (shortened to fit), white
    noise at `snr_db` below the speech, peak `PEAK`."""
    speech = fitted(voice, text, tempo, pitch, sample_rate, num_samples)
    lead = min(round(lead_s * sample_rate), num_samples - len(speech))
    clip = np.zeros(num_samples)
    clip[lead: lead + len(speech)] = speech
    rms = float(np.sqrt(np.mean(speech**2)))
    clip += np.random.default_rng(noise_seed).standard_normal(num_samples) * rms / 10 ** (snr_db / 20)
    return (clip * PEAK / np.abs(clip).max()).astype(np.float32)


def write_wav(path: Path, clip: np.ndarray, sample_rate: int) -> None:
    """A 16-bit PCM WAV of a float clip in [-1, 1] (rounded here, so bytes are reproducible)."""
    import soundfile

    soundfile.write(path, np.round(np.asarray(clip, dtype=np.float64) * 32767).astype(np.int16), sample_rate,
                    subtype="PCM_16", format="WAV")


def split_voices(available: list[Voice], rng: np.random.Generator,
                 fraction: float = 0.3) -> tuple[list[Voice], list[Voice]]:
    """(train, test) voices: whole speakers held out, about `fraction` of each engine's
    speakers, never all of them (a speaker shared with an engine that has no other stays in
    training), so no test voice is heard in training and both splits keep several engines."""
    speakers = sorted({v.speaker for v in available})
    engines_of = {s: {v.engine for v in available if v.speaker == s} for s in speakers}
    count = {e: len({v.speaker for v in available if v.engine == e}) for e in {v.engine for v in available}}
    quota = {e: min(n - 1, max(1, round(fraction * n))) if n > 1 else 0 for e, n in count.items()}
    held: set[str] = set()
    for i in rng.permutation(len(speakers)):
        speaker = speakers[i]
        if all(quota[e] > 0 for e in engines_of[speaker]):
            held.add(speaker)
            for engine in engines_of[speaker]:
                quota[engine] -= 1
    return ([v for v in available if v.speaker not in held], [v for v in available if v.speaker in held])
