"""Sharing on the Hugging Face Hub without a network: an export laid out as a Hub cache
snapshot loads by repo id (offline) with the same checks and codes as its folder, and a push
is recorded by a stand-in for the Hub's API."""

import os
import subprocess
import sys

import huggingface_hub
import numpy as np
import pytest
import torch
from hub_cache import RecordingHub, add_snapshot
from huggingface_hub import constants

import mmae
from mmae.cli.export import main as export_main
from mmae.cli.features import main as features_main
from mmae.core.errors import ArtifactError, ConfigError, ExportError

REPO = "org/tiny-encoder"


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty Hub cache, read offline (as HF_HUB_OFFLINE=1 and HF_HUB_CACHE would set it)."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def _codes(encoder) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    inputs = {name: m.example_input(6, generator) for name, m in encoder.modalities.items()}
    return encoder(inputs)


def test_an_export_loads_by_repo_id_from_the_cache_with_the_folder_s_codes(tiny_run, offline_cache):
    add_snapshot(offline_cache, REPO, tiny_run / "encoder")
    by_id, by_folder = mmae.load_encoder(REPO), mmae.load_encoder(tiny_run / "encoder")
    assert torch.equal(_codes(by_id), _codes(by_folder))


def test_a_revision_is_a_snapshot_of_its_own(tiny_run, offline_cache):
    add_snapshot(offline_cache, REPO, tiny_run / "encoder", revision="v1")
    assert (
        mmae.load_encoder(REPO, revision="v1").latent_dim
        == mmae.load_encoder(tiny_run / "encoder").latent_dim
    )
    with pytest.raises(
        ArtifactError, match=rf"{REPO}@v2 is not in the local cache \(.*; HF_HUB_OFFLINE=1: the Hub is not"
    ):
        mmae.load_encoder(REPO, revision="v2")
    with pytest.raises(ConfigError, match="revision=v1 is for a Hub repo id"):
        mmae.load_encoder(tiny_run / "encoder", revision="v1")


def test_a_repo_id_that_is_not_cached_offline_names_both_readings(offline_cache):
    with pytest.raises(
        ArtifactError, match=rf"^no export directory at {REPO}; as a Hub repo id, {REPO} is not"
    ):
        mmae.load_encoder(REPO)


def test_a_tampered_snapshot_is_refused_as_a_tampered_folder_is(tiny_run, offline_cache):
    snapshot = add_snapshot(offline_cache, REPO, tiny_run / "encoder")
    weights = snapshot / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ExportError, match=rf"{weights}: SHA-256 .* does not match config.json"):
        mmae.load_encoder(REPO)


def test_hf_hub_offline_and_the_cache_are_read_from_the_environment(tiny_run, tmp_path):
    """A fresh process with HF_HUB_OFFLINE=1 and HF_HUB_CACHE: load_encoder and mmae-features by id."""
    cache = tmp_path / "hub"
    add_snapshot(cache, REPO, tiny_run / "encoder")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "home")}
    script = "\n".join([
        "import mmae, torch",
        f"by_id, by_folder = mmae.load_encoder({REPO!r}), mmae.load_encoder({str(tiny_run / 'encoder')!r})",
        "g = torch.Generator().manual_seed(0)",
        "x = {n: m.example_input(4, g) for n, m in by_id.modalities.items()}",
        "print('max', (by_id(x) - by_folder(x)).abs().max().item())",
    ])
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-1] == "0.0"
    by_id, by_folder = tmp_path / "id.npz", tmp_path / "folder.npz"
    data = ["split=val", "data.dataset.num_samples=320", "modalities=[image]"]
    result = subprocess.run(
        [sys.executable, "-m", "mmae.features", f"encoder={REPO}", f"output={by_id}", *data],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    features_main([f"encoder={tiny_run / 'encoder'}", f"output={by_folder}", *data])
    np.testing.assert_array_equal(np.load(by_id)["features"], np.load(by_folder)["features"])


# --- pushing ----------------------------------------------------------------------------------


@pytest.fixture
def hub(monkeypatch):
    recorder = RecordingHub()
    monkeypatch.setattr(huggingface_hub, "HfApi", recorder)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    return recorder


def test_a_push_sends_the_export_and_a_card_that_loads_by_repo_id(tiny_run, hub, tmp_path, offline_cache):
    url = mmae.push_to_hub(tiny_run / "encoder", REPO, private=True, license="mit")
    assert url == f"https://huggingface.co/{REPO}/commit/0123abc"
    assert hub.tokens == ["hf_test_token"]
    assert hub.repos == [{"repo_id": REPO, "private": True, "exist_ok": True, "repo_type": "model"}]
    local = {
        str(p.relative_to(tiny_run / "encoder")) for p in (tiny_run / "encoder").rglob("*") if p.is_file()
    }
    assert set(hub.files) == local and {"model.safetensors", "config.json", "README.md"} <= local
    for name in local - {"README.md"}:  # byte for byte
        assert hub.files[name] == (tiny_run / "encoder" / name).read_bytes()
    card = hub.files["README.md"].decode()
    assert card.startswith("---\nlibrary_name: mmae\n") and "license: mit" in card
    assert f'mmae.load_encoder("{REPO}")' in card
    assert (
        "path/to/encoder" in (tiny_run / "encoder" / "README.md").read_text()
    )  # the local card is unchanged
    # What the Hub now holds, downloaded, loads by id into the folder's codes.
    add_snapshot(offline_cache, REPO, hub.materialise(tmp_path / "downloaded"))
    assert torch.equal(_codes(mmae.load_encoder(REPO)), _codes(mmae.load_encoder(tiny_run / "encoder")))


def test_mmae_export_pushes_a_run(tiny_run, hub, tmp_path, capsys):
    run = tmp_path / "run"
    import shutil

    shutil.copytree(tiny_run, run)
    export_main([str(run), "--push-to-hub", REPO, "--dataset", "org/digits"])
    out = capsys.readouterr().out
    assert f"mmae-export: pushed to https://huggingface.co/{REPO}" in out
    assert "datasets:\n- org/digits" in hub.files["README.md"].decode()
    assert hub.repos[0]["private"] is False


def test_a_push_without_a_token_says_how_to_get_one(tiny_run, monkeypatch, hub):
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(
        ConfigError, match=r"needs a Hugging Face token with write access: run `hf auth login`"
    ):
        mmae.push_to_hub(tiny_run / "encoder", REPO)
    assert hub.files == {}


def test_a_push_without_a_network_fails_in_one_line_naming_the_repo(tiny_run, monkeypatch):
    monkeypatch.setattr(
        huggingface_hub, "HfApi", RecordingHub(fail=ConnectionError("Name or service not known"))
    )
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    with pytest.raises(ArtifactError, match=rf"^pushing .* to {REPO} failed: Name or service not known$"):
        mmae.push_to_hub(tiny_run / "encoder", REPO)


def test_a_damaged_export_or_a_bad_repo_id_is_refused_before_anything_is_sent(tiny_run, hub, tmp_path):
    import shutil

    damaged = shutil.copytree(tiny_run / "encoder", tmp_path / "encoder")
    (damaged / "config.json").write_text(
        (damaged / "config.json").read_text().replace('"latent_dim": 8', '"latent_dim": 9')
    )
    with pytest.raises(ExportError, match="was edited after export"):
        mmae.push_to_hub(damaged, REPO)
    with pytest.raises(ConfigError, match="'no spaces/here x' is not a Hub repo id"):
        mmae.push_to_hub(tiny_run / "encoder", "no spaces/here x")
    assert hub.repos == [] and hub.files == {}
