"""docs/extending.md, run as written: its `# file: <path>` blocks are written into a fresh
project directory and its `mmae-train` commands are run there (with tiny sizes added)."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

import mmae
from mmae.cli.train import train
from mmae.config import CONFIG_DIR
from mmae.core.errors import DataError
from mmae.data.batch import features_of
from mmae.data.manifest import ManifestDataset
from mmae.data.synthetic import SyntheticMultimodal

DOC = Path(__file__).resolve().parents[2] / "docs" / "extending.md"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
FILE = re.compile(r"#\s*file:\s*(\S+)\s*$")

#: What the tests add to the doc's commands: tiny sizes and quiet output. Six epochs are what
#: the signal modality needs to beat the mean baseline clearly (ratio ~0.79 on this data).
TINY = ["experiment=tiny", "logger=none", "progress_bar=none", "trainer.enable_model_summary=false",
        "modality.image.size=16", "modality.image.hidden_channels=[8]"]


def _blocks() -> list[tuple[str, str]]:
    return BLOCK.findall(DOC.read_text(encoding="utf-8"))


def _files() -> dict[str, str]:
    """`relative path -> text` of every block whose first line is `# file: <path>`."""
    files = {}
    for _, body in _blocks():
        match = FILE.match(body.splitlines()[0]) if body.strip() else None
        if match:
            files[match.group(1)] = body
    return files


def _commands(program: str) -> list[str]:
    """Every command of the doc's bash blocks that runs `program`, continuation lines joined."""
    commands = []
    for language, body in _blocks():
        if language == "bash":
            joined = re.sub(r"\\\n\s*", " ", body)
            commands += [line.strip() for line in joined.splitlines() if re.search(rf"\b{program}\b", line)]
    return commands


def _overrides(command: str, project: Path) -> list[str]:
    """The overrides of a doc command, as the shell would pass them from `project`."""
    words = shlex.split(command.replace("$PWD", str(project)))
    return words[words.index("mmae-train") + 1:]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A fresh project directory holding the doc's files, importable by this process too
    (to load what the runs export)."""
    root = tmp_path_factory.mktemp("my_project")
    for relative, text in _files().items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(root))
        yield root
    for name in [m for m in sys.modules if m == "mylab" or m.startswith("mylab.")]:
        del sys.modules[name]


def test_the_doc_holds_the_worked_example():
    assert set(_files()) == {"mylab/signals.py", "conf/modality/signal.yaml", "mylab/fusion.py",
                             "conf/fusion/max.yaml", "mylab/losses.py", "conf/objective/decorrelated.yaml",
                             "mylab/tasks.py"}
    commands = _commands("mmae-train")
    assert len(commands) == 3  # the synthetic run, the manifest run, the fusion + loss term run
    assert all(c.startswith('PYTHONPATH=$PWD mmae-train "hydra.searchpath=[file://$PWD/conf]"')
               for c in commands)


@pytest.mark.slow
def test_the_signal_command_trains_exports_and_learns(project, monkeypatch):
    """The doc's first command, through the shell and the `mmae-train` console script, then
    the doc's Python that loads what it wrote."""
    command = _commands("mmae-train")[0]
    assert "'modality=[image,signal]'" in command and "data=manifest" not in command
    run = project / "runs" / "signal"  # the command's own paths.output_dir
    assert "paths.output_dir=runs/signal" in command
    extra = [*TINY, "trainer.max_epochs=6"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("PYTHONPATH", None)  # the command sets it
    result = subprocess.run(["bash", "-c", f"{command} {shlex.join(extra)}"], cwd=project, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    config = json.loads((run / "encoder" / "config.json").read_text())
    signal = config["modalities"]["signal"]
    assert signal["class"] == "mylab.signals:SignalModality"
    assert config["modalities"]["image"]["class"] == "image"
    assert len(signal["config"]["mean"]) == len(signal["config"]["std"]) == 2  # standardised per channel

    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert metrics["val/signal/recon_all"] < 0.9 * metrics["val/signal/baseline_mean"]

    with pytest.raises(mmae.ArtifactError, match=r"mylab\.signals:SignalModality.*trust_code=True"):
        mmae.load_encoder(run / "encoder")
    encoder = mmae.load_encoder(run / "encoder", trust_code=True)
    model = mmae.load_checkpoint_model(run / "checkpoints" / "best.ckpt", trust_code=True)
    data = SyntheticMultimodal(encoder.modalities, split="val", num_samples=64, seed=3)
    signals = data.views["signal"][data.present["signal"]]
    codes = encoder({"signal": signals})
    assert codes.shape == (len(signals), encoder.latent_dim) and bool(torch.isfinite(codes).all())
    with torch.no_grad():
        torch.testing.assert_close(codes, model.encoder({"signal": signals}).code, atol=1e-6, rtol=0)

    (snippet,) = [body for language, body in _blocks() if language == "python" and "load_encoder(" in body]
    monkeypatch.chdir(project)
    namespace: dict = {}
    exec(compile(snippet, str(DOC), "exec"), namespace)  # the doc's loading example, as written
    assert namespace["codes"].shape == (4, encoder.latent_dim)
    assert type(namespace["model"].modalities["signal"]).__name__ == "SignalModality"

    # The doc's evaluation task of its own, by import path: refused without trust_code, then run.
    (evaluate,) = _commands("mmae-eval")
    assert "task=mylab.tasks.ClassSeparation" in evaluate and "run=runs/signal" in evaluate
    refused = subprocess.run(["bash", "-c", evaluate.replace(" trust_code=true", "")], cwd=project,
                             env=env, capture_output=True, text=True, timeout=600)
    assert refused.returncode == 1 and "trust_code" in refused.stderr, refused.stderr[-2000:]
    assert not (run / "class_separation.json").exists()
    result = subprocess.run(["bash", "-c", evaluate], cwd=project, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "class separation (test):" in result.stdout
    separation = json.loads((run / "class_separation.json").read_text())
    assert separation["split"] == "test" and 0 < separation["between_class_share"] < 1
    options = subprocess.run(["bash", "-c", f"{evaluate} +class_separation.split=val"], cwd=project,
                             env=env, capture_output=True, text=True, timeout=600)
    assert options.returncode == 0, options.stderr[-3000:]
    assert json.loads((run / "class_separation.json").read_text())["split"] == "val"
    typo = subprocess.run(["bash", "-c", f"{evaluate} +class_separation.splitt=val"], cwd=project,
                          env=env, capture_output=True, text=True, timeout=600)
    assert typo.returncode == 1 and "class_separation.splitt" in typo.stderr, typo.stderr[-2000:]


def _write_signals(folder: Path, rows: int = 10) -> tuple[Path, list[np.ndarray]]:
    """`rows` two-channel signals as .npy files and a manifest naming them (rows 0-7 train)."""
    rng = np.random.default_rng(0)
    (folder / "signals").mkdir(parents=True)
    t = np.linspace(0, 1, 64)
    arrays = []
    with (folder / "manifest.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["signal", "label", "split"])
        for i in range(rows):
            label = i % 3
            wave = np.sin(2 * np.pi * (1 + label) * t + rng.uniform(0, np.pi))
            array = np.stack([wave, 10.0 + 3.0 * wave]) + 0.05 * rng.standard_normal((2, 64))
            np.save(folder / "signals" / f"{i}.npy", array)
            arrays.append(array)
            writer.writerow([f"signals/{i}.npy", label, "train" if i < 8 else "val"])
    return folder / "manifest.csv", arrays


def test_a_manifest_of_npy_files_is_read_through_the_modality(project, tmp_path):
    from mylab.signals import SignalModality

    manifest, arrays = _write_signals(tmp_path / "data")
    modality = SignalModality(channels=2, length=64)
    train_split = ManifestDataset(manifest, {"signal": modality}, split="train")
    assert len(train_split) == 8
    for i in range(8):
        sample = train_split[i]
        assert sample["inputs"]["signal"].dtype == torch.float32 and bool(sample["present"]["signal"])
        np.testing.assert_allclose(sample["inputs"]["signal"].numpy(), arrays[i], rtol=1e-6, atol=1e-6)

    np.save(tmp_path / "data" / "signals" / "3.npy", np.zeros((3, 64)))  # a file of the wrong shape
    broken = ManifestDataset(manifest, {"signal": modality}, split="train", cache=False)
    with pytest.raises(DataError, match=r"manifest\.csv, row 4, column 'signal': .*3\.npy: float64 array of "
                                        r"shape \(3, 64\), expected real numbers of shape \(2, 64\)"):
        broken[3]
    (tmp_path / "data" / "signals" / "5.npy").unlink()
    with pytest.raises(DataError, match=r"row 6, column 'signal': file not found: .*5\.npy"):
        ManifestDataset(manifest, {"signal": modality}, split="train")


def test_the_manifest_command_trains_on_the_files(project, tmp_path):
    """The doc's manifest command, in-process, on the signal files alone (the doc's manifest
    also has images); the per-channel statistics are fitted from the files."""
    manifest, arrays = _write_signals(tmp_path / "data")
    command = _commands("mmae-train")[1]
    assert "data=manifest" in command
    overrides = [o for o in _overrides(command, project) if not o.startswith(("modality=", "data.path="))]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, "modality=[signal]", f"data.path={manifest}",
                                          "data.num_workers=0", "data.batch_size=4", "logger=none",
                                          "progress_bar=none", "trainer.enable_model_summary=false",
                                          "trainer.max_epochs=1", f"paths.output_dir={tmp_path / 'run'}"])
    report, objects = train(cfg)
    signal = objects["module"].model.modalities["signal"]
    fitted = np.stack(arrays[:8])  # the training rows
    np.testing.assert_allclose(signal.mean, fitted.mean(axis=(0, 2)), rtol=1e-4, atol=1e-4)
    assert signal.std[1] == pytest.approx(3 * signal.std[0], rel=0.05)
    assert report["skipped_rows"] == {"train": 0, "val": 0} and "val/signal/recon_all" in report["metrics"]


def test_the_fusion_and_loss_term_command(project, tmp_path):
    """The doc's third command, in-process: its fusion and its objective config are used,
    the term is logged, and the export names the fusion by import path."""
    command = _commands("mmae-train")[2]
    overrides = _overrides(command, project)
    assert {"fusion=max", "objective=decorrelated"} <= set(overrides)
    run = tmp_path / "run"
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, *TINY, "trainer.max_epochs=1",
                                          f"paths.output_dir={run}"])
    report, objects = train(cfg)
    from mylab.fusion import MaxFusion
    from mylab.losses import Decorrelation

    model = objects["module"].model.eval()
    assert type(model.encoder.fusion) is MaxFusion
    assert isinstance(objects["module"].objective.terms["decorrelation"], Decorrelation)
    assert report["metrics"]["val/loss/decorrelation"] > 0
    config = json.loads((run / "encoder" / "config.json").read_text())
    assert config["fusion"] == {"class": "mylab.fusion:MaxFusion", "config": {"hidden_dim": 64}}

    encoder = mmae.load_encoder(run / "encoder", trust_code=True)
    batch = next(iter(objects["datamodule"].val_dataloader()))
    features, present, encoded_raw = features_of(model.encoder, batch)
    raw = {name: batch.inputs[name] for name in ("image", "signal")}
    with torch.no_grad():
        expected = model.encoder(features, present, raw=encoded_raw).code
    torch.testing.assert_close(encoder(raw, present), expected, atol=1e-6, rtol=0)
