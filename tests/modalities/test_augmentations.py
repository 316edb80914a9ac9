"""Semantic-preserving augmentations (`Modality.augment`, `Augment`): seeded, exact no-ops at
strength 0, in range, and changing the nuisance while the content survives."""

import json

import pytest
import torch

from mmae import load_encoder
from mmae.cli.train import train
from mmae.core.corruption import Augment, Compose, DenoisingDropout, GaussianNoise, ModalityDropout
from mmae.core.errors import ConfigError
from mmae.data.batch import features_of
from mmae.modalities import AudioModality, ImageModality, TabularModality, TextModality, VectorModality
from mmae.modalities.text import CLASS_WORDS, FACTOR_WORDS, PRIVATE_WORDS

N = 64


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _glyphs(n: int = N, channels: int = 3, size: int = 32) -> torch.Tensor:
    """A bright plus sign of a random colour on a dark background of another: shape is the
    content, colour the nuisance."""
    g = _seeded(1)
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    middle, half = size // 2, size // 8
    plus = (((ys - middle).abs() < half) & ((xs - middle).abs() < 3 * half)) | \
           (((xs - middle).abs() < half) & ((ys - middle).abs() < 3 * half))
    ink = 0.6 + 0.4 * torch.rand(n, channels, 1, 1, generator=g)
    paper = 0.3 * torch.rand(n, channels, 1, 1, generator=g)
    return torch.where(plus, ink, paper)


def _phrases(modality: TextModality, n: int = N) -> torch.Tensor:
    words = [*CLASS_WORDS, *PRIVATE_WORDS, *(w for group in FACTOR_WORDS for w in group)]
    g = _seeded(2)
    rows = []
    for _ in range(n):
        picks = torch.randint(len(words), (int(torch.randint(2, 5, (1,), generator=g)),), generator=g)
        rows.append(modality.encode_text(" ".join(words[i] for i in picks.tolist())))
    return torch.stack(rows)


def _text(**settings) -> TextModality:
    tiny = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
    return TextModality(model_config=tiny, max_length=24, **settings)


def _table() -> TabularModality:
    return TabularModality(numeric=["a", "b"], categorical=["c", "d"],
                           categories={"c": ["x", "y", "z", "w"], "d": ["only"]},
                           mean=[0.0, 0.0], std=[1.0, 1.0])


def _table_rows(n: int = N) -> torch.Tensor:
    g = _seeded(3)
    return torch.cat([torch.randn(n, 2, generator=g), torch.randint(0, 5, (n, 1), generator=g).float(),
                      torch.zeros(n, 1)], dim=1)


def _audio(fitted: bool) -> AudioModality:
    audio = AudioModality(duration=0.25, n_mels=16, n_fft=512, hop_length=128)  # 32 frames
    if fitted:
        audio.set_statistics([-4.0 + 0.1 * i for i in range(16)], [2.0] * 16)
    return audio


def _log_mels(audio: AudioModality, n: int = N) -> torch.Tensor:
    return torch.randn(n, *audio.shape, generator=_seeded(4)) - 5.0


def _cases():
    """(id, modality, clean batch, check that values are valid)."""
    rgb, grey = ImageModality(channels=3, size=32), ImageModality(channels=1, size=16)
    in_unit = lambda m, x, y: bool(((y >= 0) & (y <= 1)).all())  # noqa: E731
    finite = lambda m, x, y: bool(torch.isfinite(y).all())  # noqa: E731
    byte_text, ascii_text = _text(), _text(tokenizer="ascii")
    fitted, plain = _audio(True), _audio(False)
    return [
        ("image-rgb", rgb, _glyphs(), in_unit),
        ("image-grey", grey, _glyphs(channels=1, size=16), in_unit),
        ("audio-fitted", fitted, _log_mels(fitted), finite),
        ("audio-plain", plain, _log_mels(plain), finite),
        ("text-bytes", byte_text, _phrases(byte_text), _valid_tokens),
        ("text-ascii", ascii_text, _phrases(ascii_text), _valid_tokens),
        ("tabular", _table(), _table_rows(), _valid_categories),
        ("vector", VectorModality(dim=6, mean=[0.0] * 6, std=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
         torch.randn(N, 6, generator=_seeded(5)), finite),
    ]


def _valid_tokens(modality, x, y) -> bool:
    pad = modality.tokenizer.pad_token_id
    padding = y == pad
    # Padding only at the end: once a row pads, it pads to the end.
    ends_padded = torch.equal(padding, padding.int().cummax(dim=1).values.bool())
    return bool(((y >= 0) & (y < modality.vocab_size)).all()) and ends_padded


def _valid_categories(modality, x, y) -> bool:
    codes = y[:, len(modality.numeric):]
    return bool((codes == codes.round()).all() and (codes >= 0).all()
                and (codes <= torch.tensor(modality.cardinalities) - 1).all())


CASES = _cases()
IDS = [case[0] for case in CASES]


@pytest.mark.parametrize("name, modality, x, valid", CASES, ids=IDS)
def test_seeded_in_range_and_same_shape(name, modality, x, valid):
    first = modality.augment(x, 1.0, _seeded(0))
    assert torch.equal(first, modality.augment(x, 1.0, _seeded(0)))
    assert not torch.equal(first, modality.augment(x, 1.0, _seeded(1)))
    assert not torch.equal(first, x)
    assert first.shape == x.shape and first.dtype == x.dtype
    assert valid(modality, x, first)
    assert valid(modality, x, modality.augment(x, 0.5, _seeded(0)))


@pytest.mark.parametrize("name, modality, x, valid", CASES, ids=IDS)
def test_strength_zero_returns_the_input_itself(name, modality, x, valid):
    g = _seeded(0)
    assert modality.augment(x, 0.0, g) is x
    assert torch.equal(g.get_state(), _seeded(0).get_state())  # and draws nothing


def _luma(images: torch.Tensor) -> torch.Tensor:
    return (images * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)


def _correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = (t.flatten(1) - t.flatten(1).mean(1, keepdim=True) for t in (a, b))
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)


def test_image_colours_change_while_the_glyph_survives():
    modality, x = ImageModality(channels=3, size=32), _glyphs()
    y = modality.augment(x, 1.0, _seeded(0))
    colour_shift = (y.mean(dim=(2, 3)) - x.mean(dim=(2, 3))).abs().amax(dim=1)
    assert colour_shift.median() > 0.03  # per-sample colour statistics move
    kept = _correlation(_luma(y), _luma(x))  # cropped and tilted, the plus sign is still there
    assert kept.median() > 0.45 and (kept > 0.15).all()
    other = _correlation(_luma(y), _luma(x.roll(8, dims=3)))  # a moved glyph correlates less
    assert kept.mean() > other.mean() + 0.2


def test_colour_jitter_alone_keeps_the_grey_levels_of_a_two_tone_glyph():
    from mmae.modalities.image import _colour_matrices, _jitter_colours

    x = _glyphs()
    matrix, contrast = _colour_matrices(N, 3, 1.0, _seeded(0), x.device)
    y = _jitter_colours(x, matrix, contrast).clamp(0.0, 1.0)
    assert not torch.allclose(y, x, atol=0.05)
    assert (_correlation(_luma(y), _luma(x)) > 0.99).all()  # grey edges exactly where they were


def test_random_greyscale_and_geometry_at_full_strength():
    modality, x = ImageModality(channels=3, size=32), _glyphs(400)
    y = modality.augment(x, 1.0, _seeded(0))
    grey = (y.amax(dim=1) - y.amin(dim=1)).flatten(1).amax(dim=1) < 1e-5
    assert 0.1 < grey.float().mean() < 0.3  # 20% at strength 1
    # The plus sign's ink moves (crop, rotation): its centre of mass leaves the image centre.
    ink = _luma(y) > _luma(y).flatten(1).mean(1).view(-1, 1, 1)
    xs = torch.arange(32).float()
    centre = (ink.float().sum(1) * xs).sum(1) / ink.float().sum((1, 2))
    assert centre.std() > 0.5


def test_audio_masks_take_the_bands_training_mean_and_gain_shifts_the_level():
    audio = _audio(True)
    x = _log_mels(audio)
    y = audio.augment(x, 1.0, _seeded(0))
    band_mean = audio.feature_statistics()[0].expand_as(x)
    masked = y == band_mean
    assert masked.any(dim=(1, 2, 3)).float().mean() > 0.8
    level = (y - x)[~masked].abs().mean()
    assert level > 0.1  # gain (up to 6 dB = 1.38 nepers) and shifted frames
    plain = _audio(False)
    z = plain.augment(x, 1.0, _seeded(0))
    assert not torch.equal(z, y)  # the fill comes from the sample, not from statistics


def test_text_drops_close_up_and_masks_use_an_unused_id():
    modality = _text()
    x = _phrases(modality, 400)
    y = modality.augment(x, 1.0, _seeded(0))
    mask = modality.tokenizer.mask_token_id
    assert mask == 256 and not (x == mask).any()
    tokens = (x != 0).sum()
    assert (y == mask).sum() / tokens == pytest.approx(0.15 * 0.9, abs=0.02)
    assert 1 - (y != 0).sum() / tokens == pytest.approx(0.1, abs=0.02)
    for before, after in zip(x.tolist(), y.tolist(), strict=True):  # what is left keeps its order
        left = iter(t for t in before if t != 0)
        assert all(any(t == u for u in left) for t in after if t not in (0, mask))


def test_a_pretrained_tokenizer_keeps_its_special_tokens(saved_bert):
    modality = TextModality(model=str(saved_bert), max_length=12)
    x = _phrases(modality, 200)
    y = modality.augment(x, 1.0, _seeded(0))
    tokenizer = modality.tokenizer.tokenizer
    assert modality.tokenizer.mask_token_id == tokenizer.unk_token_id  # it has no mask token
    for special in (tokenizer.cls_token_id, tokenizer.sep_token_id):
        assert torch.equal((y == special).sum(1), (x == special).sum(1))
    assert (y == tokenizer.unk_token_id).any() and ((y != tokenizer.pad_token_id).sum() < (x != 0).sum())


def test_table_jitters_numbers_and_switches_categories_to_another():
    modality = _table()
    x = _table_rows(20_000)
    y = modality.augment(x, 1.0, _seeded(0))
    assert (y[:, :2] - x[:, :2]).std().item() == pytest.approx(0.1, rel=0.05)
    switched = y[:, 2] != x[:, 2]
    assert switched.float().mean().item() == pytest.approx(0.1, abs=0.01)
    assert (y[switched, 2] < 4).all()  # to a known category
    assert torch.equal(y[:, 3], x[:, 3])  # a column of one category cannot switch


def test_vector_jitter_is_in_standardised_units():
    modality = VectorModality(dim=3, mean=[5.0, 0.0, 0.0], std=[1.0, 10.0, 0.1])
    x = torch.zeros(20_000, 3)
    spread = (modality.augment(x, 0.5, _seeded(0)) - x).std(dim=0)
    torch.testing.assert_close(spread, torch.tensor([0.05, 0.5, 0.005]), rtol=0.05, atol=0)


def _batch():
    modalities = {"image": ImageModality(channels=3, size=16), "text": _text()}
    inputs = {"image": _glyphs(N, size=16), "text": _phrases(modalities["text"])}
    present = {"image": torch.rand(N, generator=_seeded(6)) < 0.7, "text": torch.ones(N, dtype=torch.bool)}
    inputs["image"][~present["image"]] = 0.0  # missing: zero-filled
    return modalities, inputs, present


def test_augment_keeps_presence_and_the_zero_fill_of_missing_samples():
    modalities, inputs, present = _batch()
    seen, kept = Augment(strength=1.0)(inputs, present, _seeded(0), modalities=modalities)
    assert all(torch.equal(kept[n], present[n]) for n in present)
    missing = ~present["image"]
    assert (seen["image"][missing] == 0).all()
    assert not torch.equal(seen["image"][~missing], inputs["image"][~missing])
    only, _ = Augment(strength=1.0, modalities=["text"])(inputs, present, _seeded(0), modalities=modalities)
    assert only["image"] is inputs["image"] and not torch.equal(only["text"], inputs["text"])


def test_denoising_dropout_without_augmentation_is_bit_identical_to_before():
    modalities, inputs, present = _batch()
    old = Compose(dropout=ModalityDropout(0.3), noise=GaussianNoise(0.5))
    for augment, same in ((0.0, True), (0.5, False)):
        new = DenoisingDropout(p=0.3, sigma=0.5, augment=augment)
        a = new(inputs, present, _seeded(7), modalities=modalities)
        b = old(inputs, present, _seeded(7), modalities=modalities)
        assert all(torch.equal(a[1][n], b[1][n]) for n in present)
        assert all(torch.equal(a[0][n], b[0][n]) for n in inputs) == same
    assert list(DenoisingDropout().steps) == ["dropout", "augment", "noise"]


@pytest.mark.parametrize("make, key", [(lambda: Augment(strength=1.5), "strength"),
                                       (lambda: Augment(strength=-0.1), "strength"),
                                       (lambda: DenoisingDropout(augment=2.0), "augment")])
def test_strength_outside_unit_interval_is_refused_naming_the_key(make, key):
    with pytest.raises(ConfigError, match=rf"{key} must be in \[0, 1\], got"):
        make()


@pytest.mark.slow
def test_a_run_with_augmentation_exports_an_encoder_that_never_augments(compose_cfg, tmp_path):
    cfg = compose_cfg("experiment=tiny", "logger=none", "progress_bar=none", "corruption=augment",
                      "modality=[image,vector,text]", "trainer.max_epochs=1")
    assert cfg.corruption.augment.strength == 0.5
    _, objects = train(cfg)
    model = objects["module"].model.eval()
    batch = next(iter(objects["datamodule"].val_dataloader()))
    with torch.no_grad():
        features, present, _ = features_of(model.encoder, batch)
        expected = model.encoder(features, present).code
    loaded = load_encoder(tmp_path / "encoder")
    raw = {name: batch.inputs[name] for name in model.modalities}
    torch.testing.assert_close(loaded(raw, present), expected, atol=1e-6, rtol=0)
    config = (tmp_path / "encoder" / "config.json").read_text()
    assert "augment" not in config.lower() and "corruption" not in config.lower()
    json.loads(config)
