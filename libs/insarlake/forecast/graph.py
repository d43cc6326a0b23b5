"""Spatial graph utilities for the forecast stage: kNN edges, symmetrisation, METIS partitions and
halo subgraphs. Pure numpy/scipy (+ pymetis); the graph is never an n x n matrix.

Conventions (those of :class:`insarlake.forecast.batch.GraphBatch`):

* nodes are integer ids ``0 .. n_nodes - 1``; x_m / y_m are planar coordinates in metres;
* ``edge_index`` is a (2, E) int64 array of (source, destination) rows; after :func:`symmetrise`
  every undirected edge appears in both directions and there are no self loops;
* distances are float64 metres.

Costs: :func:`knn_edges` O(n k log n); :func:`symmetrise` O(E log E); :func:`induced_subgraph`
O(E + n); :func:`k_hop_nodes` and :func:`subgraph_batches` visit only the edges of the nodes they
reach (after one O(E log E) adjacency build).
"""
from __future__ import annotations

import logging
import math
from typing import Optional

import numpy as np
from scipy.spatial import cKDTree

log = logging.getLogger(__name__)

__all__ = [
    "knn_edges", "symmetrise", "metis_partition", "parts_for_size", "induced_subgraph",
    "k_hop_nodes", "subgraph_batches", "cell_subgraphs",
]


# ---------------------------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------------------------

def _as_int(value, name: str, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _as_index_array(values, name: str, n_nodes: int) -> np.ndarray:
    """1-D int64 array of node ids in [0, n_nodes)."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.min() < 0 or arr.max() >= n_nodes:
        raise ValueError(f"{name} must lie in [0, {n_nodes}), got range [{arr.min()}, {arr.max()}]")
    return arr


def _as_unique_index_array(values, name: str, n_nodes: int) -> np.ndarray:
    arr = _as_index_array(values, name, n_nodes)
    if np.unique(arr).size != arr.size:
        raise ValueError(f"{name} must not repeat a node")
    return arr


def _as_edge_index(edge_index, n_nodes: Optional[int]) -> np.ndarray:
    """(2, E) int64 array; ids in [0, n_nodes) when n_nodes is given, else >= 0."""
    arr = np.asarray(edge_index)
    if arr.ndim != 2 or arr.shape[0] != 2:
        raise ValueError(f"edge_index must be (2, E), got shape {arr.shape}")
    if arr.shape[1] == 0:
        return np.zeros((2, 0), dtype=np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"edge_index must hold integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.min() < 0:
        raise ValueError(f"edge_index must be >= 0, got {arr.min()}")
    if n_nodes is not None and arr.max() >= n_nodes:
        raise ValueError(f"edge_index must be < n_nodes={n_nodes}, got {arr.max()}")
    return arr


# ---------------------------------------------------------------------------------------------
# private kernels (clean input)
# ---------------------------------------------------------------------------------------------

def _csr(src: np.ndarray, dst: np.ndarray, n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """(indptr (n+1,), indices (E,)): row i's neighbours are indices[indptr[i]:indptr[i+1]],
    in the input order of the edges."""
    order = np.argsort(src, kind="stable")
    indptr = np.zeros(n_nodes + 1, dtype=np.int64)
    np.cumsum(np.bincount(src, minlength=n_nodes), out=indptr[1:])
    return indptr, dst[order].astype(np.int64, copy=False)


def _gather_rows(indptr: np.ndarray, indices: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row of each entry, neighbour) for every CSR entry of ``rows``."""
    starts = indptr[rows]
    lengths = indptr[rows + 1] - starts
    total = int(lengths.sum())
    if total == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    offsets = np.cumsum(lengths) - lengths
    pos = np.arange(total, dtype=np.int64) + np.repeat(starts - offsets, lengths)
    return np.repeat(rows, lengths), indices[pos]


def _k_hop(indptr: np.ndarray, indices: np.ndarray, seeds: np.ndarray, hops: int,
           visited: np.ndarray) -> np.ndarray:
    """Seeds then the other nodes within ``hops`` (sorted). ``visited`` is an all-False (n,) bool
    buffer, returned all-False."""
    visited[seeds] = True
    found = []
    frontier = seeds
    for _ in range(hops):
        if frontier.size == 0:
            break
        _, nbr = _gather_rows(indptr, indices, frontier)
        nbr = np.unique(nbr)
        nbr = nbr[~visited[nbr]]
        visited[nbr] = True
        found.append(nbr)
        frontier = nbr
    others = np.sort(np.concatenate(found)) if found else np.zeros(0, dtype=np.int64)
    visited[seeds] = False
    visited[others] = False
    return np.concatenate([seeds, others])


def _induced(indptr: np.ndarray, indices: np.ndarray, nodes: np.ndarray, lookup: np.ndarray) -> np.ndarray:
    """Local (2, E') edges among ``nodes`` from an out-CSR; ``lookup`` is an all -1 (n,) int64
    buffer, returned all -1."""
    lookup[nodes] = np.arange(nodes.size, dtype=np.int64)
    src, dst = _gather_rows(indptr, indices, nodes)
    local_dst = lookup[dst]
    keep = local_dst >= 0
    out = np.stack([lookup[src[keep]], local_dst[keep]])
    lookup[nodes] = -1
    return out


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------

def knn_edges(x_m, y_m, k: int, max_distance_m: float,
              query=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Directed kNN edges (query point -> each of its k nearest OTHER points within max_distance_m).

    x_m, y_m: (n,) coordinates in metres. query: None (every point), an (n,) bool mask or an
    array of distinct point indices; only those points get neighbours, all n points are
    candidates (a tile with a halo gets exact kNN for its core points). Points with fewer than k
    others within max_distance_m (inclusive) get fewer edges. Duplicated coordinates give
    distance-0 edges between distinct points; never a self loop. Ties at the k-th distance are
    broken arbitrarily.

    Returns (src (E,) int64, dst (E,) int64, distance_m (E,) float64), grouped by query point (in
    query order), nearest first.
    """
    x = np.asarray(x_m, dtype=np.float64)
    y = np.asarray(y_m, dtype=np.float64)
    if x.ndim != 1 or y.ndim != 1:
        raise ValueError(f"x_m and y_m must be 1-D, got shapes {x.shape} and {y.shape}")
    if x.shape != y.shape:
        raise ValueError(f"x_m and y_m must have equal lengths, got {x.size} and {y.size}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("x_m and y_m must be finite")
    k = _as_int(k, "k", 1)
    max_distance_m = float(max_distance_m)
    if not max_distance_m > 0:  # also rejects nan
        raise ValueError(f"max_distance_m must be > 0, got {max_distance_m}")
    n = x.size
    if query is None:
        q = np.arange(n, dtype=np.int64)
    else:
        qa = np.asarray(query)
        if qa.dtype == bool:
            if qa.shape != (n,):
                raise ValueError(f"query mask must be (n={n},), got shape {qa.shape}")
            q = np.flatnonzero(qa).astype(np.int64)
        else:
            q = _as_unique_index_array(qa, "query", n)

    empty_i = np.zeros(0, dtype=np.int64)
    if n < 2 or q.size == 0:
        return empty_i, empty_i.copy(), np.zeros(0, dtype=np.float64)

    pts = np.column_stack([x, y])
    tree = cKDTree(pts)
    kq = min(k + 1, n)  # +1: the query point itself (distance 0) is usually among the results
    # Query slightly beyond the bound, then filter inclusively (the tree's bound is exclusive).
    bound = max_distance_m * (1.0 + 1e-9) if math.isfinite(max_distance_m) else np.inf
    dist, idx = tree.query(pts[q], k=kq, distance_upper_bound=bound)
    dist = dist.reshape(q.size, kq)
    idx = idx.reshape(q.size, kq)
    # Self may be missing when more than k points share its coordinates; then every kept
    # result is at distance 0 anyway and we keep the first k.
    keep = (idx < n) & (idx != q[:, None]) & (dist <= max_distance_m)
    keep &= np.cumsum(keep, axis=1) <= k
    rows, cols = np.nonzero(keep)
    src = q[rows]
    dst = idx[rows, cols].astype(np.int64)
    return src, dst, dist[rows, cols].astype(np.float64)


def symmetrise(src, dst, n_nodes: int, distance=None) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Union of the edges and their reverses, de-duplicated, sorted by (src, dst), no self loops.

    src, dst: (E,) node ids in [0, n_nodes); distance: optional (E,) edge values carried along
    (a pair given more than once keeps its smallest value). Returns (edge_index (2, E') int64,
    distance (E',) float64, or None when no distance was given).
    """
    n_nodes = _as_int(n_nodes, "n_nodes", 0)
    s = _as_index_array(src, "src", n_nodes)
    d = _as_index_array(dst, "dst", n_nodes)
    if s.size != d.size:
        raise ValueError(f"src and dst must have equal lengths, got {s.size} and {d.size}")
    w = None
    if distance is not None:
        w = np.asarray(distance, dtype=np.float64)
        if w.shape != (s.size,):
            raise ValueError(f"distance must be (E={s.size},), got shape {w.shape}")
    no_loop = s != d
    s, d = s[no_loop], d[no_loop]
    a = np.concatenate([s, d])
    b = np.concatenate([d, s])
    key = a * np.int64(n_nodes) + b
    if w is None:
        key = np.unique(key)
        return np.stack([key // n_nodes, key % n_nodes]) if key.size else np.zeros((2, 0), np.int64), None
    ww = np.concatenate([w[no_loop], w[no_loop]])
    order = np.lexsort((ww, key))  # by key, then smallest value first
    key, ww = key[order], ww[order]
    first = np.ones(key.size, dtype=bool)
    first[1:] = key[1:] != key[:-1]
    key, ww = key[first], ww[first]
    if key.size == 0:
        return np.zeros((2, 0), np.int64), np.zeros(0, np.float64)
    return np.stack([key // n_nodes, key % n_nodes]), ww


def metis_partition(edge_index, n_nodes: int, n_parts: int, seed: int = 0) -> np.ndarray:
    """Balanced min-edge-cut partition of the graph with METIS (pymetis.part_graph).

    edge_index: (2, E) node ids (directions, duplicates and self loops are cleaned: METIS gets the
    symmetrised graph); isolated nodes are allowed. n_parts: 1 <= n_parts <= n_nodes (1 gives
    zeros without calling METIS). seed: METIS's random seed (same seed, same graph -> same parts).
    Returns parts (n_nodes,) int64 in [0, n_parts).
    """
    import pymetis

    n_nodes = _as_int(n_nodes, "n_nodes", 0)
    n_parts = _as_int(n_parts, "n_parts", 1)
    seed = _as_int(seed, "seed", 0)
    if n_parts > n_nodes:
        raise ValueError(f"n_parts must be <= n_nodes={n_nodes}, got {n_parts}")
    ei = _as_edge_index(edge_index, n_nodes)
    if n_parts == 1:
        return np.zeros(n_nodes, dtype=np.int64)
    sym, _ = symmetrise(ei[0], ei[1], n_nodes)
    xadj, adjncy = _csr(sym[0], sym[1], n_nodes)  # sym is sorted, so rows are sorted
    if hasattr(pymetis, "CSRAdjacency"):  # pymetis >= 2025.2
        adjacency = pymetis.CSRAdjacency(adj_starts=xadj, adjacent=adjncy)
    else:
        adjacency = [adjncy[xadj[i]:xadj[i + 1]] for i in range(n_nodes)]
    result = pymetis.part_graph(n_parts, adjacency=adjacency, options=pymetis.Options(seed=seed))
    parts = np.asarray(result.vertex_part, dtype=np.int64)
    if parts.shape != (n_nodes,) or (parts.size and (parts.min() < 0 or parts.max() >= n_parts)):
        raise RuntimeError(f"METIS returned an invalid partition (shape {parts.shape})")
    log.debug("METIS: %d nodes, %d edges -> %d parts, edge cut %d",
              n_nodes, sym.shape[1] // 2, n_parts, result.edge_cuts)
    return parts


def parts_for_size(n_nodes: int, nodes_per_part: int) -> int:
    """Number of parts so each holds about (at most, on average) nodes_per_part nodes; >= 1."""
    n_nodes = _as_int(n_nodes, "n_nodes", 0)
    nodes_per_part = _as_int(nodes_per_part, "nodes_per_part", 1)
    return max(1, -(-n_nodes // nodes_per_part))


def induced_subgraph(edge_index, nodes) -> np.ndarray:
    """Edges with both ends in ``nodes`` (distinct global ids, any order), renumbered to positions
    in ``nodes``; edge order kept. Returns local_edge_index (2, E') int64. O(E + max id)."""
    ei = _as_edge_index(edge_index, None)
    nd = np.asarray(nodes)
    size = max(int(ei.max()) + 1 if ei.size else 0, int(nd.max()) + 1 if nd.size else 0)
    nd = _as_unique_index_array(nd, "nodes", size)
    lookup = np.full(size, -1, dtype=np.int64)
    lookup[nd] = np.arange(nd.size, dtype=np.int64)
    if ei.shape[1] == 0:
        return np.zeros((2, 0), dtype=np.int64)
    ls, ld = lookup[ei[0]], lookup[ei[1]]
    keep = (ls >= 0) & (ld >= 0)
    return np.stack([ls[keep], ld[keep]])


def k_hop_nodes(edge_index, n_nodes: int, seeds, hops: int) -> tuple[np.ndarray, np.ndarray]:
    """The seeds plus every node within ``hops`` edges of one (edges taken as undirected).

    Returns (nodes (m,) int64: seeds in the given order, then the others sorted; is_seed (m,) bool).
    """
    n_nodes = _as_int(n_nodes, "n_nodes", 0)
    hops = _as_int(hops, "hops", 0)
    ei = _as_edge_index(edge_index, n_nodes)
    sd = _as_unique_index_array(seeds, "seeds", n_nodes)
    indptr, indices = _csr(np.concatenate([ei[0], ei[1]]), np.concatenate([ei[1], ei[0]]), n_nodes)
    nodes = _k_hop(indptr, indices, sd, hops, np.zeros(n_nodes, dtype=bool))
    is_seed = np.zeros(nodes.size, dtype=bool)
    is_seed[:sd.size] = True
    return nodes, is_seed


def subgraph_batches(edge_index, n_nodes: int, parts,
                     hops: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """One (nodes, is_core, local_edge_index) per non-empty part, in increasing part id.

    parts: (n_nodes,) non-negative part ids (e.g. from :func:`metis_partition`). nodes (m,) int64:
    the part's nodes (sorted; is_core True) then its ``hops``-hop halo (sorted; is_core False;
    hops 0: none), neighbourhoods taken as undirected. local_edge_index (2, E') int64: the edges of
    edge_index (as given, directed) with both ends in nodes, renumbered to positions in nodes.
    """
    n_nodes = _as_int(n_nodes, "n_nodes", 0)
    hops = _as_int(hops, "hops", 0)
    ei = _as_edge_index(edge_index, n_nodes)
    pa = np.asarray(parts)
    if pa.shape != (n_nodes,):
        raise ValueError(f"parts must be (n_nodes={n_nodes},), got shape {pa.shape}")
    if n_nodes == 0:
        return []
    if not np.issubdtype(pa.dtype, np.integer) or pa.min() < 0:
        raise ValueError("parts must hold non-negative integers")
    pa = pa.astype(np.int64, copy=False)

    out_ptr, out_idx = _csr(ei[0], ei[1], n_nodes)
    if hops > 0:
        und_ptr, und_idx = _csr(np.concatenate([ei[0], ei[1]]), np.concatenate([ei[1], ei[0]]), n_nodes)
    visited = np.zeros(n_nodes, dtype=bool)
    lookup = np.full(n_nodes, -1, dtype=np.int64)

    order = np.argsort(pa, kind="stable")  # node ids sorted within each part
    counts = np.bincount(pa)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    batches = []
    for p in np.flatnonzero(counts):
        core = order[bounds[p]:bounds[p + 1]]
        nodes = _k_hop(und_ptr, und_idx, core, hops, visited) if hops > 0 else core.copy()
        is_core = np.zeros(nodes.size, dtype=bool)
        is_core[:core.size] = True
        batches.append((nodes, is_core, _induced(out_ptr, out_idx, nodes, lookup)))
    return batches


def cell_subgraphs(x_m, y_m, core, k: int, max_distance_m: float, nodes_per_part: int, hops: int,
                   seed: int = 0) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The subgraphs of one spatial cell, from the cell's points and a margin of its neighbours'.

    x_m, y_m: (n,) planar coordinates in metres of the cell's points (``core`` (n,) bool True) and of
    every point of its neighbouring cells that lies within (hops + 1) * max_distance_m of it. The
    graph is the symmetrised kNN graph of :func:`knn_edges` (k nearest within max_distance_m); the
    cell's points are cut by METIS into :func:`parts_for_size` parts of about nodes_per_part; each
    part is returned with its ``hops``-hop halo, as :func:`subgraph_batches` gives it on the whole
    scene's graph: (nodes (m,) int64 indices into the inputs, part first then halo, each sorted;
    is_core (m,) bool; local_edge_index (2, E') int64, both directions).

    Exact (equal to the whole scene's graph cut into the same parts) when no point of the scene
    within (hops + 1) * max_distance_m of a core point is missing from the inputs: a halo node lies
    within hops * max_distance_m of the cell, and its k nearest within max_distance_m more.
    """
    x = np.asarray(x_m, dtype=np.float64)
    y = np.asarray(y_m, dtype=np.float64)
    is_cell = np.asarray(core, dtype=bool)
    if is_cell.shape != x.shape:
        raise ValueError(f"core must be (n={x.size},), got shape {is_cell.shape}")
    hops = _as_int(hops, "hops", 0)
    n_cell = int(is_cell.sum())
    if n_cell == 0:
        return []
    # the nodes a halo can reach lie within hops * max_distance_m of a core point; their kNN is exact
    reach = hops * float(max_distance_m)
    if reach > 0 and n_cell < x.size:
        near, _ = cKDTree(np.column_stack([x[is_cell], y[is_cell]])).query(
            np.column_stack([x, y]), k=1, distance_upper_bound=reach * (1.0 + 1e-9))
        query = is_cell | (near <= reach)
    else:
        query = is_cell
    src, dst, _ = knn_edges(x, y, k, max_distance_m, query=query)
    # only edges between two reachable nodes are known in both directions: keep those (a halo BFS
    # never leaves them)
    both = query[src] & query[dst]
    edge_index, _ = symmetrise(src[both], dst[both], x.size)
    cell_nodes = np.flatnonzero(is_cell)
    local = np.full(x.size, -1, dtype=np.int64)
    local[cell_nodes] = np.arange(n_cell)
    inside = is_cell[edge_index[0]] & is_cell[edge_index[1]]
    cell_parts = metis_partition(local[edge_index[:, inside]], n_cell, parts_for_size(n_cell, nodes_per_part),
                                 seed=seed)
    parts = np.full(x.size, int(cell_parts.max()) + 1, dtype=np.int64)   # the non-cell points: one extra part
    parts[cell_nodes] = cell_parts
    return [b for b in subgraph_batches(edge_index, x.size, parts, hops) if is_cell[b[0][0]]]


def neighbour_lists(edge_index, n_nodes: int) -> list[np.ndarray]:
    """Each node's out-neighbours (int32 arrays, in edge order) of a local (2, E) edge_index over
    ``n_nodes`` nodes: the per-row form in which a subgraph's edges travel through Spark."""
    n_nodes = _as_int(n_nodes, "n_nodes", 0)
    ei = _as_edge_index(edge_index, n_nodes)
    indptr, indices = _csr(ei[0], ei[1], n_nodes)
    return np.split(indices.astype(np.int32), indptr[1:-1])


def edges_from_neighbours(lengths, neighbours, n_nodes: int) -> np.ndarray:
    """The inverse of :func:`neighbour_lists` in flat form: node i has out-neighbours
    ``neighbours[offset_i:offset_i + lengths[i]]`` (lengths (n,), neighbours (sum lengths,)).
    Neighbours outside [0, n_nodes) (halo nodes not in this subgraph) are dropped.
    Returns edge_index (2, E) int64."""
    lengths = np.asarray(lengths, dtype=np.int64)
    nbr = np.asarray(neighbours, dtype=np.int64)
    if lengths.ndim != 1 or lengths.sum() != nbr.size:
        raise ValueError(f"lengths must be 1-D and sum to the {nbr.size} neighbours")
    src = np.repeat(np.arange(lengths.size, dtype=np.int64), lengths)
    keep = (nbr >= 0) & (nbr < n_nodes)
    return np.stack([src[keep], nbr[keep]])
