"""Text through transformers (from a saved directory, frozen or not) and audio features."""

import pytest
import torch
from transformers import BertModel

from mmae.cli.train import train
from mmae.core.errors import ConfigError
from mmae.modalities import AudioModality, TextModality
from mmae.modalities.text import CLASS_WORDS, CharTokenizer

TINY = ["experiment=tiny", "logger=none", "progress_bar=none"]


# A frozen backbone is kept in eval mode on purpose (no dropout); Lightning points that out.
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Found .* module\\(s\\) in eval mode:UserWarning")
@pytest.mark.parametrize("freeze", [True, False])
def test_a_saved_transformers_model_trains_frozen_or_not(compose_cfg, saved_bert, freeze):
    report, objects = train(compose_cfg(
        *TINY, "modality=[image,text]", f"modality.text.model={saved_bert}",
        "modality.text.model_config=null", f"modality.text.freeze={str(freeze).lower()}",
        "modality.text.max_length=8"))
    trained = objects["module"].model.encoder.encoders["text"].backbone.state_dict()
    original = BertModel.from_pretrained(saved_bert).state_dict()
    unchanged = all(torch.equal(trained[k], original[k]) for k in original)
    assert unchanged == freeze
    assert 0 <= report["metrics"]["val/text/token_accuracy_all"] <= 1
    text = objects["module"].model.modalities["text"]
    sample = objects["datamodule"].dataset("val")[0]["inputs"]["text"]
    assert text.decode(sample.unsqueeze(0))[0].split()[1] in CLASS_WORDS  # words round-trip


def test_text_reconstructions_decode_to_strings(compose_cfg):
    _, objects = train(compose_cfg(*TINY, "modality=[vector,text]"))
    model = objects["module"].model.eval()
    batch = next(iter(objects["datamodule"].val_dataloader()))
    logits = model({"vector": batch.inputs["vector"]}).reconstructions["text"]
    strings = model.modalities["text"].decode(logits)
    assert len(strings) == len(batch) and all(isinstance(s, str) for s in strings)


def test_char_tokenizer_round_trips_and_pads():
    tokenizer = CharTokenizer()
    ids = tokenizer.encode("Hello, world", max_length=16)
    assert len(ids) == 16 and ids[-1] == tokenizer.pad_token_id
    assert tokenizer.decode(ids) == "Hello, world"
    with pytest.raises(ConfigError, match="give exactly one of model"):
        TextModality()


def test_log_mel_inverts_to_a_waveform_with_the_same_pitch():
    audio = AudioModality(sample_rate=8000, duration=0.5, n_fft=256, hop_length=64, n_mels=64,
                          hidden_channels=[8])
    t = torch.arange(audio.num_samples) / audio.sample_rate
    wave = torch.sin(2 * torch.pi * 440.0 * t).unsqueeze(0)
    features = audio.build_preprocessor()(wave)
    assert features.shape == (1, *audio.shape)
    restored = audio.to_waveform(features, n_iter=32)
    assert restored.shape == (1, audio.num_samples)
    spectrum = torch.fft.rfft(restored[0]).abs()
    peak = spectrum.argmax().item() * audio.sample_rate / audio.num_samples
    assert abs(peak - 440.0) < 30.0


@pytest.mark.parametrize(("rate", "hop"), [(8000, 256), (16000, 512), (22050, 512), (44100, 1024)])
def test_log_mel_frames_are_about_32_ms_apart_unless_set(rate, hop):
    audio = AudioModality(sample_rate=rate, duration=1.0)
    assert (audio.hop_length, audio.n_fft) == (hop, 2 * hop)
    assert audio.shape == (1, 64, 1 + rate // hop)
    assert audio.config()["hop_length"] == hop  # exports hold the resolved numbers
    log_mel = audio.build_preprocessor()(torch.randn(2, rate))
    assert log_mel.shape == (2, *audio.shape)
    chosen = AudioModality(sample_rate=rate, duration=1.0, hop_length=128)  # 8 bins per band: 512
    assert (chosen.hop_length, chosen.n_fft, chosen.shape[-1]) == (128, 512, 1 + rate // 128)
    window = AudioModality(sample_rate=rate, duration=1.0, n_fft=400)  # the hop fits the window
    assert (window.hop_length, window.n_fft) == (min(hop, 200), 400)
    with pytest.raises(ConfigError, match="n_fft and hop_length must be positive"):
        AudioModality(sample_rate=rate, hop_length=0)


def test_a_very_low_sample_rate_still_gets_a_positive_hop():
    audio = AudioModality(sample_rate=20, duration=1.0, n_mels=2)
    assert audio.hop_length == 1 and audio.shape == (1, 2, 21)
