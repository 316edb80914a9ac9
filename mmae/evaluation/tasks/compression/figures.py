"""The figure of `task=compress`, one per modality, from its results: matplotlib's object API
on the Agg canvas (no pyplot state), written atomically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mmae.artifacts.atomic import write_atomic
from mmae.evaluation.tasks.compression.rd_curves import frontier


def _line(axes, points: Sequence[dict], name: str, label: str, rate: str = "bits_per_sample",
          **style) -> list[float]:
    """Draw one curve; its distortions (for the choice of scale)."""
    points = sorted((p for p in points if name in p["distortion"]), key=lambda p: p[rate])
    values = [p["distortion"][name] for p in points]
    if points:
        axes.plot([p[rate] for p in points], values, label=label, **style)
    return values


def plot_modality(path: Path, results: dict, name: str) -> Path:
    """The rate-distortion plot of modality `name`: the latent (quantised, and float32), PCA
    at the latent's size and PCA's frontier over all sizes, JPEG (file and scan) for images."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4.5), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    values = _line(axes, results["latent"], name, "mmae latent, L levels per unit (all modalities)",
                   marker="o", color="tab:blue")
    unquantised = results["unquantised"]
    values.append(unquantised["distortion"][name])
    axes.scatter([unquantised["bits_per_sample"]], [values[-1]], marker="*", s=120,
                 color="tab:blue", label="mmae latent, float32", zorder=3)
    if name in results["pca"]:
        points = results["pca"][name]
        same = [p for p in points if p["components"] == results["latent_dim"]]
        values += _line(axes, same, name, f"PCA, {results['latent_dim']} components", marker="s", ls="--",
                        color="tab:orange")
        values += _line(axes, frontier(points, name), name, "PCA, best of all sizes", ls=":",
                        drawstyle="steps-post", color="tab:orange")
    if name in results["jpeg"]:
        values += _line(axes, results["jpeg"][name], name, "JPEG (file)", marker="^", color="tab:green")
        values += _line(axes, results["jpeg"][name], name, "JPEG (scan only)", rate="scan_bits_per_sample",
                        marker="v", ls="--", color="tab:green")
    axes.set_xscale("log", base=2)
    if min(values) > 0 and max(values) > 10 * min(values):
        axes.set_yscale("log")
    axes.set_xlabel("bits per sample (test)")
    axes.set_ylabel(f"{name} distortion (its validation error)")
    axes.set_title(f"rate-distortion: {name}")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize="small")
    FigureCanvasAgg(figure)
    return write_atomic(path, lambda temporary: figure.savefig(temporary, format="png"))
