"""An export's integrity covers config.json too: an edited config is refused by name, not
loaded into other codes; a re-indented one, and exports from before the check, still load."""

import json

import pytest
import torch
from export_signing import as_unsigned_format, resign
from safetensors import safe_open

from mmae import MultimodalAutoencoder, load_encoder
from mmae.artifacts.export import CONFIG_HASH_KEY, ExportError, config_digest, export_encoder
from mmae.cli.features import main as features_main
from mmae.core.fusion import MeanFusion
from mmae.modalities import VectorModality

EDITED = r"config\.json was edited after export \(its SHA-256 does not match the one recorded in " \
         r"model\.safetensors\).*re-export from the checkpoint \(mmae-export\)"


@pytest.fixture
def folder(tmp_path):
    model = MultimodalAutoencoder({"vector": VectorModality(dim=3, hidden=[8])}, MeanFusion,
                                  latent_dim=4, embed_dim=8)
    return export_encoder(model.eval(), tmp_path / "encoder")


def _config(folder):
    return json.loads((folder / "config.json").read_text())


def _write(folder, config, indent=None):
    (folder / "config.json").write_text(json.dumps(config, indent=indent))


def _codes(folder):
    return load_encoder(folder)({"vector": torch.linspace(-3, 3, 12).reshape(4, 3)})


def test_the_weights_record_the_digest_of_the_config(folder):
    config = _config(folder)
    with safe_open(folder / "model.safetensors", "pt") as handle:
        assert handle.metadata()[CONFIG_HASH_KEY] == config_digest(config)
    assert config["format_version"] == 4


def test_an_edited_latent_activation_is_refused_naming_config_json(folder):
    config = _config(folder)
    assert config["encoder"]["latent_activation"] is None
    config["encoder"]["latent_activation"] = "sigmoid"
    _write(folder, config, indent=2)
    with pytest.raises(ExportError, match=EDITED) as raised:
        load_encoder(folder)
    assert str(value := raised.value).startswith(str(folder / "config.json")) and "\n" not in str(value)


def test_claiming_an_older_format_does_not_skip_the_check(folder):
    config = _config(folder)
    config["format_version"] = 3
    config["encoder"]["latent_activation"] = "sigmoid"
    _write(folder, config)
    with pytest.raises(ExportError, match=EDITED):
        load_encoder(folder)


def test_whitespace_and_key_order_are_no_edit(folder):
    expected = _codes(folder)
    config = _config(folder)
    (folder / "config.json").write_text(json.dumps(dict(reversed(config.items())), indent="\t") + "\n\n")
    torch.testing.assert_close(_codes(folder), expected, atol=1e-6, rtol=0)


def test_a_format_3_export_without_the_digest_loads(folder):
    expected = _codes(folder)
    as_unsigned_format(folder, 3)
    with safe_open(folder / "model.safetensors", "pt") as handle:
        assert CONFIG_HASH_KEY not in handle.metadata()
    torch.testing.assert_close(_codes(folder), expected, atol=1e-6, rtol=0)


def test_a_format_4_export_without_the_digest_is_refused(folder):
    resign(folder, record_digest=False)  # weights_sha256 fixed: only the digest is missing
    with pytest.raises(ExportError, match=r"config\.json cannot be checked: .*model\.safetensors records "
                                          r"no config_sha256, which export format 4 always records"):
        load_encoder(folder)


def test_mmae_features_refuses_an_edited_export_in_one_line(folder, tmp_path):
    config = _config(folder)
    config["encoder"]["latent_activation"] = "sigmoid"
    _write(folder, config, indent=2)
    output = tmp_path / "x.npz"
    with pytest.raises(SystemExit) as raised:
        features_main([f"encoder={folder}", f"output={output}"])
    message = str(raised.value.code)
    assert message.startswith(f"mmae-features: {folder / 'config.json'} was edited after export")
    assert "\n" not in message and not output.exists()
