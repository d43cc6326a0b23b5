"""A hotspot's slow rim: hysteresis growth, a pure numerical kernel.

A source's footprint (where it moves by a few mm) reaches beyond where its velocity passes z_pixel
noise sigmas: a weak uplift's pixels above 3 sigma are its centre only, and the hotspot matches a
quarter of the source. ``grow_rims`` adds to each retained hotspot the pixels of its sign above a
lower level, linked to its own pixels of that sign by chains of such pixels no more than a radius
apart (hysteresis thresholding, as in Canny's edge detector: the low level only extends what the
high level found, so it adds no hotspot of its own). A chain that reaches two hotspots (a tunnel
beside a bowl, two bowls) is given to neither: its velocity does not tell which source a pixel
between them belongs to, and by nearness the small one would take the broad one's rim.

The Spark stage runs the same rule with the distributed DBSCAN (min_samples 1) for the chains
(``stage.grow_hotspot_rims``); this kernel is the harness's and the tests' reference.
"""
from __future__ import annotations

import numpy as np

from insarlake.geo import EARTH_RADIUS_M
from insarlake.spatial.kernel import local_dbscan


def rim_candidates(excess_z, member, grow_z: float) -> np.ndarray:
    """(n,) bool: the pixels a rim may take, those in no candidate (``member`` (n,) bool false)
    whose |excess_z| (signed (velocity - v0) / sigma, NaN: no velocity) exceeds grow_z."""
    z = np.asarray(excess_z, np.float64)
    with np.errstate(invalid="ignore"):
        return ~np.asarray(member, bool) & (np.abs(z) > grow_z)


def grow_rims(lon_deg, lat_deg, excess_z, hotspot_id, member, grow_z: float, radius_m: float) -> np.ndarray:
    """``hotspot_id`` (n,) int64 with each hotspot's rim joined to it.

    lon_deg, lat_deg: (n,) degrees; excess_z: (n,) signed (velocity - v0) / sigma (NaN: no
    velocity); hotspot_id: (n,) the retained hotspot of each pixel, -1 for none; member: (n,) bool,
    the pixel is in a candidate, retained or not (never grown). A pixel of ``rim_candidates`` joins
    hotspot h when a chain of such pixels of its sign, each within radius_m great-circle metres of
    the next, links it to a pixel of h of that sign, and to no pixel of another hotspot."""
    lon = np.asarray(lon_deg, np.float64)
    lat = np.asarray(lat_deg, np.float64)
    z = np.asarray(excess_z, np.float64)
    out = np.asarray(hotspot_id, np.int64).copy()
    held = np.asarray(member, bool)
    n = lon.shape[0]
    if lon.ndim != 1 or lat.shape != (n,) or z.shape != (n,) or out.shape != (n,) or held.shape != (n,):
        raise ValueError("lon_deg, lat_deg, excess_z, hotspot_id and member must have the same shape (n,)")
    if not (np.isfinite(lon).all() and np.isfinite(lat).all()):
        raise ValueError("lon_deg and lat_deg must be finite")
    if not (grow_z > 0 and radius_m > 0):
        raise ValueError(f"grow_z and radius_m must be > 0, got {grow_z}, {radius_m}")
    if ((out >= 0) & ~held).any():
        raise ValueError("every pixel of a hotspot must be a member of a candidate")
    free = rim_candidates(z, held, grow_z)
    sign = np.sign(np.nan_to_num(z))
    for s in (-1.0, 1.0):
        nodes = np.flatnonzero((sign == s) & (free | (out >= 0)))
        if not (out[nodes] >= 0).any() or not free[nodes].any():
            continue
        _, root = local_dbscan(np.radians(lat[nodes]), np.radians(lon[nodes]), np.zeros(nodes.size, np.int8),
                               radius_m / EARTH_RADIUS_M, 1)
        seeded = out[nodes] >= 0
        for r in np.unique(root[seeded]):
            owners = np.unique(out[nodes[seeded & (root == r)]])
            if owners.size == 1:
                out[nodes[(root == r) & ~seeded]] = owners[0]
    return out
