"""Time-to-accuracy: the training seconds at which a run's validation loss had made a fixed
fraction of its own drop (first epoch to best): how soon a run converges, whatever its loss's
scale. It is relative to each run's own best, so it says when a run arrived, not that two runs
arrived at the same accuracy: read it beside the accuracy columns.

mmae's history is its CSV log (the default `logger=csv`): `val/loss` beside `time/train_s`, which
the `TrainingClock` callback logs with every validation.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

#: The fraction of the validation loss's drop (first epoch to best) that counts as arrived.
FRACTION = 0.95


def training_history(folder: Path) -> list[tuple[float, float]]:
    """(training seconds, validation loss) of every epoch of the run in `folder`, from its CSV
    log (empty without one, e.g. with logger=none)."""
    logs = folder / "csv"
    parts = [logs / "metrics.csv", *sorted(logs.glob("resumed-*/metrics.csv"),
                                           key=lambda p: int(p.parent.name.split("-")[1]))]
    history = []
    for path in (p for p in parts if p.exists()):  # a resumed run's clock goes on in resumed-N/
        with path.open(newline="", encoding="utf-8") as handle:
            history += [(float(row["time/train_s"]), float(row["val/loss"])) for row in csv.DictReader(handle)
                        if row.get("time/train_s") and row.get("val/loss")]
    return history


def time_to_fraction(history: Sequence[tuple[float, float]], fraction: float = FRACTION) -> float | None:
    """Seconds until the validation loss first made `fraction` of its drop from the first
    epoch to the best one (None for a history without a finite loss). A loss that never dropped
    counts from the first epoch; non-finite losses are left out."""
    history = [(seconds, loss) for seconds, loss in history if math.isfinite(loss)]
    if not history:
        return None
    first, best = history[0][1], min(loss for _, loss in history)
    goal = first - fraction * (first - best)
    return next(seconds for seconds, loss in history if loss <= goal)
