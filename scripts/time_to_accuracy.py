"""Time-to-accuracy: the training seconds at which a run's validation loss had made a fixed
fraction of its whole drop. Runs of different lengths and speeds compare fairly on it, where the
whole command's seconds reward whoever stops first.

mmae's history is its CSV log (the default `logger=csv`): `val/loss` beside `time/train_s`, which
the `TrainingClock` callback logs with every validation.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

#: The fraction of the validation loss's drop (first epoch to best) that counts as arrived.
FRACTION = 0.95


def training_history(folder: Path) -> list[tuple[float, float]]:
    """(training seconds, validation loss) of every epoch of the run in `folder`, from its CSV
    log (empty without one, e.g. with logger=none)."""
    path = folder / "csv" / "metrics.csv"
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return [(float(row["time/train_s"]), float(row["val/loss"])) for row in csv.DictReader(handle)
                if row.get("time/train_s") and row.get("val/loss")]


def time_to_fraction(history: Sequence[tuple[float, float]], fraction: float = FRACTION) -> float | None:
    """Seconds until the validation loss first made `fraction` of its drop from the first
    epoch to the best one (None for an empty history). A loss that never dropped counts from
    the first epoch."""
    if not history:
        return None
    first, best = history[0][1], min(loss for _, loss in history)
    goal = first - fraction * (first - best)
    return next(seconds for seconds, loss in history if loss <= goal)
