"""Reconstruction media without a logger: previews, samples, cross-reconstructions, grids, maps."""

import numpy as np
import pytest
import torch
from PIL import Image

from mmae.core.errors import ConfigError
from mmae.core.fusion import MeanFusion
from mmae.core.model import MultimodalAutoencoder
from mmae.evaluation import media
from mmae.evaluation.latent_map import project_2d, save_png, scatter_image
from mmae.modalities import AudioModality, ImageModality, TextModality, VectorModality


def test_image_preview_shows_pixels_clamped():
    # Standardising happens inside the encoder and decoder: features stay pixels in [0, 1].
    image = ImageModality(channels=1, size=4, hidden_channels=[4], mean=[0.5], std=[0.25])
    assert image.build_preprocessor() is None
    features = torch.tensor([0.0, 0.2, 0.6, 1.0]).repeat(4, 1).view(1, 1, 4, 4)
    features[0, 0, 0, 0] = 10.0  # a reconstruction beyond the valid range
    (preview,) = image.preview(features)
    assert preview.dtype == np.uint8 and preview.shape == (4, 4, 1)
    assert preview[1:, :, 0].tolist() == [[0, 51, 153, 255]] * 3 and preview[0, 0, 0] == 255


def test_audio_preview_is_a_waveform_that_does_not_clip():
    audio = AudioModality(sample_rate=4000, duration=0.25, n_fft=128, hop_length=32, n_mels=16,
                          hidden_channels=[8])
    loud = audio.build_preprocessor()(5.0 * torch.sin(torch.arange(2 * audio.num_samples) * 0.3).view(2, -1))
    clips = audio.preview(loud, n_iter=4)
    assert len(clips) == 2 and all(c.shape == (audio.num_samples,) for c in clips)
    assert max(np.abs(c).max() for c in clips) == pytest.approx(1.0)


def test_text_preview_decodes_ids_and_logits_alike():
    text = TextModality(model_config={"model_type": "bert", "hidden_size": 16, "num_hidden_layers": 1,
                                      "num_attention_heads": 2, "intermediate_size": 16}, max_length=8)
    ids = text.encode_text("hi there").unsqueeze(0)
    logits = torch.nn.functional.one_hot(ids, text.vocab_size).float()
    assert text.preview(ids) == text.preview(logits) == ["hi there"]
    assert VectorModality(dim=3).preview(torch.zeros(2, 3)) is None


def test_image_grid_tiles_rows_enlarged_and_padded():
    white, black = np.full((2, 3, 1), 255, np.uint8), np.zeros((2, 3, 1), np.uint8)
    grid = media.image_grid([[black, white], [white, black]], pad=1, scale=2, fill=128)
    assert grid.shape == (1 + 2 * (4 + 1), 1 + 2 * (6 + 1))
    assert grid[1:5, 1:7].max() == 0 and grid[1:5, 8:14].min() == 255 and grid[0].tolist() == [128] * 15
    rgb = media.image_grid([[np.zeros((2, 2, 3), np.uint8)]])
    assert rgb.shape == (6, 6, 3)


def _batch(n, start=0):
    return {"vector": torch.arange(start, start + n, dtype=torch.float32).view(n, 1).repeat(1, 3),
            "present": {"vector": torch.ones(n, dtype=torch.bool)},
            "label": torch.arange(start, start + n), "index": torch.arange(start, start + n)}


def test_gather_takes_the_first_samples_of_successive_batches():
    batch = media.gather([None, _batch(4), _batch(4, start=4), _batch(4, start=8)], limit=6)
    assert batch.labels.tolist() == batch.index.tolist() == list(range(6))
    assert batch.present["vector"].shape == (6,) and batch.inputs["vector"].shape == (6, 3)
    unindexed = [{k: v for k, v in _batch(4, start=s).items() if k != "index"} for s in (0, 4)]
    assert media.gather(unindexed, limit=6).index is None  # a loader of one's own may give none
    assert media.gather([None], limit=3) is None


def test_cross_reconstructions_use_only_the_other_modalities(small_modalities):
    model = MultimodalAutoencoder(small_modalities, MeanFusion, latent_dim=4, embed_dim=8, decoder_hidden=8)
    model.train()
    n = 6
    features = {"image": torch.randn(n, 1, 8, 8), "vector": torch.randn(n, 5)}
    present = {"image": torch.tensor([1, 1, 0, 1, 1, 1], dtype=torch.bool),
               "vector": torch.tensor([1, 0, 1, 1, 1, 1], dtype=torch.bool)}
    rows = media.cross_reconstructions(model, features, present, "image", limit=3)
    assert list(rows) == list(media.ROWS) and model.training  # its mode is given back
    assert torch.equal(rows["input"], features["image"][[0, 3, 4]])  # image and vector present
    changed = {**features, "image": torch.randn(n, 1, 8, 8)}  # the image must not leak
    again = media.cross_reconstructions(model, changed, present, "image", limit=3)
    assert torch.equal(again["from the others"], rows["from the others"])
    assert not torch.equal(again["from all"], rows["from all"])
    alone = MultimodalAutoencoder({"image": small_modalities["image"]}, MeanFusion, latent_dim=4, embed_dim=8,
                                  decoder_hidden=8)
    assert list(media.cross_reconstructions(alone, {"image": features["image"]}, {"image": present["image"]},
                                            "image", limit=8)) == ["input", "from all"]


def test_pca_projection_is_deterministic_and_follows_the_main_directions():
    g = torch.Generator().manual_seed(0)
    codes = torch.randn(200, 3, generator=g) * torch.tensor([5.0, 1.0, 0.1]) + 7.0
    points = project_2d(codes)
    assert points.shape == (200, 2) and torch.equal(points, project_2d(codes))
    assert torch.allclose(points.mean(0), torch.zeros(2), atol=1e-4)
    # Axis k follows input dimension k, with the sign that makes its largest loading positive.
    centred = codes - codes.mean(0)
    for k in range(2):
        assert torch.corrcoef(torch.stack([points[:, k], centred[:, k]]))[0, 1] > 0.99
    # The SVD's arbitrary signs do not show: negated codes give exactly negated points.
    assert torch.allclose(project_2d(-codes), -points, atol=1e-4)
    assert project_2d(torch.randn(5, 1)).shape == (5, 2)
    with pytest.raises(ConfigError, match="unknown projection 'isomap'; available: pca, tsne, umap"):
        project_2d(codes, method="isomap")


def test_tsne_keeps_separate_clusters_apart():
    pytest.importorskip("sklearn")  # a dev dependency; optional for users
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[10.0] * 8, [-10.0] * 8])
    labels = torch.arange(60) % 2
    codes = centres[labels] + torch.randn(60, 8, generator=g)
    points = project_2d(codes, method="tsne", seed=1)
    assert points.shape == (60, 2) and torch.equal(points, project_2d(codes, method="tsne", seed=1))
    a, b = points[labels == 0], points[labels == 1]
    gap = torch.cdist(a, b).min()
    assert gap > torch.cdist(a, a).max() / 4  # the two groups do not mix


def test_a_projection_without_its_package_says_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "umap", None)  # importing it now raises ImportError
    with pytest.raises(ConfigError, match="pip install umap-learn"):
        project_2d(torch.randn(10, 3), method="umap")


def test_scatter_plot_colours_classes_and_writes_a_png(tmp_path):
    points = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 0.5], [0.5, 2.0]])
    plain = scatter_image(points)
    coloured = scatter_image(points, np.array([0, 1, 1, -1]))
    assert plain.dtype == np.uint8 and plain.ndim == 3 and plain.shape[2] == 3
    assert plain.shape == coloured.shape and not np.array_equal(plain, coloured)
    assert scatter_image(points, np.array([0.1, 0.5, np.nan, 2.0])).shape == plain.shape
    path = save_png(tmp_path / "map.png", points, np.array([0, 1, 1, 0]), title="codes")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == plain.shape[1::-1]
