"""Manifest fuzzing: random and malformed manifests (CSV, TSV, JSONL, Parquet) either load into
finite tensors of the declared shapes, or fail with a `DataError` that names the manifest and,
for a bad cell, its row and column. Any other exception, or a NaN in a tensor, is a bug.

Every example is also held to an oracle written from the documented semantics (see
`mmae/data/manifest.py`): with `on_error="raise"` a manifest with a bad cell must fail naming a
bad row and one of its bad columns, and a clean one must load; with `on_error="skip"` exactly
the clean rows load. Rows whose files only turn out bad when read (a truncated PNG may still
decode) may go either way. The examples after the property tests pin each bug it found.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow
import pyarrow.parquet as pq
import pytest
import soundfile
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from manifest_factory import TEXT_CONFIG
from PIL import Image

from mmae.core.errors import ConfigError, DataError
from mmae.data.batch import SPLITS, Batch
from mmae.data.manifest import ManifestDataset
from mmae.modalities import AudioModality, ImageModality, TabularModality, TextModality, VectorModality
from mmae.training.datamodule import ManifestDataModule

# --- the modalities under test, and the manifest columns they read ---------------------------

AUDIO = {"sample_rate": 800, "duration": 0.1, "n_fft": 32, "hop_length": 16, "n_mels": 8,
         "hidden_channels": [2]}
COLUMNS = {"vec": ["vec"], "tab": ["num a", "num_b", "kategorie"], "txt": ["texte ü"],
           "img": ["img"], "aud": ["aud"]}
FRACTIONS = (0.6, 0.2, 0.2)
F32_MAX = float(np.finfo(np.float32).max)
ANOMALY_OK = {"", "0", "0.0", "false", "no", "1", "1.0", "true", "yes"}


def make_modalities(names) -> dict:
    build = {"vec": lambda: VectorModality(dim=3, hidden=[4]),
             "tab": lambda: TabularModality(numeric=["num a", "num_b"], categorical=["kategorie"]),
             "txt": lambda: TextModality(model_config=TEXT_CONFIG, max_length=8, column="texte ü"),
             "img": lambda: ImageModality(size=4, hidden_channels=[2]),
             "aud": lambda: AudioModality(**AUDIO)}
    return {name: build[name]() for name in sorted(names)}


# --- file contents, each with what it is to each modality that reads files -------------------

OK, MISSING, BAD, BAD_LOAD, MAYBE = "ok", "missing", "bad", "bad-load", "maybe"


def _png(mode: str, size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color=7).save(buffer, format="PNG")
    return buffer.getvalue()


def _wav(samples: np.ndarray, rate: int, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


_wave = (0.5 * np.sin(np.arange(80) / 3)).astype(np.float32)
#: name -> (bytes, status of the file per modality; absent modality: unreadable when loaded)
CONTENTS: dict[str, tuple[bytes, dict[str, str]]] = {
    "png": (_png("L", (4, 4)), {"img": OK}),
    "png_5x4": (_png("L", (5, 4)), {}),
    "png_rgb": (_png("RGB", (4, 4)), {}),
    "png_16bit": (_png("I;16", (4, 4)), {"img": OK}),  # grey of another depth, read by its range
    "wav": (_wav(_wave, 800), {"aud": OK}),
    "wav_stereo_1600hz": (_wav(np.stack([np.repeat(_wave, 2)] * 2, 1), 1600), {"aud": OK}),
    "wav_short": (_wav(_wave[:20], 800), {"aud": OK}),  # zero-padded
    "wav_nan": (_wav(np.array([0.1, np.nan, 0.2], np.float32), 800, "FLOAT"), {}),
    "wav_inf": (_wav(np.array([0.1, np.inf, 0.2], np.float32), 800, "FLOAT"), {}),
    "wav_odd_rate": (_wav(_wave[:10], 999_983, "FLOAT"), {}),  # resampling it needs GBs
    "wav_no_frames": (_wav(np.zeros(0, np.float32), 800), {}),
    "npy": (_npy(np.array([0.1, -2.0, 3e30], np.float32)), {"vec": OK}),
    "npy_int_1x3": (_npy(np.array([[1, 2, 3]])), {"vec": OK}),
    "npy_4": (_npy(np.zeros(4, np.float32)), {}),
    "npy_nan": (_npy(np.array([0.0, np.nan, 1.0])), {}),
    "npy_huge": (_npy(np.array([0.0, 1e39, 1.0])), {}),  # finite in float64, not in float32
    "npy_text": (_npy(np.array(["a", "b", "c"])), {}),
    "npy_complex": (_npy(np.array([1 + 2j, 0, 1])), {}),  # casting would drop the imaginary part
    "npy_pickled": (_npy(np.array([{"a": 1}, 2, 3], dtype=object)), {}),
    "empty": (b"", {}),
}
GOOD_CONTENT = {"img": "png", "aud": "wav", "vec": "npy"}
EXTENSIONS = {"png": ".png", "wav": ".wav", "npy": ".npy", "emp": ".png"}


@dataclass(frozen=True)
class File:
    """A file (or directory) the test writes: `rel` is how a cell names it (relative to the
    manifest, `..`, or absolute with `@ROOT@`), `disk` where it lies under the temp root."""

    rel: str
    disk: str
    content: str  # a CONTENTS key, "random", "truncated:<key>" or "dir"
    data: bytes = b""

    def status(self, modality: str) -> str:
        if self.content == "dir":
            return BAD if modality in ("img", "aud") else BAD_LOAD
        if self.content == "random":
            return MAYBE if modality in ("img", "aud") else BAD_LOAD
        if self.content.startswith("truncated:"):
            good = CONTENTS[self.content.split(":", 1)[1]][1].get(modality) == OK
            return MAYBE if good else BAD_LOAD
        return CONTENTS[self.content][1].get(modality, BAD_LOAD)


SUBDIRS = [("media/", "data/media/"), ("media/sub dir ü/", "data/media/sub dir ü/"),
           ("../up/", "up/"), ("@ROOT@/abs/", "abs/")]
STEM = (st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\"),
                min_size=1, max_size=10).map(str.strip).filter(bool))


@st.composite
def files(draw, content=None) -> File:
    """A good file of `content`, with its natural extension; or any file, named anyhow."""
    good = content is not None
    content = content or draw(st.sampled_from([*CONTENTS, "random", "truncated", "dir"]))
    data = b""
    if content == "random":
        data = draw(st.binary(max_size=48))
    elif content == "truncated":
        base = draw(st.sampled_from(["png", "wav", "npy", "wav_stereo_1600hz"]))
        data = CONTENTS[base][0][: draw(st.integers(0, len(CONTENTS[base][0]) - 1))]
        content = f"truncated:{base}"
    elif content != "dir":
        data = CONTENTS[content][0]
    natural = EXTENSIONS.get(content.split(":")[-1][:3], ".png")
    names = [natural, natural, ".png", ".wav", ".npy", ".PNG", ""]
    extension = natural if good else draw(st.sampled_from(names))
    subdir, disk = draw(st.sampled_from(SUBDIRS))
    stem = draw(STEM)
    return File(subdir + stem + extension, disk + stem + extension, content, data)


# --- cells: per column, values that are good, and values that are bad --------------------------

FLOAT32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
NUMBER_TEXT = FLOAT32.flatmap(lambda x: st.sampled_from([repr(x), f"{x:g}", f"{x:.3e}", f" {x!r} "]))
BAD_NUMBER = st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "1e39", "-3.5e38", "1e400",
                              "tall", "0x10", "--1", "1e", "½", "True"])
EMPTY = st.sampled_from(["", "   ", None, math.nan])
JUNK = st.sampled_from([True, False, 7, 1.5, 10**400, -(10**30), [], [1], ["a", "b"], {"a": 1},
                        {"path": "x.png"}, [[1, 2], [3]]])
SEPARATORS = st.sampled_from([" ", ",", ";", ", ", "  ", "\t", " ; "])
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=24)


def _join(values: list, separator: str, brackets: bool) -> str:
    text = separator.join(values)
    return f"[{text}]" if brackets else text


def _file_cells(pool: list[File]):
    """Names of written files (good or bad for the column), of files that are not there, of
    directories, and names too long for the file system."""
    named = st.sampled_from([f.rel for f in pool]).flatmap(lambda rel: st.sampled_from([rel, f"  {rel} "]))
    odd = st.sampled_from(["media/missing ü.png", "media/" + "n" * 300 + ".png", "media/", ".", "..",
                           "media/missing.npy", "@ROOT@/nowhere.wav", "../up", "media/sub dir ü"])
    return st.one_of(named, odd)


def _good_file(pool: list[File], modality: str):
    rels = [f.rel for f in pool if f.content == GOOD_CONTENT[modality]]
    return st.sampled_from(rels).flatmap(lambda rel: st.sampled_from([rel, f" {rel}  "]))


def column_cells(pool: list[File]) -> dict[str, tuple]:
    """column -> (good, bad) strategies. `manifests` empties a modality's columns together."""
    three = st.lists(NUMBER_TEXT, min_size=3, max_size=3)
    vector_good = st.one_of(st.builds(_join, three, SEPARATORS, st.booleans()),
                            st.lists(FLOAT32, min_size=3, max_size=3), _good_file(pool, "vec"))
    vector_bad = st.one_of(
        st.builds(_join, st.lists(NUMBER_TEXT, max_size=6).filter(lambda v: len(v) != 3), SEPARATORS,
                  st.booleans()),
        st.builds(lambda v, b, i: " ".join([*v[:i], b, *v[i + 1:]]), three, BAD_NUMBER, st.integers(0, 2)),
        JUNK, st.sampled_from([[1.0, None, 2.0], [10**400, 1, 2], ["a", "b", "c"]]), _file_cells(pool))
    number_good = st.one_of(NUMBER_TEXT, FLOAT32, st.integers(-(10**6), 10**6))
    return {
        "vec": (vector_good, vector_bad),
        "num a": (number_good, st.one_of(BAD_NUMBER, JUNK, EMPTY)),
        "num_b": (number_good, st.one_of(BAD_NUMBER, JUNK, EMPTY)),
        "kategorie": (st.one_of(TEXT.filter(str.strip), st.integers(), st.just(["x"])), EMPTY),
        "texte ü": (TEXT, JUNK),
        "img": (_good_file(pool, "img"), st.one_of(_file_cells(pool), JUNK)),
        "aud": (_good_file(pool, "aud"), st.one_of(_file_cells(pool), JUNK)),
        "notes": (TEXT, TEXT),
        "split": (st.sampled_from(["train", "train", "val", "test", " val ", "train "]),
                  st.sampled_from(["", None, "TRAIN", "validation", 1, ["train"]])),
        "label": (st.one_of(st.integers(0, 3), st.sampled_from(["0", "2", "7", "cat", "dög", "1.5", "-1",
                                                                 "1e20", "", None, 10**30, 2.0, True])),
                  st.sampled_from([[1], {"class": 1}, [], ["cat"]])),
        "anomaly": (st.sampled_from(["0", "1", "", None, "true", "No", "yes", True, False, 1, 0.0]),
                    st.sampled_from(["maybe", "2", 2, [1], "-1"])),
    }


#: file-level faults, by format; the message each must produce (None: the manifest still loads)
FAULTS = {
    "none": None, "bom": None, "blank_lines": None, "huge_field": r"longer than",
    "empty_file": r"has no rows", "header_only": r"has no rows",
    "missing_column": r"is not in the manifest", "duplicate_column": r"more than once",
    "ragged_row": r"row \d+: \d+ cells, but the header names \d+ columns", "bad_utf8": r"not UTF-8",
    "garbage_line": r"line \d+: (invalid JSON|expected a JSON object)", "corrupt": r"cannot read|has no rows",
}
FORMAT_FAULTS = {
    "csv": ["bom", "blank_lines", "huge_field", "empty_file", "header_only", "missing_column",
            "duplicate_column", "ragged_row", "bad_utf8"],
    "jsonl": ["bom", "blank_lines", "huge_field", "empty_file", "header_only", "missing_column",
              "duplicate_column", "bad_utf8", "garbage_line"],
    "parquet": ["huge_field", "empty_file", "header_only", "missing_column", "duplicate_column", "corrupt"],
}
FORMAT_FAULTS["tsv"] = FORMAT_FAULTS["csv"]
GARBAGE_LINES = ["not json", "[1, 2]", '"a string"', "{'single': 'quotes'}", '{"a": ' + "1" * 5000 + "}",
                 "[" * 100_000, '{"a": 1', "NaN"]


@dataclass
class Spec:
    fmt: str
    name: str
    chosen: list[str]
    pool: list[File]
    rows: list[dict[str, Any]]
    columns: list[str]
    fault: str = "none"
    fault_row: int = 1
    fault_column: str = ""
    fault_detail: Any = None
    omit_nulls: bool = False


@st.composite
def manifests(draw, fmt: str, kind: str, fault: str = "none") -> Spec:
    """kind: "clean" (every cell good or empty, rarely a whole row), "dirty" (some rows with one
    or two bad cells, some bad files), "fault" (the file-level `fault`: empty file, duplicated
    column, bad UTF-8...; the cells may be dirty too)."""
    dirty = kind == "dirty" or (kind == "fault" and draw(st.booleans()))
    chosen = sorted(draw(st.sets(st.sampled_from(sorted(COLUMNS)), min_size=1)))
    pool = [draw(files(GOOD_CONTENT[m])) for m in ("img", "aud", "vec")]
    pool += draw(st.lists(files(), min_size=dirty, max_size=4 * dirty))
    cells = column_cells(pool)
    columns = [c for cs in COLUMNS.values() for c in cs] + ["notes"]
    columns += [c for c in ("split", "label", "anomaly") if draw(st.booleans())]
    columns = draw(st.permutations(columns))
    rows = []
    for _ in range(draw(st.integers(1, 6))):
        bad = set(draw(st.lists(st.sampled_from(columns), min_size=1, max_size=2))) if (
            dirty and draw(st.booleans())) else set()
        missing = {m for m in COLUMNS if draw(st.integers(0, 3)) == 0}
        if not dirty and missing >= set(chosen):
            missing.discard(draw(st.sampled_from(chosen)))
        missing = {c for m in missing for c in COLUMNS[m]}
        rows.append({c: draw(cells[c][1] if c in bad else EMPTY if c in missing else cells[c][0])
                     for c in columns})
    if draw(st.booleans()):  # a duplicated row: kept as a separate sample
        rows.insert(draw(st.integers(0, len(rows))), dict(draw(st.sampled_from(rows))))
    spec = Spec(fmt, draw(st.sampled_from(["manifest", "mes données ü", "x" * 120, "a b"])), chosen,
                pool, rows, columns, omit_nulls=fmt == "jsonl" and draw(st.booleans()))
    if kind == "fault":
        spec.fault = fault
        spec.fault_row = draw(st.integers(1, len(rows)))
        declared = [c for m in chosen for c in COLUMNS[m]]
        spec.fault_column = draw(st.sampled_from(declared if spec.fault == "missing_column" else columns))
        spec.fault_detail = draw({"garbage_line": st.sampled_from(GARBAGE_LINES),
                                  "corrupt": st.one_of(st.binary(max_size=32), st.integers(0, 200)),
                                  "ragged_row": st.sampled_from([-1, 1, 2])}.get(spec.fault, st.none()))
    return spec


# --- writing a spec to disk --------------------------------------------------------------------


def _text(value: Any) -> str:
    """A cell as CSV holds it (NaN empty, as pandas writes it)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def read_back(value: Any, fmt: str) -> Any:
    """What the manifest reader gives back for a cell written in `fmt`."""
    if fmt == "jsonl":
        return json.loads(json.dumps(value))
    if fmt == "parquet":
        return None if _empty(value) and not isinstance(value, str) else _text(value)
    return _text(value)


def write(spec: Spec, root: Path) -> Path:
    by_disk = {f.disk: f for f in spec.pool}  # a later file at the same place replaces an earlier one
    for file in by_disk.values():
        path = root / file.disk
        path.parent.mkdir(parents=True, exist_ok=True)
        if file.content == "dir":
            path.mkdir()
        else:
            path.write_bytes(file.data)
    (root / "data").mkdir(exist_ok=True)
    path = root / "data" / f"{spec.name}.{spec.fmt}"

    def cell(value):
        return value.replace("@ROOT@", str(root)) if isinstance(value, str) else value

    columns = [c for c in spec.columns if not (spec.fault == "missing_column" and c == spec.fault_column)]
    rows = [{c: cell(row[c]) for c in columns} for row in spec.rows]
    if spec.fault == "huge_field":
        rows[spec.fault_row - 1]["notes"] = "y" * 200_000
    if spec.fault == "header_only":
        rows = []
    if spec.fmt in ("csv", "tsv"):
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter="\t" if spec.fmt == "tsv" else ",")
        header = [*columns, spec.fault_column] if spec.fault == "duplicate_column" else columns
        writer.writerow(header)
        for number, row in enumerate(rows, start=1):
            values = [_text(row[c]) for c in header]
            if spec.fault == "ragged_row" and number == spec.fault_row:
                extra = spec.fault_detail
                values = values[:extra] if extra < 0 else values + ["z"] * extra
            writer.writerow(values)
            if spec.fault == "blank_lines":
                buffer.write("\n")
        data = buffer.getvalue().encode("utf-8")
    elif spec.fmt == "jsonl":
        lines = []
        for number, row in enumerate(rows, start=1):
            items = {c: v for c, v in row.items() if not (spec.omit_nulls and v is None)}
            line = json.dumps(items, ensure_ascii=number % 2 == 0)
            if spec.fault == "duplicate_column" and number == spec.fault_row:
                line = line[:-1] + (", " if items else "") + f"{json.dumps(spec.fault_column)}: 1}}"
            lines.append(line)
            if spec.fault == "garbage_line" and number == spec.fault_row:
                lines.append(spec.fault_detail)
            if spec.fault == "blank_lines":
                lines.append("  ")
        data = ("\n".join(lines) if lines else "\n  \n").encode("utf-8")  # header_only: blank lines
    else:
        names = [*columns, spec.fault_column] if spec.fault == "duplicate_column" else columns
        arrays = [pyarrow.array([read_back(r[c], "parquet") for r in rows], pyarrow.string()) for c in names]
        buffer = pyarrow.BufferOutputStream()
        pq.write_table(pyarrow.table(arrays, names=names), buffer)
        data = buffer.getvalue().to_pybytes()
        if spec.fault == "corrupt":
            detail = spec.fault_detail
            data = detail if isinstance(detail, bytes) else data[:detail] + data[detail + 8:]
    if spec.fault == "bom":
        data = b"\xef\xbb\xbf" + data
    if spec.fault == "bad_utf8":
        at = data.find(b"\n") + 1
        data = data[:at] + b"\xff\xfe\xc3(" + data[at:]
    if spec.fault == "empty_file":
        data = b""
    path.write_bytes(data)
    return path


# --- the oracle: what the documented semantics say must happen -------------------------------


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or (
        isinstance(value, float) and math.isnan(value))


def _number_ok(value: Any) -> bool:
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return False
    return math.isfinite(number) and abs(number) <= F32_MAX


def cell_status(spec: Spec, name: str, row: dict) -> str:
    values = [read_back(row.get(c), spec.fmt) for c in COLUMNS[name]]
    empty = [_empty(v) for v in values]
    if all(empty):
        return MISSING
    if any(empty):
        return BAD  # a table row with some cells set and others not
    value = values[0]
    files = {f.rel: f for f in {f.disk: f for f in spec.pool}.values()}
    if name == "txt":
        return OK if isinstance(value, str) else BAD
    if name == "tab":
        return OK if all(_number_ok(v) for v in values[:2]) else BAD
    if name == "vec":
        if isinstance(value, str) and value.strip().endswith(".npy"):
            return files[value.strip()].status("vec") if value.strip() in files else BAD_LOAD
        if isinstance(value, list):
            numbers = all(isinstance(v, (int, float)) and _number_ok(v) for v in value)
            return OK if numbers and len(value) == 3 else BAD
        fields = [f for f in re.split(r"[\s,;\[\]]+", str(value)) if f]
        return OK if len(fields) == 3 and all(_number_ok(f) for f in fields) else BAD
    if not isinstance(value, str) or value.strip() not in files:
        return BAD
    return files[value.strip()].status(name)


@dataclass
class Expected:
    rows: dict[int, dict[str, str]]  # row -> modality -> status
    row_class: dict[int, str]  # row -> OK / BAD (found up front) / BAD_LOAD / MAYBE
    train: set[int]
    dataset_errors: list[str]  # patterns of errors raised whatever on_error says
    labels: dict[int, bool]  # row -> labelled


def expect(spec: Spec) -> Expected:
    rows = {n: {m: cell_status(spec, m, r) for m in spec.chosen} for n, r in enumerate(spec.rows, start=1)}
    row_class = {}
    for number, statuses in rows.items():
        values = set(statuses.values())
        row_class[number] = (BAD if values == {MISSING} or BAD in values else BAD_LOAD if BAD_LOAD in values
                             else MAYBE if MAYBE in values else OK)
    written = [c for c in spec.columns if not (spec.fault == "missing_column" and c == spec.fault_column)]
    cells = [{c: read_back(r[c], spec.fmt) for c in written
              if not (spec.omit_nulls and r[c] is None)} for r in spec.rows]
    errors = []
    if FAULTS[spec.fault] and not (spec.fault == "huge_field" and spec.fmt in ("jsonl", "parquet")):
        errors.append(FAULTS[spec.fault])
    present = set().union(*cells)
    errors += [rf"column '{re.escape(c)}' \(modality" for m in spec.chosen for c in COLUMNS[m]
               if c not in present]
    labels = [c.get("label") for c in cells]
    errors += [r"column 'label'" for value in labels if not _empty(value) and isinstance(value, (list, dict))]
    if "anomaly" in present:
        anomaly = ["" if _empty(c.get("anomaly")) else str(c.get("anomaly")).strip().lower() for c in cells]
        errors += [r"column 'anomaly'" for value in anomaly if value not in ANOMALY_OK]
    splits = [c.get("split") for c in cells]
    if any(not _empty(s) for s in splits):
        errors += [r"column 'split'" for s in splits if str(s).strip() not in SPLITS]
        train = {n for n, s in enumerate(splits, start=1) if str(s).strip() == "train"}
        if not any(str(s).strip() == "val" for s in splits):  # val is carved from train (10%)
            ordered = sorted(train)
            count = min(max(1, round(0.1 * len(ordered))), len(ordered) - 1)
            order = torch.randperm(len(ordered), generator=torch.Generator().manual_seed(0)).tolist()
            train -= {ordered[i] for i in order[:max(count, 0)]}
    else:
        order = torch.randperm(len(cells), generator=torch.Generator().manual_seed(0)).tolist()
        train = {index + 1 for rank, index in enumerate(order) if rank < round(FRACTIONS[0] * len(cells))}
    return Expected(rows, row_class, train, errors, {n: not _empty(v) for n, v in enumerate(labels, 1)})


def _column_pattern(name: str) -> str:
    columns = COLUMNS[name]
    return (rf"column '{re.escape(columns[0])}'" if len(columns) == 1
            else rf"columns \[.*\] \({name}\)")


def allowed_errors(spec: Spec, expected: Expected, on_error: str) -> list[str]:
    """Patterns of the `DataError` messages this manifest may legitimately produce."""
    allowed = list(expected.dataset_errors)
    usable = [n for n in expected.train if expected.row_class[n] != BAD]
    if on_error == "raise":
        for number, statuses in expected.rows.items():
            if set(statuses.values()) == {MISSING}:
                allowed.append(rf"row {number}: every modality is missing")
            for name, status in statuses.items():
                if status in (BAD, BAD_LOAD, MAYBE):
                    allowed.append(rf"row {number}, {_column_pattern(name)}")
        usable = list(expected.train)
    if not usable:
        allowed.append(r"no usable training rows")
    if "tab" in spec.chosen and not any(expected.rows[n]["tab"] == OK for n in usable):
        allowed.append(r"modality 'tab'.*no training rows")
    for name in {"img", "aud", "vec"} & set(spec.chosen):  # standardised with training statistics
        # (a row any of whose files may fail to decode may be skipped whole)
        if not any(expected.rows[n][name] == OK and expected.row_class[n] == OK for n in usable):
            allowed.append(rf"no sample has modality '{name}', so its statistics cannot be fitted")
    return allowed


# --- running mmae on a manifest --------------------------------------------------------------


def check_sample(sample: dict | Batch, modalities: dict, batch: tuple[int, ...] = ()) -> None:
    """A dataset item (`make_sample`'s layout) or, with `batch` its size, a collated `Batch`."""
    if isinstance(sample, Batch):
        inputs, present_masks, labels, index = sample.inputs, sample.present, sample.labels, sample.index
    else:
        inputs, present_masks = sample["inputs"], sample["present"]
        labels, index = sample["label"], sample["index"]
    for name, modality in modalities.items():
        x = inputs[name]
        assert tuple(x.shape) == (*batch, *modality.raw_shape), (name, x.shape)
        if modality.dtype_kind == "long":
            assert x.dtype == torch.long and x.min() >= 0 and x.max() < modality.vocab_size
        else:
            assert x.dtype == torch.float32 and torch.isfinite(x).all(), (name, x)
        if name == "img":
            assert x.min() >= 0 and x.max() <= 1
        present = present_masks[name]
        assert present.dtype == torch.bool and present.shape == batch
        assert (x.flatten(len(batch))[~present] == 0).all()  # missing: zero-filled
    assert labels.dtype == torch.long and (labels >= -1).all()
    assert index.shape == batch


def load_everything(path: Path, chosen: list[str], on_error: str) -> dict[int, dict]:
    """Build the datamodule as `data=manifest` does, read every sample of every split, and
    collate every batch. Returns the samples that loaded, by manifest row."""
    modalities = make_modalities(chosen)
    data = ManifestDataModule(str(path), modalities, batch_size=3, num_workers=0, on_error=on_error,
                              split_fractions=FRACTIONS, seed=0)
    loaded = {}
    for split in SPLITS:
        dataset = data.dataset(split)
        for i in range(len(dataset)):
            sample = dataset[i]
            if sample is None:
                assert on_error == "skip"
                continue
            check_sample(sample, modalities)
            assert int(sample["index"]) not in loaded
            loaded[int(sample["index"])] = sample
        loader = getattr(data, f"{split}_dataloader")()
        for batch in loader:
            if batch is not None:
                check_sample(batch, modalities, (len(batch),))
    return loaded


def run_and_check(spec: Spec) -> None:
    expected = expect(spec)
    with tempfile.TemporaryDirectory() as folder:
        path = write(spec, Path(folder))
        for on_error in ("raise", "skip"):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # skipped rows, duplicates
                    loaded = load_everything(path, spec.chosen, on_error)
            except DataError as error:
                message = str(error)
                assert path.name in message, message
                allowed = allowed_errors(spec, expected, on_error)
                assert any(re.search(p, message) for p in allowed), (on_error, message, allowed)
                continue
            assert not expected.dataset_errors, (on_error, expected.dataset_errors)
            ok = {n for n, c in expected.row_class.items() if c == OK}
            maybe = {n for n, c in expected.row_class.items() if c == MAYBE}
            if on_error == "raise":
                assert set(loaded) == set(expected.rows) and not set(loaded) - ok - maybe
            else:
                assert ok <= set(loaded) <= ok | maybe, (sorted(loaded), ok, maybe)
            for number, sample in loaded.items():
                for name, status in expected.rows[number].items():
                    assert bool(sample["present"][name]) == (status != MISSING), (number, name)
                assert (int(sample["label"]) >= 0) == expected.labels[number], number


FUZZ = settings(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])


CASES = [(fmt, kind, "none", examples) for fmt in FORMAT_FAULTS for kind, examples in
         [("clean", 20), ("dirty", 50)]]
CASES += [(fmt, "fault", fault, 6) for fmt, faults in FORMAT_FAULTS.items() for fault in faults]


@pytest.mark.parametrize("fmt, kind, fault, examples", CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES])
def test_random_manifests_load_or_fail_with_a_data_error_naming_the_cell(fmt, kind, fault, examples):
    @settings(FUZZ, max_examples=examples)
    @given(spec=manifests(fmt, kind, fault))
    def check(spec: Spec) -> None:
        run_and_check(spec)

    check()


# --- the bugs the fuzzing found, one readable example each -----------------------------------


def _vector_dataset(path: Path, on_error: str = "raise", **modalities) -> ManifestDataset:
    modalities = modalities or {"vec": VectorModality(dim=3)}
    return ManifestDataset(path, modalities, on_error=on_error, split_fractions=(1, 0, 0))


@pytest.mark.parametrize("name, data, message", [
    ("m.csv", b"vec\n1 2 3\n\xff\xfe 4 5\n", r"m\.csv, line 3: not UTF-8 text"),  # was UnicodeDecodeError
    # was: the last of the two won
    ("m.csv", b"vec,vec\n1 2 3,4 5 6\n", r"m\.csv: column\(s\) \['vec'\] appear more than once"),
    ("m.tsv", b"vec\tnotes\n1 2 3\ta\tb\n", r"m\.tsv, row 1: 3 cells, but the header names 2 columns"),
    # was: the short row's last cells read as missing
    ("m.csv", b"vec,notes\n1 2 3,a\n4 5 6\n", r"m\.csv, row 2: 1 cells, but the header names 2"),
    ("m.csv", b"vec,notes\n1 2 3," + b"x" * 200_000 + b"\n",  # was _csv.Error
     r"m\.csv, row 1 \(line 2\): a cell is longer than"),
    ("m.jsonl", b'{"vec": "1 2 3", "vec": "4 5 6"}\n',
     r"m\.jsonl, row 1 \(line 1\): key\(s\) \['vec'\] appear more than once"),
    ("m.jsonl", b'{"vec": "1 2 3"}\n{"vec": ' + b"1" * 5000 + b"}\n", r"m\.jsonl, line 2: invalid JSON"),
    ("m.jsonl", b"[" * 100_000, r"m\.jsonl, line 1: invalid JSON"),  # was RecursionError
    ("m.parquet", b"PAR1 not really PAR1", r"m\.parquet: cannot read the Parquet file"),  # was ArrowInvalid
    ("m.parquet", b"", r"m\.parquet: the manifest has no rows \(the file is empty\)"),
])
def test_a_malformed_manifest_file_is_a_data_error_saying_where(tmp_path, name, data, message):
    path = tmp_path / name
    path.write_bytes(data)
    for on_error in ("raise", "skip"):  # the file itself is broken: skipping a row cannot help
        with pytest.raises(DataError, match=message):
            _vector_dataset(path, on_error)


def test_duplicated_parquet_columns_are_refused(tmp_path):
    path = tmp_path / "m.parquet"
    columns = [pyarrow.array(["1 2 3"]), pyarrow.array(["4 5 6"])]
    pq.write_table(pyarrow.table(columns, names=["vec", "vec"]), path)  # was ArrowInvalid
    with pytest.raises(DataError, match=r"m\.parquet: column\(s\) \['vec'\] appear more than once"):
        _vector_dataset(path)


@pytest.mark.parametrize("name", ["m.csv", "m.jsonl"])
def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path, name):
    path = tmp_path / name
    text = "vec\n1 2 3\n" if name.endswith(".csv") else '{"vec": "1 2 3"}\n'
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())  # as Excel and Notepad save UTF-8
    assert _vector_dataset(path)[0]["inputs"]["vec"].tolist() == [1, 2, 3]


@pytest.mark.parametrize("cell, message", [
    ([[1, 2], [3]], r"row 1, column 'vec': expected a list of numbers, got \[\[1, 2\], \[3\]\]"),
    ([10**400, 1, 2], r"row 1, column 'vec': expected a list of numbers"),  # was OverflowError
    (["a", "b", "c"], r"row 1, column 'vec': expected a list of numbers"),
    ("1e39 0 0", r"row 1, column 'vec': contains values beyond float32's range"),
])
def test_bad_inline_vectors_name_the_row_and_column_and_are_skippable(tmp_path, cell, message):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"vec": cell}) + "\n" + json.dumps({"vec": [1, 2, 3]}) + "\n")
    with pytest.raises(DataError, match=message):
        _vector_dataset(path)
    with pytest.warns(UserWarning, match=r"skipped 1 row"):
        assert [int(s["index"]) for s in _vector_dataset(path, "skip")] == [2]


@pytest.mark.parametrize("content, message", [
    # was: the imaginary part dropped with a warning
    (np.array([1 + 2j, 0, 1]), r"expected an array of real numbers, got complex128"),
    (np.array([0.0, 1e39, 1.0]), r"beyond float32's range"),
    (None, r"cannot read .*: No data left in file"),  # a 0-byte file
])
def test_npy_files_that_are_not_float32_vectors_are_refused(tmp_path, content, message):
    if content is None:
        (tmp_path / "v.npy").write_bytes(b"")
    else:
        np.save(tmp_path / "v.npy", content)
    (tmp_path / "m.csv").write_text("vec\nv.npy\n")
    with pytest.raises(DataError, match=r"m\.csv, row 1, column 'vec': .*" + message):
        _vector_dataset(tmp_path / "m.csv")[0]


def _tabular(path: Path, **options) -> ManifestDataModule:
    modalities = {"tab": TabularModality(numeric=["x"]), "vec": VectorModality(dim=1)}
    return ManifestDataModule(str(path), modalities, num_workers=0, split_fractions=(1, 0, 0), **options)


def test_a_table_of_one_column_reads_its_cells_as_a_table(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("x,vec\n1,1\n3,1\n")  # was TypeError: the bare cell was indexed by column name
    data = _tabular(path)
    assert data.modalities["tab"].mean == [2.0]
    assert [s["inputs"]["tab"].tolist() for s in data.dataset("train")] == [[1.0], [3.0]]


def test_numbers_beyond_float32_are_refused_rather_than_loaded_as_inf(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("x,vec\n1e39,1\n2,1\n")  # finite as a float64, inf as the batch's float32
    with pytest.raises(DataError, match=r"m\.csv, row 1, columns \['x'\] \(tab\): column 'x': '1e39' is "
                                        r"beyond float32's range"):
        _tabular(path)
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"x": 10**400, "vec": 1}) + "\n")
    with pytest.raises(DataError, match=r"row 1, .*column 'x': expected a number, got 1000"):  # OverflowError
        _tabular(path)


def test_a_modality_that_no_training_row_has_is_a_data_error_not_a_config_error(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("x,vec\n,1\n,2\n")
    with pytest.raises(DataError, match=r"m\.csv: cannot fit modality 'tab' \(columns \['x'\]\) on the "
                                        r"training split: .*no training rows"):  # was a ConfigError
        _tabular(path)


def test_labels_must_be_classes_and_huge_integers_are_names_not_indices(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(json.dumps({"vec": 1, "label": label}) for label in [0, [1]]))
    with pytest.raises(DataError, match=r"m\.jsonl, row 2, column 'label': expected a class name or index, "
                                        r"got list \[1\]"):  # was TypeError
        _vector_dataset(path, vec=VectorModality(dim=1))
    path.write_text("\n".join(json.dumps({"vec": 1, "label": label}) for label in ["1e20", 10**30, 3]))
    dataset = _vector_dataset(path, vec=VectorModality(dim=1))  # was an overflow in torch.tensor
    assert [int(dataset[i]["label"]) for i in range(3)] == [1, 0, 2]  # beyond int64: sorted as strings
    assert dataset.label_map.kind == "string"


@pytest.mark.parametrize("cell, message", [
    ("media/" + "n" * 300 + ".png", r"row 1, column 'img': cannot read .*n\.png: File name too long"),
    (["a.png"], r"row 1, column 'img': expected a file path, got list \['a.png'\]"),
    ("media", r"row 1, column 'img': .*media is a directory, not a file"),
])
def test_odd_file_cells_name_the_row_and_column(tmp_path, cell, message):
    (tmp_path / "media").mkdir()
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"img": cell}) + "\n")
    with pytest.raises(DataError, match=message):
        _vector_dataset(path, img=ImageModality(size=4, hidden_channels=[2]))


@pytest.mark.parametrize("content, message", [
    ("wav_nan", r"holds NaN or infinite samples"),  # was NaN in the batch
    ("wav_odd_rate", r"is at 999983 Hz: resampling it to 800 Hz needs a 3.0 GiB filter"),  # was: it did
])
def test_audio_that_would_poison_or_exhaust_the_loader_is_refused(tmp_path, content, message):
    (tmp_path / "a.wav").write_bytes(CONTENTS[content][0])
    (tmp_path / "m.csv").write_text("aud\na.wav\n")
    dataset = _vector_dataset(tmp_path / "m.csv", aud=AudioModality(**AUDIO))
    with pytest.raises(DataError, match=r"m\.csv, row 1, column 'aud': .*" + message):
        dataset[0]


def test_text_cells_of_another_type_are_found_up_front(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"t": 5}) + "\n" + json.dumps({"t": "five"}) + "\n")
    text = TextModality(model_config=TEXT_CONFIG, max_length=8, column="t")
    with pytest.warns(UserWarning, match=r"row 1, column 't': expected text, got int 5"):
        assert len(_vector_dataset(path, "skip", text=text)) == 1  # skipped up front, not as a None sample


def test_duplicated_rows_are_kept_as_separate_samples_with_a_warning(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("vec\n1 2 3\n4 5 6\n1 2 3\n1 2 3\n")
    with pytest.warns(UserWarning, match=r"m\.csv: 2 row\(s\) repeat an earlier row \(row 3 = row 1; row 4 = "
                                         r"row 1\); each is kept as a separate sample"):
        dataset = _vector_dataset(path)
    assert [int(s["index"]) for s in dataset] == [1, 2, 3, 4]


def test_unnamed_trailing_spreadsheet_columns_are_ignored(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("vec,notes,,\n1 2 3,a,,\n4 5 6,b,,\n")
    assert [s["inputs"]["vec"].tolist() for s in _vector_dataset(path)] == [[1, 2, 3], [4, 5, 6]]


def test_the_same_sample_listed_in_two_splits_is_a_repeat(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"vec": "1 2 3", "split": "train"}\n{"split": "test", "vec": "1 2 3"}\n')
    with pytest.warns(UserWarning, match=r"row 2 = row 1.*leaks"):
        _vector_dataset(path)


@pytest.mark.parametrize("fractions", [(math.nan, 0.5, 0.5), (1.5, -0.5, 0.0)])
def test_split_fractions_must_be_fractions(tmp_path, fractions):
    path = tmp_path / "m.csv"
    path.write_text("vec\n1 2 3\n")
    with pytest.raises(ConfigError, match=r"split_fractions must be 3 numbers in \[0, 1\] summing to 1"):
        ManifestDataset(path, {"vec": VectorModality(dim=3)}, split_fractions=fractions)
