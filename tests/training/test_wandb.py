"""logger=wandb, offline: the run read back from its files, a failing run, the offline default.

No test reaches the network: runs are offline (WANDB_MODE=dryrun, set by the logger) and
everything wandb writes stays under tmp_path.
"""

import base64
import hashlib
import json
import os
import sys
from types import SimpleNamespace

import pytest
import soundfile
import wandb
from omegaconf import OmegaConf
from PIL import Image
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.trainer.states import TrainerFn
from wandb_records import read_offline_run, read_run

import mmae.config  # noqa: F401 - registers the mmae.wandb_offline resolver
from mmae.cli.train import train
from mmae.evaluation import media
from mmae.modalities.text import CLASS_WORDS
from mmae.training.callbacks import ReconstructionMedia
from mmae.training.module import AutoencoderModule
from mmae.training.tracking import log_encoder_artifact, wandb_offline_default

AUDIO = ["modality.audio.sample_rate=4000", "modality.audio.duration=0.25", "modality.audio.n_fft=128",
         "modality.audio.hop_length=32", "modality.audio.n_mels=16", "modality.audio.hidden_channels=[8]"]
TEXT = ["modality.text.max_length=16", "modality.text.decoder_width=16",
        *(f"modality.text.model_config.{k}" for k in ("hidden_size=16", "num_hidden_layers=1",
                                                       "num_attention_heads=2", "intermediate_size=32"))]
WANDB = ["experiment=tiny", "logger=wandb", "logger.offline=true", "progress_bar=none",
         "trainer.enable_model_summary=false"]
SMALL = ["trainer.max_epochs=1", "data.dataset.num_samples=160",
         "modality.image.hidden_channels=[8,16]"]


@pytest.fixture
def wandb_sandbox(monkeypatch, tmp_path):
    """No credentials, no mode, and every wandb directory under tmp_path."""
    for var in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL", "WANDB_MODE", "WANDB_RUN_ID",
                "WANDB_PROJECT", "WANDB_ENTITY", "WANDB_RESUME"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "wandb-home"
    home.mkdir()
    for var, sub in (("WANDB_DIR", "dir"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data"),
                     ("WANDB_CONFIG_DIR", "config"), ("WANDB_ARTIFACT_DIR", "artifacts")):
        monkeypatch.setenv(var, str(home / sub))
    monkeypatch.setenv("NETRC", str(home / "netrc"))  # absent: no stored key
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")  # leave pytest's output capture alone
    yield home
    assert wandb.run is None


def _md5_base64(path) -> str:
    return base64.b64encode(hashlib.md5(path.read_bytes()).digest()).decode()


@pytest.mark.slow
def test_offline_run_records_config_metrics_media_and_the_encoder(compose_cfg, tmp_path, wandb_sandbox):
    media_options = ["callbacks.media.every_n_epochs=5", "callbacks.media.griffin_lim_iters=4"]
    report, objects = train(compose_cfg(*WANDB, "modality=[image,audio,text]", *AUDIO, *TEXT,
                                        "modality.image.hidden_channels=[8,16]", *media_options))
    assert wandb.run is None and "WANDB_MODE" not in os.environ
    assert any(isinstance(c, ReconstructionMedia) for c in objects["trainer"].callbacks)
    folder, run = read_offline_run(tmp_path)
    assert run.project == "mmae" and run.exit_code == 0

    # The resolved config (LightningModule hyper-parameters).
    assert run.config["config"]["model"]["latent_dim"] == 8
    assert run.config["config"]["logger"]["offline"] is True
    assert run.config["config"]["modality"]["audio"]["sample_rate"] == 4000

    # Every loss term and validation metric; the last val/loss is the best checkpoint's.
    keys = set().union(*run.history)
    assert {"train/loss", "train/loss/reconstruction", "train/reconstruction/image", "val/loss",
            "val/image/recon_all", "val/audio/recon_without_audio", "val/text/token_accuracy_all",
            "val/text/baseline_mean"} <= keys
    assert len(run.values("train/loss")) == 16  # 2 epochs of 8 steps, log_every_n_steps=1
    assert run.values("val/loss")[-1] == pytest.approx(report["metrics"]["val/loss"])

    # Media, once (every_n_epochs=5 > 2 epochs: the last epoch only), at that epoch's step.
    files = folder / "files"
    for key in ("media/image/reconstruction", "media/latent_map", "media/audio/audio", "media/text/text"):
        assert [row["trainer/global_step"] for row in run.history if f"{key}/_type" in row] == [16], key
    (grid,) = run.values("media/image/reconstruction/filenames")[0]
    with Image.open(files / grid) as image:  # 3 rows x 8 samples of 28 px, enlarged x3, 2 px apart
        assert image.size == (2 + 8 * (84 + 2), 2 + 3 * (84 + 2)) and image.mode == "L"
    (latent_map,) = run.values("media/latent_map/filenames")[0]
    with Image.open(files / latent_map) as image:
        assert image.mode == "RGB" and min(image.size) >= 200
    clips = run.values("media/audio/audio/audio")[0]
    assert [c["caption"] for c in clips] == [f"sample {i}: {row}" for i in range(2) for row in media.ROWS]
    for clip in clips:
        waveform, rate = soundfile.read(files / clip["path"])
        assert rate == 4000 and waveform.shape == (1000,) and abs(waveform).max() <= 1.0
    assert len(list(files.rglob("*.wav"))) == 6 and len(list(files.rglob("*.png"))) == 2
    table = json.loads((files / run.values("media/text/text/path")[0]).read_text())
    assert table["columns"] == list(media.ROWS) and len(table["data"]) == 8
    assert all(row[0].split()[1] in CLASS_WORDS for row in table["data"])  # decoded inputs

    # The exported encoder, as a model artifact with its files and metadata.
    (artifact,) = [a for a in run.artifacts if a.type == "model"]
    assert artifact.name == f"encoder-{run.run_id}" and "latest" in artifact.aliases
    encoder = tmp_path / "encoder"
    contents = {entry.path: entry.digest for entry in artifact.manifest.contents}
    assert contents == {path.name: _md5_base64(path) for path in encoder.iterdir() if path.is_file()}
    assert "model.safetensors" in contents
    metadata = json.loads(artifact.metadata)
    assert metadata["latent_dim"] == 8 and metadata["mmae_version"] == report["mmae_version"]
    assert metadata["modalities"] == {"image": "image", "audio": "audio", "text": "text"}
    assert metadata["val_loss"] == pytest.approx(report["metrics"]["val/loss"])


def test_a_failing_run_ends_its_wandb_run_and_restores_wandb_mode(compose_cfg, tmp_path, wandb_sandbox,
                                                                  monkeypatch):
    def fail(self, batch, batch_idx):
        raise RuntimeError("training step failed")

    monkeypatch.setattr(AutoencoderModule, "training_step", fail)
    with pytest.raises(RuntimeError, match="training step failed"):
        train(compose_cfg(*WANDB, *SMALL))
    assert wandb.run is None
    assert "WANDB_MODE" not in os.environ  # the logger had set it to dryrun
    _, run = read_offline_run(tmp_path)  # the run had started: its config is there
    assert run.config["config"]["model"]["latent_dim"] == 8
    assert run.exit_code == 1 and not run.values("train/loss")
    assert not (tmp_path / "encoder").exists()
    # wandb reads WANDB_MODE once per process: the next run must see the environment afresh.
    monkeypatch.setenv("WANDB_MODE", "disabled")
    after = wandb.init(project="mmae")
    assert after.disabled
    after.finish()
    wandb.teardown()


@pytest.mark.slow
def test_resuming_continues_the_same_wandb_run(compose_cfg, tmp_path, wandb_sandbox):
    train(compose_cfg(*WANDB, *SMALL))
    train(compose_cfg(*WANDB, *SMALL, "trainer.max_epochs=2", "ckpt_path=last"))
    first, second = sorted((tmp_path / "wandb").glob("offline-run-*"))
    runs = [read_run(next(folder.glob("run-*.wandb"))) for folder in (first, second)]
    assert runs[0].run_id == runs[1].run_id  # one W&B run, synced as one
    steps = [row["trainer/global_step"] for row in runs[1].history if "train/loss" in row]
    assert steps and min(steps) == 4  # the second epoch goes on from the first one's 4 steps


def test_a_job_uses_its_own_mode_whatever_wandb_was_set_up_with(compose_cfg, tmp_path, wandb_sandbox,
                                                                 monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    wandb.init(project="elsewhere").finish()  # wandb stays set up as disabled for the process
    monkeypatch.setenv("WANDB_MODE", "offline")
    train(compose_cfg(*WANDB, *SMALL, "logger.offline=false"))
    assert read_offline_run(tmp_path)[1].exit_code == 0
    assert os.environ["WANDB_MODE"] == "offline"


@pytest.mark.parametrize("logger", ["csv", "wandb_disabled"])
def test_no_media_are_drawn_unless_a_wandb_run_records(compose_cfg, tmp_path, wandb_sandbox, monkeypatch,
                                                       logger):
    calls = []
    for name in ("gather", "features_of", "cross_reconstructions", "latent_codes"):
        monkeypatch.setattr(media, name, lambda *args, _name=name, **kwargs: calls.append(_name))
    if logger == "csv":
        monkeypatch.setitem(sys.modules, "wandb", None)  # any `import wandb` now fails
        overrides = ["logger=csv"]
    else:  # the default offline=null leaves WANDB_MODE to wandb, which honours "disabled"
        monkeypatch.setenv("WANDB_MODE", "disabled")
        overrides = ["logger=wandb"]
    _, objects = train(compose_cfg("experiment=tiny", *overrides, *SMALL, "progress_bar=none",
                                   "callbacks.media.every_n_epochs=1"))
    (callback,) = [c for c in objects["trainer"].callbacks if isinstance(c, ReconstructionMedia)]
    assert callback.every_n_epochs == 1 and callback._batch is None
    assert calls == []
    assert (tmp_path / "encoder" / "model.safetensors").is_file()
    assert not (tmp_path / "wandb").exists()
    if logger == "csv":
        assert (tmp_path / "csv" / "metrics.csv").is_file()
        log_encoder_artifact([CSVLogger(tmp_path)], tmp_path / "encoder", {})  # nothing to do
    else:
        assert os.environ["WANDB_MODE"] == "disabled"


@pytest.mark.parametrize(("every", "due"), [(1, list(range(7))), (3, [2, 5, 6]), (10, [6])])
def test_media_are_drawn_every_n_epochs_and_at_the_last(every, due):
    callback = ReconstructionMedia(every_n_epochs=every)

    def trainer(epoch, **changes):
        state = {"sanity_checking": False, "is_global_zero": True, "current_epoch": epoch, "max_epochs": 7,
                 "state": SimpleNamespace(fn=TrainerFn.FITTING), **changes}
        return SimpleNamespace(**state)

    assert [e for e in range(7) if callback._due(trainer(e))] == due
    assert not callback._due(trainer(6, sanity_checking=True))
    assert not callback._due(trainer(6, is_global_zero=False))
    assert not callback._due(trainer(6, state=SimpleNamespace(fn=TrainerFn.VALIDATING)))


def test_offline_by_default_only_without_a_key_or_a_mode(wandb_sandbox, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    resolved = OmegaConf.create({"offline": "${mmae.wandb_offline:}"})
    assert wandb_offline_default() is True and resolved.offline is True

    monkeypatch.setenv("WANDB_API_KEY", "a" * 40)
    assert wandb_offline_default() is False
    monkeypatch.delenv("WANDB_API_KEY")

    netrc = wandb_sandbox / "netrc"  # what `wandb login` writes, for the default host
    netrc.write_text(f"machine api.wandb.ai\n  login user\n  password {'b' * 40}\n")
    assert wandb_offline_default() is False
    netrc.unlink()
    assert wandb_offline_default() is True

    for mode in ("disabled", "offline", "online"):  # wandb itself honours WANDB_MODE
        monkeypatch.setenv("WANDB_MODE", mode)
        assert wandb_offline_default() is False
