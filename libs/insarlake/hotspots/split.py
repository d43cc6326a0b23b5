"""Splitting a candidate that holds several deformation sources: the pure numerical kernel.

Neighbouring sources (a tunnel beside a subsidence bowl, two bowls) are joined by their moving
rims into one DBSCAN cluster of moving pixels. Their centres are not joined: the velocity field has
one peak per source. The split is a component tree over velocity levels: the candidate's pixels
above the next level (``z * level_ratio`` noise sigmas) are clustered again with the same DBSCAN;
two or more children of at least ``min_pixels`` mean two sources, each child is split again in turn,
and a single child is followed upwards until the peak. Every pixel of the candidate then joins the
nearest final core (the rim is shared out by distance), so nothing is lost and a candidate with one
peak stays whole.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from insarlake.geo import EARTH_RADIUS_M
from insarlake.hotspots.geometry import unit_vectors
from insarlake.spatial.kernel import local_dbscan

# Levels stop rising here (noise sigmas): no real field needs more, and it bounds the recursion.
_MAX_LEVEL_Z = 1e4


def split_candidate(lon_deg, lat_deg, excess_z, z_start: float, level_ratio: float, eps_m: float,
                    min_samples: int, min_pixels: int) -> np.ndarray:
    """Part index (n,) int64, 0..m-1, of every pixel of one candidate.

    lon_deg, lat_deg: (n,) degrees; excess_z: (n,) |velocity - v0| / sigma, the pixel's motion in
    noise sigmas (all above ``z_start``, the level the candidate was formed at); eps_m, min_samples:
    the DBSCAN of the candidate; min_pixels: the smallest core that counts as a source;
    level_ratio > 1: the ratio between successive levels."""
    lon = np.asarray(lon_deg, np.float64)
    lat = np.asarray(lat_deg, np.float64)
    z = np.asarray(excess_z, np.float64)
    n = lon.shape[0]
    if lat.shape != (n,) or z.shape != (n,):
        raise ValueError(f"lon_deg, lat_deg and excess_z must have the same shape (n,), got {lon.shape}, {lat.shape}, {z.shape}")
    if not (np.isfinite(lon).all() and np.isfinite(lat).all() and np.isfinite(z).all()):
        raise ValueError("lon_deg, lat_deg and excess_z must be finite")
    if not level_ratio > 1.0:
        raise ValueError(f"level_ratio must be > 1, got {level_ratio}")
    if not (z_start > 0 and eps_m > 0 and min_samples >= 1 and min_pixels >= 1):
        raise ValueError("z_start and eps_m must be > 0, min_samples and min_pixels >= 1")
    if n == 0:
        return np.zeros(0, np.int64)
    lat_rad, lon_rad = np.radians(lat), np.radians(lon)
    cores = _cores(np.arange(n), z_start, lat_rad, lon_rad, z, level_ratio, eps_m / EARTH_RADIUS_M,
                   min_samples, min_pixels)
    if len(cores) == 1:
        return np.zeros(n, np.int64)
    owner = np.concatenate([np.full(len(c), i, np.int64) for i, c in enumerate(cores)])
    points = np.concatenate(cores)
    xyz = np.column_stack(unit_vectors(lon_rad, lat_rad))
    _, nearest = cKDTree(xyz[points]).query(xyz)
    return owner[nearest]


def _cores(members: np.ndarray, z: float, lat: np.ndarray, lon: np.ndarray, excess_z: np.ndarray,
           ratio: float, eps_rad: float, min_samples: int, min_pixels: int) -> list[np.ndarray]:
    """The final cores (index arrays) inside ``members``, the pixels of a component at level z."""
    while True:
        z *= ratio
        above = members[excess_z[members] > z]
        children = _components(above, lat, lon, eps_rad, min_samples, min_pixels)
        if len(children) == 0 or z > _MAX_LEVEL_Z:
            return [members]
        if len(children) == 1:
            members = children[0]
            continue
        out: list[np.ndarray] = []
        for child in children:
            out += _cores(child, z, lat, lon, excess_z, ratio, eps_rad, min_samples, min_pixels)
        return out


def _components(idx: np.ndarray, lat: np.ndarray, lon: np.ndarray, eps_rad: float, min_samples: int,
                min_pixels: int) -> list[np.ndarray]:
    """DBSCAN clusters of the pixels ``idx`` with at least min_pixels members, by smallest index."""
    if len(idx) < max(min_samples, min_pixels):
        return []
    _, root = local_dbscan(lat[idx], lon[idx], np.zeros(len(idx), np.int8), eps_rad, min_samples)
    out = []
    for r in np.unique(root[root >= 0]):
        part = idx[root == r]
        if len(part) >= min_pixels:
            out.append(part)
    return out
