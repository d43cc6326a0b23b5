"""Exact distributed DBSCAN: the tile kernel and the Spark function against scikit-learn's haversine
DBSCAN (clusters compared as sets of point ids), across tilings, partitionings and awkward layouts."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import DBSCAN

from insarlake.errors import InputError
from insarlake.geo import EARTH_RADIUS_M, haversine_m
from insarlake.spatial import dbscan, dbscan_with_stats
from insarlake.spatial.kernel import local_dbscan
from insarlake.tiling import geohash_bounds


def reference(lat_deg, lon_deg, eps_m, min_samples):
    """scikit-learn DBSCAN(metric='haversine'): (is_core, labels)."""
    ref = DBSCAN(eps=eps_m / EARTH_RADIUS_M, min_samples=min_samples, metric="haversine").fit(
        np.radians(np.c_[lat_deg, lon_deg]))
    core = np.zeros(len(lat_deg), bool)
    core[ref.core_sample_indices_] = True
    return core, ref.labels_


def assert_same_dbscan(ids, lat, lon, is_core, cluster, eps_m, min_samples):
    """Same cores, same partition of the cores, same noise as scikit-learn; every border point is in
    the cluster of its nearest core (ties: smaller id)."""
    ids, lat, lon = np.asarray(ids), np.asarray(lat, float), np.asarray(lon, float)
    is_core, cluster = np.asarray(is_core, bool), np.asarray(cluster)
    ref_core, ref_labels = reference(lat, lon, eps_m, min_samples)
    np.testing.assert_array_equal(is_core, ref_core)
    np.testing.assert_array_equal(cluster == -1, ref_labels == -1)
    ours = {frozenset(ids[is_core & (cluster == c)]) for c in np.unique(cluster[is_core])}
    theirs = {frozenset(ids[ref_core & (ref_labels == c)]) for c in np.unique(ref_labels[ref_core])}
    assert ours == theirs
    cores = np.flatnonzero(is_core)
    for b in np.flatnonzero(~is_core & (cluster >= 0)):
        d = haversine_m(lon[b], lat[b], lon[cores], lat[cores])
        near = cores[d <= d.min() * (1 + 1e-12)]
        assert cluster[b] == cluster[near[np.argmin(ids[near])]]


def scene(seed, n, lat0=44.5, lon0=11.3, spread_deg=0.03):
    """Clustered points: dense patches plus sparse background, string ids in random order."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, spread_deg, (6, 2))
    k = rng.integers(0, 7, n)
    lat = np.where(k < 6, centres[np.minimum(k, 5), 0] + rng.normal(0, spread_deg / 15, n),
                   rng.uniform(-2 * spread_deg, 2 * spread_deg, n)) + lat0
    lon = np.where(k < 6, centres[np.minimum(k, 5), 1] + rng.normal(0, spread_deg / 10, n),
                   rng.uniform(-2 * spread_deg, 2 * spread_deg, n)) + lon0
    return pd.DataFrame({"pixel_id": [f"P{i:07d}" for i in rng.permutation(n)], "lon": lon, "lat": lat,
                         "tskm_label": rng.integers(0, 3, n).astype(np.int32)})


def run_spark(spark, pdf, eps_m, min_samples, partitions=None, **kw):
    df = spark.createDataFrame(pdf)
    if partitions:
        df = df.repartition(partitions)
    out, stats = dbscan_with_stats(df, eps_m, min_samples, **kw)
    got = out.toPandas().set_index("pixel_id").loc[pdf.pixel_id]
    assert len(got) == len(pdf)
    return got, stats


# --- the kernel alone -----------------------------------------------------------------------

@pytest.mark.parametrize("seed,lat0,eps_m,min_samples", [(0, 44.5, 120.0, 5), (1, 60.0, 150.0, 4),
                                                          (2, -33.9, 80.0, 1), (3, 0.0, 200.0, 12)])
def test_kernel_equals_sklearn(seed, lat0, eps_m, min_samples):
    pdf = scene(seed, 3000, lat0=lat0).sort_values("pixel_id", ignore_index=True)
    core, root = local_dbscan(np.radians(pdf.lat), np.radians(pdf.lon), np.zeros(len(pdf), np.int8),
                              eps_m / EARTH_RADIUS_M, min_samples)
    assert_same_dbscan(pdf.pixel_id, pdf.lat, pdf.lon, core, root, eps_m, min_samples)


def test_kernel_dense_cells_duplicates_and_bad_arguments():
    lat = np.radians(np.r_[np.full(50, 45.0), 45.0 + np.arange(5) * 1e-5])
    lon = np.radians(np.r_[np.full(50, 7.0), np.full(5, 7.0)])
    core, root = local_dbscan(lat, lon, np.zeros(55, np.int8), 10.0 / EARTH_RADIUS_M, 50)
    assert core[:50].all() and (root[:50] == 0).all()
    assert_same_dbscan(np.arange(55), np.degrees(lat), np.degrees(lon), core, root, 10.0, 50)
    with pytest.raises(ValueError, match="eps"):
        local_dbscan(lat, lon, np.zeros(55, np.int8), 0.0, 5)
    with pytest.raises(ValueError, match="min_samples"):
        local_dbscan(lat, lon, np.zeros(55, np.int8), 1e-6, 0)
    with pytest.raises(ValueError, match="pole"):
        local_dbscan(np.radians([89.99999]), np.radians([0.0]), np.zeros(1, np.int8), 100 / EARTH_RADIUS_M, 1)


# --- Spark ------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed,max_points,partitions", [(10, 1_000_000, None), (11, 400, 3), (12, 60, 7)])
def test_spark_dbscan_equals_sklearn_per_group_for_any_tiling(spark, seed, max_points, partitions):
    pdf = scene(seed, 6000)
    got, stats = run_spark(spark, pdf, 150.0, 6, partitions=partitions, group_col="tskm_label",
                           max_points_per_tile=max_points, min_precision=4)
    assert stats.points == 6000 and stats.groups == 3 and stats.local_rows >= 6000
    assert (stats.tiles > 30) == (max_points < 1000)
    for label in range(3):
        part = pdf.tskm_label.to_numpy() == label
        g = got[part]
        assert_same_dbscan(pdf.pixel_id[part], pdf.lat[part], pdf.lon[part], g.is_core, g.cluster_id, 150.0, 6)
    assert sorted(got.cluster_id[got.cluster_id >= 0].unique()) == list(range(stats.clusters))
    assert stats.noise == (got.cluster_id == -1).sum() and stats.cores == got.is_core.sum()


def test_cluster_ids_do_not_depend_on_tiles_or_partitions(spark):
    pdf = scene(20, 4000)
    one, s1 = run_spark(spark, pdf, 120.0, 5, group_col="tskm_label", min_precision=3)
    many, s2 = run_spark(spark, pdf, 120.0, 5, partitions=5, group_col="tskm_label", max_points_per_tile=50,
                         min_precision=5)
    assert s1.tiles < 10 < s2.tiles
    pd.testing.assert_frame_equal(one, many)
    # numbering: by (group, smallest core id)
    firsts = one[one.is_core].reset_index().groupby("cluster_id").agg(g=("tskm_label", "first"), m=("pixel_id", "min"))
    assert list(firsts.sort_values(["g", "m"]).index) == list(range(len(firsts)))


def test_chain_crossing_many_tiles_is_one_cluster(spark):
    # points every 40 m along a 6 km diagonal line: with eps 50 m they chain into one cluster
    step = np.arange(150) * 40.0
    lat = 45.0 + step / 111_195.0 * 0.6
    lon = 9.0 + step / (111_195.0 * math.cos(math.radians(45.0))) * 0.8
    pdf = pd.DataFrame({"pixel_id": [f"c{i:04d}" for i in range(150)], "lon": lon, "lat": lat})
    got, stats = run_spark(spark, pdf, 50.0, 3, max_points_per_tile=10, min_precision=6)
    assert stats.tiles >= 5
    assert got.is_core.iloc[1:-1].all() and not got.is_core.iloc[[0, -1]].any()
    assert (got.cluster_id == 0).all()
    assert_same_dbscan(pdf.pixel_id, lat, lon, got.is_core, got.cluster_id, 50.0, 3)


def test_points_on_tile_borders_and_in_halos(spark):
    # a geohash-6 cell: points exactly on its edges and corners, just across them, and in the halo
    min_lon, min_lat, max_lon, max_lat = geohash_bounds("u0nd9e")
    rng = np.random.default_rng(5)
    edge_lon = np.r_[np.full(20, min_lon), np.full(20, max_lon), rng.uniform(min_lon, max_lon, 40), [min_lon, max_lon]]
    edge_lat = np.r_[rng.uniform(min_lat, max_lat, 40), np.full(20, min_lat), np.full(20, max_lat), [min_lat, max_lat]]
    near_lon = np.r_[edge_lon + rng.normal(0, 2e-4, 82), rng.uniform(min_lon - 0.003, max_lon + 0.003, 300)]
    near_lat = np.r_[edge_lat + rng.normal(0, 2e-4, 82), rng.uniform(min_lat - 0.003, max_lat + 0.003, 300)]
    lon, lat = np.r_[edge_lon, near_lon], np.r_[edge_lat, near_lat]
    pdf = pd.DataFrame({"pixel_id": [f"b{i:04d}" for i in range(len(lon))], "lon": lon, "lat": lat})
    for max_points in (40, 10_000):
        got, stats = run_spark(spark, pdf, 60.0, 4, max_points_per_tile=max_points, min_precision=6)
        assert_same_dbscan(pdf.pixel_id, lat, lon, got.is_core, got.cluster_id, 60.0, 4)


def test_duplicates_empty_groups_and_sixty_degrees(spark):
    # group 0: 30 copies of one location (one cluster of cores); group 1: sparse points, no cluster
    # group 2 at 60 N: east-west chains spaced 0.9 eps (joined) and 1.1 eps (apart) in metres
    eps_m = 100.0
    deg_lon_60 = 1.0 / (111_195.08 * math.cos(math.radians(60.0)))
    rows = [(f"d{i:02d}", 12.0, 45.0, 0) for i in range(30)]
    rows += [(f"s{i:02d}", 12.0 + 0.01 * i, 45.2, 1) for i in range(20)]
    rows += [(f"n{i:02d}", 25.0 + 0.9 * eps_m * deg_lon_60 * i, 60.0, 2) for i in range(10)]
    rows += [(f"f{i:02d}", 25.0 + 1.1 * eps_m * deg_lon_60 * i, 60.01, 2) for i in range(10)]
    pdf = pd.DataFrame(rows, columns=["pixel_id", "lon", "lat", "g"])
    got, stats = run_spark(spark, pdf, {0: eps_m, 1: eps_m, 2: eps_m}, {0: 30, 1: 2, 2: 2}, group_col="g")
    assert got.loc[[f"d{i:02d}" for i in range(30)]].is_core.all()
    assert (got[pdf.g.to_numpy() == 1].cluster_id == -1).all()
    assert got.loc[[f"n{i:02d}" for i in range(10)]].cluster_id.nunique() == 1
    assert (got.loc[[f"f{i:02d}" for i in range(10)]].cluster_id == -1).all()
    assert stats.clusters == 2
    for g, ms in ((0, 30), (1, 2), (2, 2)):
        part = pdf.g.to_numpy() == g
        assert_same_dbscan(pdf.pixel_id[part], pdf.lat[part], pdf.lon[part], got.is_core[part],
                           got.cluster_id[part], eps_m, ms)


def test_per_group_parameters_like_table_2(spark):
    pdf = scene(30, 5000)
    eps = {0: 80.0, 1: 200.0, 2: 120.0}
    samples = {0: 4, 1: 15, 2: 8}
    got, _ = run_spark(spark, pdf, eps, samples, group_col="tskm_label", max_points_per_tile=300, min_precision=5)
    for label in range(3):
        part = pdf.tskm_label.to_numpy() == label
        assert_same_dbscan(pdf.pixel_id[part], pdf.lat[part], pdf.lon[part], got.is_core[part],
                           got.cluster_id[part], eps[label], samples[label])


def test_bad_input_is_refused_with_a_clear_message(spark):
    good = pd.DataFrame({"pixel_id": ["a", "b", "c"], "lon": [11.0, 11.001, 11.002], "lat": [44.0, 44.0, 44.0],
                         "g": [0, 0, 1]})
    df = spark.createDataFrame(good)
    assert dbscan(df, 200.0, 2).count() == 3
    with pytest.raises(InputError, match="'lat'.*1 rows"):
        dbscan(spark.createDataFrame(good.assign(lat=[44.0, 95.0, 44.0])), 200.0, 2)
    with pytest.raises(InputError, match="'lon'"):
        dbscan(spark.createDataFrame(good.assign(lon=[11.0, float("nan"), 11.0])), 200.0, 2)
    with pytest.raises(InputError, match="unique.*'a'"):
        dbscan(spark.createDataFrame(good.assign(pixel_id=["a", "a", "c"])), 200.0, 2)
    with pytest.raises(InputError, match="antimeridian"):
        dbscan(spark.createDataFrame(good.assign(lon=[179.9, -179.9, 0.0])), 200.0, 2)
    with pytest.raises(InputError, match="null"):
        dbscan(spark.createDataFrame(good.astype({"g": "float"}).assign(g=[0.0, None, 1.0])), 200.0, 2, group_col="g")
    with pytest.raises(ValueError, match="no value for group"):
        dbscan(df, {0: 200.0}, 2, group_col="g")
    with pytest.raises(ValueError, match="eps_m"):
        dbscan(df, -5.0, 2)
    with pytest.raises(ValueError, match="min_samples"):
        dbscan(df, 100.0, 0)
    with pytest.raises(ValueError, match="already exists"):
        dbscan(df.withColumnRenamed("g", "cluster_id"), 100.0, 2)
    with pytest.raises(ValueError, match="'height'"):
        dbscan(df, 100.0, 2, lat_col="height")
    empty = dbscan(df.where("lon > 100"), 100.0, 2)
    assert empty.count() == 0 and empty.columns == [*df.columns, "cluster_id", "is_core"]
