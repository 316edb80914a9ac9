"""A 2-D map of latent codes: a projection, and a scatter plot of it coloured by label.

Plain functions of tensors and arrays, with no logger in sight, so that the training media,
a PNG file and a notebook all draw the same picture. Figures are built
on matplotlib's object API with the Agg canvas, never pyplot's global state, so drawing is
thread-safe and needs no display.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mmae.artifacts.atomic import write_atomic
from mmae.core.errors import ConfigError

#: Projection -> the package it needs beyond mmae's own dependencies (None: none).
PROJECTIONS = {"pca": None, "tsne": "scikit-learn", "umap": "umap-learn"}
MAX_LEGEND_CLASSES = 20


def project_2d(latents: Tensor, method: str = "pca", seed: int = 0) -> Tensor:
    """Latent codes `[N, D]` -> points `[N, 2]`.

    `pca` (always available): an SVD of the centred codes, in float64; each axis's sign is
    fixed (its largest loading is positive) so the same codes always give the same picture; a
    code of one dimension gets a zero second axis. `tsne` (scikit-learn) and `umap`
    (umap-learn) when installed: neighbourhoods rather than variance, seeded by `seed`.
    """
    if method not in PROJECTIONS:
        raise ConfigError(f"latent map: unknown projection '{method}'; available: {', '.join(PROJECTIONS)}")
    if latents.dim() != 2 or latents.shape[0] == 0:
        raise ValueError(f"latent map: expected codes of shape [N, D] with N > 0, got {list(latents.shape)}")
    x = latents.detach().to("cpu", torch.float64)
    if method != "pca":
        return _neighbour_embedding(x.numpy(), method, seed)
    x = x - x.mean(dim=0, keepdim=True)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    axes = vh[:2]
    strongest = axes.abs().argmax(dim=1)
    signs = torch.sign(axes[torch.arange(axes.shape[0]), strongest])
    axes = axes * torch.where(signs == 0, 1.0, signs).unsqueeze(1)
    points = x @ axes.T
    if points.shape[1] < 2:
        points = torch.cat([points, torch.zeros_like(points)], dim=1)
    return points.float()


def _neighbour_embedding(x: np.ndarray, method: str, seed: int) -> Tensor:
    try:
        if method == "tsne":
            from sklearn.manifold import TSNE

            reducer = TSNE(n_components=2, perplexity=min(30.0, max(1.0, (len(x) - 1) / 3)),
                           init="pca", random_state=seed)
        else:
            from umap import UMAP

            reducer = UMAP(n_components=2, random_state=seed)
    except ImportError:
        raise ConfigError(f"latent map: projection '{method}' needs `pip install {PROJECTIONS[method]}`; "
                          "'pca' needs nothing") from None
    return torch.from_numpy(np.asarray(reducer.fit_transform(x), dtype=np.float32))


def _figure(points: np.ndarray | Tensor, labels: np.ndarray | Tensor | None, title: str):
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    points = np.asarray(points, dtype=np.float64)
    labels = None if labels is None else np.asarray(labels)
    categorical = labels is not None and np.issubdtype(labels.dtype, np.integer)
    known = None if labels is None else (labels >= 0 if categorical else np.isfinite(labels))
    figure = Figure(figsize=(5, 5), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    style = {"s": 10, "alpha": 0.8, "linewidths": 0}
    if known is None or not known.any():
        axes.scatter(*points.T, color="tab:blue", **style)
    else:
        if not known.all():
            axes.scatter(*points[~known].T, color="lightgrey", label="unlabelled", **style)
        classes = np.unique(labels[known])
        if categorical and len(classes) <= MAX_LEGEND_CLASSES:
            colours = colormaps["tab20" if len(classes) > 10 else "tab10"]
            for i, value in enumerate(classes):
                axes.scatter(*points[labels == value].T, color=colours(i), label=str(value), **style)
            axes.legend(title="label", fontsize="small", markerscale=1.5, loc="best")
        else:  # many classes or a continuous label: a colour scale
            drawn = axes.scatter(*points[known].T, c=labels[known], cmap="viridis", **style)
            figure.colorbar(drawn, ax=axes, label="label")
    axes.set_xlabel("component 1")
    axes.set_ylabel("component 2")
    axes.set_title(title)
    return figure


def scatter_image(points: np.ndarray | Tensor, labels: np.ndarray | Tensor | None = None,
                  title: str = "latent space") -> np.ndarray:
    """The scatter plot of `points` `[N, 2]` as uint8 RGB `[H, W, 3]`. Integer `labels` `[N]`
    get one colour each, a negative one meaning unlabelled (as a manifest's -1); float labels
    (NaN: unlabelled) or many classes get a colour scale."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(_figure(points, labels, title))
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_png(path: str | Path, points: np.ndarray | Tensor, labels: np.ndarray | Tensor | None = None,
             title: str = "latent space") -> Path:
    """Write the scatter plot of `scatter_image` to a PNG file."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure = _figure(points, labels, title)
    FigureCanvasAgg(figure)
    return write_atomic(path, lambda temporary: figure.savefig(temporary, format="png"))
