"""Uniform scalar quantisation and the rate of its symbols, in bits.

The rate model is a per-unit histogram: each code unit's symbols are counted on the training
split and the test symbols are charged their cross-entropy under those counts, smoothed so a
symbol never seen in training still costs finite bits (add-1/2, Krichevsky-Trofimov, by
default). This is the code length an arithmetic coder with a static per-unit table reaches
(within a few bits per message), not a learned entropy model: simple, deterministic and
fitted on data the test split never touches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mmae.core.errors import ConfigError, DataError

#: How many standard deviations either side of the mean a unit's range reaches at most (the
#: range is also never wider than the training codes' min / max).
RANGE_STDS = 3.0
#: Add-1/2 (Krichevsky-Trofimov) smoothing of the symbol counts.
KT_PRIOR = 0.5


def _columns(x: Tensor) -> Tensor:
    """`[N]` or `[N, D]` -> `[N, D]`."""
    if x.dim() == 1:
        return x.unsqueeze(1)
    if x.dim() != 2:
        raise DataError(f"expected codes of shape [N] or [N, D], got {list(x.shape)}")
    return x


def check_levels(levels: int, where: str = "levels") -> int:
    """`levels` as an int of at least 2, or a `ConfigError` naming `where`."""
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
        raise ConfigError(f"{where}: quantisation levels must be integers >= 2, got {levels!r}")
    return levels


@dataclass(frozen=True)
class UniformQuantizer:
    """`levels` values per unit spread evenly over `[low, high]`, both ends included, so a
    range end is coded exactly (a ReLU's or a k-sparse code's 0, a binary code's ±1). A symbol
    is a level's index in `[0, levels)`; a value goes to its nearest level (values outside the
    range to the end levels), so inside the range the error is at most half a step,
    `(high - low) / (2 (levels - 1))`. A unit whose range is a single value has one level in
    use (symbol 0, dequantised to that value)."""

    low: Tensor  # [D], float64
    high: Tensor  # [D], float64
    levels: int

    @property
    def step(self) -> Tensor:
        """The distance between neighbouring levels, per unit."""
        return (self.high - self.low) / (self.levels - 1)

    def quantize(self, x: Tensor) -> Tensor:
        """Values `[N, D]` -> symbols `[N, D]` (int64)."""
        x = _columns(x).double()
        step = self.step
        scaled = (x - self.low) / torch.where(step > 0, step, torch.ones_like(step))
        symbols = scaled.round().clamp(0, self.levels - 1).long()
        return torch.where(step > 0, symbols, torch.zeros_like(symbols))

    def dequantize(self, symbols: Tensor) -> Tensor:
        """Symbols `[N, D]` -> their levels' values `[N, D]` (float32)."""
        return (self.low + _columns(symbols).double() * self.step).float()


def uniform_quantizer(train_codes: Tensor, levels: int, stds: float = RANGE_STDS) -> UniformQuantizer:
    """A uniform quantiser fitted to the training codes `[N, D]`: each unit's range is the
    training min / max, narrowed to the mean ± `stds` standard deviations where a tail is long
    (so one outlier does not waste the bins)."""
    levels = check_levels(levels)
    x = _columns(train_codes).double()
    if x.shape[0] == 0:
        raise DataError("a quantiser needs at least one training code")
    mean, std = x.mean(0), x.std(0, unbiased=False)
    low = torch.maximum(x.amin(0), mean - stds * std)
    high = torch.minimum(x.amax(0), mean + stds * std)
    return UniformQuantizer(low, torch.maximum(high, low), levels)


def _counts(symbols: Tensor, size: int) -> Tensor:
    """Per column, how often each symbol `0..size-1` occurs: `[D, size]` (float64)."""
    symbols = _columns(symbols)
    if symbols.dtype.is_floating_point or symbols.dtype == torch.bool:
        raise DataError(f"symbols must be integers, got {symbols.dtype}")
    if symbols.numel() and (int(symbols.min()) < 0 or int(symbols.max()) >= size):
        raise DataError(f"symbols must lie in [0, {size}), got [{int(symbols.min())}, {int(symbols.max())}]")
    counts = torch.zeros(symbols.shape[1], size, dtype=torch.float64)
    return counts.scatter_add_(1, symbols.T.long(), torch.ones(symbols.T.shape, dtype=torch.float64))


def empirical_entropy_bits(symbols: Tensor) -> Tensor:
    """The plug-in entropy of each column's symbol frequencies, in bits: `[D]` for `[N, D]`
    symbols (a scalar for `[N]`). It is the rate of a code fitted to the very data it codes, a
    lower bound the cross-entropy of `cross_entropy_bits` pays for not having seen it."""
    flat = symbols.dim() == 1
    columns = _columns(symbols)
    if columns.shape[0] == 0:
        raise DataError("the entropy of no symbols is undefined")
    counts = _counts(columns, int(columns.max()) + 1 if columns.numel() else 1)
    p = counts / columns.shape[0]
    bits = -(torch.where(p > 0, p * torch.log2(p), torch.zeros_like(p))).sum(1)
    return bits[0] if flat else bits


def cross_entropy_bits(train_symbols: Tensor, test_symbols: Tensor, levels: int,
                       prior: float = KT_PRIOR) -> Tensor:
    """Per column, the mean code length in bits of the test symbols under the training
    symbols' smoothed frequencies `q(s) = (count(s) + prior) / (N + prior * levels)`:
    `[D]` for `[N, D]` symbols (a scalar for `[N]`). `prior=0.5` is add-1/2
    (Krichevsky-Trofimov), `1.0` add-one (Laplace); either keeps unseen symbols finite."""
    levels = check_levels(levels)
    if not prior > 0:
        raise ConfigError(f"the smoothing prior must be positive (unseen symbols would cost infinite bits), "
                          f"got {prior}")
    flat = test_symbols.dim() == 1
    train, test = _columns(train_symbols), _columns(test_symbols)
    if train.shape[1] != test.shape[1]:
        raise DataError(f"train and test symbols have {train.shape[1]} and {test.shape[1]} columns")
    if test.shape[0] == 0:
        raise DataError("the cross-entropy of no test symbols is undefined")
    q = (_counts(train, levels) + prior) / (train.shape[0] + prior * levels)
    _counts(test, levels)  # (checks the range)
    bits = -torch.log2(q.gather(1, test.T.long())).mean(1)
    return bits[0] if flat else bits
