"""Pure parsing and validation of one input file (pandas/numpy, no Spark).

Formats:
  egms      EGMS L2b CSV (or a ZIP holding it): ``pid, latitude, longitude, height_ortho, ...``
            then one column per acquisition named ``YYYYMMDD`` (LOS displacement).
  wide-csv  static columns (names from WIDE_ALIASES) plus one column per epoch
            (``YYYYMMDD`` or ``YYYY-MM-DD``).
  parquet   the same columns as wide-csv, in a Parquet file.

A file-level problem (unreadable file, missing column, an epoch column that is not a date) raises
InputError naming the file and the field. A row-level problem gives the row a ``reason`` (all its
problems, '; '-separated); the Spark layer sends such rows to ``quarantine``.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import re
import struct
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pandas as pd

from insarlake.config import DISPLACEMENT_UNITS, INPUT_FORMATS  # noqa: F401  (the names the config allows)
from insarlake.errors import InputError
from insarlake.timeseries import fit_velocity, years_since


# Canonical static columns of `pixels` (all float64 except pixel_id).
NUMERIC_STATIC = ("lon", "lat", "height", "velocity", "velocity_std", "coherence", "incidence_angle",
                  "los_east", "los_north", "los_up")

EGMS_COLUMNS = {
    "pixel_id": "pid", "lon": "longitude", "lat": "latitude", "height": "height_ortho",
    "velocity": "mean_velocity", "velocity_std": "mean_velocity_std", "coherence": "temporal_coherence",
    "incidence_angle": "incidence_angle", "los_east": "los_east", "los_north": "los_north", "los_up": "los_up",
}
EGMS_REQUIRED = ("pixel_id", "lon", "lat", "height", "velocity", "velocity_std", "coherence", "incidence_angle")

# Accepted names (lower case) per canonical column in wide-csv / parquet input, first match wins.
WIDE_ALIASES = {
    "pixel_id": ("pixel_id", "pid", "point_id", "id"),
    "lon": ("lon", "longitude", "x"),
    "lat": ("lat", "latitude", "y"),
    "height": ("height", "height_ortho", "elevation", "h"),
    "velocity": ("velocity", "mean_velocity", "velocity_mm_yr", "vel"),
    "velocity_std": ("velocity_std", "mean_velocity_std", "velocity_std_mm_yr", "vel_std"),
    "coherence": ("coherence", "temporal_coherence", "coh"),
    "incidence_angle": ("incidence_angle", "inc_angle", "incidence"),
    "los_east": ("los_east",), "los_north": ("los_north",), "los_up": ("los_up",),
}
WIDE_REQUIRED = ("pixel_id", "lon", "lat")

UNIT_TO_MM = dict(zip(DISPLACEMENT_UNITS, (1.0, 10.0, 1000.0)))
_NA_TOKENS = {"", "nan", "na", "n/a", "null", "none"}
# A cell of more characters than this is not a number (a double needs at most ~25): it is marked
# bad before the cells become one fixed-width text array, whose width is that of the longest cell
# (one 100,000-character cell in a burst of 2.4 million would ask for ~1 TB).
_MAX_NUMBER_CHARS = 64
_EPOCH_RE = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})$")
# (lo, hi) inclusive valid ranges of static values; outside → quarantine.
_RANGES = {"lon": (-180.0, 180.0), "lat": (-90.0, 90.0), "coherence": (0.0, 1.0),
           "incidence_angle": (0.0, 90.0), "velocity_std": (0.0, np.inf),
           "los_east": (-1.0, 1.0), "los_north": (-1.0, 1.0), "los_up": (-1.0, 1.0)}
_INPUT_NAMES = {"lon": "longitude", "lat": "latitude"}


@dataclass(frozen=True)
class HeaderSpec:
    """What the columns of one source mean."""
    source: str
    fmt: str                      # egms | wide-csv | parquet
    static: dict                  # canonical name -> column name in the file
    epoch_columns: tuple          # column names, in file order
    epoch_dates: tuple            # datetime.date per epoch column
    extra_columns: tuple          # other columns, kept as numeric attributes


def detect_format(path: str, columns: list[str] | None = None) -> str:
    lower = path.lower()
    if lower.endswith(".parquet"):
        return "parquet"
    if lower.endswith(".zip"):
        return "egms"
    if columns is not None and {"pid", "mean_velocity", "temporal_coherence"} <= set(columns):
        return "egms"
    return "wide-csv"


def parse_epoch(name: str) -> dt.date | None:
    """The date of an epoch column name, None if the name does not look like an epoch."""
    m = _EPOCH_RE.match(name.strip())
    if not m:
        return None
    return dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))


def read_header(source: str, columns: list[str], fmt: str) -> HeaderSpec:
    """Map the columns of ``source``; raises InputError on a file-level problem."""
    columns = [str(c) for c in columns]
    if not columns or (len(columns) == 1 and not columns[0].strip()):
        raise InputError(f"file {source}: empty header")
    seen = set()
    for c in columns:
        if c in seen:
            raise InputError(f"file {source}: column '{c}' appears twice")
        seen.add(c)
    epoch_cols, epoch_dates, others = [], [], []
    for c in columns:
        if c.strip()[:1].isdigit():
            try:
                d = parse_epoch(c)
            except ValueError:
                d = None
            if d is None:
                raise InputError(f"file {source}: column '{c}' is not an epoch date (expected YYYYMMDD)")
            epoch_cols.append(c)
            epoch_dates.append(d)
        else:
            others.append(c)
    if len(epoch_dates) != len(set(epoch_dates)):
        raise InputError(f"file {source}: two epoch columns have the same date")
    if len(epoch_cols) < 3:
        raise InputError(f"file {source}: {len(epoch_cols)} epoch columns (YYYYMMDD); at least 3 are needed")
    if fmt == "egms":
        static = {k: v for k, v in EGMS_COLUMNS.items() if v in others}
        required = EGMS_REQUIRED
        names = EGMS_COLUMNS
    else:
        lower = {c.lower(): c for c in others}
        static = {}
        for key, aliases in WIDE_ALIASES.items():
            for alias in aliases:
                if alias in lower:
                    static[key] = lower[alias]
                    break
        required = WIDE_REQUIRED
        names = {k: "/".join(v) for k, v in WIDE_ALIASES.items()}
    for key in required:
        if key not in static:
            raise InputError(f"file {source}: missing column '{names[key]}' ({key})")
    used = set(static.values())
    extra = tuple(c for c in others if c not in used)
    order = np.argsort(np.array(epoch_dates, dtype="datetime64[D]"), kind="stable")
    return HeaderSpec(source, fmt, static, tuple(epoch_cols[i] for i in order),
                      tuple(epoch_dates[i] for i in order), extra)


# ---------------------------------------------------------------- reading files

def _zip_csv_members(source: str, fh) -> tuple[zipfile.ZipFile, list[str]]:
    """The archive (from a seekable binary file object) and its .csv members (sorted);
    InputError if unreadable or holding none."""
    try:
        archive = zipfile.ZipFile(fh)
    except _ZIP_ERRORS as exc:
        raise InputError(f"file {source}: not a readable ZIP archive ({_reason(exc)})") from None
    members = sorted(m for m in archive.namelist() if m.lower().endswith(".csv"))
    if not members:
        raise InputError(f"file {source}: the ZIP holds no .csv file")
    return archive, members


# What reading a damaged or unsupported ZIP raises (bad CRC or header, a truncated or corrupt
# deflate stream, an encrypted member, an unknown compression method, a bad offset).
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError,
               ValueError, struct.error)


def _reason(exc: Exception) -> str:
    """An exception as a short one-line reason."""
    text = " ".join(str(exc).split())
    return (text or type(exc).__name__)[:200]


def iter_tables(source: str, data: bytes, fmt: str, chunk_rows: int = 50_000) -> Iterator[tuple[str, pd.DataFrame, list[str]]]:
    """Yield (source name, chunk of rows, columns) per CSV/Parquet member of the file. ZIP members
    get the source name ``file.zip!member.csv``. Numbers in CSV are parsed by pandas, a column
    holding text stays strings (see ``to_float``); Parquet keeps its types. A table without data
    rows raises InputError (like an empty file)."""
    lower = source.lower()
    if lower.endswith(".zip"):
        archive, members = _zip_csv_members(source, io.BytesIO(data))
        for member in members:
            try:
                content = archive.read(member)
            except _ZIP_ERRORS as exc:
                raise InputError(f"file {source}!{member}: unreadable ({_reason(exc)})") from None
            yield from _iter_csv(f"{source}!{member}", content, chunk_rows)
    elif fmt == "parquet" or lower.endswith(".parquet"):
        yield from _iter_parquet(source, data)
    else:
        yield from _iter_csv(source, data, chunk_rows)


# Columns always read as text (pixel ids must not become numbers).
_TEXT_COLUMNS = {name: str for name in ("pid", "pixel_id", "point_id", "id", "PID", "Pixel_ID", "ID")}
_BLANK = b" \t\r"          # a line of only these is blank (pandas skips it)


def _iter_csv(source: str, content: bytes, chunk_rows: int):
    """Chunks of a CSV file's rows, with the column names of ``_csv_header`` (so they match the
    file's HeaderSpec). Plain files (no quotes, newline-terminated lines) are parsed by pandas' C
    reader with numbers as floats; rows shorter than the header are found by counting commas and
    marked by the column ``__short__``; a row longer than the header is a file-level error.
    Other files (quoted fields, bare CR line ends) are read as text, where a missing trailing
    field is the short row's mark."""
    if not content.strip():
        raise InputError(f"file {source}: empty file")
    names = _csv_header(source, content)
    plain = b'"' not in content and content.count(b"\r") == content.count(b"\r\n")
    n_fields = None
    if plain:
        lines = [line for line in content.split(b"\n")[1:] if line.strip(_BLANK)]
        n_fields = np.fromiter((line.count(b",") + 1 for line in lines), dtype=np.int64, count=len(lines))
        long = np.flatnonzero(n_fields > len(names))
        if len(long):
            raise InputError(f"file {source}: malformed CSV (data row {long[0] + 1} has {n_fields[long[0]]} "
                             f"fields, the header {len(names)})")
    rows = 0
    try:
        reader = pd.read_csv(io.BytesIO(content), names=names, header=0, index_col=False,
                             dtype=_TEXT_COLUMNS if plain else str, keep_default_na=plain,
                             na_filter=plain, chunksize=chunk_rows, skipinitialspace=True,
                             low_memory=False)
        while True:
            with warnings.catch_warnings():     # pandas only warns when a row is longer than the names
                warnings.simplefilter("error", pd.errors.ParserWarning)
                chunk = next(reader, None)
            if chunk is None:
                break
            if not len(chunk):
                continue
            if plain:
                chunk["__short__"] = n_fields[rows:rows + len(chunk)] < len(names)
            else:
                chunk["__short__"] = chunk.isna().any(axis=1).to_numpy()
            rows += len(chunk)
            yield source, chunk, names
    except (pd.errors.ParserError, pd.errors.ParserWarning) as exc:
        detail = str(exc).strip().splitlines()[-1].split("C error: ")[-1]
        raise InputError(f"file {source}: malformed CSV ({_reason(detail)})") from None
    except UnicodeDecodeError:
        raise InputError(f"file {source}: not UTF-8 text") from None
    except pd.errors.EmptyDataError:
        raise InputError(f"file {source}: empty file") from None
    if rows == 0:
        raise InputError(f"file {source}: no data rows (only a header)")
    if n_fields is not None and rows != len(n_fields):    # the comma count must see pandas' rows
        raise RuntimeError(f"file {source}: pandas read {rows} rows where {len(n_fields)} lines were counted")


def _iter_parquet(source: str, data: bytes):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(io.BytesIO(data))
        if pf.metadata.num_rows == 0:
            raise InputError(f"file {source}: no data rows")
        for batch in pf.iter_batches(batch_size=50_000):
            yield source, pa.Table.from_batches([batch]).to_pandas(), pf.schema_arrow.names
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"file {source}: not a readable Parquet file ({_reason(exc)})") from None


def header_columns(source: str, data, fmt: str) -> list[tuple[str, list[str]]]:
    """(source, columns) of each table in the file, reading as little as possible.

    data: the file's bytes, or a seekable binary file object (then only the header is read: the
    first line of a CSV, the footer of a Parquet file, the directory and first lines of a ZIP)."""
    fh = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    lower = source.lower()
    if lower.endswith(".parquet") or fmt == "parquet":
        import pyarrow.parquet as pq
        import pyarrow as pa
        try:
            return [(source, pq.ParquetFile(fh).schema_arrow.names)]
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"file {source}: not a readable Parquet file ({_reason(exc)})") from None
    if lower.endswith(".zip"):
        return list(_zip_headers(source, fh))
    return [(source, _csv_header(source, fh.readline()))]


def file_specs(source: str, data, fmt: str) -> dict[str, HeaderSpec]:
    """The HeaderSpec of each table (source) of one file, ``fmt`` 'auto' detected per table;
    raises InputError on a file-level problem. data: as for ``header_columns``."""
    specs = {}
    for table, columns in header_columns(source, data, fmt):
        table_fmt = fmt if fmt != "auto" else detect_format(table, columns)
        specs[table] = read_header(table, columns, table_fmt)
    return specs


def _zip_headers(source: str, fh):
    archive, members = _zip_csv_members(source, fh)
    for member in members:
        try:
            with archive.open(member) as member_fh:
                first = member_fh.readline()
        except _ZIP_ERRORS as exc:
            raise InputError(f"file {source}!{member}: unreadable ({_reason(exc)})") from None
        yield f"{source}!{member}", _csv_header(f"{source}!{member}", first)


_FIRST_LINE = re.compile(rb"[^\r\n]*")


def _csv_header(source: str, content: bytes) -> list[str]:
    """The column names of a CSV file's first line (UTF-8, a BOM allowed; quoted names and
    spaces around the names are removed)."""
    first = _FIRST_LINE.match(content).group()
    if not first.strip():
        raise InputError(f"file {source}: empty file")
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"file {source}: not UTF-8 text") from None
    try:
        fields = next(csv.reader([text], skipinitialspace=True))
    except csv.Error as exc:
        raise InputError(f"file {source}: malformed CSV header ({_reason(exc)})") from None
    return [c.strip() for c in fields]


# ---------------------------------------------------------------- rows

def to_float(values) -> tuple[np.ndarray, np.ndarray]:
    """Parse values (strings or numbers, any shape) into float64; returns (floats, bad) where
    ``bad`` marks non-empty text that is not a number (text of more than _MAX_NUMBER_CHARS
    characters included). Empty and NA tokens become NaN."""
    arr = np.asarray(values)
    if arr.dtype.kind in "fiub":
        return arr.astype(np.float64), np.zeros(arr.shape, dtype=bool)
    too_long = _too_long(arr)
    if too_long.any():
        arr = np.where(too_long, "not a number", arr).astype(object)   # parsed as bad text below
    text = arr.astype(str)
    try:  # fast path: clean numbers, empty cells and 'nan'
        return np.where(text == "", "nan", text).astype(np.float64), np.zeros(arr.shape, dtype=bool)
    except ValueError:
        pass
    stripped = np.char.strip(text)
    is_na = np.isin(np.char.lower(stripped), list(_NA_TOKENS)) | (arr == None)  # noqa: E711
    flat = pd.to_numeric(pd.Series(np.where(is_na, "nan", stripped).ravel(), dtype=object), errors="coerce")
    floats = flat.to_numpy(dtype=np.float64).reshape(arr.shape)
    bad = np.isnan(floats) & ~is_na & (np.char.lower(stripped) != "nan")
    return floats, bad


_text_length = np.frompyfunc(lambda v: len(v) if isinstance(v, str) else 0, 1, 1)


def _too_long(arr: np.ndarray) -> np.ndarray:
    """(arr.shape) bool: the text cells of more than _MAX_NUMBER_CHARS characters (none in a
    fixed-width text array no wider than that)."""
    if arr.dtype.kind != "U":
        return _text_length(arr).astype(np.int64) > _MAX_NUMBER_CHARS
    if arr.dtype.itemsize <= 4 * _MAX_NUMBER_CHARS:          # numpy's text: 4 bytes a character
        return np.zeros(arr.shape, dtype=bool)
    return np.char.str_len(arr) > _MAX_NUMBER_CHARS


def canonical_rows(frame: pd.DataFrame, spec: HeaderSpec, dataset_dates: list[dt.date], *,
                   dataset: str, first_row: int, unit: str = "mm",
                   max_missing_share: float = 0.2) -> pd.DataFrame:
    """Rows of one chunk of ``spec.source`` in the canonical layout of ``pixels`` plus
    ``source``, ``row_number`` (1-based data row, header excluded) and ``reason`` (None if valid).

    disp: float32 array aligned with ``dataset_dates`` (mm, NaN where the file has no value or
    no such epoch). Velocity (mm/yr) and its std are fitted from the series where missing.
    """
    n = len(frame)
    scale = UNIT_TO_MM[unit]
    reasons = [[] for _ in range(n)]

    def flag(mask: np.ndarray, message) -> None:
        for i in np.flatnonzero(mask):
            reasons[i].append(message(i) if callable(message) else message)

    # CSV rows shorter than the header show up as missing (None) cells when read as strings.
    short = frame["__short__"].to_numpy() if "__short__" in frame else np.zeros(n, dtype=bool)
    flag(short, "row has fewer fields than the header")

    out = pd.DataFrame({"dataset": dataset, "source": spec.source,
                        "row_number": np.arange(first_row, first_row + n, dtype=np.int64)})
    pid = frame[spec.static["pixel_id"]]
    pid_text = pid.astype(str).str.strip()
    pid_missing = pid.isna().to_numpy() | np.isin(pid_text.str.lower().to_numpy(), list(_NA_TOKENS))
    flag(pid_missing & ~short, "missing pixel_id")
    out["pixel_id"] = np.where(pid_missing, None, pid_text.to_numpy())

    for key in NUMERIC_STATIC:
        column = spec.static.get(key)
        if column is None:
            out[key] = np.nan
            continue
        raw = frame[column].to_numpy()
        values, bad = to_float(raw)
        name = _INPUT_NAMES.get(key, column)
        flag(bad & ~short, lambda i, raw=raw, name=name: f"non-numeric {name}: {str(raw[i])[:40]!r}")
        if key in ("velocity", "velocity_std"):
            values = values * scale
        if key in ("lon", "lat"):
            flag(np.isnan(values) & ~bad & ~short, f"missing {name}")
        if key in _RANGES:
            lo, hi = _RANGES[key]
            outside = np.isfinite(values) & ((values < lo) | (values > hi))
            flag(outside, lambda i, v=values, name=name, lo=lo, hi=hi: f"{name} {v[i]:g} out of range [{lo:g}, {hi:g}]")
        nonfinite = np.isinf(values)
        flag(nonfinite, f"non-finite {name}")
        values[nonfinite] = np.nan
        out[key] = values

    # Epoch block: (n, T_file) → aligned to the dataset's dates.
    block_raw = frame[list(spec.epoch_columns)].to_numpy()
    block, bad = to_float(block_raw)
    bad_rows = bad.any(axis=1) & ~short
    if bad_rows.any():
        first_bad = bad.argmax(axis=1)
        flag(bad_rows, lambda i: (f"non-numeric displacement at epoch {spec.epoch_columns[first_bad[i]]}: "
                                  f"{str(block_raw[i, first_bad[i]])[:40]!r}"
                                  + (f" (+{bad[i].sum() - 1} more)" if bad[i].sum() > 1 else "")))
    inf = np.isinf(block)
    flag(inf.any(axis=1), "non-finite displacement")
    block[inf] = np.nan
    block *= scale
    index = {d: j for j, d in enumerate(dataset_dates)}
    disp = np.full((n, len(dataset_dates)), np.nan, dtype=np.float64)
    disp[:, [index[d] for d in spec.epoch_dates]] = block
    n_valid = np.isfinite(disp).sum(axis=1)
    total = len(dataset_dates)
    missing_share = 1.0 - n_valid / total
    empty = n_valid == 0
    flag(empty & ~bad_rows & ~short, "empty series (no valid epoch)")
    too_many = ~empty & (missing_share > max_missing_share)
    flag(too_many, lambda i: (f"{total - n_valid[i]} of {total} epochs missing "
                              f"({missing_share[i]:.0%} > max {max_missing_share:.0%})"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: handled as empty above
        span = np.nanmax(disp, axis=1) - np.nanmin(disp, axis=1)
    constant = ~empty & (np.nan_to_num(span, nan=0.0) == 0.0)
    flag(constant, "constant series")

    # Velocity and its std fitted from the series where the file has none.
    velocity = out["velocity"].to_numpy()
    velocity_std = out["velocity_std"].to_numpy()
    need = np.isnan(velocity) | np.isnan(velocity_std)
    if need.any():
        t_years = years_since(np.array(dataset_dates, dtype="datetime64[D]"))
        fit_v, fit_s = fit_velocity(t_years, disp[need])
        velocity[need] = np.where(np.isnan(velocity[need]), fit_v, velocity[need])
        velocity_std[need] = np.where(np.isnan(velocity_std[need]), fit_s, velocity_std[need])
        out["velocity"], out["velocity_std"] = velocity, velocity_std

    out["disp"] = pd.Series(list(disp.astype(np.float32)), index=out.index, dtype=object)
    out["attributes"] = _attributes(frame, spec.extra_columns)
    out["reason"] = [("; ".join(r) if r else None) for r in reasons]
    return out


def _attributes(frame: pd.DataFrame, columns: tuple) -> list:
    """Extra numeric columns of the input (EGMS rmse_ts, acceleration, ...) per row, as a dict;
    values that are not numbers are left out."""
    if not columns:
        return [None] * len(frame)
    values, bad = to_float(frame[list(columns)].to_numpy())
    keep = ~bad & np.isfinite(values)
    return [{c: float(values[i, j]) for j, c in enumerate(columns) if keep[i, j]} for i in range(len(frame))]
