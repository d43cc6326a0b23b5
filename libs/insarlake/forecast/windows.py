"""Forecast windows: the chronological split of a record, the dataset's normalisation, and the
GraphBatch of one subgraph at one window. Pure numpy/torch, no Spark.

A window starting at epoch s has input epochs [s, s + L) and targets [s + L, s + L + H).
Chronological split over T epochs (no target epoch is shared between splits):
  train:      targets end at or before epoch t1 = round(train_share * T)
  validation: targets start at or after t1 and end at or before t2 = round((train_share + validation_share) * T)
  test:       targets start at or after t2.
Validation and test windows step by H (non-overlapping targets); training windows start anywhere
in their range. Inputs may reach back into earlier splits (the past is known when forecasting).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from insarlake.forecast.batch import GraphBatch


@dataclass(frozen=True)
class WindowSplit:
    """Window start epochs (0-based) of each split; t1, t2 the first epochs of validation/test targets."""
    input_len: int
    horizon: int
    n_epochs: int
    t1: int
    t2: int

    @classmethod
    def of(cls, n_epochs: int, input_len: int, horizon: int, train_share: float, validation_share: float) -> "WindowSplit":
        if input_len < 2 or horizon < 1:
            raise ValueError(f"input_len must be >= 2 and horizon >= 1, got {input_len}, {horizon}")
        t1 = int(round(train_share * n_epochs))
        t2 = int(round((train_share + validation_share) * n_epochs))
        split = cls(input_len, horizon, n_epochs, t1, t2)
        for name in ("train", "validation", "test"):
            if len(split.starts(name)) == 0:
                raise ValueError(f"{n_epochs} epochs leave no {name} window of {input_len} input + {horizon} "
                                 f"forecast epochs (train_share {train_share}, validation_share {validation_share})")
        return split

    def starts(self, name: str) -> np.ndarray:
        L, H = self.input_len, self.horizon
        if name == "train":
            return np.arange(0, self.t1 - L - H + 1)
        lo, hi = (self.t1, self.t2) if name == "validation" else (self.t2, self.n_epochs)
        return np.arange(max(lo - L, 0), hi - L - H + 1, H)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Normalisation:
    """scale_mm: RMS of the H-epoch-ahead change over the training epochs (the unit of history and
    targets); coord_mean, coord_std: of (x_km, y_km, height_m) over all pixels."""
    scale_mm: float
    coord_mean: tuple[float, float, float]
    coord_std: tuple[float, float, float]

    def close_to(self, other: "Normalisation", rel: float = 1e-9) -> bool:
        """Equal up to a relative ``rel`` in every value (sums over Spark partitions differ in their
        last bits from one run to the next)."""
        mine = np.array([self.scale_mm, *self.coord_mean, *self.coord_std], np.float64)
        theirs = np.array([other.scale_mm, *other.coord_mean, *other.coord_std], np.float64)
        return bool(np.allclose(mine, theirs, rtol=rel, atol=0.0))

    def coords(self, xyz: np.ndarray) -> np.ndarray:
        return ((xyz - np.asarray(self.coord_mean)) / np.asarray(self.coord_std)).astype(np.float32)

    def as_dict(self) -> dict:
        return asdict(self)


def change_moments(series_mm: np.ndarray, horizon: int, last_epoch: int) -> tuple[int, np.ndarray]:
    """(count per row, sum of squares per row (n,) float64) of s[t + H] - s[t] for
    t + H < last_epoch over the rows of ``series_mm`` (n, T): each pixel's part of scale_mm,
    summed exactly across pixels in Spark."""
    d = series_mm[:, horizon:last_epoch] - series_mm[:, :max(last_epoch - horizon, 0)]
    return int(d.shape[1]), np.square(d, dtype=np.float64).sum(axis=1)


def record_fit(series_mm: np.ndarray, t_years: np.ndarray, start: int, split: WindowSplit) -> np.ndarray:
    """(n, L + H) mm: the record model (``baselines.harmonic_fit``: trend plus annual sinusoid) of
    each row of series_mm (n, T) fitted on every epoch before the forecast origin of the window at
    ``start`` (epochs [0, start + L)), at the window's input epochs and its H forecast times
    (``future_times``: after the record's end, at its cadence). Its last H columns are the
    ``harmonic_trend`` forecast (before a year of record, early training windows, the trend alone)."""
    from insarlake.forecast.baselines import harmonic_fit

    L, H = split.input_len, split.horizon
    origin = start + L
    times = np.concatenate([t_years[start:origin], future_times(t_years, origin, H)])
    return harmonic_fit(series_mm[:, :origin], t_years[:origin], times, L)


def annual_record_starts(starts: np.ndarray, split: WindowSplit, t_years: np.ndarray) -> np.ndarray:
    """The window starts among ``starts`` whose origin has at least ``ANNUAL_MIN_SPAN_YEARS`` of
    record behind it, where ``record_fit`` is the full trend-plus-annual model that validation,
    test and future windows meet; all of ``starts`` when none has (a record shorter than that)."""
    from insarlake.forecast.baselines import ANNUAL_MIN_SPAN_YEARS

    starts = np.asarray(starts)
    span = t_years[starts + split.input_len - 1] - t_years[0]
    kept = starts[span >= ANNUAL_MIN_SPAN_YEARS]
    return kept if kept.size else starts


def window_batch(series_mm: np.ndarray, coords: np.ndarray, t_years: np.ndarray, start: int, split: WindowSplit,
                 scale_mm: float, edge_index: np.ndarray, mask: np.ndarray | None = None,
                 with_target: bool = True, record_mm: np.ndarray | None = None,
                 with_record: bool = True) -> tuple[GraphBatch, np.ndarray]:
    """(GraphBatch, last_mm (n,)) of the window at ``start`` for one subgraph: series_mm (n, T) gap-free
    mm; coords (n, 3) normalised; t_years (T,); edge_index (2, E) local. Without target, the window
    may end at the record's end (start + L == T) to forecast the future. ``record_mm`` (n, L + H):
    ``record_fit`` of the window when the caller has it (computed here otherwise; a least-squares
    fit over the record, ~30x the rest of the batch: ``with_record=False`` for a model that does not
    read ``batch.record``, which is then None)."""
    L, H = split.input_len, split.horizon
    last = series_mm[:, start + L - 1]
    history = (series_mm[:, start:start + L] - last[:, None]) / scale_mm
    record = None
    if with_record:
        if record_mm is None:
            record_mm = record_fit(series_mm, t_years, start, split)
        record = torch.from_numpy(((record_mm - last[:, None]) / scale_mm).astype(np.float32))
    t0 = t_years[start + L - 1]
    target = None
    if with_target:
        target = torch.from_numpy(((series_mm[:, start + L:start + L + H] - last[:, None]) / scale_mm).astype(np.float32))
    t_out = future_times(t_years, start + L, H) - t0
    batch = GraphBatch(coords=torch.from_numpy(np.ascontiguousarray(coords, np.float32)),
                       history=torch.from_numpy(history.astype(np.float32)),
                       t_in=torch.from_numpy((t_years[start:start + L] - t0).astype(np.float32)),
                       t_out=torch.from_numpy(t_out.astype(np.float32)),
                       edge_index=torch.from_numpy(np.ascontiguousarray(edge_index, np.int64)), target=target,
                       mask=None if mask is None else torch.from_numpy(np.asarray(mask, bool)),
                       record=record)
    return batch, last


def future_times(t_years: np.ndarray, first: int, horizon: int) -> np.ndarray:
    """(H,) epoch times from index ``first`` on: the record's own where it has them, then continued at
    the median spacing of its last 10 intervals (the acquisition cadence)."""
    known = t_years[first:first + horizon]
    if len(known) == horizon:
        return known
    extra = t_years[-1] + cadence_years(t_years) * np.arange(1, horizon - len(known) + 1)
    return np.concatenate([known, extra])


def cadence_years(t_years: np.ndarray) -> float:
    """The record's acquisition cadence in years: the median of its last 10 intervals."""
    return float(np.median(np.diff(t_years[-11:])))
