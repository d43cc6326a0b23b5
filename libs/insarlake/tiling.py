"""The spatial partition key of `pixels`: adaptive geohash tiles computed with Sedona.

Why geohash rather than Sedona's KDB-tree partitioner: a geohash cell depends only on the
location, so a pixel keeps its tile across re-ingests, datasets and monitoring runs, and a tile's
rectangle is known from its key alone (later stages add halos around tiles without a side table).
Skew is handled the way a KDB-tree would: a cell holding more than ``max_pixels_per_tile`` pixels
is split into its 32 children, down to ``max_precision``. The tiling is consistent: every pixel
gets the coarsest cell (>= ``min_precision``) along its own geohash whose count is small enough,
and all pixels sharing that prefix make the same choice.

Files are laid out along a Hilbert curve through the tile centres (``tile_order``): unlike the
Z-order of geohash strings, consecutive tiles on a Hilbert curve are always neighbours, so the
range of tiles in one file is a compact patch of ground.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from insarlake.config import PartitionConfig

_BASE32 = "0123456789bcdefghjkmnpqrstuvwxyz"


def add_tile_id(df: DataFrame, cfg: PartitionConfig, lon_col: str = "lon", lat_col: str = "lat",
                tile_col: str = "tile_id") -> DataFrame:
    """``df`` with a string column ``tile_col``: the adaptive geohash tile of each row."""
    return adaptive_geohash(df, cfg.min_precision, cfg.max_precision, cfg.max_pixels_per_tile,
                            lon_col=lon_col, lat_col=lat_col, tile_col=tile_col)


def adaptive_geohash(df: DataFrame, min_precision: int, max_precision: int, max_points: int,
                     lon_col: str = "lon", lat_col: str = "lat", tile_col: str = "tile_id",
                     group_cols: Sequence[str] = ()) -> DataFrame:
    """``df`` with ``tile_col``: for each row the coarsest geohash cell of its location, between
    ``min_precision`` and ``max_precision`` characters, holding at most ``max_points`` rows (of the
    same ``group_cols`` values, when given); rows of a cell still too full at ``max_precision`` get it."""
    lo, hi = min_precision, max_precision
    keys = list(group_cols)
    with_cell = df.withColumn(
        "_cell", F.expr(f"ST_GeoHash(ST_Point(CAST({lon_col} AS DOUBLE), CAST({lat_col} AS DOUBLE)), {hi})"))
    cells = with_cell.groupBy(*keys, "_cell").agg(F.count(F.lit(1)).alias("_n"))
    per_level = cells.select(
        *keys, "_cell", "_n", F.explode(F.sequence(F.lit(lo), F.lit(hi))).alias("_level")
    ).withColumn("_prefix", F.expr("substring(_cell, 1, _level)"))
    small = (per_level.groupBy(*keys, "_level", "_prefix").agg(F.sum("_n").alias("_total"))
             .where((F.col("_total") <= max_points) | (F.col("_level") == hi))
             .select(*keys, "_level", "_prefix"))
    cell_tile = (per_level.join(small, [*keys, "_level", "_prefix"])
                 .groupBy(*keys, "_cell").agg(F.min("_level").alias("_level"))
                 .select(*keys, "_cell", F.expr("substring(_cell, 1, _level)").alias(tile_col)))
    return with_cell.join(cell_tile, [*keys, "_cell"]).drop("_cell")


def geohash_bounds(code: str) -> tuple[float, float, float, float]:
    """(min_lon, min_lat, max_lon, max_lat) in degrees of the geohash cell ``code``."""
    lon = [-180.0, 180.0]
    lat = [-90.0, 90.0]
    even = True
    for ch in code:
        bits = _BASE32.index(ch)
        for shift in range(4, -1, -1):
            interval = lon if even else lat
            mid = (interval[0] + interval[1]) / 2
            if (bits >> shift) & 1:
                interval[0] = mid
            else:
                interval[1] = mid
            even = not even
    return lon[0], lat[0], lon[1], lat[1]


def hilbert_index(lon: np.ndarray, lat: np.ndarray, order: int = 24) -> np.ndarray:
    """Position (int64, (n,)) along a Hilbert curve over the globe's lon/lat rectangle, on a
    2^order x 2^order grid. lon, lat: (n,) degrees."""
    side = 1 << order
    x = np.clip(((np.asarray(lon, dtype=np.float64) + 180.0) / 360.0 * side).astype(np.int64), 0, side - 1)
    y = np.clip(((np.asarray(lat, dtype=np.float64) + 90.0) / 180.0 * side).astype(np.int64), 0, side - 1)
    d = np.zeros_like(x)
    s = side >> 1
    while s > 0:
        rx = (x & s) > 0
        ry = (y & s) > 0
        d += s * s * ((3 * rx) ^ ry)
        # rotate the quadrant so the curve stays continuous
        flip = ~ry & rx
        x = np.where(flip, side - 1 - x, x)
        y = np.where(flip, side - 1 - y, y)
        swap = ~ry
        x, y = np.where(swap, y, x), np.where(swap, x, y)
        s >>= 1
    return d


def tile_order(spark: SparkSession, tile_ids: list[str]) -> DataFrame:
    """(tile_id, tile_order): the Hilbert position of each tile's centre, for file layout."""
    bounds = np.array([geohash_bounds(t) for t in tile_ids]).reshape(-1, 4)
    order = hilbert_index((bounds[:, 0] + bounds[:, 2]) / 2, (bounds[:, 1] + bounds[:, 3]) / 2)
    return spark.createDataFrame(list(zip(tile_ids, order.tolist())), "tile_id string, tile_order long")
