"""Per-point computations over each point's neighbourhood (all points within a radius) on Spark.

The tiles and halos of the distributed DBSCAN (``dbscan.py``) with the radius as eps: every point is
owned by one adaptive geohash tile and sent, as a neighbour, to each tile whose rectangle widened by
the radius holds it. A pandas function then runs once per tile on the tile's own points and every
point within the radius of them, so a neighbourhood never stops at a tile's edge.
"""
from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from insarlake.spatial.dbscan import finest_precision, halo_assigner, halo_schema, tile_plan, validate_points
from insarlake.tiling import adaptive_geohash

log = logging.getLogger(__name__)

# The frame handed to the function: the tile's points and their neighbours, sorted by id; owned
# marks the tile's own points (the rows the function answers for).
TileFunction = Callable[[pd.DataFrame, np.ndarray], pd.DataFrame]


def map_neighbourhoods(df: DataFrame, radius_m: float, fn: TileFunction, schema: T.StructType | str,
                       lon_col: str = "lon", lat_col: str = "lat", id_col: str = "pixel_id", *,
                       max_points_per_tile: int = 200_000, min_precision: int = 3,
                       max_precision: int = 8) -> DataFrame:
    """The rows ``fn(frame, owned)`` returns for each tile, as a DataFrame of ``schema`` (persisted:
    the caller unpersists it).

    frame: the tile's points and every point within ``radius_m`` great-circle metres of one of them,
    with all of ``df``'s columns (sorted by ``id_col``); owned: (len(frame),) bool, the tile's own
    points. Every point of ``df`` is owned by exactly one tile. lon_col, lat_col: degrees (WGS84);
    id_col: a unique, non-null id. Raises InputError on bad rows (as ``dbscan``)."""
    if not radius_m > 0:
        raise ValueError(f"radius_m must be > 0, got {radius_m}")
    pts = df.select(F.col(id_col).alias("_id"), F.col(lon_col).cast("double").alias("_lon"),
                    F.col(lat_col).cast("double").alias("_lat"), F.lit(0).alias("_grp"))
    groups = validate_points(pts, id_col, lon_col, lat_col, None, who="neighbourhoods")
    if not groups:
        return df.sparkSession.createDataFrame([], schema)
    abs_lat_max = max(max(abs(g["lat_min"]), abs(g["lat_max"])) for g in groups.values())
    finest = finest_precision(radius_m, abs_lat_max, min_precision, max_precision)
    tiled = adaptive_geohash(pts, min_precision, finest, max_points_per_tile, lon_col="_lon", lat_col="_lat",
                             tile_col="_tile", group_cols=["_grp"]).persist(StorageLevel.MEMORY_AND_DISK)
    plan = tile_plan(tiled, {0: radius_m})
    log.info("neighbourhoods: %d points, %d tiles, radius %.0f m", groups[0]["n"], len(plan), radius_m)
    # zone 0: the tile's own points; 1: within the radius of the tile (2, beyond it, is not needed)
    halo = (tiled.mapInPandas(halo_assigner(plan), halo_schema(df.schema[id_col].dataType))
            .where(F.col("_zone") <= 1).select("_tile", "_id", "_zone"))
    joined = halo.join(df.withColumnRenamed(id_col, "_id"), "_id")

    def one(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.sort_values("_id", kind="stable", ignore_index=True)
        owned = frame["_zone"].to_numpy() == 0
        return fn(frame.drop(columns=["_tile", "_zone"]).rename(columns={"_id": id_col}), owned)

    out = joined.groupBy("_tile").applyInPandas(one, schema).persist(StorageLevel.MEMORY_AND_DISK)
    out.count()
    tiled.unpersist()
    return out
