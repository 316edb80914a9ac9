"""Files mmae writes and reads back: atomic writes, truncated files, planted pickles.

A write that crashes half-way leaves the previous file byte-identical and no temporary file;
a truncated or pickle-planted checkpoint or export is refused, through every entry point,
with a message naming the file (no library traceback), and the planted code never runs.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from mmae import MultimodalAutoencoder, load_encoder
from mmae.artifacts.atomic import write_text_atomic
from mmae.artifacts.checkpoint import load_checkpoint_file
from mmae.artifacts.export import export_encoder, load_checkpoint_model
from mmae.cli.evaluate import main as eval_main
from mmae.cli.export import main as export_main
from mmae.cli.features import save_features
from mmae.cli.train import train
from mmae.config import CONFIG_DIR
from mmae.config.assembly import build_module, build_trainer
from mmae.core.errors import ArtifactError, ConfigError, MMAEError
from mmae.core.fusion import MeanFusion
from mmae.evaluation.codes import Features
from mmae.modalities import VectorModality
from mmae.training.checkpoint_io import AtomicCheckpointIO

TINY = ["experiment=tiny", "logger=none", "progress_bar=none", "trainer.max_epochs=1",
        "trainer.enable_model_summary=false", "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=2"]
TRUNCATED = "is truncated or corrupt"
REFUSED = "holds objects other than tensors and primitives"


def _compose(output_dir, *overrides):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=[f"paths.output_dir={output_dir}", *TINY, *overrides])


class _Plant:
    """Unpickling this runs a shell command that creates `marker`: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


def _plant_checkpoint(path, marker, base=None):
    """A checkpoint-shaped file (a real one's contents, when given) with a planted object."""
    checkpoint = dict(base or {"state_dict": {"w": torch.zeros(3)}, "hyper_parameters": {"config": {}}})
    checkpoint["loops"] = _Plant(marker)
    torch.save(checkpoint, path)
    return path


def _truncate(source, target, keep=0.5):
    """`source` cut to a fraction `keep` (a float) or to `keep` bytes (an int), as `target`."""
    data = Path(source).read_bytes()
    Path(target).write_bytes(data[:keep if isinstance(keep, int) else int(len(data) * keep)])
    return Path(target)


def _cut(path, keep):
    return lambda folder, marker: _truncate(folder / path, folder / path, keep)


def _half_write_then_fail(target, *args, **kwargs):
    """Stands in for a serialiser that dies mid-file (disk full, killed job)."""
    if hasattr(target, "write"):
        target.write(b"PK\x03\x04 half of a file")
    else:
        Path(target).write_bytes(b"PK\x03\x04 half of a file")
    raise OSError(28, "No space left on device")


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """`python -m mmae.train ckpt_path=BAD` for a truncated and a planted checkpoint, started
    at once and in parallel: most of their time is imports, which overlap the other tests."""
    folder = tmp_path_factory.mktemp("cli")
    torch.save({"state_dict": {"w": torch.randn(256, 64)}, "epoch": 3}, folder / "good.ckpt")
    files = {"truncated": _truncate(folder / "good.ckpt", folder / "truncated.ckpt"),
             "planted": _plant_checkpoint(folder / "planted.ckpt", folder / "pwned")}
    runs = {}
    for name, path in files.items():
        command = [sys.executable, "-m", "mmae.train", *TINY, f"paths.output_dir={folder / name}",
                   f"ckpt_path={path}"]
        runs[name] = (subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
                      path, folder / "pwned")
    yield runs
    for process, _, _ in runs.values():
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, cli_runs):
    """One 1-epoch tiny run shared by the tests (its files are copied before anything changes
    them), with the checkpoint files Lightning saved and loaded through `AtomicCheckpointIO`.
    (`cli_runs` is requested first so that its subprocesses overlap this training.)"""
    run_dir = tmp_path_factory.mktemp("run")
    saved, loaded = [], []
    save, load = AtomicCheckpointIO.save_checkpoint, AtomicCheckpointIO.load_checkpoint

    def spy_save(self, checkpoint, path, storage_options=None):
        saved.append(Path(path).name)
        return save(self, checkpoint, path, storage_options)

    def spy_load(self, path, *args, **kwargs):
        loaded.append(Path(path).name)
        return load(self, path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AtomicCheckpointIO, "save_checkpoint", spy_save)
        patch.setattr(AtomicCheckpointIO, "load_checkpoint", spy_load)
        train(_compose(run_dir))
    return {"dir": run_dir, "saved": saved, "loaded": loaded}


@pytest.fixture
def run_copy(trained_run, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(trained_run["dir"], target)
    return target


# --- checkpoints are written and read through AtomicCheckpointIO ------------------------------


@pytest.mark.parametrize("trainer", ["cpu", "ddp_cpu"])
def test_every_trainer_mmae_builds_uses_the_atomic_checkpoint_io(tmp_path, trainer):
    cfg = _compose(tmp_path, f"trainer={trainer}")
    assert isinstance(build_trainer(cfg.trainer, logger=False).strategy.checkpoint_io, AtomicCheckpointIO)
    own = _compose(tmp_path, f"trainer={trainer}",
                   "+trainer.plugins=[{_target_: lightning_fabric.plugins.TorchCheckpointIO}]")
    io = build_trainer(own.trainer, logger=False).strategy.checkpoint_io
    assert type(io).__name__ == "TorchCheckpointIO"  # a CheckpointIO the config names is kept


@pytest.mark.slow
def test_best_and_last_are_saved_and_validate_loads_through_it(trained_run):
    checkpoints = trained_run["dir"] / "checkpoints"
    assert {"best.ckpt", "last.ckpt"} <= set(trained_run["saved"])
    assert trained_run["loaded"] == ["best.ckpt"]  # the best weights, for the export and the report
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]  # no temporaries
    assert load_checkpoint_file(checkpoints / "last.ckpt")["epoch"] == 0


def test_remote_fsspec_paths_still_save_and_load(tmp_path):
    io, url = AtomicCheckpointIO(), "memory://mmae-reliability/checkpoints/last.ckpt"
    io.save_checkpoint({"epoch": 4, "w": torch.ones(2)}, url)
    assert io.load_checkpoint(url)["epoch"] == 4
    import fsspec

    planted = _plant_checkpoint(tmp_path / "planted.ckpt", tmp_path / "pwned")
    with fsspec.open("memory://mmae-reliability/planted.ckpt", "wb") as handle:
        handle.write(planted.read_bytes())
    with pytest.raises(ArtifactError, match=REFUSED):
        io.load_checkpoint("memory://mmae-reliability/planted.ckpt")
    with pytest.raises(ConfigError, match="no checkpoint file at memory://"):
        io.load_checkpoint("memory://mmae-reliability/nothing.ckpt")
    with pytest.raises(ConfigError, match="weights_only=False"):
        io.load_checkpoint(url, weights_only=False)
    assert not (tmp_path / "pwned").exists()


# --- a crash in the middle of a write leaves the previous file ---------------------------------


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The dirpath has changed")  # the run was copied: expected
def test_a_crash_while_saving_a_checkpoint_keeps_the_previous_one(run_copy, monkeypatch):
    """Resume for one more epoch (`fit(ckpt_path=last)` loads through the plugin) and die
    half-way through writing the next checkpoint."""
    checkpoints = run_copy / "checkpoints"
    before = _snapshot(checkpoints)
    loaded = []
    load = AtomicCheckpointIO.load_checkpoint
    def spy_load(self, path, *args, **kwargs):
        loaded.append(Path(path).name)
        return load(self, path, *args, **kwargs)

    monkeypatch.setattr(AtomicCheckpointIO, "load_checkpoint", spy_load)
    half_written = []

    def failing_save(obj, handle, *args, **kwargs):
        half_written.append(Path(handle.name))  # a real file, not Lightning's in-memory buffer
        _half_write_then_fail(handle)

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="No space left on device"):
        train(_compose(run_copy, "ckpt_path=last", "trainer.max_epochs=2"))
    assert loaded == ["last.ckpt"]
    assert half_written and half_written[0].parent == checkpoints  # bytes did reach the folder
    assert _snapshot(checkpoints) == before  # byte-identical, and no temporary file left
    monkeypatch.undo()
    assert load_checkpoint_file(checkpoints / "last.ckpt")["epoch"] == 0


@pytest.mark.parametrize("suffix, writer", [(".npz", "savez"), (".npy", "save"), (".parquet", "parquet")])
def test_a_crash_while_writing_features_keeps_the_previous_file(tmp_path, monkeypatch, suffix, writer):
    features = Features(torch.randn(6, 3), torch.arange(6), torch.arange(6))
    path = save_features(features, tmp_path / f"features{suffix}")
    before = path.read_bytes()
    if writer == "parquet":
        import pyarrow.parquet

        monkeypatch.setattr(pyarrow.parquet, "write_table", lambda table, to, **k: _half_write_then_fail(to))
    else:
        monkeypatch.setattr(np, writer, _half_write_then_fail)
    with pytest.raises(OSError):
        save_features(Features(torch.randn(6, 3), torch.arange(6), torch.arange(6)), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_a_crash_while_writing_metrics_keeps_the_previous_file(tmp_path, monkeypatch):
    path = write_text_atomic(tmp_path / "metrics.json", json.dumps({"val/loss": 1.0}))
    before = path.read_bytes()
    monkeypatch.setattr(Path, "write_text", lambda self, *a, **k: _half_write_then_fail(self))
    with pytest.raises(OSError):
        write_text_atomic(path, json.dumps({"val/loss": 0.5}))
    monkeypatch.undo()
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_crash_while_exporting_keeps_the_previous_export(run_copy, monkeypatch):
    import safetensors.torch

    model = load_checkpoint_model(run_copy / "checkpoints" / "best.ckpt")
    before = _snapshot(run_copy / "encoder")
    monkeypatch.setattr(safetensors.torch, "save_file", lambda state, to, **k: _half_write_then_fail(to))
    with pytest.raises(OSError):
        export_encoder(model, run_copy / "encoder")
    assert _snapshot(run_copy / "encoder") == before
    assert not [p.name for p in run_copy.iterdir() if p.name.startswith(".encoder")]  # no staging left
    monkeypatch.undo()
    export_encoder(model, run_copy / "encoder")  # and a finished export replaces it whole
    load_encoder(run_copy / "encoder")
    assert not [p.name for p in run_copy.iterdir() if p.name.startswith(".encoder")]


# --- truncated and planted checkpoints, through every entry point ------------------------------


def test_the_planted_pickle_would_run_code_if_unpickled(tmp_path):
    """The trap is live: without weights_only it creates its marker (so the tests below,
    where the marker never appears, show that nothing was unpickled)."""
    marker = tmp_path / "pwned"
    torch.load(_plant_checkpoint(tmp_path / "planted.ckpt", marker), weights_only=False)
    assert marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize("bad", ["truncated", "planted"])
def test_mmae_train_with_a_bad_ckpt_path_exits_with_the_file_and_no_traceback(cli_runs, bad):
    process, path, marker = cli_runs[bad]
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 1
    expected = TRUNCATED if bad == "truncated" else REFUSED
    assert f"mmae-train: {path} {expected}" in stderr, stderr[-2000:]
    assert "Traceback" not in stderr
    assert not marker.exists()


@pytest.fixture
def bad_checkpoints(run_copy):
    best = run_copy / "checkpoints" / "best.ckpt"
    return {"truncated": _truncate(best, run_copy / "truncated.ckpt"),
            "planted": _plant_checkpoint(run_copy / "planted.ckpt", run_copy / "pwned",
                                         base=load_checkpoint_file(best))}


@pytest.mark.parametrize("bad", ["truncated", "planted"])
def test_every_checkpoint_loader_refuses_a_bad_file_by_name(bad_checkpoints, run_copy, bad):
    path = bad_checkpoints[bad]
    expected = TRUNCATED if bad == "truncated" else REFUSED
    with pytest.raises(ArtifactError, match=expected) as raised:
        load_checkpoint_model(path)
    assert str(path) in str(raised.value)
    with pytest.raises(SystemExit, match=f"^mmae-export: {re.escape(str(path))} {expected}"):
        export_main([str(path), "--output", str(run_copy / "again")])
    with pytest.raises(SystemExit, match=f"^mmae-eval: {re.escape(str(path))} {expected}"):
        eval_main(["task=anomaly", f"checkpoint={path}"])
    cfg = _compose(run_copy)  # Lightning's own load of ckpt_path goes through AtomicCheckpointIO
    module, datamodule = build_module(cfg)
    trainer = build_trainer(cfg.trainer, logger=False, enable_checkpointing=False)
    with pytest.raises(ArtifactError, match=expected):
        trainer.validate(module, datamodule=datamodule, ckpt_path=str(path), verbose=False)
    assert not (run_copy / "again").exists() and not (run_copy / "pwned").exists()


def test_a_missing_checkpoint_is_a_config_error():
    with pytest.raises(ConfigError, match=r"no checkpoint file at /nowhere/best\.ckpt"):
        load_checkpoint_model("/nowhere/best.ckpt")


# --- exported encoders -------------------------------------------------------------------------


def _set_config(folder, change):
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))


def _rehash(folder):
    from mmae.artifacts.export import sha256

    _set_config(folder, lambda c: c.update({"weights_sha256": sha256(folder / "model.safetensors")}))


def _plant_weights(folder, marker, rehash=False):
    torch.save({"w": _Plant(marker)}, folder / "model.safetensors")
    if rehash:  # the attacker also fixes the recorded SHA-256
        _rehash(folder)


BAD_EXPORTS = {
    "truncated weights": ("model.safetensors", r"SHA-256 .* does not match .*truncated or was modified",
                          _cut("model.safetensors", 0.7)),
    "truncated weights, SHA-256 updated": ("model.safetensors", "is corrupt", lambda f, m: (
        _truncate(f / "model.safetensors", f / "model.safetensors", 0.7), _rehash(f))),
    "weights cut to 5 bytes": ("model.safetensors", r"is truncated \(5 bytes\)",
                               _cut("model.safetensors", 5)),
    "pickle planted as weights": ("model.safetensors", "is not a safetensors file .*refused",
                                  lambda f, m: _plant_weights(f, m)),
    "pickle planted, SHA-256 updated": ("model.safetensors", "is not a safetensors file .*refused",
                                        lambda f, m: _plant_weights(f, m, rehash=True)),
    "missing weights": ("model.safetensors", "is missing", lambda f, m: (f / "model.safetensors").unlink()),
    "truncated config": ("config.json", "is truncated or corrupt: not valid JSON", _cut("config.json", 0.5)),
    "pickle planted as config": ("config.json", "is truncated or corrupt: not valid JSON",
                                 lambda f, m: torch.save({"w": _Plant(m)}, f / "config.json")),
    "config not an object": ("config.json", "holds a JSON list",
                             lambda f, m: (f / "config.json").write_text("[1, 2]")),
    "missing config": ("config.json", "is missing", lambda f, m: (f / "config.json").unlink()),
    "no recorded SHA-256": ("config.json", "records no weights_sha256",
                            lambda f, m: _set_config(f, lambda c: c.pop("weights_sha256"))),
}


@pytest.mark.parametrize("case", list(BAD_EXPORTS))
def test_load_encoder_names_the_bad_file(tmp_path, case):
    name, message, damage = BAD_EXPORTS[case]
    model = MultimodalAutoencoder({"vector": VectorModality(dim=3)}, MeanFusion, latent_dim=2, embed_dim=8)
    folder = export_encoder(model, tmp_path / "encoder")
    marker = tmp_path / "pwned"
    damage(folder, marker)
    with pytest.raises(MMAEError, match=message) as raised:
        load_encoder(folder)
    assert str(folder / name) in str(raised.value)
    assert not marker.exists()
