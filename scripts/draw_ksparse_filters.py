"""The decoder filters of k-sparse autoencoders for k = 70, 40, 25, 10 (Makhzani & Frey, 2013,
figure 1): as k falls, the units turn from local strokes and blobs into larger, whole-shape
templates, and fewer units do the work.

    python scripts/draw_ksparse_filters.py                          # synthetic 28x28 images
    python scripts/draw_ksparse_filters.py --data realdata          # the real-data digits (8x8)
    python scripts/draw_ksparse_filters.py --k 70 40 --epochs 5 --out outputs/ksparse

Each k is one `mmae-train model=ksparse model.top_k=K modality=[image]` run (a 256-unit code).
A unit's filter is what the decoder adds to the image of the zero code when that unit alone
is on at its mean active value: `decode(a * e_i) - decode(0)`, the decoder being non-linear.
The figure shows, per k, the 48 units used most often on the training images; below it the
script prints each run's reconstruction error against the mean-image baseline, and how many
units are never among the k largest (dead units, which k-sparse training is prone to).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

import mmae

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS))
from bench_realdata import Run, train, train_args, write_json  # noqa: E402  (sibling scripts)
from realdata import build_spoken_digits  # noqa: E402

from mmae.config.build import build  # noqa: E402
from mmae.evaluation.codes import encode_batches  # noqa: E402

LATENT = 256
SHOWN = 48


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, nargs="+", default=[70, 40, 25, 10])
    parser.add_argument("--data", choices=["synthetic", "realdata"], default="synthetic")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path("outputs/ksparse"))
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    return parser.parse_args(argv)


def run_for(k: int, args: argparse.Namespace) -> Run:
    folder = (args.out / f"k{k}").resolve()
    model = ["model=ksparse", f"model.latent_dim={LATENT}", f"model.top_k={k}",
             f"trainer.max_epochs={args.epochs}"]
    if args.data == "realdata":
        manifest = build_spoken_digits(args.out / "spoken_digits").resolve()
        overrides = train_args(manifest, ("image",), folder, model)
    else:
        overrides = ["modality=[image]", f"paths.output_dir={folder}", "logger=none", *model]
    return Run(f"k={k}", ("image",), model, folder, [*overrides, "progress_bar=none"])


@torch.no_grad()
def filters(run: Run) -> tuple[np.ndarray, dict]:
    """The most used units' filters `[SHOWN, H, W]` and the run's numbers."""
    model = mmae.load_checkpoint_model(run.folder / "checkpoints" / "best.ckpt").eval()
    metrics = json.loads((run.folder / "metrics.json").read_text())
    data = build(OmegaConf.load(run.folder / "config.yaml").data, _partial_=True)(modalities=model.modalities)
    codes = encode_batches(model, data.train_dataloader()).codes
    active = codes != 0
    usage = active.float().mean(0)
    strength = codes.sum(0) / active.sum(0).clamp_min(1)
    order = usage.argsort(descending=True)[:SHOWN]
    zero = model.decoder(torch.zeros(1, model.latent_dim))["image"]
    units = torch.zeros(len(order), model.latent_dim)
    units[torch.arange(len(order)), order] = strength[order]
    drawn = (model.decoder(units)["image"] - zero)[:, 0].numpy()  # the first channel
    image = metrics["imputation"]["image"]
    return drawn, {"k": int(model.encoder.top_k), "recon": image["from_all"],
                   "baseline_mean": image["baseline_mean"], "dead_units": int((usage == 0).sum()),
                   "latent_dim": model.latent_dim, "seconds": run.seconds, "command": run.command}


def draw(panels: dict[int, np.ndarray], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = 12
    rows = SHOWN // columns
    figure = Figure(figsize=(columns * 0.6, len(panels) * (rows * 0.6 + 0.4)))
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(len(panels) * rows, columns, hspace=0.15, wspace=0.05)
    for block, (k, drawn) in enumerate(panels.items()):
        for i, unit in enumerate(drawn):
            axes = figure.add_subplot(grid[block * rows + i // columns, i % columns])
            limit = np.abs(unit).max() or 1.0
            axes.imshow(unit, cmap="gray", vmin=-limit, vmax=limit)
            axes.set_xticks([])
            axes.set_yticks([])
            if i == 0:
                axes.set_ylabel(f"k={k}", rotation=0, ha="right", va="center")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, bbox_inches="tight")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    panels, rows = {}, []
    for k in args.k:
        run = train(run_for(k, args))
        panels[k], row = filters(run)
        rows.append(row)
    picture = args.out / "ksparse_filters.png"
    draw(panels, picture)
    print(f"\n{'k':>4}{'recon (image)':>16}{'mean baseline':>16}{'dead units':>12}{'train s':>9}")
    for row in rows:
        print(f"{row['k']:>4}{row['recon']:>16.4f}{row['baseline_mean']:>16.4f}"
              f"{row['dead_units']:>8} / {row['latent_dim']}{row['seconds']:>9.0f}")
    print(f"\nfilters in {picture}")
    write_json(args.json, {"data": args.data, "epochs": args.epochs, "rows": rows, "figure": str(picture)})


if __name__ == "__main__":
    main()
