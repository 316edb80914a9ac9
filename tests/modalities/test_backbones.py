"""Pretrained backbones under every modality: tiny ViT, wav2vec 2.0 and BERT models built from
configs and saved with `save_pretrained` (no download), trained through mmae-train frozen and
not, cached once when frozen, exported and loaded with the same codes from raw inputs."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from backbone_calls import BackboneCalls
from safetensors.torch import load_file
from transformers import (
    ASTFeatureExtractor,
    AutoModel,
    BitImageProcessorPil,
    ConvNextImageProcessorPil,
    ViTConfig,
    ViTImageProcessorPil,
    ViTModel,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Model,
    WhisperFeatureExtractor,
)

from mmae import load_encoder
from mmae.cli.train import train
from mmae.core.backbone import BackboneEncoder, block_list, tune_last_blocks
from mmae.core.errors import ConfigError, InputError
from mmae.modalities import AudioModality, ImageModality, TextModality
from mmae.modalities.audio import FbankInputs, WaveformInputs, WhisperInputs, feature_extractor
from mmae.modalities.image import ImageInputs, image_processor

TINY = ["experiment=tiny", "logger=none", "progress_bar=none"]
RATE = 8000  # the tiny wav2vec 2.0's rate (the synthetic audio is drawn at the modality's rate)
VIT = dict(patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
W2V = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
           conv_dim=(16, 16, 16), conv_stride=(5, 4, 4), conv_kernel=(10, 4, 4), num_feat_extract_layers=3,
           num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)


@pytest.fixture(scope="module")
def saved_vit(tmp_path_factory):
    """A grey 32x32 ViT; its processor resizes the synthetic 28x28 images to 32x32."""
    folder = tmp_path_factory.mktemp("tiny-vit")
    torch.manual_seed(1)
    ViTModel(ViTConfig(image_size=32, num_channels=1, **VIT)).save_pretrained(folder)
    processor = ViTImageProcessorPil(size={"height": 32, "width": 32}, image_mean=[0.5], image_std=[0.25])
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def saved_wav2vec2(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-wav2vec2")
    torch.manual_seed(2)
    Wav2Vec2Model(Wav2Vec2Config(**W2V)).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=RATE).save_pretrained(folder)
    return folder


def _backbone_overrides(name: str, folder, freeze: bool | None = None) -> list[str]:
    options = [f"modality.{name}.model={folder}"]
    if name == "audio":
        options.append(f"modality.audio.sample_rate={RATE}")
    if name == "text":
        options += ["modality.text.model_config=null", "modality.text.max_length=8"]
    if freeze is not None:
        options.append(f"modality.{name}.freeze={str(freeze).lower()}")
    return options


@pytest.fixture
def folders(saved_vit, saved_wav2vec2, saved_bert):
    return {"image": saved_vit, "audio": saved_wav2vec2, "text": saved_bert}


def _weights(folder) -> dict[str, torch.Tensor]:
    """The saved backbone's weights, named as the loaded module names them."""
    return AutoModel.from_pretrained(folder, dtype=torch.float32).state_dict()


# A frozen backbone is kept in eval mode on purpose (no dropout); Lightning points that out.
pytestmark = pytest.mark.filterwarnings("ignore:Found .* module\\(s\\) in eval mode:UserWarning")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["image", "audio", "text"])
@pytest.mark.parametrize("freeze", [True, False])
def test_each_backbone_trains_through_mmae_train_frozen_or_not(compose_cfg, folders, name, freeze):
    other = "vector" if name != "vector" else "image"
    report, objects = train(compose_cfg(*TINY, f"modality=[{name},{other}]",
                                        *_backbone_overrides(name, folders[name], freeze)))
    trained = objects["module"].model.encoder.encoders[name].backbone.state_dict()
    original = _weights(folders[name])
    assert set(trained) == set(original)
    unchanged = all(torch.equal(trained[k], original[k]) for k in trained)
    assert unchanged == freeze
    assert np.isfinite(report["metrics"][f"val/{name}/recon_all"])
    # The decoder reconstructs the modality's own features, whatever encodes them.
    recon_from_others = report["metrics"][f"val/{name}/recon_without_{name}"]
    assert np.isfinite(recon_from_others)


@pytest.mark.slow
def test_a_frozen_backbone_runs_once_per_sample_and_gives_the_uncached_result(compose_cfg, folders, tmp_path):
    """Epoch 1 computes every backbone output; epochs 2 and 3 run no backbone forward. The same
    run without the cache (modality dropout only, so both see the same inputs) ends with the
    same validation loss."""
    common = [*TINY, "modality=[image,audio]", "trainer.max_epochs=3", "corruption=modality_dropout",
              *_backbone_overrides("image", folders["image"]),
              *_backbone_overrides("audio", folders["audio"])]
    counter = ["+callbacks.calls._target_=backbone_calls.BackboneCalls"]
    cached_report, cached = train(compose_cfg(*common, *counter))
    calls = next(c for c in cached["trainer"].callbacks if isinstance(c, BackboneCalls)).per_epoch
    assert calls[0] > 0 and calls[1:] == [0, 0]
    stems = cached["module"].stems
    assert set(stems.names) == {"image", "audio"}
    batches = len(cached["datamodule"].train_dataloader()) + len(cached["datamodule"].val_dataloader())
    assert stems.forwards["image"] == batches  # every batch of epoch 1, none after

    plain_report, plain = train(compose_cfg(*common, *counter, "training.cache_backbones=false",
                                            f"paths.output_dir={tmp_path / 'uncached'}"))
    calls = next(c for c in plain["trainer"].callbacks if isinstance(c, BackboneCalls)).per_epoch
    assert len(calls) == 3 and min(calls) > 0 and plain["module"].stems is None
    loss = plain_report["metrics"]["val/loss"]
    assert cached_report["metrics"]["val/loss"] == pytest.approx(loss, rel=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("freeze", [True, False])
def test_the_export_gives_the_training_codes_from_raw_inputs(compose_cfg, folders, tmp_path, freeze):
    _, objects = train(compose_cfg(*TINY, "modality=[image,audio,text]",
                                   *(o for n in ("image", "audio", "text")
                                     for o in _backbone_overrides(n, folders[n], freeze))))
    model = objects["module"].model.eval()
    loaded = load_encoder(tmp_path / "encoder")
    batch = next(iter(objects["datamodule"].val_dataloader()))
    raw = {n: batch.inputs[n] for n in ("image", "audio", "text")}
    present = batch.present
    with torch.no_grad():
        expected = model.encoder(model.encoder.preprocess(raw), present, raw=raw).code
    torch.testing.assert_close(loaded(raw, present), expected, atol=1e-5, rtol=0)
    # The export stands alone: the backbones' architectures and processor settings, no paths.
    config = json.loads((tmp_path / "encoder" / "config.json").read_text())["modalities"]
    assert config["image"]["config"]["model"] is None
    assert config["image"]["config"]["model_config"]["model_type"] == "vit"
    assert config["image"]["config"]["processor"]["resize"] == {"height": 32, "width": 32}
    assert config["audio"]["config"]["extractor"]["type"] == "Wav2Vec2FeatureExtractor"
    weights = load_file(tmp_path / "encoder" / "model.safetensors")
    assert any(k.startswith("encoders.image.backbone.") for k in weights)


@pytest.mark.slow
def test_nested_settings_from_the_command_line_reach_the_checkpoint_as_plain_values(compose_cfg, folders):
    """A processor and a model_config with nested maps and lists, as Hydra overrides: the run
    ends (its best checkpoint reloads with weights_only) and builds the backbone they describe."""
    conv = "conv_dim:[16,16,16],conv_stride:[5,4,4],conv_kernel:[10,4,4],num_feat_extract_layers:3"
    report, objects = train(compose_cfg(
        *TINY, "modality=[image,audio]", f"modality.image.model={folders['image']}",
        "modality.image.processor={resize:{height:32,width:32},mean:[0.5],std:[0.25]}",
        f"modality.audio.sample_rate={RATE}",
        "modality.audio.model_config={model_type:wav2vec2,hidden_size:32,num_hidden_layers:1,"
        f"num_attention_heads:2,intermediate_size:64,num_conv_pos_embeddings:16,{conv}}}"))
    assert np.isfinite(report["metrics"]["val/loss"])
    audio = objects["module"].model.encoder.encoders["audio"].backbone
    assert audio.config.conv_dim == [16, 16, 16] and len(audio.encoder.layers) == 1
    image = objects["module"].model.modalities["image"]
    assert image.processor == {"resize": {"height": 32, "width": 32}, "mean": [0.5], "std": [0.25]}
    assert type(image.processor["resize"]) is dict


def test_a_speech_backbone_needs_the_raw_waveform_beside_preprocessed_features(folders, tmp_path):
    from mmae import MultimodalAutoencoder
    from mmae.core.fusion import MeanFusion

    audio = AudioModality(sample_rate=RATE, duration=0.5, model=str(folders["audio"]))
    model = MultimodalAutoencoder({"audio": audio}, MeanFusion, latent_dim=4, embed_dim=8).eval()
    raw = {"audio": 0.1 * torch.randn(2, audio.num_samples)}
    features = model.encoder.preprocess(raw)
    with pytest.raises(InputError, match="modality 'audio' is encoded from its raw input"):
        model.encoder(features)
    assert model.encoder(features, raw=raw).code.shape == (2, 4)
    from mmae.artifacts.export import export_encoder

    loaded = load_encoder(export_encoder(model, tmp_path / "encoder"))
    with pytest.raises(InputError, match="modality 'audio' is encoded from its raw input"):
        loaded(features, preprocessed=True)
    torch.testing.assert_close(loaded(features, preprocessed=True, raw=raw), loaded(raw), atol=0, rtol=0)
    import mmae

    with pytest.raises(InputError, match="modality 'audio' is encoded from its raw input"):
        mmae.impute(model, features, preprocessed=True)
    torch.testing.assert_close(mmae.impute(model, features, preprocessed=True, raw=raw)["audio"],
                               mmae.impute(model, raw)["audio"], atol=0, rtol=0)


# --- the processors in torch, against transformers' own ---------------------------------------

def _smooth_images(n: int, height: int, width: int) -> torch.Tensor:
    """Photographs are smooth: random pixels would measure the resampling filters' aliasing."""
    coarse = torch.rand(n, 3, 6, 6)
    return torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)


@pytest.mark.parametrize("processor, settings", [
    (BitImageProcessorPil(size={"shortest_edge": 20}, crop_size={"height": 16, "width": 16},
                          image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.25, 0.3]),
     {"resize": {"shortest_edge": 20}, "crop": [16, 16]}),
    (ConvNextImageProcessorPil(size={"shortest_edge": 24}, crop_pct=0.875),
     {"resize": {"shortest_edge": 27}, "crop": [24, 24]}),
    (ConvNextImageProcessorPil(size={"shortest_edge": 384}),
     {"resize": {"height": 384, "width": 384}, "crop": None}),
], ids=["dinov2-style", "convnext-crop-pct", "convnext-warp"])
def test_image_inputs_resize_crop_and_normalise_as_the_image_processor_does(processor, settings):
    derived = image_processor(processor.to_dict())
    assert {k: derived[k] for k in settings} == settings
    pixels = _smooth_images(2, 30, 49)  # an odd aspect ratio: the long side's rounding matters
    (ours,) = ImageInputs(derived, 3)(pixels)[0].values()
    images = list((pixels * 255).round().byte().permute(0, 2, 3, 1).numpy())
    reference = processor(images, return_tensors="pt")["pixel_values"]
    assert ours.shape == reference.shape
    # Pillow's and torch's bicubic filters differ a little; a pixel off would differ a lot.
    assert (ours - reference).abs().mean() < 0.02


def test_waveform_inputs_normalise_each_clip_as_the_extractor_does():
    waveform = torch.randn(3, 4000) * torch.tensor([[0.1], [1.0], [3.0]]) + 0.2
    (ours,) = WaveformInputs({"do_normalize": True})(waveform)[0].values()
    reference = Wav2Vec2FeatureExtractor(sampling_rate=RATE)(list(waveform.numpy()), sampling_rate=RATE,
                                                             return_tensors="pt")["input_values"]
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)


def test_whisper_inputs_equal_the_whisper_feature_extractor():
    extractor = WhisperFeatureExtractor(feature_size=80)
    waveform = 0.1 * torch.randn(2, 16000)
    settings = feature_extractor(extractor.to_dict())
    (ours,) = WhisperInputs(settings)(waveform)[0].values()
    reference = extractor(list(waveform.numpy()), sampling_rate=16000, return_tensors="pt")["input_features"]
    assert ours.shape == reference.shape == (2, 80, 3000)
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)


def test_whisper_pooling_leaves_out_the_padding_of_short_clips():
    from transformers import WhisperConfig, WhisperModel

    from mmae.core.backbone import Backbone

    config = WhisperConfig(d_model=16, encoder_layers=1, encoder_attention_heads=2, decoder_layers=1,
                           decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=80)
    backbone = Backbone("AudioModality", None, {**config.to_dict()}, True, "mean")
    adapter = WhisperInputs(feature_extractor(WhisperFeatureExtractor(feature_size=80).to_dict()))
    encoder = backbone.encoder(adapter, 8, example=0.1 * torch.randn(1, 16000))
    waveform = 0.1 * torch.randn(2, 16000)  # 1 s of a 30 s window: 50 of 1500 encoder frames
    kwargs, mask = adapter(waveform)
    assert mask.shape == (2, 1500) and mask.sum(1).tolist() == [50, 50]
    with torch.no_grad():
        hidden = encoder.backbone(**kwargs).last_hidden_state
        torch.testing.assert_close(encoder.stem(waveform), hidden[:, :50].mean(1))
    assert isinstance(WhisperModel(config).get_encoder(), type(encoder.backbone))


def test_fbank_inputs_equal_the_audio_spectrogram_transformer_extractor():
    extractor = ASTFeatureExtractor(max_length=120)
    waveform = 0.1 * torch.randn(2, 16000)
    (ours,) = FbankInputs(feature_extractor(extractor.to_dict()))(waveform)[0].values()
    reference = extractor(list(waveform.numpy()), sampling_rate=16000, return_tensors="pt")["input_values"]
    assert ours.shape == reference.shape == (2, 120, 128)
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)


def test_an_unsupported_feature_extractor_is_named():
    with pytest.raises(ConfigError, match="feature extractor 'SpeechT5FeatureExtractor' is not one mmae"):
        feature_extractor({"feature_extractor_type": "SpeechT5FeatureExtractor"})


# --- tuning part of a backbone, pooling --------------------------------------------------------

def test_trainable_blocks_tune_the_last_blocks_and_the_norm_after_them():
    model = ViTModel(ViTConfig(image_size=32, num_channels=1, **VIT))
    tune_last_blocks(model, 1)
    blocks = next(n for n, m in model.named_modules() if m is block_list(model))
    assert len(block_list(model)) == 2
    assert all(p.requires_grad == (n.startswith((f"{blocks}.1.", "layernorm", "pooler")))
               for n, p in model.named_parameters())
    with pytest.raises(ConfigError, match="trainable_blocks=3, but backbone ViTModel has 2 blocks"):
        tune_last_blocks(model, 3)


def test_trainable_blocks_train_only_those_blocks(compose_cfg, folders):
    _, objects = train(compose_cfg(*TINY, "modality=[image,vector]",
                                   *_backbone_overrides("image", folders["image"], freeze=False),
                                   "modality.image.trainable_blocks=1"))
    trained = objects["module"].model.encoder.encoders["image"].backbone.state_dict()
    original = _weights(folders["image"])
    changed = {k for k in trained if not torch.equal(trained[k], original[k])}
    blocks = next(n for n, m in objects["module"].model.encoder.encoders["image"].backbone.named_modules()
                  if isinstance(m, torch.nn.ModuleList))
    assert changed and all(k.startswith((f"{blocks}.1.", "layernorm.", "pooler.")) for k in changed)
    assert objects["module"].stems is None  # a backbone that trains is not cached


@pytest.mark.parametrize("pooling", ["mean", "cls", "attention"])
def test_each_pooling_gives_one_vector_per_sample(folders, pooling):
    image = ImageModality(model=str(folders["image"]), pooling=pooling)
    encoder = image.build_encoder(16)
    assert isinstance(encoder, BackboneEncoder)
    assert encoder(torch.rand(3, 1, 28, 28)).shape == (3, 16)
    assert encoder.cacheable == (pooling != "attention")  # attention pooling trains on every token


def test_cls_pooling_is_refused_where_there_is_no_cls_token(folders):
    with pytest.raises(ConfigError, match=r"pooling=cls, but backbone .* has no CLS token"):
        AudioModality(model=str(folders["audio"]), sample_rate=RATE, pooling="cls")


def test_gradient_checkpointing_is_switched_on(folders):
    encoder = ImageModality(model=str(folders["image"]), freeze=False,
                            gradient_checkpointing=True).build_encoder(8)
    backbone = encoder.backbone
    assert getattr(backbone, "is_activation_checkpointing", None) or backbone.is_gradient_checkpointing
    encoder(torch.rand(2, 1, 28, 28)).sum().backward()
    assert encoder.backbone.embeddings.patch_embeddings.projection.weight.grad is not None


def test_a_backbone_built_from_a_config_trains_by_default():
    image = ImageModality(model_config={"model_type": "vit", "image_size": 32, "num_channels": 1, **VIT})
    assert image.backbone.freeze is False and image.processor["resize"] == {"height": 32, "width": 32}
    assert any(p.requires_grad for p in image.build_encoder(8).backbone.parameters())


# --- bad input: errors that name the modality, the path and what is missing ------------------

def test_a_model_directory_without_its_processor_is_refused(tmp_path):
    ViTModel(ViTConfig(image_size=32, num_channels=1, **VIT)).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match=rf"ImageModality: {tmp_path} holds no image processor "
                                          r"\(preprocessor_config.json is missing\)"):
        ImageModality(model=str(tmp_path))


def test_a_processor_normalising_another_channel_count_is_refused(tmp_path):
    ViTModel(ViTConfig(image_size=32, num_channels=1, **VIT)).save_pretrained(tmp_path)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(tmp_path)  # RGB mean and std
    with pytest.raises(ConfigError, match=rf"ImageModality: the image processor of {tmp_path} normalises "
                                          r"3 channels, but this modality has 1"):
        ImageModality(model=str(tmp_path))


def test_a_backbone_of_another_channel_count_is_refused(tmp_path):
    ViTModel(ViTConfig(image_size=32, num_channels=3, **VIT)).save_pretrained(tmp_path)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match=r"takes 3-channel images, but this modality has 1 channel.*"
                                          r"channels=3 and modality.image.convert=true"):
        ImageModality(model=str(tmp_path))


def test_a_backbone_of_another_input_size_is_refused_when_built(tmp_path):
    ViTModel(ViTConfig(image_size=32, num_channels=1, **VIT)).save_pretrained(tmp_path)
    ViTImageProcessorPil(do_resize=False, image_mean=[0.5], image_std=[0.5]).save_pretrained(tmp_path)
    image = ImageModality(model=str(tmp_path))
    with pytest.raises(ConfigError, match=rf"ImageModality: backbone {tmp_path} does not fit this "
                                          r"modality's input \[1, 28, 28\].*: .*32"):
        image.build_encoder(8)


def test_a_speech_backbone_at_another_rate_or_on_too_short_clips_is_refused(saved_wav2vec2):
    with pytest.raises(ConfigError, match=f"takes audio at {RATE} Hz, but this modality reads it at "
                                          f"16000 Hz: set modality.audio.sample_rate={RATE}"):
        AudioModality(model=str(saved_wav2vec2))
    too_short = AudioModality(model=str(saved_wav2vec2), sample_rate=RATE, duration=0.005, n_fft=32,
                              hop_length=16)  # 40 samples; its convolutions need 85
    with pytest.raises(ConfigError, match=r"AudioModality: backbone .* does not fit this modality's "
                                          r"input \[40\]"):
        too_short.build_encoder(8)


@pytest.mark.slow
def test_a_hub_name_without_network_says_to_save_it_locally(tmp_path):
    code = ("from mmae.modalities import TextModality\n"
            "TextModality(model='no-such-org/no-such-model')")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode != 0
    assert "TextModality: 'no-such-org/no-such-model' is not a local directory" in result.stderr
    assert "save_pretrained(DIR)" in result.stderr


def test_every_trainable_backbone_weight_gets_a_gradient(folders):
    """What DDP requires: no trainable parameter left out of the loss (the model's own pooler,
    which mmae does not use, is frozen)."""
    for image in (ImageModality(model=str(folders["image"]), freeze=False),
                  ImageModality(model=str(folders["image"]), freeze=False, trainable_blocks=1)):
        encoder = image.build_encoder(8)
        encoder(torch.rand(2, 1, 28, 28)).sum().backward()
        unused = [n for n, p in encoder.named_parameters() if p.requires_grad and p.grad is None]
        assert unused == []


def test_a_pretrained_text_model_of_an_mmae_0_3_checkpoint_still_builds(saved_bert):
    text = TextModality(model=str(saved_bert), model_config={}, max_length=8)  # as 0.3 described it
    assert text.backbone.model == str(saved_bert) and text.backbone.model_config is None


def test_the_contractive_term_refuses_inputs_that_never_reach_a_backbone(folders):
    from mmae import MultimodalAutoencoder
    from mmae.core.fusion import MeanFusion
    from mmae.core.objectives import ContractivePenalty
    from mmae.modalities import VectorModality

    model = MultimodalAutoencoder({"image": ImageModality(model=str(folders["image"])),
                                   "vector": VectorModality(dim=3)}, MeanFusion, latent_dim=4, embed_dim=8)
    with pytest.raises(ConfigError, match=r"do not reach the frozen or raw-input backbones of \['image'\]"):
        ContractivePenalty().check(model)


def test_processor_and_extractor_settings_of_other_names_are_refused(folders):
    with pytest.raises(ConfigError, match=r"processor settings \['image_mean', 'size'\] are not ones mmae"):
        ImageModality(model=str(folders["image"]), processor={"size": {"height": 28}, "image_mean": [0.5]})
    with pytest.raises(ConfigError, match=r"extractor settings \['normalize'\] are not ones a "
                                          "Wav2Vec2FeatureExtractor has"):
        AudioModality(model=str(folders["audio"]), sample_rate=RATE,
                      extractor={"type": "Wav2Vec2FeatureExtractor", "normalize": True})


def test_freeze_with_trainable_blocks_is_refused(saved_vit):
    with pytest.raises(ConfigError, match="trainable_blocks tunes part of the backbone; set freeze=false"):
        ImageModality(model=str(saved_vit), freeze=True, trainable_blocks=1)


def test_text_modality_still_builds_its_default_model():
    text = TextModality(model_config={"model_type": "bert", "hidden_size": 16, "num_hidden_layers": 1,
                                      "num_attention_heads": 2, "intermediate_size": 32}, max_length=6)
    assert text.backbone.freeze is False
    assert text.build_encoder(8)(torch.randint(2, 50, (2, 6))).shape == (2, 8)


# --- exports that refer to the pretrained model; ONNX; mmae-features ------------------------

@pytest.fixture(scope="module")
def backbone_run(saved_vit, saved_wav2vec2, tmp_path_factory):
    """A short run with a frozen ViT and wav2vec 2.0, shared by the export tests below."""
    from hydra import compose, initialize_config_dir

    from mmae.config import CONFIG_DIR

    folder = tmp_path_factory.mktemp("backbone-run")
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.output_dir={folder}", *TINY, "modality=[image,audio]",
                                          *_backbone_overrides("image", saved_vit),
                                          *_backbone_overrides("audio", saved_wav2vec2)])
    _, objects = train(cfg)
    return folder, objects


def _val_raw(objects):
    batch = next(iter(objects["datamodule"].val_dataloader()))
    return {n: batch.inputs[n] for n in ("image", "audio")}, batch.present


@pytest.mark.slow
def test_an_export_can_refer_to_the_pretrained_models_instead_of_storing_them(backbone_run, tmp_path,
                                                                             saved_vit):
    from mmae.cli.export import main as export_main

    folder, objects = backbone_run
    export_main([str(folder / "checkpoints" / "best.ckpt"), "--output", str(tmp_path / "ref"),
                 "--reference-pretrained"])
    stored = load_file(tmp_path / "ref" / "model.safetensors")
    assert not any(".backbone." in k for k in stored)  # only what mmae trained
    full = (folder / "encoder" / "model.safetensors").stat().st_size
    assert (tmp_path / "ref" / "model.safetensors").stat().st_size < full / 2
    config = json.loads((tmp_path / "ref" / "config.json").read_text())
    assert config["modalities"]["image"]["config"]["model"] == str(saved_vit)
    raw, present = _val_raw(objects)
    torch.testing.assert_close(load_encoder(tmp_path / "ref")(raw, present),
                               load_encoder(folder / "encoder")(raw, present), atol=1e-6, rtol=0)


def test_a_referenced_text_model_loads_with_its_tokenizer(compose_cfg, saved_bert, tmp_path):
    from mmae.artifacts.export import export_encoder

    _, objects = train(compose_cfg(*TINY, "modality=[vector,text]", *_backbone_overrides("text", saved_bert)))
    model = objects["module"].model.eval()
    export_encoder(model, tmp_path / "ref", reference_pretrained=True)
    config = json.loads((tmp_path / "ref" / "config.json").read_text())["modalities"]["text"]["config"]
    assert config["model"] == str(saved_bert.resolve()) and config["tokenizer"] == "tokenizers/text"
    batch = next(iter(objects["datamodule"].val_dataloader()))
    raw = {n: batch.inputs[n] for n in ("vector", "text")}
    with torch.no_grad():
        expected = model.encoder(raw, batch.present).code
    torch.testing.assert_close(load_encoder(tmp_path / "ref")(raw, batch.present), expected,
                               atol=1e-6, rtol=0)


def test_stems_too_large_for_memory_go_to_a_mapped_file_that_leaves_nothing_behind(tmp_path, monkeypatch):
    import mmae.data.stem_cache as stem_cache

    monkeypatch.setattr(stem_cache, "fits_in_memory", lambda size: False)
    store = stem_cache.StemStore(8, tmp_path, "image (train)")
    store.put([11, 3], torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    store.put([5], torch.tensor([[5.0, 6.0]]))
    torch.testing.assert_close(store.get([5, 11, 3]), torch.tensor([[5.0, 6.0], [1.0, 2.0], [3.0, 4.0]]))
    assert store.missing([3, 4, 5, 6]) == [1, 3]
    assert list(tmp_path.iterdir()) == []  # unlinked at once: no file outlives the run


def test_a_referenced_model_whose_weights_changed_is_refused(backbone_run, tmp_path, saved_vit):
    import shutil

    from mmae.artifacts.export import ExportError, export_encoder

    _, objects = backbone_run
    changed = tmp_path / "vit"
    shutil.copytree(saved_vit, changed)
    model = ViTModel.from_pretrained(changed)
    with torch.no_grad():
        model.layernorm.weight.add_(0.01)
    model.save_pretrained(changed)
    image = objects["module"].model.modalities["image"]
    image.backbone.model = str(changed)  # as if the export named the changed copy
    try:
        export_encoder(objects["module"].model, tmp_path / "ref", reference_pretrained=True)
    finally:
        image.backbone.model = str(saved_vit)
    with pytest.raises(ExportError, match=rf"modality 'image' refers to the pretrained model {changed}, "
                                          r"whose weights here are not the ones"):
        load_encoder(tmp_path / "ref")


@pytest.mark.slow
def test_onnx_export_of_backbones_matches_pytorch(backbone_run, tmp_path):
    from mmae.artifacts.onnx import export_onnx

    folder, _ = backbone_run
    error = export_onnx(load_encoder(folder / "encoder"), tmp_path / "encoder.onnx")
    assert error is not None and error < 1e-4


@pytest.mark.slow
def test_an_encoder_onnx_cannot_trace_is_refused_with_a_clear_message(backbone_run, tmp_path, monkeypatch):
    from mmae.artifacts.onnx import export_onnx

    def untraceable(*args, **kwargs):
        raise torch._dynamo.exc.Unsupported("data-dependent control flow")

    monkeypatch.setattr(torch.onnx, "export", untraceable)
    folder, _ = backbone_run
    with pytest.raises(ConfigError, match=r"ONNX export could not trace this encoder \(backbones: "
                                          r"\{'image': 'ViTModel', 'audio': 'Wav2Vec2Model'\}\).*"
                                          "The safetensors export is complete"):
        export_onnx(load_encoder(folder / "encoder"), tmp_path / "encoder.onnx")


def test_mmae_features_encodes_raw_images_and_waveforms_as_training_did(backbone_run, tmp_path):
    from mmae.cli.features import main as features_main
    from mmae.evaluation.codes import encode_batches

    folder, objects = backbone_run
    output = tmp_path / "features.npz"
    features_main([f"encoder={folder / 'encoder'}", f"output={output}", "split=val",
                   "data.dataset.num_samples=320"])
    expected = encode_batches(objects["module"].model, objects["datamodule"].val_dataloader())
    saved = np.load(output)
    np.testing.assert_allclose(saved["features"], expected.codes.numpy(), atol=1e-5)
    np.testing.assert_array_equal(saved["ids"], expected.ids.numpy())


@pytest.mark.slow
def test_backbones_train_in_bf16_and_compiled(compose_cfg, folders, tmp_path):
    """bf16 autocast on the CPU (the GPU path is the same autocast), and torch.compile through
    dynamo and AOTAutograd (`aot_eager`: no C++ compiler needed) with cached backbones."""
    common = [*TINY, "modality=[image,audio]", *_backbone_overrides("image", folders["image"]),
              *_backbone_overrides("audio", folders["audio"], freeze=False)]
    report, objects = train(compose_cfg(*common, "trainer.precision=bf16-mixed"))
    assert objects["trainer"].precision == "bf16-mixed" and np.isfinite(report["metrics"]["val/loss"])
    stems = objects["module"].stems.stores[("train", "image")].values
    assert stems.dtype == torch.float32  # cached in full precision whatever autocast computed
    report, objects = train(compose_cfg(*common, "compile=true", "compile_options.backend=aot_eager",
                                        f"paths.output_dir={tmp_path / 'compiled'}"))
    assert objects["module"].model._compiled_call_impl is not None
    assert np.isfinite(report["metrics"]["val/loss"])
    raw, present = _val_raw(objects)
    model = objects["module"].model.eval()
    with torch.no_grad():
        expected = model.encoder(model.encoder.preprocess(raw), present, raw=raw).code
    torch.testing.assert_close(load_encoder(report["encoder"])(raw, present), expected, atol=1e-5, rtol=0)
