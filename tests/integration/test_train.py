"""The main job, run in-process on the real config with tiny overrides."""

import csv
import json
import subprocess

import pytest
import torch

import mmae
from mmae.cli.train import train

TINY = ["experiment=tiny", "logger=none", "progress_bar=none"]


def _read_metrics(path):
    return json.loads((path / "metrics.json").read_text())


@pytest.mark.parametrize("fusion", ["mean", "concat"])
def test_tiny_run_writes_checkpoints_config_and_metrics(compose_cfg, tmp_path, fusion):
    report, objects = train(compose_cfg(*TINY, f"fusion={fusion}"))
    assert objects["output_dir"] == tmp_path
    assert {p.name for p in (tmp_path / "checkpoints").iterdir()} == {"best.ckpt", "last.ckpt"}
    assert (tmp_path / "config.yaml").read_text().count("MultimodalAutoencoder") == 1

    written = _read_metrics(tmp_path)
    assert written == json.loads(json.dumps(report))
    assert written["epochs"] == 2
    metrics = written["metrics"]
    for name in ("image", "vector"):
        for key in ("recon_all", "recon_without_image", "recon_without_vector", "baseline_mean"):
            value = metrics[f"val/{name}/{key}"]
            assert value > 0 and value == value  # positive and not NaN
        row = written["imputation"][name]
        assert row["gain_over_baseline"] == pytest.approx(1 - row["from_others"] / row["baseline_mean"])


def test_checkpoint_holds_primitives_only(compose_cfg, tmp_path):
    train(compose_cfg(*TINY))
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["config"]["model"]["latent_dim"] == 8
    assert checkpoint["mmae_version"] == mmae.__version__ == "0.8.0"
    assert any(k.startswith("model.encoder.encoders.image") for k in checkpoint["state_dict"])


def test_csv_logger_records_every_loss_term_and_the_training_clock(compose_cfg, tmp_path):
    train(compose_cfg("experiment=tiny", "logger=csv", "progress_bar=none"))
    with (tmp_path / "csv" / "metrics.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {"train/loss", "train/loss/reconstruction", "train/reconstruction/image",
            "val/vector/recon_without_vector"} <= set(rows[0])
    # Every validation carries the training seconds so far, on its own row with val/loss.
    clock = [(float(r["time/train_s"]), r["val/loss"]) for r in rows if r.get("time/train_s")]
    assert len(clock) == 2 and all(loss for _, loss in clock)
    assert 0 < clock[0][0] < clock[1][0]


def test_unknown_modality_in_loss_weights_fails_before_training(compose_cfg, tmp_path):
    cfg = compose_cfg(*TINY, "+objective.terms.reconstruction.weights.imagee=2.0")
    with pytest.raises(Exception, match=r"weights name unknown modalities \['imagee'\]"):
        train(cfg)
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.slow
def test_console_script_runs_and_says_where_outputs_are(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(["mmae-train", *TINY, f"paths.output_dir={out}"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"mmae-train: outputs in {out}" in result.stdout
    metrics = _read_metrics(out)["metrics"]  # (a negative log-likelihood: any sign)
    assert metrics["val/loss"] == pytest.approx(metrics["val/loss/reconstruction"])
