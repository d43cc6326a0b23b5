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
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from insarlake.geo import EARTH_RADIUS_M
from insarlake.hotspots.geometry import unit_vectors
from insarlake.spatial.kernel import local_dbscan

# A pixel with fewer neighbours than this within the radius (itself included) has no residual.
MIN_NEIGHBOURS = 4


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
    chord = 2.0 * np.sin(0.5 * radius_m / EARTH_RADIUS_M)
    neighbours = cKDTree(xyz).query_ball_point(xyz[rows], chord)
    for k, (i, near) in enumerate(zip(rows, neighbours)):
        near = np.asarray(near, np.int64)
        if sign[i] != 0:
            near = near[sign[near] != -sign[i]]
        if near.size >= MIN_NEIGHBOURS:
            out[k] = velocity[i] - np.median(velocity[near])
    return out


def residual_cores(lon_deg, lat_deg, excess_z, residual_z, part, level_z: float, share: float, eps_m: float,
                   min_samples: int, min_pixels: int, rim_share: float) -> np.ndarray:
    """``part`` (n,) int64 with the nested sources split off as parts of their own (numbered after
    the existing ones; -1 stays -1).

    excess_z, residual_z: (n,) signed (velocity - v0) / sigma and local residual / sigma (NaN: none)
    of one cluster's pixels; part: their part index (``split.candidate_parts``). Inside each part
    the pixels whose residual has the sign of their motion, with |residual_z| > level_z and
    |residual_z| > share * |excess_z|, are clustered (DBSCAN, eps_m, min_samples); a cluster of at
    least min_pixels becomes a part, unless more than ``rim_share`` of the rest of its part lies
    within 2 eps_m of it: then the part is that cluster's own rim (a landslide and its slower edge)
    and stays whole."""
    lon = np.asarray(lon_deg, np.float64)
    lat = np.asarray(lat_deg, np.float64)
    z = np.asarray(excess_z, np.float64)
    r = np.asarray(residual_z, np.float64)
    out = np.asarray(part, np.int64).copy()
    n = lon.shape[0]
    if lat.shape != (n,) or z.shape != (n,) or r.shape != (n,) or out.shape != (n,):
        raise ValueError("lon_deg, lat_deg, excess_z, residual_z and part must have the same shape (n,)")
    if not (level_z > 0 and share >= 0 and eps_m > 0 and min_samples >= 1 and min_pixels >= 1
            and 0 <= rim_share <= 1):
        raise ValueError("level_z and eps_m must be > 0, share >= 0, min_samples and min_pixels >= 1, "
                         "rim_share in [0, 1]")
    with np.errstate(invalid="ignore"):
        flagged = ((np.sign(r) == np.sign(z)) & (np.abs(r) > level_z) & (np.abs(r) > share * np.abs(z)))
    if flagged.sum() < min_pixels:
        return out
    lat_rad, lon_rad = np.radians(lat), np.radians(lon)
    xyz = np.column_stack(unit_vectors(lon_rad, lat_rad))
    rim_chord = 2.0 * np.sin(eps_m / EARTH_RADIUS_M)     # 2 eps_m, as a chord of the unit sphere
    next_part = int(out.max()) + 1 if n else 0
    for q in np.unique(out[out >= 0]):
        members = np.flatnonzero(out == q)
        hits = members[flagged[members]]
        if hits.size < min_pixels:
            continue
        _, root = local_dbscan(lat_rad[hits], lon_rad[hits], np.zeros(hits.size, np.int8),
                               eps_m / EARTH_RADIUS_M, min_samples)
        for c in np.unique(root[root >= 0]):
            core = hits[root == c]
            if core.size < min_pixels:
                continue
            rest = members[out[members] == q]
            rest = rest[~np.isin(rest, core)]
            if rest.size:
                near, _ = cKDTree(xyz[core]).query(xyz[rest], distance_upper_bound=rim_chord)
                if np.mean(np.isfinite(near)) > rim_share:
                    continue
            out[core] = next_part
            next_part += 1
    return out
