"""New acquisitions appended to a dataset (``--mode append``): the input's rows merged into the
dataset's `pixels` on pixel_id, each series laid out on the union of the old and the new epochs.

- a known pixel with new dates: its series gains them; dates it had already must hold the same
  values, within ``ingest.append_max_difference_mm``, else the new row goes to quarantine and the
  pixel keeps its series (a different value for a date already in the lake means another
  processing: a new release, ``--mode release``);
- a new pixel: added, missing (NaN) before its first date;
- a known pixel the input does not hold: kept, missing at the new dates (`last_date` says when it
  was last measured).

Values of dates the lake holds are kept as they are, so appending the same files again changes
nothing. The kernels below are pure numpy; ``stage.py`` calls them from Spark as pandas UDFs.
"""
from __future__ import annotations

import datetime as dt
from typing import Sequence

import numpy as np


def epoch_positions(old_dates: Sequence[dt.date], new_dates: Sequence[dt.date]
                    ) -> tuple[list[dt.date], np.ndarray, np.ndarray]:
    """(union, old_pos, new_pos): the sorted union of two sets of epoch dates and, for each
    union date, its index among ``old_dates`` and among ``new_dates`` (-1 when absent); int32 (n_union,)."""
    union = sorted(set(old_dates) | set(new_dates))
    old_index = {d: i for i, d in enumerate(old_dates)}
    new_index = {d: i for i, d in enumerate(new_dates)}
    old_pos = np.array([old_index.get(d, -1) for d in union], dtype=np.int32)
    new_pos = np.array([new_index.get(d, -1) for d in union], dtype=np.int32)
    return union, old_pos, new_pos


def _on_union(series, positions: np.ndarray) -> np.ndarray:
    """A series (mm, its own epochs; None = no series) on the union epochs: NaN where absent; float32 (n_union,)."""
    out = np.full(len(positions), np.nan, dtype=np.float32)
    if series is not None:
        values = np.asarray(series, dtype=np.float32)
        present = positions >= 0
        out[present] = values[positions[present]]
    return out


def merge_series(old, new, old_pos: np.ndarray, new_pos: np.ndarray) -> np.ndarray:
    """A pixel's series on the union epochs (float32 mm, (n_union,)): the old value where the old
    series has one, else the new one, else NaN. ``old``/``new``: a series on its own epochs, or None."""
    merged = _on_union(old, old_pos)
    fresh = _on_union(new, new_pos)
    missing = np.isnan(merged)
    merged[missing] = fresh[missing]
    return merged


def largest_difference(old, new, old_pos: np.ndarray, new_pos: np.ndarray) -> tuple[float, int]:
    """(the largest |new - old| in mm over the epochs both series hold a value for, the union
    index where it is); (0.0, -1) when they share none, or one of them is None."""
    if old is None or new is None:
        return 0.0, -1
    difference = np.abs(_on_union(new, new_pos).astype(np.float64) - _on_union(old, old_pos))
    if np.isnan(difference).all():
        return 0.0, -1
    where = int(np.nanargmax(difference))
    return float(difference[where]), where


def last_valid_index(series) -> int:
    """Index of the last epoch with a value (not NaN) in ``series``; -1 when none (or None)."""
    if series is None:
        return -1
    valid = np.flatnonzero(~np.isnan(np.asarray(series, dtype=np.float64)))
    return int(valid[-1]) if len(valid) else -1
