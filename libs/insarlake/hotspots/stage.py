"""The hotspots stage on Spark: candidates (predicted clusters, or DBSCAN clusters of moving pixels),
their geometry and series summary, retention with reasons, `hotspots` + `hotspot_pixels`, a GeoJSON
of the retained ones, the map and series pictures; and scoring against `truth` into `hotspot_scores`.

Methods (``hotspots.method``; see conf/default.yaml): ``seed`` (the paper's literal recipe),
``significant`` (the default) and ``velocity_threshold`` (the baseline). Geometry and series kernels
are in ``geometry.py``, scoring in ``scoring.py``, pictures in ``maps.py``; this module only moves
data: one ``applyInPandas`` task per candidate computes its geometry from lon/lat/velocity, the mean
series is a Spark aggregate over exploded epochs. The split into sources is one ``applyInPandas``
task per cluster of moving pixels; with the step split, the rate split or the step join
(``hotspots.step_split_f``, ``rate_split_step_f``, ``step_join_f``) that task holds the cluster's
series too (n x T float64: 1.2 GB for 500,000 pixels of 300 epochs); the local residual and the
local step are one neighbourhood pass (``spatial.neighbours``) that carries every pixel's series
with the step split. The retained hotspots' rims
(``hotspots.rim_grow_z``) are chains of the distributed DBSCAN, owned by a group-by.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from insarlake.config import Config, HotspotsConfig
from insarlake.errors import InputError
from insarlake.exports import write_geoparquet
from insarlake.hotspots.geometry import cluster_geometry, ellipse_polygon, onset_peak
from insarlake.hotspots.maps import plot_hotspot_map, plot_hotspot_series, series_frame
from insarlake.hotspots.scoring import match, scores
from insarlake.hotspots.noise import MAD_TO_SIGMA, speed_z, stable_level
from insarlake.hotspots.rate import best_step
from insarlake.hotspots.residual import local_residual, local_step
from insarlake.hotspots.sources import cluster_parts
from insarlake.lake import (Run, analysis_pixels, lake_files, read_table, rows_written, run_results, table_exists,
                            write_table)
from insarlake.spatial.dbscan import dbscan
from insarlake.spatial.neighbours import map_neighbourhoods
from insarlake.tables import schema
from insarlake.temporal.covariogram import correlation_length_km
from insarlake.timeseries import years_since

log = logging.getLogger(__name__)

HOTSPOTS_SCHEMA = schema("hotspots")
PIXELS_SCHEMA = schema("hotspot_pixels")
SCORES_SCHEMA = schema("hotspot_scores")
# What ``describe`` computes of a candidate: its id, the contract's columns n_pixels .. geometry
# and velocity_z.
_NAMES = HOTSPOTS_SCHEMA.fieldNames()
DESCRIBED_SCHEMA = T.StructType([HOTSPOTS_SCHEMA[c] for c in ["hotspot_id", *_NAMES[_NAMES.index("n_pixels"):
                                                                              _NAMES.index("geometry") + 1],
                                                              "velocity_z"]])


@dataclass(frozen=True)
class Reference:
    """The stable ground's velocity level v0 and noise sigma (mm/yr), the S_d threshold (km) and
    the DBSCAN eps (m) of a run."""
    v0_mm_yr: float
    sigma_mm_yr: float
    max_sd_km: float
    eps_m: float


@dataclass(frozen=True)
class Detection:
    """Candidates of one method: ``rows`` (pandas, one per candidate, HOTSPOTS_SCHEMA without
    dataset/run_id/method) and ``members`` (Spark: pixel_id, hotspot_id, rim for every candidate pixel;
    rim: joined by ``grow_hotspot_rims``)."""
    method: str
    rows: pd.DataFrame
    members: DataFrame
    residual_sigma_mm_yr: float | None = None   # the local residual's noise (significant; None: no residual split)


def labelled_pixels(spark: SparkSession, config: Config, dataset: str, current: Run | None = None
                    ) -> tuple[DataFrame, str]:
    """pixels (pixel_id, lon, lat, velocity, velocity_std, disp) with ``label``: classes.predicted_cluster, or
    clusters.cluster_id when configured or when the dataset has no classes (the rows of ``current``
    when it wrote them, else of the run written last: ``lake.run_results``); and the source name."""
    pixels = analysis_pixels(spark, config, dataset).select("pixel_id", "lon", "lat", "velocity", "velocity_std", "disp")
    source = config.hotspots.labels
    classes = run_results(spark, config, "classes", dataset, current=current) \
        if source == "classes" and table_exists(spark, config, "classes") else None
    if source == "classes" and (classes is None or classes.isEmpty()):
        log.info("dataset %s has no classes: hotspots use clusters.cluster_id", dataset)
        source = "clusters"
    if source == "classes":
        labels = classes.select("pixel_id", F.col("predicted_cluster").alias("label"))
    else:
        if not table_exists(spark, config, "clusters"):
            raise InputError(f"dataset {dataset}: no clusters table; run the cluster stage first")
        labels = run_results(spark, config, "clusters", dataset, current=current).select(
            "pixel_id", F.col("cluster_id").alias("label"))
    out = pixels.join(labels, "pixel_id", "left")
    missing = out.where(F.col("label").isNull()).count()
    if missing:
        raise InputError(f"dataset {dataset}: {missing} pixels have no {source} label; re-run the {source} stage")
    return out, source


# The histogram of velocities handed to ``stable_level``: bins of this share of the smaller first
# sigma estimate (1.4826 x MAD of all velocities, the median velocity_std), out to
# NOISE_HISTOGRAM_SIGMAS x the MAD's sigma from the median; binning moves v0 and sigma by less
# than one bin.
NOISE_BIN_SHARE = 1.0 / 100.0
NOISE_HISTOGRAM_SIGMAS = 10.0


def velocity_noise(pixels: DataFrame, cfg: HotspotsConfig) -> tuple[float, float]:
    """(v0, sigma) in mm/yr: the stable ground's velocity level and noise (``noise.stable_level``
    on a histogram of ``pixels.velocity``, starting from the median ``velocity_std`` where the frame
    has one; sigma hotspots.noise_velocity_mm_yr when set)."""
    valid = pixels.where(F.col("velocity").isNotNull() & ~F.isnan("velocity"))
    velocity = valid.select(F.col("velocity").cast("double").alias("v"))
    formal_std = F.percentile_approx("velocity_std", 0.5, 100_000) if "velocity_std" in pixels.columns \
        else F.lit(None)
    median, formal = valid.select(F.percentile_approx(F.col("velocity").cast("double"), 0.5, 100_000), formal_std).first()
    if median is None:
        raise InputError("no pixel velocity to measure the noise level on")
    spread = MAD_TO_SIGMA * velocity.select(
        F.percentile_approx(F.abs(F.col("v") - F.lit(median)), 0.5, 100_000)).first()[0]
    if not spread > 0:
        raise InputError("the velocity noise (1.4826 x MAD of the velocities) is 0; set hotspots.noise_velocity_mm_yr")
    width = min(spread, formal or spread) * NOISE_BIN_SHARE
    bins = (velocity.where(F.abs(F.col("v") - F.lit(median)) <= NOISE_HISTOGRAM_SIGMAS * spread)
            .groupBy(F.floor((F.col("v") - F.lit(median)) / F.lit(width)).alias("bin")).count().toPandas())
    v0, sigma = stable_level(median + (bins["bin"].to_numpy(np.float64) + 0.5) * width,
                             bins["count"].to_numpy(np.float64), cfg.stable_clip_z, formal,
                             cfg.stable_runaway_ratio)
    return float(v0), float(cfg.noise_velocity_mm_yr or sigma)


def reference(noise: tuple[float, float], cfg: HotspotsConfig, correlation_length_km: float, method: str) -> Reference:
    """The Reference of ``method``: ``noise`` (v0, sigma) from velocity_noise, the S_d threshold and eps."""
    if cfg.max_standard_distance_km is not None:
        max_sd = float(cfg.max_standard_distance_km)
    else:
        if not (math.isfinite(correlation_length_km) and correlation_length_km > 0):
            raise InputError("no correlation length for the S_d threshold; set hotspots.max_standard_distance_km")
        max_sd = correlation_length_km * (1.0 if method == "seed" else cfg.standard_distance_factor)
    eps_m = cfg.eps_m or correlation_length_km * 1000.0 * cfg.eps_correlation_factor
    return Reference(noise[0], noise[1], max_sd, float(eps_m))


def candidates(pixels: DataFrame, cfg: HotspotsConfig, method: str, ref: Reference, t_years: np.ndarray
               ) -> tuple[DataFrame, float | None]:
    """pixel_id, hotspot_id (0, 1, ...) of every candidate pixel: the predicted clusters (seed,
    renumbered), or DBSCAN clusters of the moving pixels (velocity_threshold; DBSCAN numbers its
    clusters 0, 1, ...), each cut into its sources by ``sources.cluster_parts`` (significant;
    t_years (T,): the epochs' times); and the local residual's noise sigma_r in mm/yr (significant with
    hotspots.residual_radius_m; else None)."""
    if method != "seed":
        excess = ((F.col("velocity") - ref.v0_mm_yr) / ref.sigma_mm_yr).alias("excess_z")
        moving = pixels.select("pixel_id", "lon", "lat", excess).where(F.abs("excess_z") > cfg.z_pixel)
        if moving.limit(1).count() == 0:
            return pixels.sparkSession.createDataFrame([], "pixel_id string, hotspot_id long"), None
        clustered = dbscan(moving, ref.eps_m, cfg.min_samples)
        members = clustered.where(F.col("cluster_id") >= 0).select("pixel_id", "lon", "lat", "excess_z",
                                                                   F.col("cluster_id").alias("hotspot_id"))
        if method == "significant":
            if cfg.rate_split_step_f is not None or cfg.step_join_f is not None or cfg.step_split_f is not None:
                members = members.join(pixels.select("pixel_id", "disp"), "pixel_id")
            residuals = local_residuals(pixels, cfg, ref, t_years)
            if residuals is None:
                return split_sources(members, cfg, ref, t_years), None
            frame, sigma_r = residuals
            nan = F.lit(float("nan"))
            members = (members.join(frame, "pixel_id", "left")
                       .withColumn("residual_z", F.coalesce(F.col("residual_mm_yr") / F.lit(ref.sigma_mm_yr), nan))
                       .withColumn("step_f", F.coalesce("step_f", nan)).withColumn("step_mm", F.coalesce("step_mm", nan))
                       .drop("residual_mm_yr"))
            parts = split_sources(members, cfg, ref, t_years, sigma_r)
            frame.unpersist()
            return parts, sigma_r
        return members.select("pixel_id", "hotspot_id"), None
    members = pixels.where(F.col("label") >= 0).select("pixel_id", F.col("label").alias("cluster"))
    ids = sorted(r[0] for r in members.select("cluster").distinct().collect())
    mapping = pixels.sparkSession.createDataFrame([(int(c), i) for i, c in enumerate(ids)], "cluster long, hotspot_id long")
    return members.join(F.broadcast(mapping), "cluster").select("pixel_id", "hotspot_id"), None


def local_residuals(pixels: DataFrame, cfg: HotspotsConfig, ref: Reference, t_years: np.ndarray
                    ) -> tuple[DataFrame, float | None] | None:
    """(pixel_id, residual_mm_yr, step_f, step_mm) of every pixel with a velocity and the local
    residual's noise sigma_r in mm/yr; None when hotspots.residual_radius_m and step_split_f are
    both null. residual_mm_yr: ``residual.local_residual`` over residual_radius_m (NaN: too few
    neighbours, or no residual_radius_m: then sigma_r is None); sigma_r: 1.4826 x MAD over the
    stable ground (|velocity - v0| < stable_clip_z sigma). step_f, step_mm: ``residual.local_step``
    of the moving pixels' series at t_years (T,) over step_split_radius_m (NaN: not moving, too few
    neighbours, or no step_split_f). One neighbourhood pass holds both radii."""
    radius_m = cfg.residual_radius_m
    step_radius_m = cfg.step_split_radius_m if cfg.step_split_f is not None else None
    if radius_m is None and step_radius_m is None:
        return None
    excess = (F.col("velocity") - F.lit(ref.v0_mm_yr)) / F.lit(ref.sigma_mm_yr)
    valid = (pixels.where(F.col("velocity").isNotNull() & ~F.isnan("velocity"))
             .select("pixel_id", "lon", "lat", F.col("velocity").cast("double").alias("velocity"),
                     F.when(excess > cfg.z_pixel, 1).when(excess < -cfg.z_pixel, -1).otherwise(0)
                     .cast("byte").alias("moving_sign"), *(["disp"] if step_radius_m is not None else [])))

    def one(frame: pd.DataFrame, owned: np.ndarray) -> pd.DataFrame:
        lon, lat, sign = frame["lon"].to_numpy(), frame["lat"].to_numpy(), frame["moving_sign"].to_numpy()
        residual = np.full(int(owned.sum()), np.nan)
        if radius_m is not None:
            residual = local_residual(lon, lat, frame["velocity"].to_numpy(), sign, radius_m, query=owned)
        step_f, step_mm = np.full(owned.size, np.nan), np.full(owned.size, np.nan)
        if step_radius_m is not None:
            moving = owned & (sign != 0)
            step_f[moving], step_mm[moving] = local_step(lon, lat, _series_matrix(frame["disp"], len(t_years)),
                                                         t_years, sign, step_radius_m, query=moving)
        return pd.DataFrame({"pixel_id": frame["pixel_id"].to_numpy()[owned], "residual_mm_yr": residual,
                             "step_f": step_f[owned], "step_mm": step_mm[owned]})

    frame = map_neighbourhoods(valid, max(radius_m or 0.0, step_radius_m or 0.0), one,
                               "pixel_id string, residual_mm_yr double, step_f double, step_mm double")
    if radius_m is None:
        return frame, None
    stable = (frame.join(valid.where(F.abs(excess) < cfg.stable_clip_z).select("pixel_id"), "pixel_id")
              .where(~F.isnan("residual_mm_yr")))
    middle = stable.select(F.percentile_approx("residual_mm_yr", 0.5, 100_000)).first()[0]
    spread = None if middle is None else stable.select(
        F.percentile_approx(F.abs(F.col("residual_mm_yr") - F.lit(middle)), 0.5, 100_000)).first()[0]
    sigma_r = float(MAD_TO_SIGMA * (spread or 0.0))
    if not sigma_r > 0:
        raise InputError(f"hotspots: the local residual velocity over the stable ground has no spread "
                         f"(1.4826 x MAD = {sigma_r} mm/yr); set hotspots.residual_radius_m to null")
    log.info("hotspots: local residual within %.0f m, its noise sigma_r %.3f mm/yr (velocity sigma %.3f)",
             radius_m, sigma_r, ref.sigma_mm_yr)
    return frame, sigma_r


def split_sources(members: DataFrame, cfg: HotspotsConfig, ref: Reference, t_years: np.ndarray,
                  sigma_r: float | None = None) -> DataFrame:
    """pixel_id, hotspot_id (0, 1, ...) of the sources in the clusters of moving pixels ``members``
    (pixel_id, lon, lat, excess_z, hotspot_id; residual_z, the local residual / sigma, when
    sigma_r, its noise in mm/yr, is given; step_f and step_mm, the local step, with
    hotspots.step_split_f; disp, the series at t_years (T,), with hotspots.step_split_f,
    rate_split_step_f or step_join_f): ``sources.cluster_parts``, one cluster per pandas group; a pixel in no lobe of its
    sign is in no candidate."""
    level_z = None if sigma_r is None else cfg.residual_z * sigma_r / ref.sigma_mm_yr
    span_yr = float(t_years[-1] - t_years[0]) if len(t_years) else 0.0

    def column(group: pd.DataFrame, name: str) -> np.ndarray | None:
        return group[name].to_numpy(np.float64) if name in group else None

    def one(group: pd.DataFrame) -> pd.DataFrame:
        group = group.sort_values("pixel_id", kind="stable")
        excess_z = group["excess_z"].to_numpy(np.float64)
        part = cluster_parts(group["lon"].to_numpy(), group["lat"].to_numpy(), excess_z, cfg, ref.eps_m,
                             residual_z=column(group, "residual_z"), residual_level_z=level_z,
                             step_f=column(group, "step_f"), step_mm=column(group, "step_mm"),
                             motion_mm=excess_z * ref.sigma_mm_yr * span_yr,
                             series_mm=None if "disp" not in group else _series_matrix(group["disp"], len(t_years)),
                             t_years=t_years)
        return pd.DataFrame({"pixel_id": group["pixel_id"].to_numpy(), "candidate": group["hotspot_id"].to_numpy(),
                             "part": part})

    parts = (members.groupBy("hotspot_id").applyInPandas(one, "pixel_id string, candidate long, part long")
             .where(F.col("part") >= 0)).cache()
    keys = sorted((int(r[0]), int(r[1])) for r in parts.select("candidate", "part").distinct().collect())
    mapping = members.sparkSession.createDataFrame([(c, q, i) for i, (c, q) in enumerate(keys)],
                                                   "candidate long, part long, hotspot_id long")
    return parts.join(F.broadcast(mapping), ["candidate", "part"]).select("pixel_id", "hotspot_id")


def grow_hotspot_rims(pixels: DataFrame, members: DataFrame, retained: list[int], cfg: HotspotsConfig,
                      ref: Reference) -> DataFrame:
    """pixel_id, hotspot_id, rim of every candidate pixel (``members``, rim false) and of the retained
    hotspots' rims (rim true): ``rims.grow_rims`` on Spark, its chains the distributed DBSCAN's clusters (eps
    hotspots.rim_grow_radius_m, min_samples 1) of the retained hotspots' pixels and of the pixels
    in no candidate above hotspots.rim_grow_z, each sign on its own; a cluster whose hotspot pixels
    are of one hotspot gives it its other pixels."""
    excess = (F.col("velocity") - F.lit(ref.v0_mm_yr)) / F.lit(ref.sigma_mm_yr)
    seed = F.col("hotspot_id").isin(retained)
    # one scan of the pixels and of the members: a plan that names them once
    nodes = (pixels.where(F.col("velocity").isNotNull() & ~F.isnan("velocity"))
             .select("pixel_id", "lon", "lat", excess.alias("excess_z"))
             .join(members.select("pixel_id", "hotspot_id"), "pixel_id", "left")
             .where((seed & (F.col("excess_z") != 0))
                    | (F.col("hotspot_id").isNull() & (F.abs("excess_z") > cfg.rim_grow_z)))
             .select("pixel_id", "lon", "lat", "hotspot_id", F.signum("excess_z").cast("int").alias("sign")))
    chains = dbscan(nodes, cfg.rim_grow_radius_m, 1, group_col="sign").persist(StorageLevel.MEMORY_AND_DISK)
    owners = (chains.where(F.col("hotspot_id").isNotNull()).groupBy("sign", "cluster_id")
              .agg(F.countDistinct("hotspot_id").alias("owners"), F.min("hotspot_id").alias("owner"))
              .where(F.col("owners") == 1))
    rims = (chains.where(F.col("hotspot_id").isNull()).join(owners, ["sign", "cluster_id"])
            .select("pixel_id", F.col("owner").alias("hotspot_id"), F.lit(True).alias("rim")))
    return members.select("pixel_id", "hotspot_id", "rim").unionByName(rims)


def _series_matrix(column: pd.Series, n_epochs: int) -> np.ndarray:
    """(n, T) float64 of a pandas column of displacement arrays (a null array: all NaN)."""
    if len(column) == 0:
        return np.zeros((0, n_epochs))
    return np.stack([np.full(n_epochs, np.nan) if a is None else np.asarray(a, np.float64) for a in column])


def footprints(joined: DataFrame, cfg: HotspotsConfig, ref: Reference) -> pd.DataFrame:
    """DESCRIBED_SCHEMA, one row per hotspot of ``joined`` (members joined with their pixels):
    geometry (``cluster_geometry``), ellipse WKT and dominant label of all its pixels; velocities of
    its pixels outside the rim, whose slow motion would pull a source's velocity towards zero."""
    n_std, v0, sigma = cfg.ellipse_n_std, ref.v0_mm_yr, ref.sigma_mm_yr

    def one(group: pd.DataFrame) -> pd.DataFrame:
        g = cluster_geometry(group["lon"].to_numpy(), group["lat"].to_numpy(), n_std=n_std)
        counts = group["label"].value_counts()
        top = counts[counts == counts.max()].index.min()
        velocity = group.loc[~group["rim"].to_numpy(bool), "velocity"].to_numpy(np.float64)
        return pd.DataFrame([{
            "hotspot_id": int(group["hotspot_id"].iloc[0]), "n_pixels": g.n_pixels, "center_lon": g.center_lon,
            "center_lat": g.center_lat, "standard_distance_km": g.standard_distance_km, "sd_x_km": g.sd_x_km,
            "sd_y_km": g.sd_y_km, "semi_major_km": g.semi_major_km, "semi_minor_km": g.semi_minor_km,
            "angle_deg": g.angle_deg, "ellipse_area_km2": g.ellipse_area_km2, "hull_area_km2": g.hull_area_km2,
            "mean_velocity": float(np.nanmean(velocity)), "median_velocity": float(np.nanmedian(velocity)),
            "cluster_id": int(top), "cluster_share": float(counts.max() / len(group)),
            "geometry": ellipse_polygon(g).wkt, "velocity_z": speed_z(velocity, v0, sigma)}])

    return (joined.select("hotspot_id", "lon", "lat", "velocity", "label", "rim")
            .groupBy("hotspot_id").applyInPandas(one, DESCRIBED_SCHEMA).toPandas())


def describe(pixels: DataFrame, members: DataFrame, cfg: HotspotsConfig, ref: Reference,
             dates: list) -> pd.DataFrame:
    """One row per candidate of ``members`` (pixel_id, hotspot_id, rim): its ``footprints`` row, and
    the mean series (Spark aggregate), onset and peak dates of its pixels outside the rim;
    event_step_f: the F of the best step (``rate.best_step``) in their mean series with each
    pixel's sign (of velocity - v0) taken out, the test of hotspots.event_step_f."""
    joined = members.join(pixels, "pixel_id")
    rows = footprints(joined, cfg, ref)
    if rows.empty:
        return rows.assign(mean_disp=[], onset_date=[], peak_date=[], event_step_f=[])
    sign = F.signum(F.col("velocity") - F.lit(ref.v0_mm_yr))
    series = (joined.where(~F.col("rim")).select("hotspot_id", sign.alias("sign"),
                                                 F.posexplode("disp").alias("idx", "value"))
              .where(~F.isnan("value") & F.col("value").isNotNull())
              .groupBy("hotspot_id", "idx").agg(F.avg("value").alias("mean"),
                                                F.avg(F.col("value") * F.col("sign")).alias("signed"))
              .toPandas())
    t_years = years_since(np.array(dates, dtype="datetime64[D]"))
    means, onsets, peaks, step_fs = [], [], [], []
    by_id = {h: g for h, g in series.groupby("hotspot_id")}
    for h in rows["hotspot_id"]:
        mean, signed = np.full(len(dates), np.nan), np.full(len(dates), np.nan)
        if h in by_id:
            mean[by_id[h]["idx"].to_numpy()] = by_id[h]["mean"].to_numpy()
            signed[by_id[h]["idx"].to_numpy()] = by_id[h]["signed"].to_numpy()
        step_fs.append(best_step(signed, t_years)[0])
        means.append(mean.astype(np.float32).tolist())
        if np.isfinite(mean).any():
            onset, peak = onset_peak(mean, t_years)
            onsets.append(dates[onset])
            peaks.append(dates[peak])
        else:
            onsets.append(None)
            peaks.append(None)
    rows["mean_disp"], rows["onset_date"], rows["peak_date"], rows["event_step_f"] = means, onsets, peaks, step_fs
    return rows.sort_values("hotspot_id", ignore_index=True)


def retain(rows: pd.DataFrame, cfg: HotspotsConfig, method: str, ref: Reference) -> pd.DataFrame:
    """``rows`` with retained (bool) and reason ('' when retained; else every failed test).
    significant with hotspots.event_step_f reads the rows' event_step_f (``describe``)."""
    event_f = cfg.event_step_f if method == "significant" else None
    if event_f is not None and len(rows) and "event_step_f" not in rows:
        raise ValueError("retain: hotspots.event_step_f needs the rows' event_step_f")
    reasons = []
    for r in rows.itertuples():
        why = []
        if r.n_pixels < cfg.min_pixels:
            why.append(f"{r.n_pixels} pixels < min_pixels {cfg.min_pixels}")
        steps = event_f is not None and r.event_step_f >= event_f      # one event: kept however broad
        if method != "velocity_threshold" and not r.standard_distance_km < ref.max_sd_km and not steps:
            why.append(f"standard distance {r.standard_distance_km:.2f} km >= {ref.max_sd_km:.2f} km"
                       + ("" if event_f is None else f" and no event (step F {r.event_step_f:.1f} < {event_f})"))
        if method == "significant" and not abs(r.velocity_z) > cfg.z_hotspot:
            why.append(f"mean speed {abs(r.velocity_z) * ref.sigma_mm_yr:.2f} mm/yr away from the stable level "
                       f"{ref.v0_mm_yr:.2f} mm/yr, within {cfg.z_hotspot} sigma ({ref.sigma_mm_yr:.2f} mm/yr)")
        reasons.append("; ".join(why))
    # bool even with no rows: an empty object column would index columns, not rows
    return rows.assign(retained=np.array([not w for w in reasons], dtype=bool), reason=reasons)


def detect(pixels: DataFrame, cfg: HotspotsConfig, method: str, noise: tuple[float, float],
           correlation_length_km: float, dates: list) -> tuple[Detection, Reference]:
    """Candidates of ``method`` with their description and retention; ``noise`` from velocity_noise.
    significant with hotspots.rim_grow_z: the retained ones grown by their rims
    (``grow_hotspot_rims``) and their footprints described again, their retention kept."""
    ref = reference(noise, cfg, correlation_length_km, method)
    members, sigma_r = candidates(pixels, cfg, method, ref, years_since(np.array(dates, dtype="datetime64[D]")))
    members = members.withColumn("rim", F.lit(False)).persist(StorageLevel.MEMORY_AND_DISK)  # deterministic
    members.count()
    rows = retain(describe(pixels, members, cfg, ref, dates), cfg, method, ref)
    if method == "significant" and cfg.rim_grow_z is not None and rows["retained"].any():
        retained = [int(h) for h in rows.loc[rows["retained"], "hotspot_id"]]
        grown = grow_hotspot_rims(pixels, members, retained, cfg, ref).persist(StorageLevel.MEMORY_AND_DISK)
        log.info("hotspots: %d rim pixels joined the %d retained hotspots", grown.count() - members.count(),
                 len(retained))
        members = grown
        # the rim changes a hotspot's footprint only: its mean series (outside the rim) is kept
        regrown = footprints(members.where(F.col("hotspot_id").isin(retained)).join(pixels, "pixel_id"), cfg, ref)
        kept = ["hotspot_id", "mean_disp", "onset_date", "peak_date", "event_step_f", "retained", "reason"]
        rows = pd.concat([rows[~rows["retained"]], regrown.merge(rows[kept], on="hotspot_id")])
        rows = rows.sort_values("hotspot_id", ignore_index=True)
    log.info("hotspots (%s): %d candidates, %d retained; v0 %.2f mm/yr, sigma %.2f mm/yr, S_d threshold %.2f km, "
             "eps %.0f m", method, len(rows), int(rows["retained"].sum()), ref.v0_mm_yr,
             ref.sigma_mm_yr, ref.max_sd_km, ref.eps_m)
    return Detection(method, rows, members, sigma_r), ref


def geojson(rows: pd.DataFrame, path: Path) -> Path:
    """A GeoJSON FeatureCollection (lon/lat, RFC 7946) of the retained hotspots' ellipses."""
    import shapely

    features = []
    for r in rows[rows["retained"]].itertuples():
        props = {k: getattr(r, k) for k in ("hotspot_id", "cluster_id", "n_pixels", "center_lon", "center_lat",
                                            "standard_distance_km", "sd_x_km", "sd_y_km", "angle_deg",
                                            "mean_velocity", "median_velocity", "velocity_z", "hull_area_km2")}
        props = {k: (v.item() if hasattr(v, "item") else v) for k, v in props.items()}
        props.update(onset_date=str(r.onset_date), peak_date=str(r.peak_date))
        features.append({"type": "Feature", "properties": props,
                         "geometry": json.loads(shapely.to_geojson(shapely.from_wkt(r.geometry)))})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def dataset_correlation_length(spark: SparkSession, config: Config, dataset: str, current: Run | None = None
                               ) -> float:
    """The correlation length (km) from the dataset's `covariogram` rows (of ``current`` when it
    wrote them, else of the cluster run written last)."""
    if not table_exists(spark, config, "covariogram"):
        return math.nan
    bins = run_results(spark, config, "covariogram", dataset, current=current).orderBy("distance_km").toPandas()
    if bins.empty:
        return math.nan
    return correlation_length_km(bins["distance_km"], bins["covariance"], config.covariogram.fraction)


@dataclass(frozen=True)
class HotspotsResult:
    dataset: str
    method: str
    candidates: int
    retained: int
    scores: dict            # method -> scores() dict (simulated scenes with truth), else {}
    outputs: str


def _hotspot_pixels_frame(detection: Detection, dataset: str, run_id: str) -> DataFrame:
    return detection.members.select(F.lit(dataset).alias("dataset"), F.lit(run_id).alias("run_id"),
                                    "hotspot_id", "pixel_id", "rim")


def score(detection: Detection, truth: DataFrame, cfg: HotspotsConfig) -> tuple[dict, pd.DataFrame]:
    """Scores of the retained hotspots of ``detection`` against ``truth`` (pixel_id, source_id,
    source_type): the scores() dict and one row per true source (SCORES_SCHEMA without dataset/run_id)."""
    retained = detection.rows.loc[detection.rows["retained"], "hotspot_id"].astype("int64").tolist()
    kept = detection.members.where(F.col("hotspot_id").isin(retained))
    contingency = (truth.join(kept, "pixel_id", "left")
                   .select(F.coalesce("source_id", F.lit(0)).cast("long").alias("source_id"),
                           F.coalesce("hotspot_id", F.lit(-1)).cast("long").alias("hotspot_id"))
                   .groupBy("source_id", "hotspot_id").count().toPandas())
    summary = scores(contingency, cfg.min_source_pixels, cfg.min_jaccard)
    sources, _ = match(contingency, cfg.min_source_pixels, cfg.min_jaccard)
    kinds = dict(truth.select("source_id", "source_type").distinct().collect())
    sources = sources.assign(source_type=sources["source_id"].map(kinds), method=detection.method,
                             **{k: summary[k] for k in ("recall", "precision", "f1", "ari", "hotspots",
                                                        "hotspots_matched")})
    return summary, sources


def run_hotspots(spark: SparkSession, config: Config, dataset: str, run: Run) -> HotspotsResult:
    """Detect hotspots with hotspots.method, write `hotspots` and `hotspot_pixels` (every candidate,
    retained or not), the GeoJSON and pictures; with a `truth` for the dataset, score every method
    of hotspots.score_methods into `hotspot_scores`. Adds this run's rows of the dataset to these tables."""
    cfg = config.hotspots
    with run.stage("hotspots.detect"):
        pixels, source = labelled_pixels(spark, config, dataset, current=run)
        pixels = pixels.persist(StorageLevel.MEMORY_AND_DISK)  # deterministic: a lost part is recomputed
        n_pixels = pixels.count()
        dates = [r.date for r in read_table(spark, config, "epochs", [dataset]).orderBy("idx").collect()]
        corr_km = dataset_correlation_length(spark, config, dataset, current=run)
        noise = velocity_noise(pixels, cfg)
        detection, ref = detect(pixels, cfg, cfg.method, noise, corr_km, dates)
        n_retained = int(detection.rows["retained"].sum())
        run.metrics.update({"hotspots_v0_mm_yr": ref.v0_mm_yr, "hotspots_sigma_mm_yr": ref.sigma_mm_yr,
                            "hotspots_max_sd_km": ref.max_sd_km, "hotspots_eps_m": ref.eps_m,
                            "hotspots_candidates": float(len(detection.rows)),
                            "hotspots_retained": float(n_retained)})
        if detection.residual_sigma_mm_yr is not None:
            run.metrics["hotspots_residual_sigma_mm_yr"] = float(detection.residual_sigma_mm_yr)
    files = lake_files(config, spark)
    outputs_uri = files.uri("outputs", dataset, run.run_id)
    with files.staged("outputs", dataset, run.run_id) as outputs:
        with run.stage("hotspots.write"):
            rows = detection.rows.assign(dataset=dataset, run_id=run.run_id, method=cfg.method)
            table = spark.createDataFrame(rows[HOTSPOTS_SCHEMA.fieldNames()] if len(rows) else [], HOTSPOTS_SCHEMA)
            write_table(spark, table, config, "hotspots", datasets=[dataset], run=run)
            write_table(spark, _hotspot_pixels_frame(detection, dataset, run.run_id), config, "hotspot_pixels",
                        datasets=[dataset], run=run)
            written = rows_written(spark, config, "hotspot_pixels", dataset, run)
            n_members, n_distinct = written.count(), written.select("pixel_id").distinct().count()
            n_candidate_pixels = int(detection.rows["n_pixels"].sum())
            if n_members != n_distinct or n_members != n_candidate_pixels:
                raise RuntimeError(f"dataset {dataset}: hotspot_pixels holds {n_members} rows for {n_distinct} pixels "
                                   f"and {n_candidate_pixels} candidate pixels")
            run.count("hotspots", len(rows))
            run.count("hotspot_pixels", n_members)
            geojson(detection.rows, outputs / "hotspots.geojson")
            write_geoparquet(table.where("retained").drop("mean_disp"),
                             files.uri("outputs", dataset, run.run_id, "hotspots.parquet"))
        with run.stage("hotspots.maps"):
            _pictures(pixels, detection, dates, outputs, dataset, cfg, n_pixels)
    results = {}
    if table_exists(spark, config, "truth"):
        truth = read_table(spark, config, "truth", [dataset]).select("pixel_id", "source_id", "source_type")
        if truth.limit(1).count():
            with run.stage("hotspots.score"):
                per_source = []
                for method in cfg.score_methods:
                    scored = detection if method == cfg.method else \
                        detect(pixels, cfg, method, noise, corr_km, dates)[0]
                    results[method], sources = score(scored, truth, cfg)
                    per_source.append(sources)
                    for key in ("recall", "precision", "ari"):
                        run.metrics[f"score_{method}_{key}"] = float(results[method][key])
                frame = pd.concat(per_source, ignore_index=True).assign(dataset=dataset, run_id=run.run_id)
                write_table(spark, spark.createDataFrame(frame[SCORES_SCHEMA.fieldNames()], SCORES_SCHEMA), config,
                            "hotspot_scores", datasets=[dataset], run=run)
                for method, s in results.items():
                    log.info("score %s: recall %.2f (%d/%d sources), precision %.2f (%d/%d hotspots), ARI %.3f",
                             method, s["recall"], s["sources_matched"], s["sources"], s["precision"],
                             s["hotspots_matched"], s["hotspots"], s["ari"])
    log.info("dataset %s: %d hotspot candidates (%s labels), %d retained; outputs in %s", dataset, len(rows), source,
             n_retained, outputs_uri)
    return HotspotsResult(dataset, cfg.method, len(rows), n_retained, results, outputs_uri)


def map_sample(pixels: DataFrame, members: DataFrame, hotspot_ids: list[int], max_points: int,
               n_pixels: int) -> pd.DataFrame:
    """The pixels of a hotspot map (lon, lat, hotspot_id; -1: in none of ``hotspot_ids``): at most
    ``max_points`` of the ``n_pixels`` of ``pixels``, the members (pixel_id, hotspot_id) of those
    hotspots first, then a seeded random share of the others."""
    labelled = pixels.select("pixel_id", "lon", "lat").join(
        members.select("pixel_id", "hotspot_id").where(F.col("hotspot_id").isin(hotspot_ids)), "pixel_id", "left")
    share = min(1.0, max_points / max(n_pixels, 1))
    sample = labelled.where(F.col("hotspot_id").isNotNull() | (F.rand(7) < share)).limit(max_points).toPandas()
    sample["hotspot_id"] = sample["hotspot_id"].fillna(-1).astype("int64")
    return sample


def _pictures(pixels: DataFrame, detection: Detection, dates: list, outputs: Path, dataset: str,
              cfg: HotspotsConfig, n_pixels: int) -> None:
    """hotspots.png (a sample of at most map_max_points pixels, hotspot pixels first) and
    hotspot_series.png (the retained hotspots' mean series)."""
    retained = detection.rows[detection.rows["retained"]]
    ids = [int(h) for h in retained["hotspot_id"]]
    sample = map_sample(pixels, detection.members, ids, cfg.map_max_points, n_pixels)
    plot_hotspot_map(sample, detection.rows, outputs / "hotspots.png",
                     f"{dataset}: hotspots ({detection.method})")
    plot_hotspot_series(dates, series_frame(retained, dates), outputs / "hotspot_series.png", f"{dataset}: mean series of the hotspots")
