"""Points measured twice where adjacent bursts of one track overlap: found, flagged, one kept.

Two valid points of the same dataset (one track) *match* when they come from different bursts, lie
within ``overlap_distance_m`` of each other (great-circle) and their series agree: the RMS of the
difference of the two series, minus its mean over the epochs both have, is at most
``overlap_max_rms_mm`` (a constant offset between the bursts' references is ignored; a trend or
noise beyond the threshold is not). Twins are a one-to-one matching of the matches between two
bursts, the most similar series first (then the closest: within the distance, geocoding noise
says less than the series do), so that a point is measured at most once by another burst and two
distinct neighbours of one burst are never merged through a twin: rounds of mutual best matches,
each round among the points no earlier round paired. Of each pair of twins the one with the higher temporal
coherence is kept for analysis (ties: the smaller pixel_id). Every other point gets
``duplicate_of``: the best twin it has, followed until it reaches a kept point. Nothing is dropped:
duplicates stay in ``pixels`` with that column set, and the analysis stages read only rows whose
``duplicate_of`` is null (``lake.analysis_pixels``).

The search is a Spark join on grid cells at least one distance wide (a point's twins lie in its
own cell or the eight around it), so its cost grows with the points, not their square; only
datasets holding two or more bursts are searched.
"""
from __future__ import annotations

import logging
import math
from typing import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from insarlake.files import LakeFiles
from insarlake.geo import EARTH_RADIUS_M, haversine_m
from insarlake.spatial.kernel import lon_reach_rad

log = logging.getLogger(__name__)

# Fewer common valid epochs than this and two series are not compared (never twins).
MIN_COMMON_EPOCHS = 3
# Rounds of following duplicate_of to a kept point; a chain is at most as long as the number of
# bursts overlapping at one place (2 along a track, 4 at the corner of two swaths).
_MAX_CHAIN = 16
# Rounds of mutual nearest matches; each pairs at least the closest remaining pair (usually nearly all).
_MAX_ROUNDS = 64


def series_rms_difference_mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """RMS (mm) of a - b after removing its mean, over the epochs where both are finite.

    a, b: (n, T) displacement in mm (NaN = missing). Returns float64 (n,), NaN where fewer than
    MIN_COMMON_EPOCHS epochs are common."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    diff = a - b
    valid = np.isfinite(diff)
    count = valid.sum(axis=1)
    d = np.where(valid, diff, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = d.sum(axis=1) / count
        resid = np.where(valid, diff - mean[:, None], 0.0)
        rms = np.sqrt((resid ** 2).sum(axis=1) / count)
    rms[count < MIN_COMMON_EPOCHS] = np.nan
    return rms


_PAIR_SCHEMA = T.StructType([T.StructField(name, T.StringType())
                             for name in ("dataset", "pixel_a", "pixel_b", "burst_a", "burst_b")]
                            + [T.StructField("distance_m", T.DoubleType())])
_MATCH_SCHEMA = T.StructType(_PAIR_SCHEMA.fields + [T.StructField("rms_mm", T.DoubleType())])


def saved(df: DataFrame, work: LakeFiles, name: str) -> DataFrame:
    """``df`` written as Parquet to the folder ``name`` of ``work`` and read back: the rounds below
    build on their own results, and this keeps each plan short (a lost executor re-reads the
    files; nothing is recomputed from the start)."""
    df.write.mode("overwrite").parquet(work.uri(name))
    return df.sparkSession.read.parquet(work.uri(name))


def find_twins(pixels: DataFrame, distance_m: float, max_rms_mm: float, work: LakeFiles) -> DataFrame:
    """Pairs of twins among ``pixels`` (columns dataset, track, pixel_id, lon, lat, burst, disp;
    pixel ids unique): (dataset, pixel_a, pixel_b, distance_m, rms_mm), pixel_a < pixel_b. Intermediate
    results go to the folder ``work`` (the caller removes it)."""
    points = pixels.where(F.col("burst").isNotNull()).select(
        "dataset", F.coalesce("track", F.lit(-1)).alias("track"), "pixel_id", "lon", "lat", "burst")
    abs_lat = points.agg(F.max(F.abs("lat")).alias("m")).first().m
    if abs_lat is None:
        return pixels.sparkSession.createDataFrame([], "dataset string, pixel_a string, pixel_b string, "
                                                       "distance_m double, rms_mm double")
    reach_rad = distance_m / EARTH_RADIUS_M
    cell_lat_deg = math.degrees(reach_rad) * (1 + 1e-9) + 1e-12
    cell_lon_deg = math.degrees(lon_reach_rad(reach_rad, math.radians(abs_lat))) * (1 + 1e-9) + 1e-12
    cells = points.select("*", F.floor(F.col("lon") / cell_lon_deg).alias("cx"),
                          F.floor(F.col("lat") / cell_lat_deg).alias("cy"))
    offsets = F.explode(F.array(*[F.struct(F.lit(dx).alias("dx"), F.lit(dy).alias("dy"))
                                  for dx in (-1, 0, 1) for dy in (-1, 0, 1)]))
    around = (cells.select("dataset", "track", F.col("pixel_id").alias("pixel_b"), F.col("lon").alias("lon_b"),
                           F.col("lat").alias("lat_b"), F.col("burst").alias("burst_b"), "cx", "cy",
                           offsets.alias("o"))
              .select("dataset", "track", "pixel_b", "lon_b", "lat_b", "burst_b",
                      (F.col("cx") + F.col("o.dx")).alias("cx"), (F.col("cy") + F.col("o.dy")).alias("cy")))
    candidates = (cells.join(around, ["dataset", "track", "cx", "cy"])       # bursts of one track only
                  .where((F.col("burst") != F.col("burst_b")) & (F.col("pixel_id") < F.col("pixel_b")))
                  .select("dataset", F.col("pixel_id").alias("pixel_a"), "pixel_b", F.col("burst").alias("burst_a"),
                          "burst_b", "lon", "lat", "lon_b", "lat_b"))

    def near(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for b in batches:
            d = haversine_m(b["lon"].to_numpy(), b["lat"].to_numpy(), b["lon_b"].to_numpy(), b["lat_b"].to_numpy())
            keep = d <= distance_m
            yield b.loc[keep, ["dataset", "pixel_a", "pixel_b", "burst_a", "burst_b"]].assign(distance_m=d[keep])

    close = candidates.mapInPandas(near, _PAIR_SCHEMA)
    series = pixels.select("dataset", "pixel_id", "disp")
    with_series = (close.join(series.withColumnRenamed("pixel_id", "pixel_a").withColumnRenamed("disp", "disp_a"),
                              ["dataset", "pixel_a"])
                   .join(series.withColumnRenamed("pixel_id", "pixel_b").withColumnRenamed("disp", "disp_b"),
                         ["dataset", "pixel_b"]))

    def matching(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for b in batches:
            if not len(b):
                continue
            rms = series_rms_difference_mm(np.stack(b["disp_a"].to_numpy()), np.stack(b["disp_b"].to_numpy()))
            keep = rms <= max_rms_mm
            yield b.loc[keep, [f.name for f in _PAIR_SCHEMA.fields]].assign(rms_mm=rms[keep])

    return one_to_one(saved(with_series.mapInPandas(matching, _MATCH_SCHEMA), work, "matches"), work)


def one_to_one(matches: DataFrame, work: LakeFiles) -> DataFrame:
    """The twins among ``matches`` (_MATCH_SCHEMA): per pair of bursts a one-to-one matching, most
    similar first (smallest rms_mm, then distance, then ids), as rounds of mutual best matches
    among the points not yet paired (the greedy matching in that order). Returns (dataset, pixel_a, pixel_b, distance_m,
    rms_mm), pixel_a < pixel_b.

    Each match is held in both directions (x, y) and (y, x), so that a point's matches with one
    other burst are one window partition (x, burst_y) and a round needs no join."""
    a_to_b = matches.select("dataset", F.col("pixel_a").alias("x"), F.col("pixel_b").alias("y"),
                            F.col("burst_a").alias("burst_x"), F.col("burst_b").alias("burst_y"), "distance_m", "rms_mm")
    b_to_a = matches.select("dataset", F.col("pixel_b").alias("x"), F.col("pixel_a").alias("y"),
                            F.col("burst_b").alias("burst_x"), F.col("burst_a").alias("burst_y"), "distance_m", "rms_mm")
    state = a_to_b.unionByName(b_to_a).withColumn("paired", F.lit(False))
    of_x = Window.partitionBy("dataset", "x", "burst_y")
    of_y = Window.partitionBy("dataset", "y", "burst_x")
    for round_ in range(_MAX_ROUNDS):
        free = ~F.max("paired").over(of_x) & ~F.max("paired").over(of_y)
        ranked = (state.withColumn("_free", free)
                  .withColumn("_rx", F.row_number().over(of_x.orderBy(F.desc("_free"), "rms_mm", "distance_m", "y")))
                  .withColumn("_ry", F.row_number().over(of_y.orderBy(F.desc("_free"), "rms_mm", "distance_m", "x"))))
        mutual = F.col("_free") & (F.col("_rx") == 1) & (F.col("_ry") == 1)
        step = saved(ranked.select("dataset", "x", "y", "burst_x", "burst_y", "distance_m", "rms_mm",
                                   (F.col("paired") | mutual).alias("paired"), mutual.alias("new")),
                     work, f"pairing_{round_}")
        state = step.drop("new")
        if step.where("new").limit(1).count() == 0:
            break
    else:   # never seen; what is left unpaired stays kept (a point measured twice, not a lost one)
        log.warning("overlap twins: still pairing after %d rounds; the rest is left unpaired", _MAX_ROUNDS)
    return (state.where(F.col("paired") & (F.col("x") < F.col("y")))
            .select("dataset", F.col("x").alias("pixel_a"), F.col("y").alias("pixel_b"), "distance_m", "rms_mm"))


def duplicate_of(pixels: DataFrame, twins: DataFrame, work: LakeFiles) -> DataFrame:
    """(dataset, pixel_id, duplicate_of) for every point with a better twin (higher coherence,
    then smaller pixel_id), duplicate_of followed to a point that has none (a kept point)."""
    rank = pixels.select("dataset", "pixel_id", "coherence")
    ranked = (twins.join(rank.toDF("dataset", "pixel_a", "coh_a"), ["dataset", "pixel_a"])
              .join(rank.toDF("dataset", "pixel_b", "coh_b"), ["dataset", "pixel_b"]))
    coh_a = F.coalesce(F.col("coh_a"), F.lit(-1.0))
    coh_b = F.coalesce(F.col("coh_b"), F.lit(-1.0))
    a_better = (coh_a > coh_b) | ((coh_a == coh_b) & (F.col("pixel_a") < F.col("pixel_b")))
    worse = ranked.select(
        "dataset",
        F.when(a_better, F.col("pixel_b")).otherwise(F.col("pixel_a")).alias("pixel_id"),
        F.when(a_better, F.struct((-coh_a).alias("key"), F.col("pixel_a").alias("id")))
         .otherwise(F.struct((-coh_b).alias("key"), F.col("pixel_b").alias("id"))).alias("better"))
    links = saved(worse.groupBy("dataset", "pixel_id").agg(F.min("better").alias("best"))
                  .select("dataset", "pixel_id", F.col("best.id").alias("duplicate_of")), work, "links_0")
    for step_ in range(1, _MAX_CHAIN + 1):
        step = links.join(links.toDF("dataset", "duplicate_of", "next"), ["dataset", "duplicate_of"], "left")
        if step.where(F.col("next").isNotNull()).limit(1).count() == 0:
            return links
        links = saved(step.select("dataset", "pixel_id", F.coalesce("next", "duplicate_of").alias("duplicate_of")),
                      work, f"links_{step_}")
    raise RuntimeError(f"duplicate_of chains longer than {_MAX_CHAIN} links")
