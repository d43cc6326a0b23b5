"""Exact DBSCAN on one tile and its halo, in great-circle distance: the pure numerical kernel.

Distance test, exactly as scikit-learn's ``DBSCAN(metric="haversine")`` (BallTree radius query):
points p, q (radians) are neighbours when
``sin²((φp-φq)/2) + cos φp cos φq sin²((λp-λq)/2) <= sin²(eps/2)``, eps in radians (eps_m / R).
min_samples counts the point itself.

Zones (what the Spark side knows about each local point):

* 0 - owned: the point lies in this tile; every point within eps of it is present here, and the
  kernel gives its final answer (core flag, and the local cluster of a core or border point);
* 1 - inner halo: within eps of the tile (conservatively); its neighbours are all present too, so
  its core flag is exact, and cores here link the tile's clusters to the neighbouring tiles';
* 2 - outer halo: within 2 eps; only counted as neighbours of zone 0/1 points.

Neighbour search uses a grid in (lat, lon) whose cells are small enough that any two points in one
cell are neighbours (cell height eps/2, cell width eps/(2 cos φ) at the smallest |latitude| present,
times a safety margin): a dense cell with >= min_samples points makes all its points core with no
distance computed, and all cores of a cell join one cluster at once. Core points of neighbouring
cells are joined by union-find, adjacent cells first, skipping the pair test when both cells
already share a root and never searching cell offsets that cannot hold a point within eps, so a
dense city costs a few distance tests per point, not one per pair of neighbours.

Border rule (documented, deterministic, independent of tiling): a non-core point with at least one
core neighbour joins the cluster of its nearest core neighbour; on equal distance the core with the
smaller local index wins, and the caller orders local points by pixel id, so that is the smaller id.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

# Cells are shrunk by this factor so that "same cell => neighbours" holds after rounding too.
_CELL_SAFETY = 0.999
# The grid needs cos(latitude) well away from 0: data within this many radians of a pole is refused.
_POLE_MARGIN_RAD = 1e-3


def lon_reach_rad(dist_rad: float, abs_lat_max_rad: float) -> float:
    """Largest longitude difference (radians) between two points within ``dist_rad`` of arc of each
    other when both lie at |latitude| <= ``abs_lat_max_rad``: asin(sin d / cos φ), or π when the
    circle reaches a pole."""
    c = math.cos(abs_lat_max_rad)
    if abs_lat_max_rad + dist_rad >= math.pi / 2 - _POLE_MARGIN_RAD or math.sin(dist_rad) >= c:
        return math.pi
    return math.asin(math.sin(dist_rad) / c)


@njit(cache=True)
def _rdist(lat_p, lon_p, cos_p, lat_q, lon_q, cos_q):
    s0 = math.sin(0.5 * (lat_p - lat_q))
    s1 = math.sin(0.5 * (lon_p - lon_q))
    return s0 * s0 + cos_p * cos_q * s1 * s1


@njit(cache=True)
def _find(parent, i):
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:       # path compression
        nxt = parent[i]
        parent[i] = root
        i = nxt
    return root


@njit(cache=True)
def _union(parent, a, b):
    """Join the sets of a and b; the smaller index becomes the root (roots = smallest member)."""
    ra = _find(parent, a)
    rb = _find(parent, b)
    if ra < rb:
        parent[rb] = ra
    elif rb < ra:
        parent[ra] = rb


@njit(cache=True)
def _neighbour_cells(cell, cell_row, cell_col, ukeys, ncols, ky, kx_row, out):
    """Indices of the occupied cells that may hold a neighbour of a point of ``cell`` (itself
    included): rows dy in -ky..ky, columns within kx_row[dy + ky] of its own."""
    m = 0
    row = cell_row[cell]
    col = cell_col[cell]
    for dy in range(-ky, ky + 1):
        kx = kx_row[dy + ky]
        if kx < 0:
            continue
        lo = (row + dy) * ncols + col - kx
        hi = (row + dy) * ncols + col + kx
        s = np.searchsorted(ukeys, lo)
        while s < ukeys.shape[0] and ukeys[s] <= hi:
            out[m] = s
            m += 1
            s += 1
    return m


@njit(cache=True)
def _local_dbscan(lat, lon, zone, eps, min_samples, cell_h, cell_w, ky, kx, kx_row):
    n = lat.shape[0]
    thr = math.sin(0.5 * eps) ** 2
    cosl = np.cos(lat)
    lat0 = lat.min()
    lon0 = lon.min()
    ci = np.empty(n, np.int64)
    cj = np.empty(n, np.int64)
    for i in range(n):
        ci[i] = int(math.floor((lat[i] - lat0) / cell_h))
        cj[i] = int(math.floor((lon[i] - lon0) / cell_w))
    ncols = cj.max() + 2 * kx + 1
    key = ci * ncols + cj + kx
    order = np.argsort(key, kind="mergesort")
    skey = key[order]
    # occupied cells: [start, end) in ``order``
    ncell = 1
    for i in range(1, n):
        if skey[i] != skey[i - 1]:
            ncell += 1
    ukeys = np.empty(ncell, np.int64)
    start = np.empty(ncell + 1, np.int64)
    c = 0
    ukeys[0] = skey[0]
    start[0] = 0
    for i in range(1, n):
        if skey[i] != skey[i - 1]:
            c += 1
            ukeys[c] = skey[i]
            start[c] = i
    start[ncell] = n
    cell_row = ukeys // ncols
    cell_col = ukeys % ncols
    nbr = np.empty((2 * ky + 1) * (2 * kx + 1), np.int64)

    # 1. core flags of zone 0/1 points (zone 2 flags stay False: unknown here)
    core = np.zeros(n, np.bool_)
    for c in range(ncell):
        size = start[c + 1] - start[c]
        m = -1
        for t in range(start[c], start[c + 1]):
            p = order[t]
            if zone[p] == 2:
                continue
            if size >= min_samples:
                core[p] = True
                continue
            if m < 0:
                m = _neighbour_cells(c, cell_row, cell_col, ukeys, ncols, ky, kx_row, nbr)
            count = size
            for k in range(m):
                d = nbr[k]
                if d == c:
                    continue
                for u in range(start[d], start[d + 1]):
                    q = order[u]
                    if _rdist(lat[p], lon[p], cosl[p], lat[q], lon[q], cosl[q]) <= thr:
                        count += 1
                        if count >= min_samples:
                            break
                if count >= min_samples:
                    break
            core[p] = count >= min_samples

    # exact cores (zone 0/1), grouped by cell
    exact = np.zeros(n, np.bool_)
    for i in range(n):
        exact[i] = core[i] and zone[i] != 2
    cstart = np.zeros(ncell + 1, np.int64)
    for c in range(ncell):
        cnt = 0
        for t in range(start[c], start[c + 1]):
            if exact[order[t]]:
                cnt += 1
        cstart[c + 1] = cstart[c] + cnt
    cores = np.empty(cstart[ncell], np.int64)
    for c in range(ncell):
        w = cstart[c]
        for t in range(start[c], start[c + 1]):
            if exact[order[t]]:
                cores[w] = order[t]
                w += 1

    # 2. union-find over exact cores: whole cells at once, then neighbouring cells
    parent = np.arange(n)
    for c in range(ncell):
        for t in range(cstart[c] + 1, cstart[c + 1]):
            _union(parent, cores[cstart[c]], cores[t])
    # adjacent cells first, then farther ones: in a dense area the second pass then finds the
    # cells already joined and skips the pair test
    for far in range(2):
        for c in range(ncell):
            if cstart[c + 1] == cstart[c]:
                continue
            m = _neighbour_cells(c, cell_row, cell_col, ukeys, ncols, ky, kx_row, nbr)
            for k in range(m):
                d = nbr[k]
                if d <= c or cstart[d + 1] == cstart[d]:
                    continue
                adjacent = abs(cell_row[d] - cell_row[c]) <= 1 and abs(cell_col[d] - cell_col[c]) <= 1
                if adjacent == (far == 1):
                    continue
                if _find(parent, cores[cstart[c]]) == _find(parent, cores[cstart[d]]):
                    continue
                joined = False
                for s in range(cstart[c], cstart[c + 1]):
                    p = cores[s]
                    for u in range(cstart[d], cstart[d + 1]):
                        q = cores[u]
                        if _rdist(lat[p], lon[p], cosl[p], lat[q], lon[q], cosl[q]) <= thr:
                            _union(parent, p, q)
                            joined = True
                            break
                    if joined:
                        break

    # 3. roots: cores of zone 0/1 -> their set's smallest index; owned borders -> nearest core's
    root = np.full(n, -1, np.int64)
    for i in range(n):
        if exact[i]:
            root[i] = _find(parent, i)
    for c in range(ncell):
        m = -1
        for t in range(start[c], start[c + 1]):
            p = order[t]
            if zone[p] != 0 or core[p]:
                continue
            if m < 0:
                m = _neighbour_cells(c, cell_row, cell_col, ukeys, ncols, ky, kx_row, nbr)
            best = np.inf
            best_q = -1
            for k in range(m):
                d = nbr[k]
                for u in range(cstart[d], cstart[d + 1]):
                    q = cores[u]
                    r = _rdist(lat[p], lon[p], cosl[p], lat[q], lon[q], cosl[q])
                    if r <= thr and (r < best or (r == best and q < best_q)):
                        best = r
                        best_q = q
            if best_q >= 0:
                root[p] = root[best_q]
    return core, root


def local_dbscan(lat_rad: np.ndarray, lon_rad: np.ndarray, zone: np.ndarray, eps: float,
                 min_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """DBSCAN of the points of one tile and its halo.

    lat_rad, lon_rad: (n,) float64 radians; zone: (n,) int8 in {0, 1, 2} (see module doc);
    eps: radians of arc; min_samples: >= 1, the point itself included.
    Returns ``(is_core, root)``, both (n,): is_core (bool) is exact for zones 0 and 1; root (int64)
    is, for zone 0/1 cores, the smallest local index of their local cluster, for zone 0 border points
    the root of their nearest core neighbour, and -1 for noise and for everything else.
    """
    lat = np.ascontiguousarray(lat_rad, dtype=np.float64)
    lon = np.ascontiguousarray(lon_rad, dtype=np.float64)
    zone = np.ascontiguousarray(zone, dtype=np.int8)
    n = lat.shape[0]
    if lon.shape != (n,) or zone.shape != (n,):
        raise ValueError(f"lat, lon and zone must have the same shape (n,), got {lat.shape}, {lon.shape}, {zone.shape}")
    if not (eps > 0 and math.isfinite(eps)):
        raise ValueError(f"eps must be a positive number of radians, got {eps}")
    if min_samples < 1:
        raise ValueError(f"min_samples must be >= 1, got {min_samples}")
    if n == 0:
        return np.zeros(0, np.bool_), np.zeros(0, np.int64)
    abs_lat_min = 0.0 if lat.min() <= 0.0 <= lat.max() else float(min(abs(lat.min()), abs(lat.max())))
    abs_lat_max = float(max(abs(lat.min()), abs(lat.max())))
    reach = lon_reach_rad(eps, abs_lat_max)
    if reach >= math.pi:
        raise ValueError(f"points within eps of a pole (|latitude| up to {math.degrees(abs_lat_max):.4f} deg) are not supported")
    cell_h = 0.5 * eps * _CELL_SAFETY
    cell_w = cell_h / math.cos(abs_lat_min)
    ky = int(math.ceil(eps / cell_h))
    kx = int(math.ceil(reach / cell_w))
    return _local_dbscan(lat, lon, zone, float(eps), int(min_samples), cell_h, cell_w, ky, kx,
                         _reachable_columns(eps, cell_h, cell_w, ky, kx, abs_lat_max))


def _reachable_columns(eps: float, cell_h: float, cell_w: float, ky: int, kx: int, abs_lat_max: float) -> np.ndarray:
    """For each row offset dy in -ky..ky, the largest column offset whose cells can hold a point
    within eps (-1: none). Two cells dy rows and dx columns apart are at least (|dy|-1) cell
    heights in latitude and (|dx|-1) cell widths in longitude apart, so the haversine term of any
    pair is at least sin²(Δφ/2) + cos²(φmax) sin²(Δλ/2); offsets where that exceeds sin²(eps/2)
    (with a relative margin for rounding) are never searched."""
    thr = math.sin(0.5 * eps) ** 2 * (1 + 1e-9)
    cos2 = math.cos(abs_lat_max) ** 2
    out = np.full(2 * ky + 1, -1, np.int64)
    for dy in range(-ky, ky + 1):
        dlat = max(abs(dy) - 1, 0) * cell_h
        for dx in range(kx, -1, -1):
            dlon = max(dx - 1, 0) * cell_w
            if math.sin(0.5 * dlat) ** 2 + cos2 * math.sin(0.5 * dlon) ** 2 <= thr:
                out[dy + ky] = dx
                break
    return out
