"""The figures of `task=robustness`, from its results: accuracy by subset of modalities given,
accuracy against input noise, reconstruction error against input noise. matplotlib's object
API on the Agg canvas (no pyplot state), written atomically."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from mmae.artifacts.atomic import write_atomic

PROBES = {"deployed": "codes (probe on all)", "matched": "codes (probe on subset)",
          "raw": "raw inputs, zero-filled"}


def _axes(width: float = 6.0):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, 4), dpi=100, layout="constrained")
    return figure, figure.add_subplot()


def _save(figure, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    return write_atomic(path, lambda temporary: figure.savefig(temporary, format="png"))


def _chance(axes, chance: float) -> None:
    axes.axhline(chance, color="grey", linestyle=":", label="chance")
    axes.set_ylim(0, 1.02)
    axes.set_ylabel("test accuracy")


def subsets_png(results: Mapping, path: Path) -> Path:
    """Grouped bars: the accuracy of each probe for every subset of modalities given."""
    keys = list(results["subsets"])
    probes = [p for p in PROBES if any(p in row for row in results["subsets"].values())]
    figure, axes = _axes(max(6.0, 0.9 * len(keys) + 2))
    width = 0.8 / len(probes)
    for i, probe in enumerate(probes):
        values = [results["subsets"][k].get(probe) or 0.0 for k in keys]
        axes.bar([j + (i - (len(probes) - 1) / 2) * width for j in range(len(keys))], values, width,
                 label=PROBES[probe])
    axes.set_xticks(range(len(keys)), [k.replace("+", "\n+") for k in keys], fontsize="small")
    axes.set_xlabel("modalities given at test time")
    _chance(axes, results["chance"])
    figure.legend(fontsize="small", loc="outside lower center", ncols=len(probes) + 1)
    axes.set_title("linear probe with missing modalities")
    return _save(figure, path)


def noise_png(results: Mapping, path: Path) -> Path:
    """Accuracy against the input noise, of the codes and of the raw inputs."""
    sigmas = [row["sigma"] for row in results["noise"]]
    figure, axes = _axes()
    for probe, label in (("probe", "codes"), ("raw", "raw inputs")):
        axes.plot(sigmas, [row[probe] for row in results["noise"]], marker="o", label=label)
    axes.set_xlabel("Gaussian input noise (standard deviations)")
    _chance(axes, results["chance"])
    axes.legend(fontsize="small")
    axes.set_title("linear probe on noisy inputs")
    return _save(figure, path)


def reconstruction_png(results: Mapping, path: Path) -> Path:
    """Each modality's reconstruction error to the clean inputs, in units of the training-mean
    baseline's, against the input noise."""
    rows = results["noise"]
    sigmas = [row["sigma"] for row in rows]
    figure, axes = _axes()
    for name in rows[0]["reconstruction"]:
        ratios = [row["reconstruction"][name]["ratio"] for row in rows]
        axes.plot(sigmas, [float("nan") if r is None else r for r in ratios], marker="o", label=name)
    axes.axhline(1.0, color="grey", linestyle=":", label="training mean")
    axes.set_xlabel("Gaussian input noise (standard deviations)")
    axes.set_ylabel("error / error of the training mean")
    axes.legend(fontsize="small")
    axes.set_title("reconstruction of the clean inputs")
    return _save(figure, path)
