"""Splitting a candidate that holds several deformation sources: the pure numerical kernel.

Neighbouring sources (a tunnel beside a subsidence bowl, two bowls) are joined by their moving
rims into one DBSCAN cluster of moving pixels. Their centres are not joined: the velocity field has
one peak per source. The split is a component tree over velocity levels: the candidate's pixels
above the next level (``z * level_ratio`` noise sigmas) are clustered again with the same DBSCAN;
two or more children of at least ``min_pixels`` mean two sources, each child is split again in turn,
and a single child is followed upwards until the peak. Every pixel of the candidate then joins a
final core: the one nearest in units of the core's standard distance, so a broad field keeps its
rim around a small core inside it. Nothing is lost and a candidate with one peak stays whole.

``candidate_parts`` applies it to one cluster of moving pixels of either sign: each sign's pixels
are clustered (lobes), each lobe is split at its peaks, and two parts of opposite signs become one
source again when they meet where both move fastest. That is a fault: a post-seismic field moves
towards the radar on one side and away on the other, the fastest next to the trace, with no
stable ground between. Two sources of opposite signs side by side (an uplift beside a bowl) meet
at their slow rims instead.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from insarlake.geo import EARTH_RADIUS_M
from insarlake.hotspots.geometry import unit_vectors
from insarlake.spatial.kernel import local_dbscan

# Levels stop rising here (noise sigmas): no real field needs more, and it bounds the recursion.
_MAX_LEVEL_Z = 1e4
# A core's spread is at least this (radians, 1 m), for a core whose pixels share one position.
_MIN_SPREAD_RAD = 1.0 / EARTH_RADIUS_M


def split_candidate(lon_deg, lat_deg, excess_z, z_start: float, level_ratio: float, eps_m: float,
                    min_samples: int, min_pixels: int) -> np.ndarray:
    """Part index (n,) int64, 0..m-1, of every pixel of one candidate.

    lon_deg, lat_deg: (n,) degrees; excess_z: (n,) |velocity - v0| / sigma, the pixel's motion in
    noise sigmas (all above ``z_start``, the level the candidate was formed at); eps_m, min_samples:
    the DBSCAN of the candidate; min_pixels: the smallest core that counts as a source;
    level_ratio > 1: the ratio between successive levels."""
    lon, lat, z = _pixels(lon_deg, lat_deg, excess_z)
    n = lon.shape[0]
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
    return _share_out(np.column_stack(unit_vectors(lon_rad, lat_rad)), cores)


def _share_out(xyz: np.ndarray, cores: list[np.ndarray]) -> np.ndarray:
    """Core index (n,) int64 of every pixel: its own core, else the core with the smallest
    distance to the pixel in units of the core's standard distance (xyz: (n, 3) unit vectors).

    A small core inside a broad field (a tunnel's trough in a post-seismic lobe) reaches only
    its own surroundings; by plain nearest core it would take the field's rim around it too."""
    reach = np.empty((xyz.shape[0], len(cores)))
    for i, core in enumerate(cores):
        points = xyz[core]
        spread = np.sqrt(((points - points.mean(axis=0)) ** 2).sum(axis=1).mean())
        distance, _ = cKDTree(points).query(xyz)
        reach[:, i] = distance / max(spread, _MIN_SPREAD_RAD)
    out = np.argmin(reach, axis=1).astype(np.int64)
    for i, core in enumerate(cores):
        out[core] = i
    return out


def candidate_parts(lon_deg, lat_deg, excess_z, z_start: float, level_ratio: float | None, eps_m: float,
                    min_samples: int, min_pixels: int, contact_ratio: float) -> np.ndarray:
    """Part index (n,) int64 (0..m-1; -1: a pixel in no lobe of its sign) of every pixel of one
    cluster of moving pixels of both signs.

    excess_z: (n,) signed (velocity - v0) / sigma, |excess_z| > z_start; level_ratio: the peak
    split's (``split_candidate``; None: lobes are not split); contact_ratio: two parts of opposite
    signs merge when their contact pixels (those within eps_m of the other part) move on average
    at least contact_ratio times as fast (|excess_z|) as the two parts' pixels."""
    lon, lat, z = _pixels(lon_deg, lat_deg, excess_z)
    n = lon.shape[0]
    if not (contact_ratio > 0 and eps_m > 0 and min_samples >= 1 and min_pixels >= 1):
        raise ValueError("contact_ratio and eps_m must be > 0, min_samples and min_pixels >= 1")
    part = np.full(n, -1, np.int64)
    lat_rad, lon_rad = np.radians(lat), np.radians(lon)
    eps_rad = eps_m / EARTH_RADIUS_M
    parts: list[np.ndarray] = []
    signs: list[float] = []
    for sign in (-1.0, 1.0):
        idx = np.flatnonzero(np.sign(z) == sign)
        if len(idx) == 0:
            continue
        _, root = local_dbscan(lat_rad[idx], lon_rad[idx], np.zeros(len(idx), np.int8), eps_rad, min_samples)
        for r in np.unique(root[root >= 0]):
            lobe = idx[root == r]
            pieces = np.zeros(len(lobe), np.int64) if level_ratio is None else split_candidate(
                lon[lobe], lat[lobe], np.abs(z[lobe]), z_start, level_ratio, eps_m, min_samples, min_pixels)
            for q in range(int(pieces.max()) + 1):
                parts.append(lobe[pieces == q])
                signs.append(sign)
    if not parts:
        return part
    owner = np.arange(len(parts))
    xyz = np.column_stack(unit_vectors(lon_rad, lat_rad))
    chord = 2.0 * np.sin(0.5 * eps_rad)
    trees = [cKDTree(xyz[p]) for p in parts]
    speed = np.abs(z)
    for a in range(len(parts)):
        for b in range(a + 1, len(parts)):
            if signs[a] == signs[b] or _find(owner, a) == _find(owner, b):
                continue
            near_a = trees[b].query_ball_point(xyz[parts[a]], chord, return_length=True) > 0
            if not near_a.any():
                continue
            near_b = trees[a].query_ball_point(xyz[parts[b]], chord, return_length=True) > 0
            contact = np.concatenate([speed[parts[a]][near_a], speed[parts[b]][near_b]]).mean()
            whole = np.concatenate([speed[parts[a]], speed[parts[b]]]).mean()
            if contact >= contact_ratio * whole:
                owner[_find(owner, b)] = _find(owner, a)
    roots = np.array([_find(owner, i) for i in range(len(parts))])
    for number, r in enumerate(np.unique(roots)):
        for i in np.flatnonzero(roots == r):
            part[parts[i]] = number
    return part


def _find(owner: np.ndarray, i: int) -> int:
    while owner[i] != i:
        i = owner[i]
    return int(i)


def _pixels(lon_deg, lat_deg, excess_z) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three (n,) float64 arrays, checked of one shape and finite."""
    lon = np.asarray(lon_deg, np.float64)
    lat = np.asarray(lat_deg, np.float64)
    z = np.asarray(excess_z, np.float64)
    if lon.ndim != 1 or lat.shape != lon.shape or z.shape != lon.shape:
        raise ValueError(f"lon_deg, lat_deg and excess_z must have the same shape (n,), got {lon.shape}, {lat.shape}, {z.shape}")
    if not (np.isfinite(lon).all() and np.isfinite(lat).all() and np.isfinite(z).all()):
        raise ValueError("lon_deg, lat_deg and excess_z must be finite")
    return lon, lat, z


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
