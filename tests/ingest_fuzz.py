"""Damaged EGMS L2b inputs for the ingest fuzz tests (test_ingest_fuzz.py) and their count
(benchmarks/ingest_fuzz.py): named mutations of a valid burst, random byte damage, and a dry run
of ingest's file-level path (the same header and parse functions the Spark tasks call, without
Spark) that says what a job would end with.
"""
from __future__ import annotations

import functools
import io
import re
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from insarlake.cli import one_line
from insarlake.ingest import stage
from insarlake.ingest.geometry import geometry_datasets

# The epoch columns of an EGMS header: YYYYMMDD.
_EPOCH = re.compile(rb"^\d{8}$")


def sample_burst(egms_csv: bytes, rows: int = 25) -> bytes:
    """The header and the first ``rows`` data rows of a real EGMS L2b CSV, '\\n'-terminated."""
    lines = egms_csv.replace(b"\r\n", b"\n").split(b"\n")
    return b"\n".join(lines[:rows + 1]) + b"\n"


def _zip(name: str, content: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, content)
    return buf.getvalue()


def _cells(csv: bytes) -> list[list[bytes]]:
    return [line.split(b",") for line in csv.rstrip(b"\n").split(b"\n")]


def _join(cells: list[list[bytes]]) -> bytes:
    return b"\n".join(b",".join(row) for row in cells) + b"\n"


def _epoch_columns(header: list[bytes]) -> list[int]:
    return [j for j, c in enumerate(header) if _EPOCH.match(c)]


def _set_cells(csv: bytes, rng: np.random.Generator, values: list[bytes], epochs_only: bool = False) -> bytes:
    cells = _cells(csv)
    columns = _epoch_columns(cells[0]) if epochs_only else list(range(len(cells[0])))
    for value in values:
        i = int(rng.integers(1, len(cells)))
        cells[i][columns[int(rng.integers(len(columns)))]] = value
    return _join(cells)


def _flip(data: bytes, rng: np.random.Generator, n: int, start: int = 0) -> bytes:
    buf = bytearray(data)
    for pos in rng.integers(start, len(buf), size=n):
        buf[pos] = int(rng.integers(256))
    return bytes(buf)


def _shuffle_epochs(csv: bytes, rng: np.random.Generator) -> bytes:
    cells = _cells(csv)
    columns = _epoch_columns(cells[0])
    order = rng.permutation(columns)
    return _join([[row[order[columns.index(j)]] if j in columns else row[j] for j in range(len(row))]
                  for row in cells])


def _rename_header(csv: bytes, rename) -> bytes:
    head, rest = csv.split(b"\n", 1)
    return b",".join(rename(j, c) for j, c in enumerate(head.split(b","))) + b"\n" + rest


def _repeat_date(csv: bytes, rng: np.random.Generator) -> bytes:
    columns = _epoch_columns(csv.split(b"\n", 1)[0].split(b","))
    a, b = rng.choice(columns, size=2, replace=False)
    head = csv.split(b"\n", 1)[0].split(b",")
    return _rename_header(csv, lambda j, c: head[a] if j == b else c)


def _quote_all(csv: bytes) -> bytes:
    return _join([[b'"' + c + b'"' for c in row] for row in _cells(csv)])


def _rows(csv: bytes) -> list[bytes]:
    return csv.rstrip(b"\n").split(b"\n")


def _with_rows(csv: bytes, edit) -> bytes:
    lines = _rows(csv)
    return b"\n".join(edit(lines)) + b"\n"


# name -> (csv, rng) -> {relative file name: bytes}. Every kind of damage issue 16 lists.
MUTATIONS = {
    "valid": lambda c, r: {"burst.csv": c},
    "valid zip": lambda c, r: {"burst.zip": _zip("burst.csv", c)},
    "truncated zip": lambda c, r: {"burst.zip": _zip("burst.csv", c)[:int(r.integers(10, len(_zip("burst.csv", c)) - 1))]},
    "corrupt zip": lambda c, r: {"burst.zip": _flip(_zip("burst.csv", c), r, 8, start=40)},
    "zip without csv": lambda c, r: {"burst.zip": _zip("readme.txt", c)},
    "flipped bytes": lambda c, r: {"burst.csv": _flip(c, r, int(r.integers(1, 20)))},
    "semicolon delimiter": lambda c, r: {"burst.csv": c.replace(b",", b";")},
    "tab delimiter": lambda c, r: {"burst.csv": c.replace(b",", b"\t")},
    "utf-8 BOM": lambda c, r: {"burst.csv": b"\xef\xbb\xbf" + c},
    "utf-16": lambda c, r: {"burst.csv": c.decode().encode("utf-16")},
    "CRLF": lambda c, r: {"burst.csv": c.replace(b"\n", b"\r\n")},
    "CR only": lambda c, r: {"burst.csv": c.replace(b"\n", b"\r")},
    "quoted fields": lambda c, r: {"burst.csv": _quote_all(c)},
    "spaces around names": lambda c, r: {"burst.csv": _rename_header(c, lambda j, n: b" " + n + b" ")},
    "special numbers": lambda c, r: {"burst.csv": _set_cells(c, r, [b"1e400", b"-1e400", b"nan", b"inf", b"-inf",
                                                                     b"-0", b"1e-400", b"NaN", b"+3", b".5"])},
    "text in numbers": lambda c, r: {"burst.csv": _set_cells(c, r, [b"abc", b"1,5", b"0x10", b"--1"], epochs_only=True)},
    "dates out of order": lambda c, r: {"burst.csv": _shuffle_epochs(c, r)},
    "date repeated": lambda c, r: {"burst.csv": _repeat_date(c, r)},
    "dates as DD/MM/YYYY": lambda c, r: {"burst.csv": _rename_header(
        c, lambda j, n: n[6:8] + b"/" + n[4:6] + b"/" + n[:4] if _EPOCH.match(n) else n)},
    "dates as YYYY-MM-DD": lambda c, r: {"burst.csv": _rename_header(
        c, lambda j, n: n[:4] + b"-" + n[4:6] + b"-" + n[6:] if _EPOCH.match(n) else n)},
    "duplicate ids within a file": lambda c, r: {"burst.csv": _with_rows(c, lambda ls: ls + ls[1:4])},
    "duplicate ids across files": lambda c, r: {"a.csv": c, "b.csv": _with_rows(c, lambda ls: ls[:1] + ls[3:8])},
    "header only": lambda c, r: {"burst.csv": _rows(c)[0] + b"\n"},
    "zero bytes": lambda c, r: {"burst.csv": b""},
    "very long line": lambda c, r: {"burst.csv": _with_rows(c, lambda ls: ls[:2] + [ls[2] + b"9" * 200_000] + ls[3:])},
    "very long field": lambda c, r: {"burst.csv": _set_cells(c, r, [b"x" * 100_000])},
    "extra field": lambda c, r: {"burst.csv": _with_rows(c, lambda ls: ls[:3] + [ls[3] + b",1.0"] + ls[4:])},
    "extra field in the first row": lambda c, r: {"burst.csv": _with_rows(c, lambda ls: ls[:1] + [ls[1] + b",1.0"] + ls[2:])},
    "short row": lambda c, r: {"burst.csv": _with_rows(c, lambda ls: ls[:3] + [ls[3][:len(ls[3]) // 2]] + ls[4:])},
    "truncated file": lambda c, r: {"burst.csv": c[:int(r.integers(len(c) // 2, len(c) - 1))]},
    "blank lines": lambda c, r: {"burst.csv": _with_rows(c, lambda ls: ls[:2] + [b"", b"   ", b"\t"] + ls[2:])},
    "NUL bytes": lambda c, r: {"burst.csv": _with_rows(c, lambda ls: ls[:2] + [b"\x00" * 5] + ls[2:])},
    "good and bad files": lambda c, r: {"good/a.csv": c, "bad/b.csv": c[:40]},
}


def damaged(csv: bytes, edits, as_zip: bool = False) -> dict[str, bytes]:
    """The burst (or its ZIP) with each edit (where in [0, 1], bytes removed, bytes inserted)
    applied in turn."""
    buf = bytearray(_zip("burst.csv", csv) if as_zip else csv)
    for where, removed, inserted in edits:
        at = int(where * len(buf))
        buf[at:at + removed] = inserted
    return {"burst.zip" if as_zip else "burst.csv": bytes(buf)}


def with_text_cells(csv: bytes, texts: list[str], rng: np.random.Generator) -> dict[str, bytes]:
    """The burst with each text (any unicode: commas, quotes, line breaks) put in a random data cell."""
    rows = csv.decode().split("\n")
    for text in texts:
        i = int(rng.integers(1, len(rows) - 1))
        fields = rows[i].split(",")
        fields[int(rng.integers(len(fields)))] = text
        rows[i] = ",".join(fields)
    return {"burst.csv": "\n".join(rows).encode()}


@dataclass
class Outcome:
    """What a job would end with: ``error`` (its one line) or the row counts."""
    error: str | None = None
    input_rows: int = 0
    pixels: int = 0
    quarantined: int = 0
    reasons: Counter = field(default_factory=Counter)

    @property
    def kind(self) -> str:
        """A short label of the outcome (for the count of distinct outcomes)."""
        if self.error:
            text = re.sub(r"file \S+: |\s*\(.*\)", "", self.error)
            return "exit 2: " + re.sub(r"(?<![\w-])\d+(?![\w-])", "N", re.sub(r"'[^']*'", "'…'", text)).strip()
        return f"exit 0: rows reconcile{', quarantined' if self.quarantined else ''}"


def write_case(folder: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return folder


@functools.cache
def _arrow_schema():
    """PARSED_SCHEMA as the Arrow schema mapInPandas converts each frame to."""
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(stage.PARSED_SCHEMA)


def dry_ingest(folder: Path, max_missing_share: float = 0.2) -> Outcome:
    """Ingest's path through ``folder`` without Spark: the header pass (``stage.file_headers``),
    the union of dates, the parse pass (``stage.parse_file``), each frame converted to Arrow with
    the Spark schema (as mapInPandas does), and the duplicate rule (first by source and row)."""
    paths = sorted(str(p) for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in stage.DATA_SUFFIXES
                   and not p.name.startswith((".", "_")))
    if not paths:
        return Outcome(error=f"input {folder}: no {'/'.join(stage.DATA_SUFFIXES)} files found")
    headers = [row for p in paths for row in stage.file_headers(p, "auto", {})]
    errors = sorted((source, error) for source, _, _, _, error in headers if error)
    if errors:
        return Outcome(error=one_line(errors[0][1]))
    by_track: dict = {}
    for _, ds, track, _, _ in headers:
        by_track.setdefault(track, set()).update(ds)
    dates = {track: sorted(ds) for track, ds in by_track.items()}
    names = geometry_datasets("fuzz", list(dates), split=True)
    frames = []
    for p in paths:
        for frame in stage.parse_file(p, "auto", dates, names, "mm", max_missing_share, {}):
            pa.Table.from_pandas(frame, schema=_arrow_schema(), preserve_index=False)
            if frame["file_error"].notna().any():
                return Outcome(error=one_line(frame["file_error"].dropna().iloc[0]))
            frames.append(frame)
    rows = pd.concat(frames, ignore_index=True)
    valid = rows[rows["reason"].isna()].sort_values(["source", "row_number"])
    assert valid["pixel_id"].notna().all() and np.isfinite(valid[["lon", "lat"]].to_numpy()).all()
    epochs = {names[track]: len(ds) for track, ds in dates.items()}
    assert all(len(d) == epochs[ds] and np.isfinite(d).any() for d, ds in zip(valid["disp"], valid["dataset"]))
    duplicate = valid["pixel_id"].duplicated()
    reasons = Counter(r.split(":")[0] for rs in rows["reason"].dropna() for r in rs.split("; "))
    reasons["duplicate pixel_id"] += int(duplicate.sum())
    return Outcome(input_rows=len(rows), pixels=int((~duplicate).sum()),
                   quarantined=int(rows["reason"].notna().sum() + duplicate.sum()), reasons=reasons)


def check_outcome(outcome: Outcome, folder: Path) -> None:
    """The promises of issue 16: an error is one line naming a file of the input (or the input);
    otherwise every input row is a pixel or quarantined."""
    if outcome.error:
        assert "\n" not in outcome.error and outcome.error.strip() == outcome.error, outcome.error
        assert outcome.error.startswith(("file ", "input ")), outcome.error
        assert str(folder) in outcome.error, outcome.error
        return
    assert outcome.input_rows == outcome.pixels + outcome.quarantined, outcome
