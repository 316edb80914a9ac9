"""Rate-distortion curves as lists of points: the sweep of a uniformly quantised code, and
the readings `task=compress` compares curves by.

A point is a dict with `bits_per_sample` and `distortion` (`{modality: mean error}`), plus
whatever says how it was made (`levels`, `components`, `quality`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from torch import Tensor

from mmae.evaluation.tasks.compression.entropy import (
    cross_entropy_bits,
    empirical_entropy_bits,
    uniform_quantizer,
)

#: `measure(dequantised codes)` -> the distortion entries of a point.
Measure = Callable[[Tensor], dict]


def rate_distortion(train_codes: Tensor, test_codes: Tensor, levels: Sequence[int],
                    measure: Measure) -> list[dict]:
    """One point per number of levels, every unit quantised over the training codes' range.

    `bits_per_sample`: the test symbols' summed per-unit cross-entropy under the training
    symbols' smoothed histograms (what a static table fitted without the test split pays);
    `test_entropy_bits`: their own empirical entropy (a table fitted on the test split, the
    bound that one cannot beat); `quantisation_mse`: the error the quantiser adds to the codes;
    and the entries `measure` returns for the dequantised test codes.
    """
    points = []
    for count in levels:
        quantizer = uniform_quantizer(train_codes, count)
        train_symbols, test_symbols = quantizer.quantize(train_codes), quantizer.quantize(test_codes)
        dequantised = quantizer.dequantize(test_symbols)
        points.append({
            "levels": count,
            "bits_per_sample": float(cross_entropy_bits(train_symbols, test_symbols, count).sum()),
            "test_entropy_bits": float(empirical_entropy_bits(test_symbols).sum()),
            "quantisation_mse": float((dequantised.double() - test_codes.double()).pow(2).mean()),
            **measure(dequantised),
        })
    return points


def frontier(points: Sequence[dict], name: str, rate: str = "bits_per_sample") -> list[dict]:
    """The points no other point beats on `name`: by rate, each better than every cheaper one."""
    best, kept = math.inf, []
    for point in sorted(points, key=lambda p: (p[rate], p["distortion"][name])):
        if point["distortion"][name] < best:
            best = point["distortion"][name]
            kept.append(point)
    return kept


def best_within(points: Sequence[dict], name: str, bits: float) -> float | None:
    """The lowest `name` distortion among the points of at most `bits` bits per sample."""
    values = [p["distortion"][name] for p in points if p["bits_per_sample"] <= bits * (1 + 1e-9)]
    return min(values) if values else None


def distortion_at(points: Sequence[dict], name: str, bits: float, rate: str = "bits_per_sample") -> float:
    """A curve's `name` distortion at `bits`, linear in log-rate along its frontier; held at
    its end points outside them (a codec cannot do better below its cheapest setting)."""
    curve = frontier(points, name, rate)
    rates = [math.log2(p[rate]) for p in curve]
    return float(np.interp(math.log2(bits), rates, [p["distortion"][name] for p in curve]))


def jpeg_match(latent: Sequence[dict], jpeg: Sequence[dict], name: str,
               rate: str = "bits_per_sample") -> float | None:
    """The lowest latent rate at which the latent's `name` distortion is at most JPEG's at
    that rate (`distortion_at`), or None where it never is."""
    for point in sorted(latent, key=lambda p: p["bits_per_sample"]):
        bits = point["bits_per_sample"]
        if name in point["distortion"] and point["distortion"][name] <= distortion_at(jpeg, name, bits, rate):
            return bits
    return None
