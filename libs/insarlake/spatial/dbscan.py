"""Exact distributed DBSCAN in great-circle metres on Spark DataFrames.

How it runs (every step is a Spark job over the points; only per-tile and per-cluster summaries
reach the driver):

1. Validate: coordinates present and in range, ids present and unique, groups not null.
2. Tiles: the adaptive geohash partition key (``tiling.adaptive_geohash``, Sedona ``ST_GeoHash``)
   computed per group, so a dense city splits into more tiles (``max_points_per_tile``), but never
   into cells narrower than the smallest eps.
3. Halo: each point is sent to its own tile (zone 0) and to every tile of its group whose rectangle,
   widened by 2 eps (conservatively in longitude, from the latitude), contains it: zone 1 when it is
   within the eps-widened rectangle, zone 2 otherwise. A broadcast STRtree of the rectangles finds
   them in ``mapInPandas``.
4. Local DBSCAN per tile (``applyInPandas`` over ``kernel.local_dbscan``): core flags and local
   clusters are exact for zones 0 and 1; each tile reports its own points, the zone-1 cores that tie
   its clusters to neighbouring tiles, and one row per local cluster with its smallest core id.
5. Merge: local clusters sharing a core point are the same cluster (connected components of the
   small label graph on the driver); cluster ids are 0, 1, ... in the order of (group, smallest core
   id), so they do not depend on the tiling or the number of partitions.

The result equals scikit-learn ``DBSCAN(eps=eps_m / EARTH_RADIUS_M, min_samples, metric="haversine")``
on [lat, lon] in radians: same core points, same partition of the cores into clusters, same noise;
border points follow the rule in ``kernel`` (nearest core, ties to the smaller id). Longitudes are
not wrapped: a group with points on both sides of the antimeridian is refused.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Union

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from insarlake.errors import InputError
from insarlake.geo import EARTH_RADIUS_M
from insarlake.spatial.kernel import local_dbscan, lon_reach_rad
from insarlake.tiling import adaptive_geohash, geohash_bounds

log = logging.getLogger(__name__)

Param = Union[float, int, Mapping[Any, Union[float, int]]]
# Widening of halo rectangles beyond the exact bound, so rounding never loses a neighbour:
# relative to the halo width, plus an absolute term (degrees, ~1 mm).
_HALO_REL = 1e-6
_HALO_ABS_DEG = 1e-8
# Degrees of longitude from +-180 within which a group's points count as touching the antimeridian.
_ANTIMERIDIAN_DEG = 1.0
_LABEL_SHIFT = 32   # label = tile index << 32 | local root index


@dataclass(frozen=True)
class DbscanStats:
    """What a ``dbscan`` call did: points in, groups, tiles, points clustered by the tiles (own
    points plus halos: local_rows / points is the halo's replication), clusters, core and noise
    points, geohash precisions used, seconds per step (the final join runs lazily, with the caller)."""
    points: int
    groups: int
    tiles: int
    local_rows: int
    clusters: int
    cores: int
    noise: int
    tile_precision: tuple[int, int]
    seconds: dict   # wall seconds per step: validate, tile, cluster (halo + local DBSCAN), merge


def dbscan(df: DataFrame, eps_m: Param, min_samples: Param, group_col: str | None = None,
           lon_col: str = "lon", lat_col: str = "lat", id_col: str = "pixel_id",
           cluster_col: str = "cluster_id", core_col: str = "is_core", *,
           max_points_per_tile: int = 200_000, min_precision: int = 3, max_precision: int = 8) -> DataFrame:
    """``df`` with ``cluster_col`` (long, -1 = noise) and ``core_col`` (boolean) from exact DBSCAN;
    see ``dbscan_with_stats`` for the arguments."""
    return dbscan_with_stats(df, eps_m, min_samples, group_col, lon_col, lat_col, id_col, cluster_col, core_col,
                             max_points_per_tile=max_points_per_tile, min_precision=min_precision,
                             max_precision=max_precision)[0]


def dbscan_with_stats(df: DataFrame, eps_m: Param, min_samples: Param, group_col: str | None = None,
                      lon_col: str = "lon", lat_col: str = "lat", id_col: str = "pixel_id",
                      cluster_col: str = "cluster_id", core_col: str = "is_core", *,
                      max_points_per_tile: int = 200_000, min_precision: int = 3,
                      max_precision: int = 8) -> tuple[DataFrame, DbscanStats]:
    """``df`` with ``cluster_col`` (long, -1 = noise) and ``core_col`` (boolean) from exact DBSCAN.

    eps_m: neighbourhood radius in great-circle metres; min_samples: points within eps_m (itself
    included) that make a core point. With ``group_col`` each group is clustered on its own and
    either parameter may be a mapping {group value: value} covering every group present.
    lon_col, lat_col: degrees (WGS84); id_col: a unique, non-null id (string or integer).
    Tiling: adaptive geohash cells of ``min_precision``..``max_precision`` characters holding at most
    ``max_points_per_tile`` points each, where the eps allows.
    Raises InputError on bad rows (null/out-of-range coordinates, null/duplicate ids, null groups)
    and ValueError on bad parameters.
    """
    spark = df.sparkSession
    clock = _Clock()
    _check_columns(df, group_col, lon_col, lat_col, id_col, cluster_col, core_col)
    if not 1 <= min_precision <= max_precision <= 12:
        raise ValueError(f"need 1 <= min_precision <= max_precision <= 12, got {min_precision}, {max_precision}")
    if max_points_per_tile < 1:
        raise ValueError(f"max_points_per_tile must be >= 1, got {max_points_per_tile}")
    id_type = df.schema[id_col].dataType
    pts = df.select(F.col(id_col).alias("_id"), F.col(lon_col).cast("double").alias("_lon"),
                    F.col(lat_col).cast("double").alias("_lat"),
                    (F.col(group_col) if group_col else F.lit(0)).alias("_grp"))
    groups = validate_points(pts, id_col, lon_col, lat_col, group_col)
    n = int(sum(g["n"] for g in groups.values()))
    out_schema = T.StructType(df.schema.fields + [T.StructField(cluster_col, T.LongType()),
                                                 T.StructField(core_col, T.BooleanType())])
    if n == 0:
        return (spark.createDataFrame([], out_schema),
                DbscanStats(0, 0, 0, 0, 0, 0, 0, (min_precision, min_precision), clock.lap("validate")))
    eps = _per_group(eps_m, groups, "eps_m", _valid_eps)
    samples = _per_group(min_samples, groups, "min_samples", _valid_min_samples)

    abs_lat_max = max(max(abs(g["lat_min"]), abs(g["lat_max"])) for g in groups.values())
    clock.lap("validate")
    finest = finest_precision(min(eps.values()), abs_lat_max, min_precision, max_precision)
    tiled = adaptive_geohash(pts, min_precision, finest, max_points_per_tile, lon_col="_lon", lat_col="_lat",
                             tile_col="_tile", group_cols=["_grp"]).persist(StorageLevel.MEMORY_AND_DISK)
    plan = tile_plan(tiled, eps)
    clock.lap("tile")
    log.info("dbscan: %d points, %d groups, %d tiles (geohash precision %d..%d)", n, len(groups), len(plan),
             min_precision, finest)

    halo = tiled.mapInPandas(halo_assigner(plan), halo_schema(id_type))
    # Persisted, not checkpointed: a lost executor recomputes its part from the lineage, which is
    # deterministic (tiles from counts, each tile's rows sorted by id before clustering).
    local = (halo.groupBy("_tile").applyInPandas(_tile_clusterer(plan, samples), _local_schema(id_type))
             .persist(StorageLevel.MEMORY_AND_DISK))
    stats = local.agg(
        F.sum((F.col("_kind") == 0).cast("long")).alias("owned"),
        F.sum(((F.col("_kind") == 0) & F.col("_core")).cast("long")).alias("cores"),
        F.sum(((F.col("_kind") == 0) & (F.col("_label") < 0)).cast("long")).alias("noise"),
        F.sum(F.when(F.col("_kind") == 3, F.col("_label"))).alias("local_rows")).first()
    tiled.unpersist()
    if stats["owned"] != n:   # every point has exactly one owner tile
        raise RuntimeError(f"dbscan: {stats['owned']} points came out of the tiles, {n} went in")
    clock.lap("cluster")

    owned = local.where(F.col("_kind") == 0)
    label_cluster = _merge_labels(local, plan)
    label_df = spark.createDataFrame(label_cluster, "_label long, _cluster long")
    result = (owned.join(F.broadcast(label_df) if len(label_cluster) < 1_000_000 else label_df, "_label", "left")
              .select(F.col("_id").alias(id_col), F.coalesce("_cluster", F.lit(-1)).cast("long").alias(cluster_col),
                      F.col("_core").alias(core_col)))
    out = df.join(result, id_col).select(*[F.col(c) for c in df.columns], cluster_col, core_col)
    return out, DbscanStats(points=n, groups=len(groups), tiles=len(plan), local_rows=int(stats["local_rows"]),
                            clusters=int(label_cluster["_cluster"].max() + 1) if len(label_cluster) else 0,
                            cores=int(stats["cores"] or 0), noise=int(stats["noise"] or 0),
                            tile_precision=(min_precision, finest), seconds=clock.lap("merge"))


class _Clock:
    """Wall seconds between laps, by name."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> dict[str, float]:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._last, 3)
        self._last = now
        return dict(self.seconds)


# ---------------------------------------------------------------------------------------------
# validation and parameters

def _check_columns(df, group_col, lon_col, lat_col, id_col, cluster_col, core_col) -> None:
    fields = {f.name: f.dataType for f in df.schema.fields}
    for role, name in (("lon_col", lon_col), ("lat_col", lat_col), ("id_col", id_col)) + (
            (("group_col", group_col),) if group_col else ()):
        if name not in fields:
            raise ValueError(f"dbscan: {role} {name!r} is not a column of the DataFrame ({', '.join(fields)})")
    for role, name in (("lon_col", lon_col), ("lat_col", lat_col)):
        if not isinstance(fields[name], T.NumericType):
            raise ValueError(f"dbscan: {role} {name!r} must be numeric degrees, got {fields[name].simpleString()}")
    if not isinstance(fields[id_col], (T.StringType, T.IntegerType, T.LongType, T.ShortType)):
        raise ValueError(f"dbscan: id_col {id_col!r} must be a string or integer, got {fields[id_col].simpleString()}")
    for role, name in (("cluster_col", cluster_col), ("core_col", core_col)):
        if name in fields:
            raise ValueError(f"dbscan: {role} {name!r} already exists in the DataFrame")


def validate_points(pts: DataFrame, id_col: str, lon_col: str, lat_col: str, group_col: str | None,
                    who: str = "dbscan") -> dict:
    """Per-group counts and latitude range; raises InputError on bad rows (messages start with ``who``)."""
    bad_lon = F.col("_lon").isNull() | F.isnan("_lon") | (F.abs("_lon") > 180)
    bad_lat = F.col("_lat").isNull() | F.isnan("_lat") | (F.abs("_lat") > 90)
    rows = pts.groupBy("_grp").agg(
        F.count(F.lit(1)).alias("n"), F.sum(bad_lon.cast("long")).alias("bad_lon"),
        F.sum(bad_lat.cast("long")).alias("bad_lat"), F.sum(F.col("_id").isNull().cast("long")).alias("null_id"),
        F.min("_lat").alias("lat_min"), F.max("_lat").alias("lat_max"),
        F.min("_lon").alias("lon_min"), F.max("_lon").alias("lon_max")).collect()
    for key, col in (("bad_lon", lon_col), ("bad_lat", lat_col), ("null_id", id_col)):
        bad = sum(r[key] for r in rows)
        if bad:
            what = "null" if key == "null_id" else "null, NaN or out of range"
            raise InputError(f"{who}: column {col!r}: {bad} rows are {what}")
    if any(r["_grp"] is None for r in rows):
        raise InputError(f"{who}: group column {group_col!r} has null values")
    dup = pts.groupBy("_id").count().where(F.col("count") > 1).limit(3).collect()
    if dup:
        raise InputError(f"{who}: column {id_col!r} must be unique; repeated ids include "
                         f"{', '.join(repr(r['_id']) for r in dup)}")
    for r in rows:
        if r["lon_min"] < -180 + _ANTIMERIDIAN_DEG and r["lon_max"] > 180 - _ANTIMERIDIAN_DEG:
            raise InputError(f"{who}: group {r['_grp']!r} has points on both sides of the antimeridian "
                             f"(longitudes {r['lon_min']} .. {r['lon_max']}); longitudes are not wrapped")
    return {r["_grp"]: r.asDict() for r in rows}


def _valid_eps(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not 0 < value <= 2_000_000:
        raise ValueError(f"eps_m must be a distance in metres in (0, 2000000], got {value!r}")
    return float(value)


def _valid_min_samples(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"min_samples must be an integer >= 1, got {value!r}")
    return int(value)


def _per_group(param: Param, groups: Mapping, name: str, check) -> dict:
    if isinstance(param, Mapping):
        missing = [g for g in groups if g not in param]
        if missing:
            raise ValueError(f"{name} mapping has no value for group(s) {sorted(missing, key=repr)}")
        return {g: check(param[g]) for g in groups}
    value = check(param)
    return {g: value for g in groups}


def geohash_cell_m(precision: int, abs_lat_deg: float) -> tuple[float, float]:
    """(width, height) in metres of a geohash cell of ``precision`` characters at |latitude|."""
    bits = 5 * precision
    width_deg = 360.0 / 2 ** ((bits + 1) // 2)
    height_deg = 180.0 / 2 ** (bits // 2)
    metres_per_deg = math.pi * EARTH_RADIUS_M / 180.0
    return width_deg * metres_per_deg * math.cos(math.radians(abs_lat_deg)), height_deg * metres_per_deg


def finest_precision(eps_min_m: float, abs_lat_max: float, lo: int, hi: int) -> int:
    """The finest precision in lo..hi whose cells are at least eps wide and high (at least lo)."""
    best = lo
    for p in range(lo, hi + 1):
        if min(geohash_cell_m(p, min(abs_lat_max, 89.0))) >= eps_min_m:
            best = p
    return best


# ---------------------------------------------------------------------------------------------
# tiles and halos

def tile_plan(tiled: DataFrame, eps: Mapping) -> pd.DataFrame:
    """One row per (group, tile): index, eps (rad), the tile rectangle widened by eps (inner) and by
    2 eps (outer), degrees. Ordered by (group, tile) so the tile index is deterministic."""
    counts = tiled.groupBy("_grp", "_tile").count().toPandas()
    counts = counts.sort_values(["_grp", "_tile"], kind="stable")
    rows = []
    for idx, (grp, tile, count) in enumerate(counts[["_grp", "_tile", "count"]].itertuples(index=False)):
        min_lon, min_lat, max_lon, max_lat = geohash_bounds(tile)
        e = eps[grp] / EARTH_RADIUS_M
        row = {"tile_index": idx, "grp": grp, "tile": tile, "count": int(count), "eps_rad": e}
        for name, dist in (("inner", e), ("outer", 2 * e)):
            dlat = math.degrees(dist) * (1 + _HALO_REL) + _HALO_ABS_DEG
            abs_lat = max(abs(min_lat - dlat), abs(max_lat + dlat))
            reach = lon_reach_rad(dist, math.radians(min(abs_lat, 90.0)))
            if reach >= math.pi:
                raise InputError(f"dbscan: tile {tile} with eps {eps[grp]} m reaches a pole; not supported")
            dlon = math.degrees(reach) * (1 + _HALO_REL) + _HALO_ABS_DEG
            row.update({f"{name}_min_lon": min_lon - dlon, f"{name}_min_lat": min_lat - dlat,
                        f"{name}_max_lon": max_lon + dlon, f"{name}_max_lat": max_lat + dlat})
        rows.append(row)
    return pd.DataFrame(rows)


def halo_schema(id_type) -> T.StructType:
    return T.StructType([T.StructField("_tile", T.LongType()), T.StructField("_id", id_type),
                         T.StructField("_lon", T.DoubleType()), T.StructField("_lat", T.DoubleType()),
                         T.StructField("_zone", T.ByteType())])


def halo_assigner(plan: pd.DataFrame):
    """mapInPandas function: every (tile, point) pair with the point inside the tile's outer
    rectangle (same group), and the point's zone there."""
    by_group = {grp: sub.reset_index(drop=True) for grp, sub in plan.groupby("grp", sort=False)}

    def assign(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import shapely

        trees: dict = {}
        for batch in batches:
            for grp, sub in batch.groupby("_grp", sort=False):
                tiles = by_group[grp]
                if grp not in trees:
                    boxes = shapely.box(tiles["outer_min_lon"], tiles["outer_min_lat"],
                                        tiles["outer_max_lon"], tiles["outer_max_lat"])
                    trees[grp] = (shapely.STRtree(boxes), dict(zip(tiles["tile"], tiles.index)))
                tree, position = trees[grp]
                lon = sub["_lon"].to_numpy()
                lat = sub["_lat"].to_numpy()
                point_i, tile_k = tree.query(shapely.points(lon, lat), predicate="intersects")
                own_k = sub["_tile"].map(position).to_numpy()
                lon_i, lat_i = lon[point_i], lat[point_i]
                inner = ((lon_i >= tiles["inner_min_lon"].to_numpy()[tile_k])
                         & (lon_i <= tiles["inner_max_lon"].to_numpy()[tile_k])
                         & (lat_i >= tiles["inner_min_lat"].to_numpy()[tile_k])
                         & (lat_i <= tiles["inner_max_lat"].to_numpy()[tile_k]))
                zone = np.where(own_k[point_i] == tile_k, 0, np.where(inner, 1, 2)).astype(np.int8)
                yield pd.DataFrame({"_tile": tiles["tile_index"].to_numpy()[tile_k],
                                    "_id": sub["_id"].to_numpy()[point_i], "_lon": lon_i, "_lat": lat_i,
                                    "_zone": zone})

    return assign


# ---------------------------------------------------------------------------------------------
# local clustering and merge

def _local_schema(id_type) -> T.StructType:
    return T.StructType([T.StructField("_kind", T.ByteType()), T.StructField("_id", id_type),
                         T.StructField("_core", T.BooleanType()), T.StructField("_label", T.LongType())])


def _tile_clusterer(plan: pd.DataFrame, samples: Mapping):
    """applyInPandas function for one tile's points (all zones). Rows out:
    kind 0 - each owned point: id, is_core, label (-1 = noise);
    kind 1 - each zone-1 core in a local cluster that has owned points: id, label (links tiles);
    kind 2 - each such local cluster: the id of its smallest core, label;
    kind 3 - one row: the number of points (all zones) in label."""
    eps_by_tile = plan["eps_rad"].to_numpy()
    samples_by_tile = plan["grp"].map(samples).to_numpy()

    def cluster(pdf: pd.DataFrame) -> pd.DataFrame:
        tile = int(pdf["_tile"].iat[0])
        pdf = pdf.sort_values("_id", kind="stable", ignore_index=True)
        zone = pdf["_zone"].to_numpy(np.int8)
        core, root = local_dbscan(np.radians(pdf["_lat"].to_numpy(np.float64)),
                                  np.radians(pdf["_lon"].to_numpy(np.float64)), zone,
                                  float(eps_by_tile[tile]), int(samples_by_tile[tile]))
        label = np.where(root >= 0, (np.int64(tile) << _LABEL_SHIFT) | root, -1)
        owned = zone == 0
        roots = np.unique(root[owned & (root >= 0)])
        link = (zone == 1) & core & np.isin(root, roots)
        ids = pdf["_id"].to_numpy()
        kind = np.concatenate([np.zeros(owned.sum(), np.int8), np.ones(link.sum(), np.int8),
                               np.full(len(roots), 2, np.int8), [np.int8(3)]])
        return pd.DataFrame({"_kind": kind,
                             "_id": np.concatenate([ids[owned], ids[link], ids[roots], ids[:1]]),
                             "_core": np.concatenate([core[owned], core[link], np.ones(len(roots) + 1, bool)]),
                             "_label": np.concatenate([label[owned], label[link],
                                                       (np.int64(tile) << _LABEL_SHIFT) | roots, [len(pdf)]])})

    return cluster


def _merge_labels(local: DataFrame, plan: pd.DataFrame) -> pd.DataFrame:
    """(label, cluster id) for every local cluster: labels sharing a core point are one cluster;
    clusters are numbered by (group, smallest core id)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    pairs = (local.where(((F.col("_kind") == 0) & F.col("_core")) | (F.col("_kind") == 1))
             .groupBy("_id").agg(F.min("_label").alias("a"), F.collect_set("_label").alias("s"))
             .where(F.size("s") > 1)
             .select("a", F.explode("s").alias("b")).where(F.col("a") != F.col("b")).distinct().toPandas())
    labels = local.where(F.col("_kind") == 2).select("_label", "_id").toPandas()
    if labels.empty:
        return pd.DataFrame({"_label": pd.Series([], dtype="int64"), "_cluster": pd.Series([], dtype="int64")})
    index = pd.Index(labels["_label"].to_numpy())
    a = index.get_indexer(pairs["a"].to_numpy())
    b = index.get_indexer(pairs["b"].to_numpy())
    if (a < 0).any() or (b < 0).any():   # a linked label always has owned points somewhere
        raise RuntimeError("dbscan: a tile link refers to a local cluster no tile reported")
    m = len(index)
    _, component = connected_components(coo_matrix((np.ones(len(a)), (a, b)), shape=(m, m)), directed=False)
    labels["component"] = component
    grp_by_tile = plan["grp"].to_numpy()
    labels["grp"] = grp_by_tile[labels["_label"].to_numpy() >> _LABEL_SHIFT]
    first = labels.groupby("component").agg(grp=("grp", "first"), min_id=("_id", "min"))
    first = first.sort_values(["grp", "min_id"], kind="stable")
    first["_cluster"] = np.arange(len(first), dtype=np.int64)
    labels["_cluster"] = labels["component"].map(first["_cluster"])
    log.info("dbscan: %d local clusters, %d tile links, %d clusters", m, len(pairs), len(first))
    return labels[["_label", "_cluster"]].astype("int64")
