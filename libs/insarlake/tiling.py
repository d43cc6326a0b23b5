"""The spatial partition key of `pixels`: adaptive geohash tiles computed with Sedona.

Why geohash rather than Sedona's KDB-tree partitioner: a geohash cell depends only on the
location, so a pixel keeps its tile across re-ingests, datasets and monitoring runs, and a tile's
rectangle is known from its key alone (later stages add halos around tiles without a side table).
Skew is handled the way a KDB-tree would: a cell holding more than ``max_pixels_per_tile`` pixels
is split into its 32 children, down to ``max_precision``. The tiling is consistent: every pixel
gets the coarsest cell (>= ``min_precision``) along its own geohash whose count is small enough,
and all pixels sharing that prefix make the same choice. Geohash keys sort in Z-order, so a range
of keys (one output file) is a compact patch of ground.
"""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from insarlake.config import PartitionConfig

_BASE32 = "0123456789bcdefghjkmnpqrstuvwxyz"


def add_tile_id(df: DataFrame, cfg: PartitionConfig, lon_col: str = "lon", lat_col: str = "lat",
                tile_col: str = "tile_id") -> DataFrame:
    """``df`` with a string column ``tile_col``: the adaptive geohash tile of each row."""
    lo, hi = cfg.min_precision, cfg.max_precision
    with_cell = df.withColumn(
        "_cell", F.expr(f"ST_GeoHash(ST_Point(CAST({lon_col} AS DOUBLE), CAST({lat_col} AS DOUBLE)), {hi})"))
    cells = with_cell.groupBy("_cell").agg(F.count(F.lit(1)).alias("_n"))
    per_level = cells.select(
        "_cell", "_n", F.explode(F.sequence(F.lit(lo), F.lit(hi))).alias("_level")
    ).withColumn("_prefix", F.expr("substring(_cell, 1, _level)"))
    small = (per_level.groupBy("_level", "_prefix").agg(F.sum("_n").alias("_total"))
             .where((F.col("_total") <= cfg.max_pixels_per_tile) | (F.col("_level") == hi))
             .select("_level", "_prefix"))
    cell_tile = (per_level.join(small, ["_level", "_prefix"])
                 .groupBy("_cell").agg(F.min("_level").alias("_level"))
                 .select("_cell", F.expr("substring(_cell, 1, _level)").alias(tile_col)))
    return with_cell.join(cell_tile, "_cell").drop("_cell")


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
