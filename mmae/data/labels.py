"""Labels as the data gave them, and the class indices models and probes use.

Every labelled dataset maps its labels to class indices `0..K-1` (batches carry the index,
-1 where a sample has none). The map keeps the labels themselves, so that everything mmae
writes for a user (features, metrics.json, exports, shards) gives them back as they were:
integer labels as the same integers, string labels as the same strings. Integers are
ordered by value, strings by their text.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from mmae.core.errors import DataError

Kind = Literal["integer", "string"]
#: The index of a sample without a label.
UNLABELLED = -1
_INT64 = (-(2**63), 2**63 - 1)


def _as_integer(value: Any) -> int | None:
    """The integer a cell holds (`3`, `3.0`, `"3"`, `" -1 "`), or None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                return None
            return int(number) if math.isfinite(number) and number.is_integer() else None
    return None


@dataclass(frozen=True)
class LabelMap:
    """`values[i]` is the label of class index `i`; `kind` says whether they are integers."""

    kind: Kind
    values: tuple[int | str, ...]

    @classmethod
    def from_cells(cls, cells: Iterable[Any]) -> LabelMap | None:
        """The map of a column's non-empty cells: integers when every cell is one (however
        written: `3`, `"3"`, `3.0`), else strings; None when there is no cell."""
        cells = list(cells)
        if not cells:
            return None
        integers = [_as_integer(c) for c in cells]
        if all(i is not None and _INT64[0] <= i <= _INT64[1] for i in integers):  # (else ids, as text)
            return cls("integer", tuple(sorted(set(integers))))
        return cls("string", tuple(sorted({str(c).strip() for c in cells})))

    @classmethod
    def of_classes(cls, count: int) -> LabelMap:
        """Integer labels that are their own index (`0..count-1`)."""
        return cls("integer", tuple(range(count)))

    def __post_init__(self):
        self._index: dict[int | str, int]
        object.__setattr__(self, "_index", {v: i for i, v in enumerate(self.values)})

    def __len__(self) -> int:
        return len(self.values)

    def index(self, cell: Any) -> int:
        """The class index of a cell of the column this map was made from."""
        key = _as_integer(cell) if self.kind == "integer" else str(cell).strip()
        if key not in self._index:
            raise DataError(f"label {cell!r} is not one of the {len(self)} labels the data was read with")
        return self._index[key]

    def labels_of(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """The labels of class indices: int64 values for integer labels (UNLABELLED stays -1;
        see `labelled`), or the strings (`""` where unlabelled)."""
        indices = np.asarray(indices, dtype=np.int64)
        known = indices != UNLABELLED
        if self.kind == "integer":
            table = np.asarray(self.values, dtype=np.int64)
            return np.where(known, table[np.where(known, indices, 0)], UNLABELLED)
        table = np.asarray(self.values, dtype=object)
        return np.where(known, table[np.where(known, indices, 0)], "").astype(str)

    def to_json(self) -> dict:
        return {"kind": self.kind, "values": list(self.values)}

    @classmethod
    def from_json(cls, data: Mapping | None) -> LabelMap | None:
        """A map written by `to_json`, or the `{cell: index}` form of older shards."""
        if not data:
            return None
        if set(data) == {"kind", "values"}:
            return cls(data["kind"], tuple(data["values"]))
        # Older shards stored `{cell: index}`, and their samples those indices: keep them.
        integers = {cell: _as_integer(cell) for cell in data}
        if all(integers[cell] == index for cell, index in data.items()):  # integers as their own index
            return cls("integer", tuple(range(max(data.values()) + 1)))
        ordered = [cell for cell, _ in sorted(data.items(), key=lambda item: item[1])]
        if all(integers[cell] is not None for cell in ordered):
            return cls("integer", tuple(integers[cell] for cell in ordered))
        return cls("string", tuple(ordered))
