"""Train every autoencoder variant on the same synthetic data and print one table.

Columns: reconstruction from all inputs and each leave-one-out error (as a fraction of the
training-mean baseline, lower is better), linear-probe accuracy of the code on the class
label (test split), mean Hoyer sparsity of the code, and seconds per training epoch.

    python scripts/compare_variants.py                      # the table in docs/variants.md
    python scripts/compare_variants.py trainer.max_epochs=3 data.dataset.num_samples=1000
"""

from __future__ import annotations

import sys
import tempfile
import time

from hydra import compose, initialize_config_dir

from mmae.config import CONFIG_DIR
from mmae.evaluate import encode_batches, hoyer_sparsity, linear_probe
from mmae.train import train
from mmae.variants import VARIANTS

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


def main(extra: list[str]) -> None:
    run_variant(["experiment=tiny"], [])  # warm-up: keeps one-off start-up costs out of the first row
    rows = {name: run_variant(overrides, extra) for name, overrides in VARIANTS.items()}
    columns = list(next(iter(rows.values())))
    print(f"\n`python scripts/compare_variants.py {' '.join(extra)}`".rstrip() + "\n")
    print("| variant | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, row in rows.items():
        cells = [f"{row[c]:.1%}" if c == "probe" else f"{row[c]:.3f}" for c in columns]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
