"""Splitting a steady-rate source off a part whose motion is a step: the pure numerical kernel.

A post-seismic field moves by a step at the event and a decaying afterslip after it; an uplift
(aquifer recharge) or a bowl's rim beside it moves at a steady rate. Where the two touch with one
sign, the velocity field has no saddle between them and the peak split (``split.py``) keeps them in
one part. Their series tell them apart. The part's median series (each pixel's sign taken out) is
searched for its best single step; when that step is significant, every pixel is fitted with it:
``rate`` is its linear rate beside the step, ``velocity`` its rate without one. Over a field that
moves with one time function, rate / velocity is one number rho (the afterslip's share of the
velocity); a steady-rate source inside it stands out as pixels whose ``rate - rho velocity`` is
high. Those pixels, clustered, are a source of their own, unless the cluster has a step of its own at
another epoch (a tunnel's later section, a second post-seismic field: not a steady-rate source).
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy.spatial import cKDTree

from insarlake.geo import EARTH_RADIUS_M
from insarlake.hotspots.geometry import unit_vectors
from insarlake.hotspots.noise import MAD_TO_SIGMA
from insarlake.hotspots.split import _find, _pixels
from insarlake.spatial.kernel import local_dbscan

# A step is sought at least this many epochs from either end of the series: a step at the ends is
# a trend's misfit, not an event (6 epochs: ~5 weeks of Sentinel-1's 6-day revisit).
STEP_EDGE_EPOCHS = 6


def design(t_years: np.ndarray, step_at: int | None = None) -> np.ndarray:
    """Regressors (T, 4) of a series at times t_years: offset, t - mean(t) (its coefficient the rate
    in mm/yr), an annual sine and cosine; (T, 5) with a unit step from epoch ``step_at`` on."""
    t = np.asarray(t_years, np.float64)
    columns = [np.ones_like(t), t - t.mean(), np.sin(2 * np.pi * t), np.cos(2 * np.pi * t)]
    if step_at is not None:
        columns.append((np.arange(t.size) >= step_at).astype(np.float64))
    return np.column_stack(columns)


def best_step(series_mm: np.ndarray, t_years: np.ndarray) -> tuple[float, int, float]:
    """(F, k, step_mm) of the best single step in one series (T,) mm at t_years (T,) years.

    The step at epoch k (STEP_EDGE_EPOCHS <= k < T - STEP_EDGE_EPOCHS) is added to ``design``'s
    trend and seasons; F = (RSS_without - RSS_with) / (RSS_with / (T - 5)) for the k with the
    smallest RSS; (0, -1, 0) for a series too short to hold a step. NaN epochs are left out."""
    y, t, keep = _finite(series_mm, t_years)
    if t.size < 2 * STEP_EDGE_EPOCHS + 6:
        return 0.0, -1, 0.0
    f_stat, k, step = best_steps(y[None, :], t)
    return float(f_stat[0]), int(np.flatnonzero(keep)[k[0]]), float(step[0])


def best_steps(series_mm: np.ndarray, t_years: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(F (n,), k (n,) int64, step_mm (n,)) of each row's best single step, as ``best_step`` for
    every row of series_mm (n, T) mm at once (no NaN; T >= 2 STEP_EDGE_EPOCHS + 6).

    With M the projection off ``design``'s columns, the RSS a step at epoch k removes from a
    series y is (s_k' M y)^2 / (s_k' M s_k), s_k the unit step: one (n, T) x (T, K) product."""
    y = np.asarray(series_mm, np.float64)
    t = np.asarray(t_years, np.float64)
    if y.ndim != 2 or t.shape != (y.shape[1],) or t.size < 2 * STEP_EDGE_EPOCHS + 6:
        raise ValueError(f"series_mm must be (n, T) and t_years (T,) with T >= {2 * STEP_EDGE_EPOCHS + 6}, "
                         f"got {y.shape} and {t.shape}")
    if not np.isfinite(y).all():
        raise ValueError("series_mm must be finite")
    x = design(t)
    residual = y - (y @ np.linalg.pinv(x).T) @ x.T                 # M y, row by row
    epochs = np.arange(STEP_EDGE_EPOCHS, t.size - STEP_EDGE_EPOCHS)
    steps = (np.arange(t.size)[:, None] >= epochs[None, :]).astype(np.float64)
    steps -= x @ (np.linalg.pinv(x) @ steps)                          # M s_k, column by column
    gain = residual @ steps                                           # (n, K): s_k' M y
    power = np.sum(steps * steps, axis=0)                             # (K,): s_k' M s_k
    removed = gain * gain / power
    best = np.argmax(removed, axis=1)
    rows = np.arange(y.shape[0])
    rss1 = np.maximum(np.sum(residual * residual, axis=1) - removed[rows, best], 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        f_stat = np.where(rss1 > 0, removed[rows, best] / (rss1 / (t.size - 5)),
                          np.where(removed[rows, best] > 0, np.inf, 0.0))
    return f_stat, epochs[best].astype(np.int64), gain[rows, best] / power[best]


def step_f_at(series_mm: np.ndarray, t_years: np.ndarray, k: int) -> tuple[float, float]:
    """(F, step_mm) of a step at the given epoch k (an index of series_mm (T,)), fitted as in
    ``best_step`` but not searched for. NaN epochs are left out."""
    y, t, keep = _finite(series_mm, t_years)
    if not 0 < k < keep.size or t.size < 6:
        raise ValueError(f"a step at epoch {k} needs epochs on both sides and 6 finite ones, got {t.size} of "
                         f"{keep.size}")
    rss1, step = _fit(design(t_years, k)[keep], y)
    return _f(_fit(design(t), y)[0], rss1, t.size), step


def _finite(series_mm, t_years) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y, t, keep): one series (T,) and its times (T,) at its finite epochs, and which those are."""
    y = np.asarray(series_mm, np.float64)
    t = np.asarray(t_years, np.float64)
    if y.shape != t.shape or y.ndim != 1:
        raise ValueError(f"series_mm and t_years must have the same shape (T,), got {y.shape} and {t.shape}")
    keep = np.isfinite(y)
    return y[keep], t[keep], keep


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(RSS, last coefficient) of the least-squares fit of y (T,) on the regressors x (T, p)."""
    coef = np.linalg.lstsq(x, y, rcond=None)[0]
    return float(np.sum((y - x @ coef) ** 2)), float(coef[-1])


def _f(rss0: float, rss1: float, n_epochs: int) -> float:
    """The F statistic of one added regressor (a step) that takes the RSS from rss0 to rss1."""
    return float((rss0 - rss1) / (rss1 / (n_epochs - 5))) if rss1 > 0 else float(np.inf)


def _rates(series: np.ndarray, t_years: np.ndarray, step_at: int) -> tuple[np.ndarray, np.ndarray]:
    """(rate, velocity) (n,) mm/yr of every series (n, T): the linear rate fitted beside a step at
    epoch step_at, and without it. A missing epoch takes its pixel's mean (0 for a pixel with none)."""
    finite = np.isfinite(series)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)       # a pixel with no epoch: mean 0
        mean = np.nan_to_num(np.nanmean(np.where(finite, series, np.nan), axis=1, keepdims=True))
    filled = np.where(finite, series, mean)
    rate = np.linalg.lstsq(design(t_years, step_at), filled.T, rcond=None)[0][1]
    velocity = np.linalg.lstsq(design(t_years), filled.T, rcond=None)[0][1]
    return rate, velocity


def rate_cores(lon_deg, lat_deg, excess_z, series_mm, t_years, part, eps_m: float, min_samples: int,
               min_pixels: int, step_f: float, z_pixel: float, z_hotspot: float, grow_z: float,
               grow_radius_m: float, epoch_tolerance: int) -> np.ndarray:
    """``part`` (n,) int64 with the steady-rate sources split off step parts (-1 stays -1).

    lon_deg, lat_deg: (n,) degrees; excess_z: (n,) signed (velocity - v0) / sigma; series_mm: (n, T)
    displacements (NaN: missing); t_years: (T,); part: (n,) the parts of one cluster. A part of at
    least 2 min_pixels whose median series has a step with F >= step_f (``best_step``) and its sign
    is searched: z = (e - median e) / (1.4826 MAD e), e = rate - rho velocity (``_rates``; rho the
    median rate / velocity). Pixels with z > z_pixel are clustered (DBSCAN eps_m, min_samples); a
    cluster of >= min_pixels with mean z > z_hotspot, no step of its own (F >= step_f more than
    epoch_tolerance epochs from the part's) and no pixel within eps_m of another part of the
    opposite sign, grown by the part's pixels with z > grow_z within grow_radius_m of it (same
    DBSCAN), joins a part of its sign within eps_m of it at least its size (a bowl's rim goes back to
    its bowl), else becomes a part of its own."""
    lon, lat, z = _pixels(lon_deg, lat_deg, excess_z)
    n = lon.shape[0]
    out, series, t = _part_series(part, series_mm, t_years, n)
    if not (eps_m > 0 and grow_radius_m > 0 and step_f > 0 and min_samples >= 1 and min_pixels >= 1
            and epoch_tolerance >= 0):
        raise ValueError("eps_m, grow_radius_m and step_f must be > 0, min_samples and min_pixels >= 1, "
                         "epoch_tolerance >= 0")
    if n == 0:
        return out
    lat_rad, lon_rad = np.radians(lat), np.radians(lon)
    xyz = np.column_stack(unit_vectors(lon_rad, lat_rad))
    sign = np.sign(z)
    next_part = int(out.max()) + 1
    for q in np.unique(out[out >= 0]):
        members = np.flatnonzero(out == q)
        if members.size < 2 * min_pixels:
            continue
        signed = series[members] * sign[members, None]
        f_stat, k, step = best_step(_median(signed), t)
        if not (f_stat >= step_f and step > 0):
            continue
        rate, velocity = _rates(signed, t, k)
        moving = velocity > 0
        if not moving.any():
            continue
        rho = float(np.median(rate[moving] / velocity[moving]))
        deviation = rate - rho * velocity
        deviation -= np.median(deviation)
        spread = MAD_TO_SIGMA * float(np.median(np.abs(deviation)))
        if not spread > 0:
            continue
        rz = deviation / spread
        hit_rows = np.flatnonzero(rz > z_pixel)                  # rows of members
        if hit_rows.size < min_pixels:
            continue
        hits = members[hit_rows]
        _, root = local_dbscan(lat_rad[hits], lon_rad[hits], np.zeros(hits.size, np.int8),
                               eps_m / EARTH_RADIUS_M, min_samples)
        for c in np.unique(root[root >= 0]):
            rows = hit_rows[root == c]
            if rows.size < min_pixels or rz[rows].mean() < z_hotspot:
                continue
            own_f, own_k, _ = best_step(_median(signed[rows]), t)
            if own_f >= step_f and abs(own_k - k) > epoch_tolerance:
                continue
            core = members[rows]
            core_sign = np.sign(sign[core].sum())
            if _touches(xyz, core, np.flatnonzero((out >= 0) & (out != q) & (sign == -core_sign)), eps_m):
                continue
            low = members[(rz > grow_z) & (out[members] == q)]
            _, grown = local_dbscan(lat_rad[low], lon_rad[low], np.zeros(low.size, np.int8),
                                    grow_radius_m / EARTH_RADIUS_M, min_samples)
            touched = np.unique(grown[np.isin(low, core) & (grown >= 0)])
            core = np.union1d(core, low[np.isin(grown, touched) & (grown >= 0)])
            home = _home(xyz, out, core, np.flatnonzero((out >= 0) & (out != q) & (sign == core_sign)), eps_m,
                         next_part)
            out[core] = home
            if home == next_part:
                next_part += 1
    return out


def _part_series(part, series_mm, t_years, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(part (n,) int64, a copy; series (n, T) float64; t (T,) float64), checked of those shapes
    and t finite."""
    out = np.asarray(part, np.int64).copy()
    series = np.asarray(series_mm, np.float64)
    t = np.asarray(t_years, np.float64)
    if out.shape != (n,) or series.ndim != 2 or series.shape[0] != n:
        raise ValueError(f"part must have the shape (n,) = ({n},) and series_mm (n, T), got {out.shape} and "
                         f"{series.shape}")
    if t.shape != (series.shape[1],) or not np.isfinite(t).all():
        raise ValueError(f"t_years must be (T,) = ({series.shape[1]},) and finite, got {t.shape}")
    return out, series, t


def _median(series: np.ndarray) -> np.ndarray:
    """The median (T,) over the rows of series (n, T), NaN left out (NaN: an epoch with none)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(series, axis=0)


def _touches(xyz: np.ndarray, core: np.ndarray, others: np.ndarray, eps_m: float) -> bool:
    """Whether a pixel of ``core`` lies within eps_m of one of ``others`` (indices into xyz (n, 3))."""
    if others.size == 0:
        return False
    distance, _ = cKDTree(xyz[others]).query(xyz[core])
    return bool((distance * EARTH_RADIUS_M < eps_m).any())


def _home(xyz: np.ndarray, part: np.ndarray, core: np.ndarray, same_sign: np.ndarray, eps_m: float,
          new_part: int) -> int:
    """The part a split-off core joins: the part of ``same_sign``'s pixel nearest to it when within
    eps_m and at least the core's size, else ``new_part``."""
    if same_sign.size == 0:
        return new_part
    distance, nearest = cKDTree(xyz[same_sign]).query(xyz[core])
    target = int(part[same_sign[nearest[np.argmin(distance)]]])
    if distance.min() * EARTH_RADIUS_M < eps_m and np.sum(part == target) >= core.size:
        return target
    return new_part


def join_by_step(lon_deg, lat_deg, excess_z, series_mm, t_years, part, eps_m: float, step_f: float,
                 epoch_f: float) -> np.ndarray:
    """``part`` (n,) int64 with the parts of opposite signs that one event moved joined (-1 stays -1).

    A post-seismic field moves towards the radar on one side of its fault and away on the other.
    Where it is broad and slow, its two sides do not move fastest where they meet
    (``split.candidate_parts``' contact test) and stay two parts. Their series tell: both step at
    the event. Two parts of opposite signs with a pixel within eps_m of each other are joined when
    each part's median series (its sign taken out) steps in the direction of its motion with
    F >= step_f (``best_step``), so does the median series of the two together, and each part's
    step at the pair's epoch is in its direction with F >= epoch_f (``step_f_at``). The pair's median
    is the sharper test: the atmosphere, common to neighbours, cancels once the signs are out, the
    event's step adds up. A bowl or an uplift beside a field has no step; a part that steps at an
    other epoch (a tunnel's onset, another event) has little step at the pair's.
    lon_deg, lat_deg: (n,) degrees; excess_z: (n,) signed (velocity - v0) / sigma; series_mm:
    (n, T) mm (NaN: missing); t_years: (T,)."""
    lon, lat, z = _pixels(lon_deg, lat_deg, excess_z)
    out, series, t = _part_series(part, series_mm, t_years, lon.shape[0])
    if not (eps_m > 0 and step_f > 0 and epoch_f > 0):
        raise ValueError("eps_m, step_f and epoch_f must be > 0")
    sign = np.sign(z)
    signed = series * sign[:, None]
    stepped: dict[int, tuple[float, np.ndarray, np.ndarray]] = {}    # part: (its sign, its pixels, median)
    for q in np.unique(out[out >= 0]):
        members = np.flatnonzero(out == q)
        median = _median(signed[members])
        f_stat, _, step = best_step(median, t)
        if f_stat >= step_f and step > 0:
            stepped[int(q)] = (float(np.sign(sign[members].sum())), members, median)
    if len(stepped) < 2:
        return out
    xyz = np.column_stack(unit_vectors(np.radians(lon), np.radians(lat)))
    owner = np.arange(int(out.max()) + 1)
    keys = sorted(stepped)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            (sign_a, pixels_a, median_a), (sign_b, pixels_b, median_b) = stepped[a], stepped[b]
            if (sign_a == sign_b or _find(owner, a) == _find(owner, b)
                    or not _touches(xyz, pixels_a, pixels_b, eps_m)):
                continue
            f_stat, k, step = best_step(_median(signed[np.concatenate([pixels_a, pixels_b])]), t)
            if not (f_stat >= step_f and step > 0):
                continue
            if all(f >= epoch_f and side_step > 0
                   for f, side_step in (step_f_at(median, t, k) for median in (median_a, median_b))):
                owner[_find(owner, b)] = _find(owner, a)
    for q in keys:
        out[stepped[q][1]] = _find(owner, q)
    return out
