"""task=compress: the entropy maths against closed forms, the quantiser's bounds, the PCA and
JPEG baselines, and the whole task on the trained evaluation run."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from eval_context import eval_context, single_thread

from mmae.core.errors import ConfigError, DataError
from mmae.evaluation.base import EvalContext
from mmae.evaluation.probes import imputation_errors
from mmae.evaluation.tasks.compression.codecs import (
    component_counts,
    encode_jpeg,
    fit_pca,
    from_pixels,
    jpeg_points,
    jpeg_scan_bytes,
    pca_points,
    to_pixels,
)
from mmae.evaluation.tasks.compression.entropy import (
    cross_entropy_bits,
    empirical_entropy_bits,
    uniform_quantizer,
)
from mmae.evaluation.tasks.compression.rd_curves import distortion_at, frontier, jpeg_match, rate_distortion
from mmae.evaluation.tasks.compression.task import Compress, Samples, decoded_distortion
from mmae.modalities import ImageModality, VectorModality


def increasing(values) -> bool:
    return all(a < b for a, b in itertools.pairwise(values))


def decreasing(values) -> bool:
    return all(a > b for a, b in itertools.pairwise(values))


# -- entropy ------------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [2, 3, 8, 64])
def test_entropy_of_uniform_symbols_is_log2_levels(levels):
    symbols = torch.arange(levels).repeat(5)
    assert float(empirical_entropy_bits(symbols)) == pytest.approx(math.log2(levels), abs=1e-12)


def test_entropy_of_bernoulli_counts_is_binary_entropy():
    symbols = torch.tensor([1] * 300 + [0] * 700)
    h = -(0.3 * math.log2(0.3) + 0.7 * math.log2(0.7))
    assert float(empirical_entropy_bits(symbols)) == pytest.approx(h, abs=1e-12)


def test_entropy_is_per_column():
    symbols = torch.stack([torch.zeros(8, dtype=torch.long), torch.arange(4).repeat(2)], dim=1)
    assert empirical_entropy_bits(symbols).tolist() == pytest.approx([0.0, 2.0], abs=1e-12)


def test_smoothed_cross_entropy_by_hand():
    train, test = torch.tensor([0, 0, 1, 2]), torch.tensor([0, 3])
    # add-1/2: q = (2.5, 1.5, 1.5, 0.5) / 6; add-one: q = (3, 2, 2, 1) / 8
    kt = (math.log2(6 / 2.5) + math.log2(6 / 0.5)) / 2
    laplace = (math.log2(8 / 3) + math.log2(8 / 1)) / 2
    assert float(cross_entropy_bits(train, test, 4)) == pytest.approx(kt, abs=1e-12)
    assert float(cross_entropy_bits(train, test, 4, prior=1.0)) == pytest.approx(laplace, abs=1e-12)


def test_cross_entropy_is_at_least_the_entropy():
    """Gibbs: coding symbols with any other table (here the smoothed one) costs more."""
    symbols = torch.randint(0, 6, (500, 3), generator=torch.Generator().manual_seed(0))
    excess = cross_entropy_bits(symbols, symbols, 6) - empirical_entropy_bits(symbols)
    assert bool((excess > 0).all()) and float(excess.max()) < 0.05


def test_entropy_refusals():
    with pytest.raises(DataError, match=r"\[0, 4\)"):
        cross_entropy_bits(torch.tensor([0, 1]), torch.tensor([4]), 4)
    with pytest.raises(ConfigError, match="prior"):
        cross_entropy_bits(torch.tensor([0, 1]), torch.tensor([1]), 4, prior=0.0)
    with pytest.raises(ConfigError, match=">= 2"):
        uniform_quantizer(torch.zeros(3, 1), 1)
    with pytest.raises(DataError, match="integers"):
        empirical_entropy_bits(torch.tensor([0.5, 1.0]))


# -- the quantiser -------------------------------------------------------------------------


def test_quantiser_error_is_at_most_half_a_step_and_idempotent():
    x = torch.rand(1000, 3, generator=torch.Generator().manual_seed(1)) * 5 - 2
    quantizer = uniform_quantizer(x, 7)
    assert torch.allclose(quantizer.low, x.double().amin(0))
    assert torch.allclose(quantizer.high, x.double().amax(0))
    assert torch.allclose(quantizer.step, (quantizer.high - quantizer.low) / 6)
    symbols = quantizer.quantize(x)
    assert int(symbols.min()) == 0 and int(symbols.max()) == 6
    error = (quantizer.dequantize(symbols).double() - x.double()).abs()
    assert bool((error <= quantizer.step / 2 + 1e-6).all())
    assert torch.equal(quantizer.quantize(quantizer.dequantize(symbols)), symbols)
    outside = torch.tensor([[-100.0, 100.0, 0.0]])
    assert quantizer.quantize(outside)[0, :2].tolist() == [0, 6]


def test_quantiser_range_ignores_one_outlier_and_keeps_constant_units():
    x = torch.cat([torch.randn(999, 1, generator=torch.Generator().manual_seed(2)), torch.tensor([[1e6]])])
    x = torch.cat([x, torch.full((1000, 1), 3.5)], dim=1)
    quantizer = uniform_quantizer(x, 4)
    assert float(quantizer.high[0]) < 1e6 / 10  # mean + 3 std, not the outlier
    symbols = quantizer.quantize(x)
    assert bool((symbols[:, 1] == 0).all()) and bool((quantizer.dequantize(symbols)[:, 1] == 3.5).all())


def test_quantiser_codes_range_ends_exactly():
    """A binary code survives 2 levels, a sparse code's zeros any number of levels."""
    signs = torch.where(torch.rand(200, 4, generator=torch.Generator().manual_seed(8)) > 0.5, 1.0, -1.0)
    binary = uniform_quantizer(signs, 2)
    assert torch.equal(binary.dequantize(binary.quantize(signs)), signs)
    sparse = torch.relu(torch.randn(200, 4, generator=torch.Generator().manual_seed(9)))
    for levels in (3, 8):
        quantizer = uniform_quantizer(sparse, levels)
        zeros = sparse == 0
        assert bool((quantizer.dequantize(quantizer.quantize(sparse))[zeros] == 0).all())


def test_more_levels_cost_more_bits_and_quantise_finer():
    g = torch.Generator().manual_seed(3)
    train, test = torch.randn(2000, 4, generator=g), torch.randn(500, 4, generator=g)
    points = rate_distortion(train, test, [2, 4, 8, 16, 32], lambda codes: {"rows": len(codes)})
    bits = [p["bits_per_sample"] for p in points]
    errors = [p["quantisation_mse"] for p in points]
    assert increasing(bits) and decreasing(errors)
    assert all(p["test_entropy_bits"] <= 4 * math.log2(p["levels"]) + 1e-9 for p in points)
    assert points[0]["rows"] == 500
    # a Gaussian's quantised entropy approaches h(X) - log2(step) per unit, to a few tenths of a bit
    step = float(uniform_quantizer(train, 32).step.mean())
    assert bits[-1] / 4 == pytest.approx(0.5 * math.log2(2 * math.pi * math.e) - math.log2(step), abs=0.3)


def test_a_trained_decoder_loses_less_with_more_levels():
    """On a model whose code carries its data, the decoded error falls with the levels
    towards the unquantised code's."""
    from mmae import MultimodalAutoencoder
    from mmae.core.fusion import MeanFusion

    g = torch.Generator().manual_seed(0)
    x = torch.tanh((torch.rand(384, 2, generator=g) * 2 - 1) @ torch.randn(2, 6, generator=g))
    model = MultimodalAutoencoder({"vector": VectorModality(dim=6, hidden=[32], normalize=False)},
                                  fusion=MeanFusion, latent_dim=2, embed_dim=16, decoder_hidden=32)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    train, test = x[:256], x[256:]
    with single_thread():  # a tiny model trains faster without thread contention
        for _ in range(150):
            optimizer.zero_grad()
            (model({"vector": train}).reconstructions["vector"] - train).pow(2).mean().backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        train_codes, test_codes = model.encoder({"vector": train}).code, model.encoder({"vector": test}).code
    samples = Samples({"vector": test}, {"vector": torch.ones(128, dtype=torch.bool)}, torch.arange(128))
    points = rate_distortion(train_codes, test_codes, [2, 4, 8, 16, 32],
                             lambda codes: decoded_distortion(model, codes, samples))
    errors = [p["distortion"]["vector"] for p in points]
    ceiling = decoded_distortion(model, test_codes, samples)["distortion"]["vector"]
    assert decreasing(errors)
    assert errors[0] > 10 * ceiling and errors[-1] < 2 * ceiling < 0.1 * float(x.var(0).mean())


# -- PCA -----------------------------------------------------------------------------------


def test_pca_reconstructs_data_of_its_rank_exactly():
    g = torch.Generator().manual_seed(4)
    x = (torch.randn(50, 2, generator=g) @ torch.randn(2, 12, generator=g)).view(50, 3, 4) + 5.0
    basis = fit_pca(x)
    assert basis.axes.shape == (12, 2)  # the zero-variance directions are dropped
    assert torch.allclose(basis.reconstruct(basis.project(x)), x, atol=1e-5)
    one = basis.reconstruct(basis.project(x)[:, :1])
    assert 0 < float((one - x).pow(2).mean()) < float((x - x.mean(0)).pow(2).mean())


def test_component_counts():
    assert component_counts(8, 100) == [1, 2, 4, 8, 16, 32, 64]
    assert component_counts(12, 40) == [1, 2, 4, 8, 12, 16, 32]
    assert component_counts(16, 3) == [1, 2]


def test_pca_points_fall_with_rate():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(300, 3, generator=g) @ torch.randn(3, 10, generator=g)
    x = x + 0.05 * torch.randn(300, 10, generator=g)
    points = pca_points("v", VectorModality(dim=10), x[:200], x[200:], [2, 8, 64], latent_dim=3)
    assert {p["components"] for p in points} == {1, 2, 3, 4, 8}
    best = frontier(points, "v")
    assert best[-1]["components"] >= 3 and best[-1]["distortion"]["v"] < 0.01 * float(x.var(0).mean())


# -- JPEG ----------------------------------------------------------------------------------


def _smooth_image(channels: int, size: int, seed: int) -> torch.Tensor:
    coarse = torch.rand(4, channels, 4, 4, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic").clamp(0, 1)


def test_pixels_round_trip_exactly():
    pixels = torch.randint(0, 256, (2, 3, 5, 6), generator=torch.Generator().manual_seed(6)).double() / 255
    assert torch.equal(from_pixels(to_pixels(pixels, 0.0, 1.0), 0.0, 1.0), pixels.float())
    wide = pixels * 3 - 1
    assert torch.allclose(from_pixels(to_pixels(wide, -1.0, 2.0), -1.0, 2.0), wide.float(), atol=1e-6)
    assert to_pixels(torch.zeros(1, 1, 2, 2), 0.0, 1.0).shape == (1, 2, 2)  # grey: 2-D images


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_rate_falls_with_quality(channels):
    images = _smooth_image(channels, 28, seed=7)
    modality = ImageModality(channels=channels, size=28)
    points = jpeg_points("image", modality, images, [5, 25, 50, 95], 0.0, 1.0)
    bits = [p["bits_per_sample"] for p in points]
    scans = [p["scan_bits_per_sample"] for p in points]
    errors = [p["distortion"]["image"] for p in points]
    assert increasing(bits) and increasing(scans)
    assert errors[-1] < errors[0] and errors[-1] < 1e-3
    # Pillow's standard tables: headers of one size at every quality, so the scan is the rest.
    assert len({round(b - s, 6) for b, s in zip(bits, scans, strict=True)}) == 1


def test_jpeg_scan_bytes():
    data = encode_jpeg(np.zeros((8, 8), dtype=np.uint8), 50)
    assert 0 < jpeg_scan_bytes(data) < len(data) - 100
    with pytest.raises(DataError, match="not a JPEG"):
        jpeg_scan_bytes(b"\x89PNG....")


# -- reading the curves --------------------------------------------------------------------


def _points(*pairs):
    return [{"bits_per_sample": b, "distortion": {"m": d}} for b, d in pairs]


def test_frontier_and_interpolation():
    points = _points((4, 1.0), (8, 0.5), (8, 0.7), (16, 0.6), (32, 0.25))
    assert [p["bits_per_sample"] for p in frontier(points, "m")] == [4, 8, 32]
    assert distortion_at(points, "m", 2) == 1.0  # below the cheapest: its distortion
    assert distortion_at(points, "m", 16) == pytest.approx(0.375)  # halfway in log-rate from 8 to 32
    jpeg = _points((100, 0.1), (400, 0.01))
    assert jpeg_match(_points((10, 0.2), (50, 0.1), (200, 0.04)), jpeg, "m") == 50
    assert jpeg_match(_points((10, 0.2), (200, 0.06)), jpeg, "m") is None


# -- the task on the trained run -----------------------------------------------------------


@pytest.fixture(scope="module")
def context(eval_run):
    return eval_context(eval_run)


@pytest.mark.slow
def test_compress_end_to_end(context, tmp_path):
    context.figures, context.options = tmp_path, {"levels": [2, 8, 32], "jpeg_quality": [10, 50, 90]}
    result = Compress().run(context)
    results = result.results
    json.dumps(results)
    model, dim = context.model, context.model.latent_dim

    latent = results["latent"]
    assert [p["levels"] for p in latent] == [2, 8, 32]
    bits = [p["bits_per_sample"] for p in latent]
    assert increasing(bits) and bits[0] > 0
    assert all(p["test_entropy_bits"] <= dim * math.log2(p["levels"]) + 1e-9 for p in latent)
    mse = [p["quantisation_mse"] for p in latent]
    assert decreasing(mse)

    # The float32 code's distortion is the validation metric on the test split, and the
    # quantised codes' distortion approaches it as the levels grow.
    unquantised = results["unquantised"]
    assert unquantised["bits_per_sample"] == 32 * dim
    expected = imputation_errors(model, context.loader("train"), context.loader("test"))
    assert unquantised["distortion"] == pytest.approx({n: expected[n]["from_all"] for n in model.modalities},
                                                      rel=1e-4)
    assert 0 < unquantised["metrics"]["text/token_accuracy"] <= 1
    for name in model.modalities:
        gaps = [abs(p["distortion"][name] - unquantised["distortion"][name]) for p in latent]
        assert gaps[-1] <= gaps[0] + 1e-6

    # PCA for the continuous modalities only; JPEG for the image.
    assert set(results["pca"]) == {"image", "vector"} and set(results["jpeg"]) == {"image"}
    for name in ("image", "vector"):  # PCA's best point is far better than predicting the mean
        pca_best = frontier(results["pca"][name], name)[-1]["distortion"][name]
        assert pca_best < 0.25 * expected[name]["baseline_mean"]
    assert {p["components"] for p in results["pca"]["image"]} >= {1, dim, 128}
    jpeg = results["jpeg"]["image"]
    assert [p["quality"] for p in jpeg] == [10, 50, 90]
    assert increasing([p["bits_per_sample"] for p in jpeg])
    errors = [p["distortion"]["image"] for p in jpeg]
    assert errors[-1] < errors[0] < 0.5 * expected["image"]["baseline_mean"]

    assert sorted(result.figures) == sorted(str(tmp_path / f"compress_{n}.png") for n in model.modalities)
    assert all(Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for path in result.figures)
    summary = result.summary
    assert 2 <= len(summary) <= 6 and summary["latent bits (point nearest 64)"] == bits[-1]
    assert summary["image distortion: mmae"] == latent[-1]["distortion"]["image"]
    assert summary["image distortion: PCA at <= those bits"] == min(
        p["distortion"]["image"] for p in results["pca"]["image"] if p["bits_per_sample"] <= bits[-1])
    assert "image: latent bits matching JPEG" in summary
    assert "JPEG of image" in result.text and "PCA of vector" in result.text


def test_compress_refuses_bad_options(context):
    context.figures = None
    for options, match in (({"levels": [1, 4]}, "compress.levels"), ({"levels": "many"}, "compress.levels"),
                           ({"jpeg_quality": [0]}, "compress.jpeg_quality")):
        context.options = options
        with pytest.raises(ConfigError, match=match):
            Compress().run(context)
    bare = EvalContext(context.encoder, context.datamodule)
    assert Compress().applies(bare) is not None
    with pytest.raises(ConfigError, match="task=compress needs the decoder"):
        Compress().run(bare)
