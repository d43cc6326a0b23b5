"""Spatial graph utilities of the forecast stage: kNN, symmetrisation, METIS, halo subgraphs."""
from __future__ import annotations

import numpy as np
import pytest

from insarlake.forecast.graph import (
    cell_subgraphs, edges_from_neighbours, induced_subgraph, k_hop_nodes, knn_edges, metis_partition,
    neighbour_lists, parts_for_size, subgraph_batches, symmetrise,
)


def _points(n=300, seed=0, size_m=1000.0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, size_m, n), rng.uniform(0, size_m, n)


def _brute_knn(x, y, k, max_distance_m, query):
    d = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])
    np.fill_diagonal(d, np.inf)
    edges = {}
    for i in query:
        for j in np.argsort(d[i])[:k]:
            if d[i, j] <= max_distance_m:
                edges[(int(i), int(j))] = d[i, j]
    return edges


def _as_dict(src, dst, dist):
    return {(int(a), int(b)): float(c) for a, b, c in zip(src, dst, dist)}


def _sym_graph(n=240, seed=1):
    x, y = _points(n, seed)
    s, d, w = knn_edges(x, y, 6, 200.0)
    return symmetrise(s, d, n, w)[0]


def test_knn_matches_brute_force_and_respects_max_distance():
    x, y = _points()
    k, max_d = 5, 45.0  # small enough that some points have fewer than k neighbours
    src, dst, dist = knn_edges(x, y, k, max_d)
    assert src.dtype == np.int64 and dst.dtype == np.int64 and dist.dtype == np.float64
    got = _as_dict(src, dst, dist)
    assert len(got) == src.size  # no duplicate edges
    expected = _brute_knn(x, y, k, max_d, range(x.size))
    assert got.keys() == expected.keys()
    assert np.allclose([got[e] for e in expected], list(expected.values()))
    assert np.all(src != dst) and dist.max() <= max_d
    per_node = np.bincount(src, minlength=x.size)
    assert per_node.max() == k and per_node.min() < k
    # No bound in effect: every node gets exactly k neighbours.
    src, _, _ = knn_edges(x, y, k, 1e9)
    assert np.all(np.bincount(src, minlength=x.size) == k)


def test_knn_query_subset_with_halo_equals_full_computation():
    x, y = _points(400, seed=2)
    k, max_d = 6, 80.0
    full = _as_dict(*knn_edges(x, y, k, max_d))
    core = x < 500.0
    cand = np.flatnonzero(x < 500.0 + max_d)  # the core plus a halo of width max_distance
    local = knn_edges(x[cand], y[cand], k, max_d, query=core[cand])
    got = _as_dict(cand[local[0]], cand[local[1]], local[2])
    assert got == {e: w for e, w in full.items() if core[e[0]]}
    # An index array selects the same points as the mask.
    by_index = knn_edges(x[cand], y[cand], k, max_d, query=np.flatnonzero(core[cand]))
    assert all(np.array_equal(a, b) for a, b in zip(local, by_index))


def test_knn_duplicated_coordinates_and_validation():
    x = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 10.0])
    y = np.zeros(6)
    src, dst, dist = knn_edges(x, y, 2, 5.0)
    assert np.all(src != dst)
    assert np.all(np.bincount(src, minlength=6)[:5] == 2) and not np.any(src == 5)
    assert np.all(dist == 0.0) and np.all(dst < 5)
    src, dst, dist = knn_edges(x, y, 10, 10.0)  # distance exactly max_distance is kept
    assert np.array_equal(np.bincount(src, minlength=6), [5, 5, 5, 5, 5, 5])
    with pytest.raises(ValueError, match="equal lengths"):
        knn_edges(x, y[:3], 2, 5.0)
    with pytest.raises(ValueError, match="finite"):
        knn_edges(np.array([0.0, np.nan]), np.zeros(2), 1, 5.0)
    with pytest.raises(ValueError, match="k"):
        knn_edges(x, y, 0, 5.0)
    with pytest.raises(ValueError, match="max_distance_m"):
        knn_edges(x, y, 1, 0.0)


def test_symmetrise_is_symmetric_unique_sorted_without_self_loops():
    rng = np.random.default_rng(3)
    n = 30
    src = rng.integers(0, n, 200)
    dst = rng.integers(0, n, 200)
    dist = np.abs(src - dst).astype(float)  # a symmetric edge value
    ei, w = symmetrise(src, dst, n, dist)
    assert ei.dtype == np.int64 and ei.shape[0] == 2
    pairs = list(zip(ei[0].tolist(), ei[1].tolist()))
    assert pairs == sorted(set(pairs))  # unique and sorted by (src, dst)
    assert set(pairs) == {(b, a) for a, b in pairs}
    given = {(int(a), int(b)) for a, b in zip(src, dst) if a != b}
    assert set(pairs) == given | {(b, a) for a, b in given}
    assert np.array_equal(w, np.abs(ei[0] - ei[1]).astype(float))
    ei2, none = symmetrise(src, dst, n)
    assert none is None and np.array_equal(ei, ei2)


def test_metis_partition_covers_nodes_and_is_reproducible():
    ei = _sym_graph()
    n = 240
    parts = metis_partition(ei, n, 4, seed=7)
    assert parts.shape == (n,) and parts.dtype == np.int64
    assert parts.min() == 0 and parts.max() == 3 and np.all(np.bincount(parts) > 0)
    assert np.array_equal(parts, metis_partition(ei, n, 4, seed=7))
    # Isolated nodes are allowed; one part needs no METIS; more parts than nodes is refused.
    assert metis_partition(np.array([[0, 1], [1, 0]]), 5, 2).shape == (5,)
    assert np.array_equal(metis_partition(ei, n, 1), np.zeros(n, dtype=np.int64))
    with pytest.raises(ValueError, match="n_parts"):
        metis_partition(ei, 3, 4)


def test_metis_splits_two_disconnected_cliques():
    a, b = np.meshgrid(np.arange(8), np.arange(8))
    clique = np.stack([a.ravel(), b.ravel()])
    ei = np.concatenate([clique, clique + 8], axis=1)  # includes self loops, cleaned by METIS prep
    parts = metis_partition(ei, 16, 2, seed=0)
    assert len(set(parts[:8])) == 1 and len(set(parts[8:])) == 1 and parts[0] != parts[8]


def test_parts_for_size():
    assert parts_for_size(0, 100) == 1
    assert parts_for_size(100, 100) == 1
    assert parts_for_size(101, 100) == 2
    assert parts_for_size(1000, 100) == 10
    with pytest.raises(ValueError, match="nodes_per_part"):
        parts_for_size(10, 0)


def test_induced_subgraph_by_hand():
    ei = np.array([[0, 1, 2, 3, 1, 4], [1, 2, 3, 0, 3, 0]])
    local = induced_subgraph(ei, np.array([3, 1, 0]))  # 3 -> 0, 1 -> 1, 0 -> 2
    assert local.dtype == np.int64
    assert local.tolist() == [[2, 0, 1], [1, 2, 0]]  # edges 0->1, 3->0, 1->3 in input order
    assert induced_subgraph(ei, np.array([2, 4])).shape == (2, 0)
    with pytest.raises(ValueError, match="nodes"):
        induced_subgraph(ei, np.array([1, 1]))


def test_k_hop_nodes_on_a_path():
    path = np.array([[0, 1, 2, 3, 4], [1, 2, 3, 4, 5]])
    ei = np.concatenate([path, path[::-1]], axis=1)
    nodes, is_seed = k_hop_nodes(ei, 6, np.array([3, 2]), 0)
    assert nodes.tolist() == [3, 2] and is_seed.tolist() == [True, True]
    nodes, is_seed = k_hop_nodes(ei, 6, np.array([3, 2]), 1)
    assert nodes.tolist() == [3, 2, 1, 4] and is_seed.tolist() == [True, True, False, False]
    nodes, is_seed = k_hop_nodes(ei, 6, np.array([3, 2]), 2)
    assert nodes.tolist() == [3, 2, 0, 1, 4, 5] and is_seed.sum() == 2
    nodes, _ = k_hop_nodes(ei, 6, np.array([0]), 2)
    assert nodes.tolist() == [0, 1, 2]
    nodes, _ = k_hop_nodes(path, 6, np.array([2]), 1)  # one direction only: taken as undirected
    assert nodes.tolist() == [2, 1, 3]


@pytest.mark.parametrize("hops", [0, 1, 2])
def test_subgraph_batches_cores_partition_nodes_and_keep_core_edges(hops):
    n = 240
    ei = _sym_graph(n)
    parts = metis_partition(ei, n, 4, seed=0)
    batches = subgraph_batches(ei, n, parts, hops)
    assert len(batches) == 4
    cores = np.concatenate([nodes[is_core] for nodes, is_core, _ in batches])
    assert np.array_equal(np.sort(cores), np.arange(n))  # every node in exactly one core
    global_edges = set(zip(ei[0].tolist(), ei[1].tolist()))
    for p, (nodes, is_core, local) in enumerate(batches):
        assert np.array_equal(nodes[is_core], np.flatnonzero(parts == p))
        assert np.all(is_core[:is_core.sum()])  # core nodes first
        mapped = set(zip(nodes[local[0]].tolist(), nodes[local[1]].tolist()))
        assert mapped <= global_edges and len(mapped) == local.shape[1]
        in_part = {(a, b) for a, b in global_edges if parts[a] == p and parts[b] == p}
        assert in_part <= mapped
        halo = set(nodes[~is_core].tolist())
        expected_halo = set(k_hop_nodes(ei, n, np.flatnonzero(parts == p), hops)[0].tolist()) - set(
            np.flatnonzero(parts == p).tolist())
        assert halo == expected_halo and (hops > 0 or not halo)
        if hops >= 1:  # every core node sees all its neighbours
            core_ids = set(np.flatnonzero(parts == p).tolist())
            assert {(a, b) for a, b in global_edges if b in core_ids} <= mapped


def _cells_as_spark_builds_them(x, y, cell_m, margin_m):
    """{cell: (indices of the cell's points, then of its neighbours' points within margin_m per axis)}:
    what one Spark task of the forecast stage receives."""
    cx, cy = np.floor(x / cell_m).astype(int), np.floor(y / cell_m).astype(int)
    fx, fy = x - cx * cell_m, y - cy * cell_m
    out = {}
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            near = np.ones(x.size, bool)
            near &= {-1: fx <= margin_m, 0: True, 1: cell_m - fx <= margin_m}[dx]
            near &= {-1: fy <= margin_m, 0: True, 1: cell_m - fy <= margin_m}[dy]
            for i in np.flatnonzero(near):
                out.setdefault((cx[i] + dx, cy[i] + dy), ([], []))[0 if dx == dy == 0 else 1].append(i)
    return {c: np.array(own + margin, dtype=np.int64) for c, (own, margin) in out.items() if own}, \
        {c: len(own) for c, (own, _) in out.items() if own}


@pytest.mark.parametrize("hops", [0, 1, 2])
def test_cell_subgraphs_equal_the_whole_scene_graph_cut_into_the_same_parts(hops):
    """Per-cell construction (what the Spark stage runs, one cell per task) against brute force on
    the whole scene: every point is core exactly once; each subgraph's halo is the hops-hop
    neighbourhood of its core in the whole scene's symmetric kNN graph, and its local edges are
    exactly the whole graph's edges among its nodes. Clustered points with gaps and dense spots."""
    rng = np.random.default_rng(5)
    centres = rng.uniform(0, 6000, (12, 2))
    pts = np.concatenate([c + rng.normal(0, 350, (150, 2)) for c in centres] + [rng.uniform(0, 6000, (400, 2))])
    x, y = pts[:, 0], pts[:, 1]
    n, k, max_d, cell_m = x.size, 6, 150.0, 1000.0
    src, dst, _ = knn_edges(x, y, k, max_d)
    whole, _ = symmetrise(src, dst, n)
    whole_edges = set(zip(whole[0].tolist(), whole[1].tolist()))
    groups, n_own = _cells_as_spark_builds_them(x, y, cell_m, (hops + 1) * max_d)
    seen = np.zeros(n, int)
    n_subgraphs = 0
    for cell, members in groups.items():
        own = np.zeros(members.size, bool)
        own[:n_own[cell]] = True
        batches = cell_subgraphs(x[members], y[members], own, k, max_d, 120, hops, seed=0)
        assert len(batches) == parts_for_size(n_own[cell], 120)
        for nodes, is_core, local in batches:
            n_subgraphs += 1
            g = members[nodes]                               # global ids
            core = g[is_core]
            seen[core] += 1
            assert np.all(is_core[:is_core.sum()]) and not is_core[is_core.sum():].any()
            want_nodes, _ = k_hop_nodes(whole, n, core, hops)
            assert set(g.tolist()) == set(want_nodes.tolist())
            got = set(zip(g[local[0]].tolist(), g[local[1]].tolist()))
            node_set = set(g.tolist())
            assert got == {(a, b) for a, b in whole_edges if a in node_set and b in node_set}
            assert len(got) == local.shape[1]
    assert (seen == 1).all()
    assert n_subgraphs > len(groups)                        # dense cells were cut by METIS


def test_cell_subgraphs_of_an_empty_cell_and_isolated_points():
    assert cell_subgraphs(np.zeros(3), np.arange(3.0), np.zeros(3, bool), 4, 10.0, 100, 2) == []
    (nodes, is_core, local), = cell_subgraphs(np.array([0.0, 1e4]), np.zeros(2), np.array([True, True]), 4, 10.0,
                                              100, 2)
    assert sorted(nodes.tolist()) == [0, 1] and is_core.all() and local.shape == (2, 0)


def test_neighbour_lists_round_trip_and_drop_halo_slots():
    ei = np.array([[0, 0, 2, 1, 2], [1, 2, 0, 0, 3]])
    lists = neighbour_lists(ei, 4)
    assert [a.tolist() for a in lists] == [[1, 2], [0], [0, 3], []]
    back = edges_from_neighbours([len(a) for a in lists], np.concatenate(lists), 4)
    assert sorted(zip(*back.tolist())) == sorted(zip(*ei.tolist()))
    core_only = edges_from_neighbours([len(a) for a in lists], np.concatenate(lists), 3)   # node 3: a halo slot
    assert (2, 3) not in set(zip(*core_only.tolist())) and core_only.shape[1] == 4
