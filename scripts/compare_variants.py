"""Train every autoencoder variant on the same synthetic data and print one table.

Columns: reconstruction from all inputs and each leave-one-out error (as a fraction of the
training-mean baseline, lower is better), linear-probe accuracy of the code on the class
label (test split), mean Hoyer sparsity of the code, and seconds per training epoch. Baseline
rows, measured in the same run: predicting the training mean (1.000 by definition), and
linear probes on the raw inputs and on their PCA with as many components as the code.

    python scripts/compare_variants.py                      # the table in docs/variants.md
    python scripts/compare_variants.py trainer.max_epochs=3 data.dataset.num_samples=1000
"""

from __future__ import annotations

import sys
import tempfile
import time

from hydra import compose, initialize_config_dir

from mmae.cli.train import train
from mmae.config import CONFIG_DIR
from mmae.config.assembly import build_module
from mmae.config.variants import VARIANTS
from mmae.evaluation.codes import encode_batches
from mmae.evaluation.probes import hoyer_sparsity, input_features, linear_probe, pca

QUIET = ["logger=none", "progress_bar=none", "trainer.enable_model_summary=false"]


def run_variant(overrides: list[str], extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as out, initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, *QUIET, *extra, f"paths.output_dir={out}"])
        start = time.perf_counter()
        report, objects = train(cfg)
        elapsed = time.perf_counter() - start
    model, data = objects["module"].model, objects["datamodule"]
    seen = encode_batches(model, data.train_dataloader())
    unseen = encode_batches(model, data.test_dataloader())
    metrics = report["metrics"]
    row = {"probe": linear_probe(seen.codes, seen.labels, unseen.codes, unseen.labels),
           "sparsity": hoyer_sparsity(unseen.codes),
           "sec/epoch": elapsed / max(report["epochs"], 1)}
    for name in model.modalities:
        baseline = metrics[f"val/{name}/baseline_mean"]
        row[f"{name} all"] = metrics[f"val/{name}/recon_all"] / baseline
        row[f"{name} w/o {name}"] = metrics[f"val/{name}/recon_without_{name}"] / baseline
    return row


def baselines(extra: list[str], columns: list[str]) -> dict[str, dict]:
    """Rows without learning: the training mean, probes on the raw inputs and on their PCA."""
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*QUIET, *extra, "paths.output_dir=/tmp/mmae-compare"])
    module, data = build_module(cfg)  # only its (parameter-free) preprocessing is used
    train_x, train_y = input_features(module.model, data.train_dataloader())
    test_x, test_y = input_features(module.model, data.test_dataloader())
    train_pca, test_pca = pca(train_x, test_x, module.model.latent_dim)
    errors = {c: 1.0 for c in columns if " all" in c or " w/o " in c}
    return {"baseline: training mean": errors,
            "baseline: probe on raw inputs": {"probe": linear_probe(train_x, train_y, test_x, test_y)},
            f"baseline: probe on PCA-{module.model.latent_dim} of the inputs": {
                "probe": linear_probe(train_pca, train_y, test_pca, test_y)}}


def _cell(row: dict, column: str) -> str:
    if column not in row:
        return "-"
    return f"{row[column]:.1%}" if column == "probe" else f"{row[column]:.3f}"


def main(extra: list[str]) -> None:
    run_variant(["experiment=tiny"], [])  # warm-up: keeps one-off start-up costs out of the first row
    rows = {name: run_variant(overrides, extra) for name, overrides in VARIANTS.items()}
    columns = list(next(iter(rows.values())))
    rows.update(baselines(extra, columns))
    print(f"\n`python scripts/compare_variants.py {' '.join(extra)}`".rstrip() + "\n")
    print("| variant | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(_cell(row, c) for c in columns) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
