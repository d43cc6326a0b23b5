"""Sources nested inside a larger one: the local residual velocity, a pure numerical kernel.

A tunnel's settlement trough or a landslide inside a subsidence bowl adds its motion to the bowl's
and often makes no velocity peak of its own, so the peak split (``split.py``) keeps it in the
bowl's part. Its footprint is narrow (a trough 50-150 m wide, a landslide a few hundred metres
long) where the bowl's is broad (1-3 km across). A pixel's local residual, its velocity minus the
median velocity of the pixels within a radius of it, is therefore nearly flat over the bowl (which
changes little over a few hundred metres) and on stable ground (the atmosphere's share of the
velocity is correlated over kilometres: the residual's noise is a fraction of the velocity's), and
stands out where a narrow source adds to its host. ``residual_cores`` splits those places off a
part when they form a cluster of their own.

The moving pixels of the opposite sign are left out of a pixel's median: across a fault (a
post-seismic field moves towards the radar on one side, away on the other) they would make the
field's fastest strip, next to the trace, stand out as a source of its own.

A tunnel's trough is also of another kind than its host: it settles by a step when the boring
machine passes (an exponential settling over 1-4 months), where a bowl moves at a steady rate.
``local_step`` takes each moving pixel's series minus the median series of its neighbours (the
host's motion and the atmosphere, common to neighbours, cancel) and measures the best single step
in it (``rate.best_steps``); ``step_cores`` splits the places that step off their part. A
post-seismic field's step is common to its neighbours and cancels too, but for the strip beside its
fault, where the step falls off fastest: that strip steps at the epoch its host steps at, and
``step_cores`` leaves it there.
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy.spatial import cKDTree

from insarlake.geo import EARTH_RADIUS_M
from insarlake.hotspots.geometry import unit_vectors
from insarlake.hotspots.rate import STEP_EDGE_EPOCHS, _median, _part_series, best_step, best_steps, step_f_at
from insarlake.spatial.kernel import local_dbscan

# A pixel with fewer neighbours than this within the radius (itself included) has no residual.
MIN_NEIGHBOURS = 4
# ``local_step``'s median series is of at most this many neighbours (every k-th by distance where
# there are more): a median of 64 has ~1/8 of one series' noise, and a dense city (thousands of
# points a km^2) costs no more than a village.
MAX_STEP_NEIGHBOURS = 64


def local_residual(lon_deg, lat_deg, velocity_mm_yr, moving_sign, radius_m: float,
                   query: np.ndarray | None = None) -> np.ndarray:
    """Local residual (q,) float64 in mm/yr of the ``query`` pixels (bool mask (n,); None: all):
    the pixel's velocity minus the median velocity of the pixels within ``radius_m`` great-circle
    metres of it (itself included), the pixels moving with the opposite sign left out; NaN where
    fewer than MIN_NEIGHBOURS are left.

    lon_deg, lat_deg, velocity_mm_yr: (n,); moving_sign: (n,) -1, 0 or +1, the sign of a moving
    pixel's motion (0: not moving)."""
    lon = np.asarray(lon_deg, np.float64)
    lat = np.asarray(lat_deg, np.float64)
    velocity = np.asarray(velocity_mm_yr, np.float64)
    sign = np.asarray(moving_sign, np.int8)
    n = lon.shape[0]
    if lon.ndim != 1 or lat.shape != (n,) or velocity.shape != (n,) or sign.shape != (n,):
        raise ValueError("lon_deg, lat_deg, velocity_mm_yr and moving_sign must have the same shape (n,)")
    if not (np.isfinite(lon).all() and np.isfinite(lat).all() and np.isfinite(velocity).all()):
        raise ValueError("lon_deg, lat_deg and velocity_mm_yr must be finite")
    if not radius_m > 0:
        raise ValueError(f"radius_m must be > 0, got {radius_m}")
    rows = np.arange(n) if query is None else np.flatnonzero(np.asarray(query, bool))
    out = np.full(rows.size, np.nan)
    if n == 0 or rows.size == 0:
        return out
    xyz = np.column_stack(unit_vectors(np.radians(lon), np.radians(lat)))
    for k, i, near in _neighbourhoods(xyz, sign, rows, radius_m):
        out[k] = velocity[i] - np.median(velocity[near])
    return out


def _neighbourhoods(xyz: np.ndarray, sign: np.ndarray, rows: np.ndarray, radius_m: float):
    """Yields (k, i, near) for each query pixel i = rows[k] that keeps at least MIN_NEIGHBOURS:
    near, the index array of the pixels within radius_m great-circle metres of it (itself
    included), those moving with the opposite sign left out. xyz: (n, 3) unit vectors; sign: (n,)
    -1, 0 or +1."""
    chord = 2.0 * np.sin(0.5 * radius_m / EARTH_RADIUS_M)
    for k, (i, near) in enumerate(zip(rows, cKDTree(xyz).query_ball_point(xyz[rows], chord))):
        near = np.asarray(near, np.int64)
        if sign[i] != 0:
            near = near[sign[near] != -sign[i]]
        if near.size >= MIN_NEIGHBOURS:
            yield k, i, near


def local_series(lon_deg, lat_deg, series_mm, moving_sign, radius_m: float,
                 query: np.ndarray | None = None) -> np.ndarray:
    """Local series (q, T) float64 in mm of the ``query`` pixels (bool mask (n,); None: all): the
    pixel's series minus the median series of the pixels within ``radius_m`` great-circle metres of
    it (itself included; the pixels moving with the opposite sign left out; at most
    MAX_STEP_NEIGHBOURS, evenly by distance). A row is NaN where fewer than MIN_NEIGHBOURS are
    left, an epoch NaN where the pixel or all its neighbours miss it.

    lon_deg, lat_deg: (n,); series_mm: (n, T) displacements (NaN: missing); moving_sign: (n,) -1,
    0 or +1, as ``local_residual``."""
    lon = np.asarray(lon_deg, np.float64)
    lat = np.asarray(lat_deg, np.float64)
    series = np.asarray(series_mm, np.float64)
    sign = np.asarray(moving_sign, np.int8)
    n = lon.shape[0]
    if lon.ndim != 1 or lat.shape != (n,) or sign.shape != (n,) or series.ndim != 2 or series.shape[0] != n:
        raise ValueError("lon_deg, lat_deg and moving_sign must be (n,) and series_mm (n, T)")
    if not (np.isfinite(lon).all() and np.isfinite(lat).all()):
        raise ValueError("lon_deg and lat_deg must be finite")
    if not radius_m > 0:
        raise ValueError(f"radius_m must be > 0, got {radius_m}")
    rows = np.arange(n) if query is None else np.flatnonzero(np.asarray(query, bool))
    residual = np.full((rows.size, series.shape[1]), np.nan)
    if n == 0 or rows.size == 0:
        return residual
    xyz = np.column_stack(unit_vectors(np.radians(lon), np.radians(lat)))
    for k, i, near in _neighbourhoods(xyz, sign, rows, radius_m):
        if near.size > MAX_STEP_NEIGHBOURS:
            by_distance = near[np.argsort(np.sum((xyz[near] - xyz[i]) ** 2, axis=1), kind="stable")]
            near = by_distance[np.linspace(0, near.size - 1, MAX_STEP_NEIGHBOURS).astype(np.int64)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)     # an epoch no neighbour has: NaN
            residual[k] = series[i] - np.nanmedian(series[near], axis=0)
    return residual


def local_step(lon_deg, lat_deg, series_mm, t_years, moving_sign, radius_m: float,
               query: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(F (q,), step_mm (q,)) of the ``query`` pixels (bool mask (n,); None: all): the best single
    step (``rate.best_steps``: beside a trend and an annual cycle) in the pixel's ``local_series``
    (radius_m); NaN where it has no local series or one too short for a step. A missing epoch of
    the local series takes its mean over the pixel's other epochs.

    lon_deg, lat_deg: (n,); series_mm: (n, T) displacements (NaN: missing) at t_years (T,) years;
    moving_sign: (n,) -1, 0 or +1, as ``local_residual``."""
    t = np.asarray(t_years, np.float64)
    shape = np.shape(series_mm)
    if len(shape) == 2 and (t.shape != (shape[1],) or not np.isfinite(t).all()):
        raise ValueError(f"t_years must be finite and of shape (T,) = ({shape[1]},), got {t.shape}")
    wanted = np.ones(np.size(lon_deg), bool) if query is None else np.asarray(query, bool)
    short = t.size < 2 * STEP_EDGE_EPOCHS + 6           # no step fits: the neighbours are not searched
    residual = local_series(lon_deg, lat_deg, series_mm, moving_sign, radius_m, wanted & (not short))
    f_stat, step = np.full(int(wanted.sum()), np.nan), np.full(int(wanted.sum()), np.nan)
    if short:
        return f_stat, step
    finite = np.isfinite(residual)
    enough = finite.sum(axis=1) >= 2 * STEP_EDGE_EPOCHS + 6
    if not enough.any():
        return f_stat, step
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(residual[enough], axis=1, keepdims=True)
    filled = np.where(finite[enough], residual[enough], mean)
    f_stat[enough], _, step[enough] = best_steps(filled, t)
    return f_stat, step


def residual_cores(lon_deg, lat_deg, excess_z, residual_z, part, level_z: float, share: float, eps_m: float,
                   min_samples: int, min_pixels: int, rim_share: float) -> np.ndarray:
    """``part`` (n,) int64 with the nested sources split off as parts of their own (numbered after
    the existing ones; -1 stays -1).

    excess_z, residual_z: (n,) signed (velocity - v0) / sigma and local residual / sigma (NaN: none)
    of one cluster's pixels; part: their part index (``split.candidate_parts``). Inside each part
    the pixels whose residual has the sign of their motion, with |residual_z| > level_z and
    |residual_z| > share * |excess_z|, are flagged and clustered (DBSCAN, eps_m, min_samples); a
    cluster of at least min_pixels becomes a part, unless more than ``rim_share`` of the rest of its
    part lies within 2 eps_m of it: then the part is that cluster's own rim (a landslide and its
    slower edge) and stays whole."""
    lon, lat = np.asarray(lon_deg, np.float64), np.asarray(lat_deg, np.float64)
    z, r = np.asarray(excess_z, np.float64), np.asarray(residual_z, np.float64)
    out = np.asarray(part, np.int64).copy()
    n = lon.shape[0]
    if not (lat.shape == z.shape == r.shape == out.shape == (n,)):
        raise ValueError("lon_deg, lat_deg, excess_z, residual_z and part must have the same shape (n,)")
    if not (level_z > 0 and share >= 0 and eps_m > 0 and min_samples >= 1 and min_pixels >= 1
            and 0 <= rim_share <= 1):
        raise ValueError("level_z and eps_m must be > 0, share >= 0, min_samples and min_pixels >= 1, "
                         "rim_share in [0, 1]")
    with np.errstate(invalid="ignore"):
        flagged = ((out >= 0) & (np.sign(r) == np.sign(z)) & (np.abs(r) > level_z) & (np.abs(r) > share * np.abs(z)))
    if flagged.sum() < min_pixels:
        return out
    lat_rad, lon_rad = np.radians(lat), np.radians(lon)
    xyz = np.column_stack(unit_vectors(lon_rad, lat_rad))
    next_part = int(out.max()) + 1
    for q in np.unique(out[flagged]):
        members = np.flatnonzero(out == q)
        for core in _flag_clusters(lat_rad, lon_rad, members[flagged[members]], eps_m, min_samples, min_pixels):
            rest = members[out[members] == q]
            rest = rest[~np.isin(rest, core)]
            if rest.size and _near_share(xyz, core, rest, 2.0 * eps_m) > rim_share:
                continue
            out[core] = next_part
            next_part += 1
    return out


def step_cores(lon_deg, lat_deg, motion_mm, step_f, step_mm, part, series_mm, t_years, min_f: float, share: float,
               eps_m: float, min_samples: int, min_pixels: int, rim_share: float, host_f: float) -> np.ndarray:
    """``part`` (n,) int64 with the sources that step split off as parts of their own (numbered
    after the existing ones; -1 stays -1).

    motion_mm: (n,) signed (velocity - v0) x the series' span in years, the pixel's motion;
    step_f, step_mm: (n,) ``local_step`` of one cluster's pixels (NaN: none); part: their parts. A
    pixel in a part is flagged when its local step has F >= min_f, the sign of its motion and
    |step_mm| > share x |motion_mm| (a step alone, at mid-span, is 2/3 of the motion its trend
    reads; a bowl's pixel that a weak trough passes is the bowl's). The flagged pixels of the whole
    cluster are clustered (DBSCAN, eps_m, min_samples): a trough runs across the parts of the bowls
    and fields it passes, and its pieces are one source. A cluster of at least min_pixels becomes a
    part, unless the rest of the parts it takes pixels from (their pixels outside it)
    * lies within eps_m of it for more than ``rim_share``: those parts are its own edge (a trough
      standing alone) and stay whole;
    * or steps, in its median series (each pixel's sign taken out), at the epoch of the cluster's
      median series' best step with F >= host_f in the direction of its motion (``rate.step_f_at``):
      the cluster is the fastest strip of one event (a post-seismic field beside its fault, where
      the step changes fastest across the strip and stands out from its neighbours' median).
    series_mm: (n, T) mm (NaN: missing) at t_years (T,) years."""
    lon, lat = np.asarray(lon_deg, np.float64), np.asarray(lat_deg, np.float64)
    motion = np.asarray(motion_mm, np.float64)
    f_stat, step = np.asarray(step_f, np.float64), np.asarray(step_mm, np.float64)
    out = np.asarray(part, np.int64).copy()
    n = lon.shape[0]
    if not (lat.shape == motion.shape == f_stat.shape == step.shape == out.shape == (n,)):
        raise ValueError("lon_deg, lat_deg, motion_mm, step_f, step_mm and part must have the same shape (n,)")
    _, series, t = _part_series(out, series_mm, t_years, n)
    if not (min_f > 0 and share >= 0 and eps_m > 0 and min_samples >= 1 and min_pixels >= 1
            and 0 <= rim_share <= 1 and host_f > 0):
        raise ValueError("min_f, eps_m and host_f must be > 0, share >= 0, min_samples and min_pixels >= 1, "
                         "rim_share in [0, 1]")
    signed = series * np.sign(motion)[:, None]
    with np.errstate(invalid="ignore"):
        hits = np.flatnonzero((out >= 0) & (f_stat >= min_f) & (np.sign(step) == np.sign(motion))
                              & (np.abs(step) > share * np.abs(motion)))
    if hits.size < min_pixels:
        return out
    lat_rad, lon_rad = np.radians(lat), np.radians(lon)
    xyz = np.column_stack(unit_vectors(lon_rad, lat_rad))
    next_part = int(out.max()) + 1
    for core in _flag_clusters(lat_rad, lon_rad, hits, eps_m, min_samples, min_pixels):
        rest = np.flatnonzero(np.isin(out, np.unique(out[core])))
        rest = rest[~np.isin(rest, core)]
        if rest.size == 0 or _near_share(xyz, core, rest, eps_m) > rim_share:
            continue                                  # the core is its parts already, or they are its edge
        _, epoch, _ = best_step(_median(signed[core]), t)
        rest_median = _median(signed[rest])
        if epoch >= 0 and np.isfinite(rest_median).sum() >= 2 * STEP_EDGE_EPOCHS + 6:
            host, host_step = step_f_at(rest_median, t, epoch)
            if host >= host_f and host_step > 0:
                continue
        out[core] = next_part
        next_part += 1
    return out


def _flag_clusters(lat_rad: np.ndarray, lon_rad: np.ndarray, hits: np.ndarray, eps_m: float, min_samples: int,
                   min_pixels: int):
    """Yields the DBSCAN clusters (eps_m, min_samples) of the pixels ``hits`` (index array into
    lat_rad, lon_rad: (n,) radians) that hold at least min_pixels, each as an index array."""
    if hits.size < min_pixels:
        return
    _, root = local_dbscan(lat_rad[hits], lon_rad[hits], np.zeros(hits.size, np.int8), eps_m / EARTH_RADIUS_M,
                           min_samples)
    for c in np.unique(root[root >= 0]):
        core = hits[root == c]
        if core.size >= min_pixels:
            yield core


def _near_share(xyz: np.ndarray, core: np.ndarray, rest: np.ndarray, within_m: float) -> float:
    """Share of the pixels ``rest`` within within_m (great circle) of a pixel of ``core``; xyz: (n, 3)
    unit vectors, core and rest: index arrays (rest non-empty)."""
    chord = 2.0 * np.sin(0.5 * within_m / EARTH_RADIUS_M)
    near, _ = cKDTree(xyz[core]).query(xyz[rest], distance_upper_bound=chord)
    return float(np.mean(np.isfinite(near)))
