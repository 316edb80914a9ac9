"""Encoder export: exact, self-describing, free of the decoder, and safe to load."""

import json
import pickle
import subprocess
import sys
from itertools import combinations

import pytest
import torch
from export_signing import as_unsigned_format, edit_signed
from safetensors import safe_open

from mmae import MultimodalAutoencoder, load_encoder
from mmae.artifacts.export import ExportError, export_encoder, load_checkpoint_model
from mmae.cli.export import main as export_main
from mmae.cli.train import train
from mmae.core.errors import InputError
from mmae.core.fusion import AttentionFusion, MeanFusion, MoPoEFusion, PoEFusion
from mmae.core.registry import FUSIONS, MODALITIES
from mmae.modalities import AudioModality, ImageModality, TabularModality, TextModality, VectorModality

TEXT = {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 64}


def _modalities():
    tabular = TabularModality(numeric=["a"], categorical=["c"], categories={"c": ["x", "y"]},
                              mean=[1.0], std=[2.0])
    return {"image": ImageModality(size=8, hidden_channels=[4], mean=[0.5], std=[0.25]),
            "vector": VectorModality(dim=3, hidden=[8]),
            "audio": AudioModality(sample_rate=4000, duration=0.25, n_fft=128, hop_length=32, n_mels=16,
                                   hidden_channels=[4]),
            "text": TextModality(model_config=TEXT, max_length=6), "tabular": tabular}


def _raw_batch(n: int = 3):
    return {"image": torch.rand(n, 1, 8, 8), "vector": torch.randn(n, 3), "audio": torch.randn(n, 1000),
            "text": torch.randint(2, 90, (n, 6)), "tabular": torch.tensor([[0.5, 1.0]] * n)}


#: Every registered fusion: the deterministic ones under an AE, and a VAE with mean fusion and
#: with each expert fusion.
VARIANTS = ([(False, FUSIONS[n]) for n in FUSIONS if not FUSIONS[n].variational] + [(True, MeanFusion)]
            + [(True, FUSIONS[n]) for n in FUSIONS if FUSIONS[n].variational])
NAMES = ["image", "vector", "audio", "text", "tabular"]


def test_the_round_trips_below_cover_every_registered_modality():
    assert set(_modalities()) == set(NAMES) == set(MODALITIES.names())
SUBSETS = [set(s) for r in range(1, 6) for s in combinations(NAMES, r)]


@pytest.mark.parametrize("variational, fusion", VARIANTS,
                         ids=[f"{'vae' if v else 'ae'}-{f.__name__}" for v, f in VARIANTS])
def test_loaded_export_equals_the_model_for_every_subset(tmp_path, variational, fusion):
    model = MultimodalAutoencoder(_modalities(), fusion, latent_dim=4, embed_dim=16, decoder_hidden=16,
                                  variational=variational).eval()
    loaded = load_encoder(export_encoder(model, tmp_path / "encoder"))
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    raw = _raw_batch()
    with torch.no_grad():
        features = model.encoder.preprocess(raw)
        for subset in SUBSETS:
            expected = model.encoder({n: features[n] for n in subset}).code
            torch.testing.assert_close(loaded({n: raw[n] for n in subset}), expected, atol=1e-6, rtol=0)
            torch.testing.assert_close(loaded({n: features[n] for n in subset}, preprocessed=True),
                                       expected, atol=1e-6, rtol=0)


def test_export_holds_no_decoder_and_describes_itself(tmp_path):
    model = MultimodalAutoencoder(_modalities(), PoEFusion, latent_dim=4, embed_dim=16, variational=True)
    folder = export_encoder(model, tmp_path / "encoder")
    with safe_open(folder / "model.safetensors", "pt") as weights:
        keys = set(weights.keys())
    assert keys == set(model.encoder.state_dict())
    assert not any("decoder" in k or k.startswith("heads") for k in keys)
    config = json.loads((folder / "config.json").read_text())
    assert config["mmae_version"] == "0.8.0" and len(config["weights_sha256"]) == 64
    assert config["encoder"]["latent_dim"] == 4 and config["fusion"]["class"] == "poe"
    assert config["modalities"]["tabular"]["config"]["mean"] == [1.0]
    assert config["modalities"]["image"]["config"]["std"] == [0.25]


def test_vae_export_returns_the_posterior_mean_or_a_sample(tmp_path):
    model = MultimodalAutoencoder(_modalities(), PoEFusion, latent_dim=4, embed_dim=16,
                                  variational=True).eval()
    folder = export_encoder(model, tmp_path / "encoder")
    raw = {"vector": torch.randn(5, 3)}
    mean = load_encoder(folder)(raw)
    torch.testing.assert_close(mean, load_encoder(folder)(raw))
    assert not torch.allclose(load_encoder(folder, sample=True)(raw), mean)


@pytest.mark.slow
def test_loading_imports_no_training_stack(tmp_path):
    folder = export_encoder(MultimodalAutoencoder(_modalities(), MeanFusion, latent_dim=4, embed_dim=16),
                            tmp_path / "encoder")
    script = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pytorch_lightning", "lightning", "hydra", "wandb"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
import torch, mmae
encoder = mmae.load_encoder({str(folder)!r})
print(tuple(encoder({{"vector": torch.randn(2, 3)}}).shape))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "(2, 4)"


class _Plant:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def export_dir(tmp_path):
    model = MultimodalAutoencoder({"vector": VectorModality(dim=3)}, MeanFusion, latent_dim=2, embed_dim=8)
    return export_encoder(model, tmp_path / "encoder")


def test_a_pickled_weights_file_is_refused_and_never_unpickled(export_dir, tmp_path):
    marker = tmp_path / "pwned"
    (export_dir / "model.safetensors").write_bytes(pickle.dumps({"w": _Plant(str(marker))}))
    with pytest.raises(ExportError, match="is not a safetensors file"):
        load_encoder(export_dir)
    torch.save({"w": _Plant(str(marker))}, export_dir / "model.safetensors")
    with pytest.raises(ExportError, match="is not a safetensors file"):
        load_encoder(export_dir)
    assert not marker.exists()


def _edit_config(folder, change):
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))


#: Refusals that come before the config's own check (versions, the weights' SHA-256), or after
#: it, for a config.json signed again as if exported that way (the registry's).
@pytest.mark.parametrize("change, message", [
    (lambda c: c["fusion"].update({"class": "os.system"}),
     r"fusion: fusion class 'os.system' is not one of mmae's \(mean, concat, attention, poe, moe, mopoe\).*"
     r"trust_code=True"),
    (lambda c: c["modalities"]["vector"].update({"class": "subprocess.Popen"}),
     r"modality 'vector': modality class 'subprocess.Popen' is not one of mmae's .*trust_code=True"),
    (lambda c: c.update({"mmae_version": "7.0.0"}),
     r"exported by mmae 7.0.0; this is mmae 0.8.0: major versions differ \(expected 0.x\)"),
    (lambda c: c.update({"mmae_version": "0.1.0", "format_version": 1}),
     r"export format 1 \(mmae 0.1.0\), expected one of \(2, 3, 4\): its networks are not the ones this mmae "
     r"builds"),
])
def test_tampered_or_foreign_configs_are_refused(export_dir, change, message):
    edit_signed(export_dir, change)
    with pytest.raises(ExportError, match=message):
        load_encoder(export_dir)


def test_a_config_naming_a_foreign_class_unsigned_is_refused_as_edited(export_dir):
    _edit_config(export_dir, lambda c: c["fusion"].update({"class": "os.system"}))
    with pytest.raises(ExportError, match=r"config\.json was edited after export"):
        load_encoder(export_dir, trust_code=True)


def test_a_wrong_weights_sha256_is_refused(export_dir):
    _edit_config(export_dir, lambda c: c.update({"weights_sha256": "0" * 64}))
    with pytest.raises(ExportError, match=r"SHA-256 .* does not match config.json's 0000"):
        load_encoder(export_dir)


def test_trusted_code_must_still_name_a_component_class(export_dir):
    edit_signed(export_dir, lambda c: c["fusion"].update({"class": "os:system"}))
    with pytest.raises(ExportError, match=r"fusion: 'os:system' is not a Fusion subclass"):
        load_encoder(export_dir, trust_code=True)
    edit_signed(export_dir, lambda c: c["fusion"].update({"class": "no_such_module_here:Fusion"}))
    with pytest.raises(ExportError, match=r"cannot import fusion class 'no_such_module_here:Fusion'"):
        load_encoder(export_dir, trust_code=True)


def test_format_2_exports_naming_mmae_module_paths_still_load(export_dir):
    """mmae 0.2 named classes by module path (`mmae.fusion.PoEFusion`); the networks are the
    same, so those exports load as they are."""
    expected = load_encoder(export_dir)
    def module_paths(config):
        config["fusion"]["class"] = f"mmae.fusion.{type(expected.encoder.fusion).__name__}"
        for entry, modality in zip(config["modalities"].values(), expected.modalities.values(), strict=True):
            entry["class"] = f"mmae.modalities.{type(modality).__name__}"
    as_unsigned_format(export_dir, 2, module_paths)  # format 2 recorded no config_sha256
    loaded = load_encoder(export_dir)
    assert type(loaded.encoder.fusion) is type(expected.encoder.fusion)
    for key, value in expected.encoder.state_dict().items():
        assert torch.equal(loaded.encoder.state_dict()[key], value)


def test_missing_and_truncated_weights_are_reported(export_dir):
    weights = export_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-20])
    with pytest.raises(ExportError, match=r"does not match config\.json's .*truncated or was modified"):
        load_encoder(export_dir)
    weights.unlink()
    with pytest.raises(ExportError, match=r"weights file .*model\.safetensors is missing"):
        load_encoder(export_dir)
    with pytest.raises(ExportError, match="no export directory"):
        load_encoder(export_dir / "nope")


def test_weights_of_another_shape_than_the_config_are_reported(export_dir):
    edit_signed(export_dir, lambda c: c["encoder"].update({"latent_dim": 5}))
    with pytest.raises(ExportError, match=r"model\.safetensors does not match config\.json"):
        load_encoder(export_dir)


def test_unknown_modality_and_wrong_shapes_name_what_was_expected(export_dir):
    encoder = load_encoder(export_dir)
    with pytest.raises(InputError, match=r"unknown modality 'image'; this model was built for \['vector'\]"):
        encoder({"image": torch.rand(1, 1, 8, 8)})
    with pytest.raises(InputError,
                       match=r"modality 'vector': expected a raw batch of shape \[B, 3\], got \[2, 4\]"):
        encoder({"vector": torch.randn(2, 4)})


def test_training_exports_the_best_model_and_the_cli_reexports_a_checkpoint(compose_cfg, tmp_path):
    report, objects = train(compose_cfg("experiment=tiny", "logger=none",
                                        "progress_bar=none", "model=vae", "fusion=mopoe"))
    model = objects["module"].model.eval()
    batch = next(iter(objects["datamodule"].val_dataloader()))
    raw = {n: batch.inputs[n] for n in model.modalities}
    expected = model.encoder(model.encoder.preprocess(raw), batch.present).code
    encoder = load_encoder(tmp_path / "encoder")
    torch.testing.assert_close(encoder(raw, batch.present), expected, atol=1e-6, rtol=0)
    assert report["encoder"] == str(tmp_path / "encoder")

    export_main([str(tmp_path / "checkpoints" / "best.ckpt"), "--output", str(tmp_path / "again")])
    torch.testing.assert_close(load_encoder(tmp_path / "again")(raw, batch.present), expected,
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(load_checkpoint_model(tmp_path / "checkpoints" / "best.ckpt").encoder(
        model.encoder.preprocess(raw), batch.present).code, expected, atol=1e-6, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("variational, fusion", [(False, MeanFusion), (False, AttentionFusion),
                                                 (True, PoEFusion), (True, MoPoEFusion)],
                         ids=["ae-mean", "ae-attention", "vae-poe", "vae-mopoe"])
def test_onnx_export_matches_pytorch_for_every_modality_kind(tmp_path, variational, fusion):
    import onnxruntime

    from mmae.artifacts.onnx import export_onnx

    model = MultimodalAutoencoder(_modalities(), fusion, latent_dim=4, embed_dim=16, decoder_hidden=16,
                                  variational=variational).eval()
    encoder = load_encoder(export_encoder(model, tmp_path / "encoder"))
    assert export_onnx(encoder, tmp_path / "encoder.onnx") < 1e-4
    # Another batch size and a hand-made missing pattern.
    session = onnxruntime.InferenceSession(str(tmp_path / "encoder.onnx"))
    raw = _raw_batch(4)
    masks = {n: torch.tensor([True, i % 2 == 0, i % 3 == 0, False]) for i, n in enumerate(raw)}
    masks["vector"][3] = True
    feeds = {n: x.numpy() for n, x in raw.items()} | {f"present_{n}": m.numpy() for n, m in masks.items()}
    (onnx_codes,) = session.run(None, feeds)
    torch.testing.assert_close(torch.from_numpy(onnx_codes), encoder(raw, masks), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_export_cli_writes_an_onnx_graph_with_its_parity(tmp_path, capsys):
    model = MultimodalAutoencoder({"vector": VectorModality(dim=3)}, MeanFusion, latent_dim=2, embed_dim=8)
    checkpoint = tmp_path / "run" / "checkpoints" / "best.ckpt"
    checkpoint.parent.mkdir(parents=True)
    from mmae.artifacts.export import describe

    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"mmae_model": describe(model), "state_dict": state}, checkpoint)
    export_main([str(checkpoint), "--format", "onnx"])
    out = capsys.readouterr().out
    assert (tmp_path / "run" / "encoder" / "encoder.onnx").is_file()
    assert "parity: max |ONNX - PyTorch| = " in out
